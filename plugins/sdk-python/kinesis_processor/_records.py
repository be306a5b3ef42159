"""Records in, output records out: views over the packed buffers that cross
the component boundary (two byte buffers per call, whatever the count)."""

import struct

# The WIT `record-entry`: u32 key offset/len, data offset/len, sequence
# number offset/len; u64 sub-sequence number; s64 arrival millis.
_ENTRY = struct.Struct("<6IQq")
# The WIT `output-entry`: u32 key offset/len, data offset/len.
_OUT = struct.Struct("<4I")


class Record:
    """One record of a batch. Fields are read from the batch's buffer when
    asked for, so a processor pays only for what it reads."""

    __slots__ = ("_payload", "_entry")

    def __init__(self, payload, entry):
        self._payload = payload
        self._entry = entry

    @property
    def partition_key(self) -> str:
        o, n = self._entry[0], self._entry[1]
        return str(self._payload[o : o + n], "utf-8", "replace")

    @property
    def data(self) -> bytes:
        o, n = self._entry[2], self._entry[3]
        return bytes(self._payload[o : o + n])

    @property
    def sequence_number(self) -> str:
        o, n = self._entry[4], self._entry[5]
        return str(self._payload[o : o + n], "ascii")

    @property
    def sub_sequence_number(self) -> int:
        """Position inside a KPL-aggregated record; 0 for plain records."""
        return self._entry[6]

    @property
    def approximate_arrival(self) -> int:
        """When Kinesis accepted the record, in ms since the Unix epoch."""
        return self._entry[7]

    def __repr__(self):
        return f"Record({self.partition_key!r}, {self.data!r}, seq={self.sequence_number}.{self.sub_sequence_number})"


class Batch:
    """Consecutive records of one shard, in order."""

    __slots__ = ("_payload", "_index", "_len", "millis_behind_latest")

    def __init__(self, payload: bytes, index: bytes, millis_behind_latest: int = 0):
        if len(index) % _ENTRY.size:
            raise ValueError(f"a batch index of {len(index)} bytes is not whole {_ENTRY.size}-byte entries")
        self._payload = payload
        # Entries are unpacked as iterated, not into a list up front: a
        # 10,000-record batch would hold 10,000 tuples at once.
        self._index = index
        self._len = len(index) // _ENTRY.size
        self.millis_behind_latest = millis_behind_latest

    def __len__(self):
        return self._len

    def __iter__(self):
        payload = self._payload
        for entry in _ENTRY.iter_unpack(self._index):
            yield Record(payload, entry)

    def __getitem__(self, i: int) -> Record:
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("batch index out of range")
        return Record(self._payload, _ENTRY.unpack_from(self._index, i * _ENTRY.size))


class Output:
    """Output records of one call, packed as they come and handed to the
    host once, when the call returns (also when it fails: what was emitted
    for the records before a failing one is kept)."""

    __slots__ = ("payload", "index", "count")

    def __init__(self):
        self.payload = bytearray()
        self.index = bytearray()
        self.count = 0

    def emit(self, key: str, data) -> None:
        """Sends one record to the sink: `key` (str) and `data` (bytes or str)."""
        if not isinstance(key, str):
            raise TypeError(f"emit(key, data): the key must be a str, not {type(key).__name__} ({key!r:.40})")
        k = key.encode()
        if isinstance(data, str):
            d = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            d = bytes(data)
        else:
            raise TypeError(
                f"emit(key, data): data must be bytes or str, not {type(data).__name__} "
                "(json.dumps(value) or str(value) makes one)"
            )
        at = len(self.payload)
        self.payload += k
        self.payload += d
        self.index += _OUT.pack(at, len(k), at + len(k), len(d))
        self.count += 1

    def __len__(self):
        return self.count

    def __iter__(self):
        """(key, data) pairs, for tests."""
        for o in _OUT.iter_unpack(self.index):
            yield str(self.payload[o[0] : o[0] + o[1]], "utf-8"), bytes(self.payload[o[2] : o[2] + o[3]])

    def clear(self):
        self.payload.clear()
        self.index.clear()
        self.count = 0


class BatchBuilder:
    """Builds a batch in plain Python, for unit tests of a processor."""

    def __init__(self):
        self.payload = bytearray()
        self.index = bytearray()
        self._n = 0

    def push(self, partition_key: str, data, arrival_millis: int = 0, sub_sequence_number: int = 0):
        key = partition_key.encode()
        data = data.encode() if isinstance(data, str) else bytes(data)
        seq = str(49_000_000 + self._n).encode()
        at = len(self.payload)
        self.payload += key + data + seq
        self.index += _ENTRY.pack(
            at, len(key), at + len(key), len(data), at + len(key) + len(data), len(seq), sub_sequence_number, arrival_millis
        )
        self._n += 1
        return self

    def batch(self) -> Batch:
        return Batch(bytes(self.payload), bytes(self.index))
