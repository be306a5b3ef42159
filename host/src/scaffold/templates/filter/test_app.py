"""Unit tests in plain Python: `python3 -m unittest` (no component needed)."""

import unittest

from app import App
from kinesis_processor import BatchBuilder, Output, ProcessError, ShardContext


def run(config, records):
    app = App(config, ShardContext())
    batch = BatchBuilder()
    for data in records:
        batch.push("web-1", data)
    out = Output()
    error = None
    try:
        app.process(batch.batch(), out)
    except ProcessError as e:
        error = e
    return [data.decode() for _, data in out], error


class AppTest(unittest.TestCase):
    def test_keeps_the_records_whose_field_matches(self):
        kept, error = run({}, ['{"level":"INFO"}', '{"level":"ERROR","msg":"x"}', '{"msg":"no level"}'])
        self.assertIsNone(error)
        self.assertEqual(kept, ['{"level":"ERROR","msg":"x"}'])
        kept, _ = run({"field": "status", "keep": [500, 503]}, ['{"status":503}', '{"status":200}'])
        self.assertEqual(kept, ['{"status":503}'])

    def test_refuses_a_record_that_is_not_json_naming_it(self):
        kept, error = run({}, ['{"level":"ERROR"}', "not json"])
        self.assertEqual(len(kept), 1, "the record before it is done")
        self.assertEqual(error.record_index, 1)

    def test_a_typo_in_the_config_is_an_error(self):
        with self.assertRaises(ValueError):
            App({"feild": "level"}, ShardContext())


if __name__ == "__main__":
    unittest.main()
