"""Unit tests in plain Python: `python3 -m unittest` (no component needed)."""

import unittest

from app import App
from kinesis_processor import BatchBuilder, HashKeyRange, Output, ShardContext, Snapshot


def process(app, records):
    batch = BatchBuilder()
    for key, data in records:
        batch.push(key, data)
    out = Output()
    app.process(batch.batch(), out)
    return [data.decode() for _, data in out]


class AppTest(unittest.TestCase):
    def test_counts_per_key_and_window_across_batches(self):
        app = App({}, ShardContext())
        first = process(app, [("a", "2018-07-29T22:35:46Z x"), ("b", "2018-07-29T22:35:50Z y")])
        self.assertEqual(len(first), 2)
        second = process(app, [("a", "2018-07-29T22:35:59Z z")])
        self.assertEqual(second, ['{"window_start":"2018-07-29T22:35:00Z","key":"a","count":2}'])

    def test_state_survives_a_restart_and_merges_add_up(self):
        app = App({}, ShardContext())
        process(app, [("a", "2018-07-29T22:35:46Z"), ("a", "2018-07-29T22:35:47Z")])
        state = app.snapshot()
        again = App({}, ShardContext())
        again.restore(state, App.state_version)
        self.assertIn('"count":3', process(again, [("a", "2018-07-29T22:35:48Z")])[0])
        merged = App({}, ShardContext())
        parent = Snapshot(App.state_version, state)
        merged.merge([parent, parent])
        self.assertIn('"count":5', process(merged, [("a", "2018-07-29T22:35:49Z")])[0])

    def test_a_split_child_keeps_only_its_own_keys(self):
        app = App({}, ShardContext())
        process(app, [("a", "2018-07-29T22:35:46Z"), ("b", "2018-07-29T22:35:47Z")])
        state = app.snapshot()
        half = (2**128 - 1) // 2
        kept = 0
        for start, end in [(0, half), (half + 1, 2**128 - 1)]:
            child = App({}, ShardContext(hash_key_range=HashKeyRange(start, end)))
            child.restore(state, App.state_version)
            kept += sum(len(keys) for keys in child.counts.values())
        self.assertEqual(kept, 2, "each key lives on in exactly one child")


if __name__ == "__main__":
    unittest.main()
