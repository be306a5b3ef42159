"""{{name}}: counts records per partition key in windows of the record's own
time (the timestamp its data starts with, else its arrival) and, after each
batch, emits each count that changed (start from here):
{"window_start":"2018-07-29T22:35:00Z","key":"8.8.8.8","count":2}

Config (JSON, all optional): {"window_seconds": 60, "keep_windows": 60}. The
counts are the state: snapshot/restore carry them across restarts and hot
swaps, a split keeps each child's own keys, a merge adds both parents'.
"""

import json

from kinesis_processor import (
    Processor,
    exports,
    format_timestamp_millis,
    json_restore,
    json_snapshot,
    parse_leading_timestamp,
    window_start,
)

SETTINGS = {"window_seconds", "keep_windows"}


def whole(config, name):
    value = config.get(name, 60)
    if type(value) is not int or value < 1:
        raise ValueError(f"invalid config: `{name}` must be a whole number of at least 1, not {value!r}")
    return value


class App(Processor):
    name = "{{name}}"
    # Bump it when the layout of `snapshot` changes (and read the old one in `restore`).
    state_version = 1

    def __init__(self, config, shard):
        super().__init__(config, shard)
        unknown = sorted(set(config) - SETTINGS)
        if unknown:
            raise ValueError(f"invalid config: unknown setting(s) {', '.join(unknown)}")
        self.window_millis = whole(config, "window_seconds") * 1000
        self.keep_windows = whole(config, "keep_windows")
        # Window start (ms since the epoch) -> partition key -> count: the state.
        self.counts = {}

    def process(self, batch, out):
        changed = set()
        for record in batch:
            time = parse_leading_timestamp(record.data)
            if time is None:
                time = record.approximate_arrival
            window = window_start(time, self.window_millis)
            key = record.partition_key
            keys = self.counts.setdefault(window, {})
            keys[key] = keys.get(key, 0) + 1
            changed.add((window, key))
        for window, key in sorted(changed):
            start = format_timestamp_millis(window)
            key_json = json.dumps(key, ensure_ascii=False)
            out.emit(key, f'{{"window_start":"{start}","key":{key_json},"count":{self.counts[window][key]}}}')
        # Windows too old to change again are forgotten (the state stays small).
        if self.counts:
            oldest_kept = max(self.counts) - self.keep_windows * self.window_millis
            for window in [w for w in self.counts if w <= oldest_kept]:
                del self.counts[window]

    def snapshot(self):
        # JSON object keys are strings: window starts go as decimal text.
        return json_snapshot({str(window): keys for window, keys in self.counts.items()})

    def restore(self, data, version):
        self.counts = {}
        for window, keys in json_restore(data, version, self.state_version, {}).items():
            mine = {key: count for key, count in keys.items() if self.shard.owns_key(key)}
            if mine:
                self.counts[int(window)] = mine

    def merge(self, parents):
        self.counts = {}
        for parent in parents:
            for window, keys in json_restore(parent.data, parent.version, self.state_version, {}).items():
                merged = self.counts.setdefault(int(window), {})
                for key, count in keys.items():
                    merged[key] = merged.get(key, 0) + count


# componentize-py looks for these two names.
Processor, Merge = exports(App)
