"""Unit tests in plain Python: `python3 -m unittest` (no component needed)."""

import unittest

from app import App
from kinesis_processor import BatchBuilder, Output, ShardContext


class AppTest(unittest.TestCase):
    def test_echoes_each_record(self):
        app = App({}, ShardContext())
        out = Output()
        app.process(BatchBuilder().push("8.8.8.8", "hello").batch(), out)
        self.assertEqual(list(out), [("8.8.8.8", b"8.8.8.8 : hello")])


if __name__ == "__main__":
    unittest.main()
