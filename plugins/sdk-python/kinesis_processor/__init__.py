"""Write Kinesis stream processors in Python.

A processor is a class; the host runs one instance per shard and hands it
batches of records in order. Subclass `Processor`, override what you need,
and name the exports componentize-py looks for at the end of your module:

    from kinesis_processor import Processor, exports

    class Echo(Processor):
        name = "echo"

        def process(self, batch, out):
            for record in batch:
                out.emit(record.partition_key, record.data)

    Processor, Merge = exports(Echo)

Build: `componentize-py -d "$(python -m kinesis_processor wit)" -w merging-processor-world
componentize app -o app.wasm`, then `host test --plugin app.wasm --input records.jsonl`.
"""

import hashlib
import json
import sys
import time as _time

from ._records import Batch, BatchBuilder, Output, Record
from .timeutil import format_timestamp_millis, parse_leading_timestamp, parse_timestamp_millis, window_start

__all__ = [
    "Batch", "BatchBuilder", "HashKeyRange", "Output", "ProcessError", "Processor", "Record", "ShardContext",
    "Snapshot", "exports", "format_timestamp_millis", "json_restore", "json_snapshot", "log", "now_millis",
    "parse_leading_timestamp", "parse_timestamp_millis", "window_start",
]

_MAX_HASH = 2**128 - 1


class HashKeyRange:
    """The hash keys (MD5 of a partition key, as a 128-bit integer) a shard receives."""

    __slots__ = ("start", "end")

    def __init__(self, start: int = 0, end: int = _MAX_HASH):
        self.start, self.end = start, end

    def contains_key(self, partition_key) -> bool:
        return self.start <= hash_key(partition_key) <= self.end

    def to_json(self):
        return [str(self.start), str(self.end)]

    def __eq__(self, other):
        return isinstance(other, HashKeyRange) and (self.start, self.end) == (other.start, other.end)

    def __repr__(self):
        return f"HashKeyRange({self.start}, {self.end})"


def hash_key(partition_key) -> int:
    """Where Kinesis routes a partition key: MD5 read as a big-endian integer."""
    key = partition_key.encode() if isinstance(partition_key, str) else bytes(partition_key)
    return int.from_bytes(hashlib.md5(key).digest(), "big")


class ShardContext:
    """Where an instance runs, given at start."""

    def __init__(self, stream="", shard_id="", application="", hash_key_range=None, parents=()):
        self.stream = stream
        self.shard_id = shard_id
        self.application = application
        self.hash_key_range = hash_key_range or HashKeyRange()
        # The shards this one was made from (one after a split, two after a merge).
        self.parents = list(parents)

    def owns_key(self, partition_key) -> bool:
        """Whether records with this partition key come to this shard now."""
        return self.hash_key_range.contains_key(partition_key)


class Snapshot:
    """A state as `snapshot` wrote it, with the layout version it was written in."""

    __slots__ = ("version", "data")

    def __init__(self, version: int, data: bytes):
        self.version, self.data = version, data


class ProcessError(Exception):
    """Raise from `process` / `on_timer` to fail a call on purpose. Fatal by
    default (a poison record: retried, then bisected and dead-lettered);
    `retryable=True` for a passing fault (a downstream busy). With
    `record_index`, the records before it count as processed."""

    def __init__(self, message: str, retryable: bool = False, record_index=None):
        super().__init__(message)
        self.message, self.retryable, self.record_index = message, retryable, record_index

    @classmethod
    def at(cls, index: int, message: str):
        """A poison record: records before `index` are done, this one is bad."""
        return cls(message, record_index=index)

    def at_record(self, index: int):
        self.record_index = index
        return self


class Processor:
    """Base of a processor: every method but `process` has a default."""

    #: For logs and metrics.
    name = "python-processor"
    #: Layout version of what `snapshot` writes; bump it when that changes.
    state_version = 0

    def __init__(self, config: dict, shard: ShardContext):
        """`config` is the user's JSON configuration, parsed ({} when none).
        Raise (any exception) to refuse it: the shard stops with the message."""
        self.config = config
        self.shard = shard

    def process(self, batch: Batch, out: Output) -> None:
        raise NotImplementedError("a processor must define process(self, batch, out)")

    def on_timer(self, now_millis: int, out: Output) -> None:
        """Called periodically and when input is idle: emit time-driven output."""

    def snapshot(self) -> bytes:
        """All state needed to go on after a restart (b"" when stateless)."""
        return b""

    def restore(self, data: bytes, version: int) -> None:
        """Take over a state `snapshot` wrote (maybe an older version)."""
        if data:
            raise ValueError(f"{self.name} keeps no state but was given {len(data)} bytes; define restore()")

    def merge(self, parents: list) -> None:
        """A merge child's start: take over both parents' states. The default
        restores the one parent that has state; two need a merge of your own
        (restoring both would keep only the last)."""
        with_state = [parent for parent in parents if parent.data]
        if len(with_state) > 1:
            raise ValueError(
                f"{self.name} keeps state but does not define merge(parents), "
                "so the state of merged shards would be lost"
            )
        for parent in with_state:
            self.restore(parent.data, parent.version)

    def shutdown(self, reason: str, out: Output) -> None:
        """Last call: `reason` is "shard-ended", "lease-lost" or "requested"."""


def json_snapshot(value) -> bytes:
    """A JSON-able value as snapshot bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def json_restore(data: bytes, version: int, expected: int, default=None):
    """Snapshot bytes back to a value; empty bytes give `default`. A version
    other than `expected` is refused with what to do."""
    if not data:
        return default
    if version != expected:
        raise ValueError(f"cannot read state version {version} (this processor writes {expected}); migrate it in restore()")
    return json.loads(data)


# The host's imports, once running as a component; plain Python otherwise.
_host = None


def log(level: str, message: str) -> None:
    """A log line attributed to this shard: level trace|debug|info|warn|error."""
    if _host is not None:
        _host.log(level, message)
    else:
        print(f"[{level}] {message}", file=sys.stderr)


def now_millis() -> int:
    """The host's clock (the replayed input's under `host test`)."""
    return _host.now_millis() if _host is not None else int(_time.time() * 1000)


def exports(cls):
    """The classes componentize-py looks for (`Processor`, `Merge`), serving `cls`."""
    try:
        from . import _glue
    except ModuleNotFoundError as e:
        if e.name not in ("wit_world", "componentize_py_types"):
            raise
        # Plain Python (a unit test): no component to export to.
        return cls, None
    return _glue.exports(cls)
