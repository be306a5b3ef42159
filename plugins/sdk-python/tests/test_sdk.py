"""Unit tests of the SDK's pure-Python part (no component needed):
`python3 -m unittest discover -s plugins/sdk-python/tests`."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from kinesis_processor import (  # noqa: E402
    BatchBuilder,
    Output,
    Processor,
    ShardContext,
    Snapshot,
    format_timestamp_millis,
    parse_leading_timestamp,
    parse_timestamp_millis,
    window_start,
)


class TimeRules(unittest.TestCase):
    """The Rust SDK's rules (helpers::time), case for case."""

    def test_parse(self):
        cases = [
            (parse_timestamp_millis, "2018-07-29T22:35:46.694763", 1532903746694),
            (parse_timestamp_millis, "  2018-07-29 22:35:46.6\n", 1532903746600),
            (parse_timestamp_millis, "2019-06-22T19:20:27+02:00", 1561231227000 - 7200000),
            (parse_timestamp_millis, "2019-06-22T19:20:27-0130", 1561231227000 + 5400000),
            (parse_timestamp_millis, "2018-02-30T00:00", None),
            (parse_timestamp_millis, "2018-07-29T24:00", None),
            (parse_timestamp_millis, "2018-07-29T22:35:46.", None),
            (parse_leading_timestamp, "2018-07-29T22:35:46Z GET /", 1532903746000),
            (parse_leading_timestamp, b"2018-07-29T22:35:46Zx", None),
            # A fraction needs digits, though `,` alone may end a leading timestamp.
            (parse_leading_timestamp, "2018-07-29T22:35:46, GET", None),
            (parse_leading_timestamp, "2018-07-29T22:35, GET", 1532903700000),
            (parse_leading_timestamp, "2018-07-29T22:35:46+02", 1532903746000 - 7200000),
            (parse_leading_timestamp, "2018-07-29T22:35:46+0", None),
            (parse_leading_timestamp, "\t2018-07-29T22:35:46|x", 1532903746000),
            (parse_leading_timestamp, "٢٠١٨-07-29T22:35", None),
        ]
        for parse, text, want in cases:
            with self.subTest(text=text):
                self.assertEqual(parse(text), want)

    def test_minutes_are_memoised_per_minute_not_reused_across_them(self):
        for text, want in [
            ("2018-07-29T00:00", 1532822400000),
            ("2027-07-29T00:00", 1816819200000),
            ("2018-07-29T00:01", 1532822460000),
            ("2018-07-29T00:00:30", 1532822430000),
        ]:
            self.assertEqual(parse_timestamp_millis(text), want, text)

    def test_format_and_windows(self):
        self.assertEqual(format_timestamp_millis(1532903760000), "2018-07-29T22:36:00Z")
        self.assertEqual(format_timestamp_millis(-1), "1969-12-31T23:59:59.999Z")
        self.assertEqual(window_start(-1, 60000), -60000)


class Buffers(unittest.TestCase):
    def test_batches_and_output_round_trip(self):
        batch = BatchBuilder().push("k", "hello", 1700000000123, 2).push("é", b"\x00\xff", -5).batch()
        records = list(batch)
        self.assertEqual([r.partition_key for r in records], ["k", "é"])
        self.assertEqual([r.data for r in records], [b"hello", b"\x00\xff"])
        self.assertEqual([r.approximate_arrival for r in records], [1700000000123, -5])
        self.assertEqual([r.sub_sequence_number for r in records], [2, 0])
        out = Output()
        out.emit("a", "x")
        out.emit("é", b"\x01\x02")
        self.assertEqual(list(out), [("a", b"x"), ("é", b"\x01\x02")])



class DefaultMerge(unittest.TestCase):
    class Replacing(Processor):
        name = "replacing"

        def __init__(self, config, shard):
            super().__init__(config, shard)
            self.state = b""

        def restore(self, data, version):
            self.state = data

    def test_one_parent_with_state_is_restored_two_are_refused_not_half_lost(self):
        child = self.Replacing({}, ShardContext())
        child.merge([Snapshot(1, b""), Snapshot(1, b"left")])
        self.assertEqual(child.state, b"left")
        with self.assertRaisesRegex(ValueError, "does not define merge"):
            self.Replacing({}, ShardContext()).merge([Snapshot(1, b"left"), Snapshot(1, b"right")])



class EmitChecks(unittest.TestCase):
    def test_a_wrong_key_or_data_type_is_named_where_it_is_emitted(self):
        out = Output()
        with self.assertRaisesRegex(TypeError, r"the key must be a str, not int \(7\)"):
            out.emit(7, b"x")
        with self.assertRaisesRegex(TypeError, "data must be bytes or str, not dict"):
            out.emit("k", {"a": 1})
        out.emit("k", bytearray(b"ok"))
        self.assertEqual(list(out), [("k", b"ok")])


if __name__ == "__main__":
    unittest.main()
