"""Adapts a `Processor` class to the bindings componentize-py generates.

componentize-py may make a new object of an exported class for each call,
so the shard's processor lives here, in a module global. A mistake in the
author's code stays a crash (the host retries, then bisects to the record);
only a `ProcessError` is a failure on purpose. The traceback goes to
stderr, where the host's error line picks up the exception's type, message
and place."""

import json
import socket
import sys
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.exports import Merge as _MergeExport
from wit_world.exports import Processor as _ProcessorExport
from wit_world.imports import host, types

from . import Batch, HashKeyRange, Output, ProcessError, ShardContext, Snapshot

_sdk = sys.modules[__package__]


def _no_network(*_args, **_kwargs):
    """What every way to the network does in the sandbox: say so, at the
    author's line (requests, urllib and socket all end here)."""
    raise PermissionError(
        "there is no network in the sandbox: a processor cannot resolve names or open connections "
        "(emit what you would send; the host's sink delivers it)"
    )


# Without this, Python fails far from the cause (`LookupError: unknown
# encoding: idna` on a host name, or an OSError without a word of why).
socket.getaddrinfo = socket.create_connection = socket.gethostbyname = _no_network
socket.socket.connect = socket.socket.connect_ex = socket.socket.bind = _no_network

_LEVELS = {
    "trace": types.LogLevel.TRACE,
    "debug": types.LogLevel.DEBUG,
    "info": types.LogLevel.INFO,
    "warn": types.LogLevel.WARN,
    "error": types.LogLevel.ERROR,
}
_REASONS = {
    types.ShutdownReason.SHARD_ENDED: "shard-ended",
    types.ShutdownReason.LEASE_LOST: "lease-lost",
    types.ShutdownReason.REQUESTED: "requested",
}


class _Host:
    """What `kinesis_processor.log` / `now_millis` call once running."""

    @staticmethod
    def log(level, message):
        host.log(_LEVELS.get(level, types.LogLevel.INFO), str(message))

    @staticmethod
    def now_millis():
        return host.now_millis()


def _describe(e: BaseException) -> str:
    """`ValueError: bad window (app.py:12 in __init__)`: type, message, and
    where in the author's code it was raised."""
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    # The author's innermost frame, not the SDK's or Python's own.
    theirs = [f for f in frames if "kinesis_processor/" not in f.filename and "/lib/python" not in f.filename]
    if theirs or frames:
        f = (theirs or frames)[-1]
        where = f" ({f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name})"
    return f"{type(e).__name__}: {e}{where}"


def _crash(e: BaseException):
    """A bug: re-raised after this, a trap for the host's failure policy;
    componentize-py writes the traceback to stderr, whose last exception
    line (and innermost frame) the host's error line shows."""


def exports(cls):
    slot = {"processor": None}
    out = Output()

    def flush():
        if out.count:
            host.emit_batch(types.OutputBatch(payload=bytes(out.payload), index=bytes(out.index)))
        out.clear()

    def call(method, *args):
        """Runs a processor method that may emit; a ProcessError is the
        call's error result, anything else a crash."""
        out.clear()
        try:
            method(*args, out)
        except ProcessError as e:
            flush()
            raise Err(types.ProcessError(retryable=e.retryable, message=e.message, record_index=e.record_index))
        except Exception as e:
            _crash(e)
            raise
        flush()

    def refusing(what, f, *args):
        """Runs `f`; an exception is the call's error string (init/restore/merge)."""
        try:
            return f(*args)
        except Exception as e:
            raise Err(f"{what}: {_describe(e)}")

    class Processor(_ProcessorExport):
        def init(self, config, context):
            _sdk._host = _Host
            try:
                parsed = json.loads(config) if config.strip() else {}
            except ValueError as e:
                raise Err(f"invalid config (not JSON): {e}")
            r = context.hash_key_range
            shard = ShardContext(
                stream=context.stream_name,
                shard_id=context.shard_id,
                application=context.application,
                hash_key_range=HashKeyRange(int(r.starting_hash_key), int(r.ending_hash_key)),
                parents=context.parent_shard_ids,
            )
            slot["processor"] = refusing("init failed", cls, parsed, shard)
            return types.ProcessorInfo(name=cls.name, state_version=cls.state_version)

        def process(self, batch):
            view = Batch(batch.payload, batch.index, batch.millis_behind_latest)
            call(slot["processor"].process, view)

        def on_timer(self, now_millis):
            call(slot["processor"].on_timer, now_millis)

        def snapshot(self):
            try:
                data = slot["processor"].snapshot()
                if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(
                        f"snapshot() must return bytes, not {type(data).__name__} "
                        "(json_snapshot(value) makes bytes of a JSON-able value)"
                    )
            except Exception as e:
                _crash(e)
                raise
            return types.State(version=cls.state_version, bytes=bytes(data or b""))

        def restore(self, state):
            refusing("restore refused the state", slot["processor"].restore, state.bytes, state.version)

        def shutdown(self, reason):
            out.clear()
            try:
                slot["processor"].shutdown(_REASONS.get(reason, "requested"), out)
            except Exception as e:
                _crash(e)
                raise
            flush()

    class Merge(_MergeExport):
        def merge(self, parents):
            states = [Snapshot(s.version, s.bytes) for s in parents]
            refusing("merge refused the parents' states", slot["processor"].merge, states)

    return Processor, Merge


__all__ = ["exports", "wit_world"]
