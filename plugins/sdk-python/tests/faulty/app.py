"""A processor that fails on purpose, for the host's tests of what an author
sees: `{"fail_in": "init"}` raises in __init__; otherwise a record whose
data is `crash` raises a KeyError (a bug: the host retries, then bisects),
one whose data is `bad` is refused with ProcessError.at (a poison
record, by the author's decision), and `int-key` emits with an int key (SDK
misuse, named at the author's line), and `network` opens a connection (there
is none in the sandbox). Other records are echoed; it also prints
and logs, to show where that goes."""

import socket
import sys

from kinesis_processor import ProcessError, Processor, exports, log


class Faulty(Processor):
    name = "py-faulty"

    def __init__(self, config, shard):
        super().__init__(config, shard)
        if config.get("fail_in") == "init":
            raise ValueError("window_seconds must be positive")
        print(f"faulty starts on {shard.shard_id}")

    def process(self, batch, out):
        for i, record in enumerate(batch):
            if record.data == b"crash":
                lookup = {}
                lookup[record.partition_key] += 1
            if record.data == b"bad":
                raise ProcessError.at(i, f"record {i} is bad")
            if record.data == b"int-key":
                out.emit(len(record.partition_key), record.data)
            if record.data == b"network":
                socket.create_connection(("example.com", 80))
            out.emit(record.partition_key, record.data)
        log("info", f"processed {len(batch)} records")
        print(f"stderr line from python after {len(batch)} records", file=sys.stderr)


Processor, Merge = exports(Faulty)
