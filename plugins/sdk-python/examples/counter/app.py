"""Counter: counts records per key in fixed windows of the record's own time
and, after each batch, emits the counts that changed: the Python twin of
the Rust counter (plugins/counter), with the same config, output and state
layout, so either can take over the other's state in a hot swap.

Config (JSON, all optional): `key_field` (JSON field to count by; default the
partition key), `time_field` (JSON field with the event time: ISO-8601 or
epoch ms), `event_time` ("auto": time_field, else the data as an ISO-8601
timestamp, else arrival time; or "arrival"), `window_seconds` (60),
`retention_windows` (1440).

Output per changed (window, key):
`{"window_start":"2018-07-29T22:36:00Z","key":"8.8.8.8","count":7}`."""

import json

from kinesis_processor import (
    HashKeyRange,
    ProcessError,
    Processor,
    exports,
    format_timestamp_millis,
    parse_leading_timestamp,
    parse_timestamp_millis,
)

SETTINGS = {"key_field", "time_field", "event_time", "window_seconds", "retention_windows"}


def positive_int(config, name, default, minimum):
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"invalid counter config: `{name}` must be a whole number of at least {minimum}, not {value!r}")
    return value


class Counter(Processor):
    name = "counter"
    state_version = 1

    def __init__(self, config, shard):
        super().__init__(config, shard)
        if not isinstance(config, dict):
            raise ValueError("invalid counter config: expected a JSON object")
        unknown = set(config) - SETTINGS
        if unknown:
            raise ValueError(f"invalid counter config: unknown setting(s) {sorted(unknown)}")
        self.key_field = config.get("key_field")
        if self.key_field == "":
            raise ValueError("`key_field` must not be empty")
        self.time_field = config.get("time_field")
        event_time = config.get("event_time", "auto")
        if event_time not in ("auto", "arrival"):
            raise ValueError(f'`event_time` must be "auto" or "arrival", not {event_time!r}')
        if event_time == "arrival" and self.time_field is not None:
            raise ValueError('`event_time: "arrival"` and `time_field` contradict each other; keep one')
        self.arrival_only = event_time == "arrival"
        self.window_millis = positive_int(config, "window_seconds", 60, 1) * 1000
        self.retention = positive_int(config, "retention_windows", 1440, 1)
        # window start ms -> {key: count}; the keys changed since the last
        # emit, per window; each window's JSON in the snapshot, while unchanged.
        self.counts = {}
        self.changed = {}
        self.frozen = {}
        self.newest = None

    def key_and_time(self, record):
        arrival = record.approximate_arrival
        data = record.data
        fields = None
        if self.key_field is not None or self.time_field is not None:
            try:
                fields = json.loads(data)
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                fields = None
        if self.arrival_only:
            time = arrival
        elif self.time_field is not None:
            value = fields.get(self.time_field) if fields else None
            if isinstance(value, str):
                time = parse_timestamp_millis(value)
                time = arrival if time is None else time
            elif isinstance(value, int) and not isinstance(value, bool):
                time = value
            else:
                time = arrival
        else:
            time = parse_leading_timestamp(data)
            time = arrival if time is None else time
        if self.key_field is None:
            return record.partition_key, time
        value = fields.get(self.key_field) if fields else None
        if isinstance(value, str):
            return value, time
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return json.dumps(value), time
        return None, time

    def emit_changed(self, out):
        for window in sorted(self.changed):
            counts = self.counts[window]
            head = f'{{"window_start":"{format_timestamp_millis(window)}","key":'
            for key in sorted(self.changed[window]):
                out.emit(key, f'{head}{json.dumps(key, ensure_ascii=False)},"count":{counts[key]}}}')
        self.changed.clear()

    def process(self, batch, out):
        size = self.window_millis
        # The window of the last record, with its dicts: consecutive records
        # mostly share it.
        window = counts = changed = None
        for index, record in enumerate(batch):
            key, time = self.key_and_time(record)
            if key is None:
                # Keep what the records before it counted, then name the poison record.
                self.emit_changed(out)
                raise ProcessError.at(
                    index, f"record data is not a JSON object with a string or number field `{self.key_field}`"
                )
            w = time - time % size
            if w != window:
                window = w
                self.frozen.pop(w, None)
                counts = self.counts.setdefault(w, {})
                changed = self.changed.setdefault(w, set())
                if self.newest is None or w > self.newest:
                    self.newest = w
            counts[key] = counts.get(key, 0) + 1
            changed.add(key)
        self.emit_changed(out)
        if self.newest is not None:
            oldest_kept = self.newest - self.retention * size
            for w in [w for w in self.counts if w <= oldest_kept]:
                del self.counts[w]
                self.frozen.pop(w, None)

    def snapshot(self):
        # Taken after every batch, holding every window kept (a day of them
        # by default) while a batch changes one or two: each window's JSON is
        # kept until it changes, so a snapshot costs a join.
        parts = []
        for w in sorted(self.counts):
            text = self.frozen.get(w)
            if text is None:
                cells = self.counts[w]
                text = json.dumps([w, [[k, cells[k]] for k in sorted(cells)]], separators=(",", ":"), ensure_ascii=False)
                self.frozen[w] = text
            parts.append(text)
        r = self.shard.hash_key_range
        return f'{{"range":["{r.start}","{r.end}"],"windows":[{",".join(parts)}]}}'.encode()

    def load(self, data, version, what="counter state"):
        if version != self.state_version:
            raise ValueError(f"counter cannot read state version {version} (it writes {self.state_version})")
        try:
            state = json.loads(data)
            return [(int(w), [(str(k), int(c)) for k, c in cells]) for w, cells in state["windows"]], state.get("range")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{what} is corrupt: {e}")

    def restore(self, data, version):
        windows, written_for = self.load(data, version)
        self.counts = {w: dict(cells) for w, cells in windows}
        self.frozen = {}
        self.newest = max(self.counts, default=None)
        # After a split: keep this shard's share (see the Rust counter).
        mine = self.shard.hash_key_range
        parent = HashKeyRange(int(written_for[0]), int(written_for[1])) if written_for else None
        if parent == mine or (mine.start == 0 and mine.end == 2**128 - 1):
            return
        if self.key_field is None:
            self.counts = {w: {k: n for k, n in cells.items() if self.shard.owns_key(k)} for w, cells in self.counts.items()}
        elif parent is not None and not (mine.start <= parent.start <= mine.end):
            self.counts = {}

    def merge(self, parents):
        self.counts = {}
        self.frozen = {}
        for i, parent in enumerate(parents):
            if not parent.data:
                continue
            windows, _ = self.load(parent.data, parent.version, f"parent {i}'s state")
            for w, cells in windows:
                counts = self.counts.setdefault(w, {})
                for k, c in cells:
                    counts[k] = counts.get(k, 0) + c
        self.newest = max(self.counts, default=None)


# componentize-py looks for these two names.
Processor, Merge = exports(Counter)
