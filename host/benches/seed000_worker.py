#!/usr/bin/env python3
"""Seed 000's KinesisWorker + CounterWorker, ported from boto to boto3 with
an endpoint URL: the baseline `host bench-stream` compares `host run` with.

Reads every shard from TRIM_HORIZON like the seed (get_records in a loop,
counting per IP per minute of the data's timestamp, with dateutil's parser
as the seed does when it is installed), but without the seed's sleeps while
records keep coming, so it measures the worker, not its pauses. Prints one
JSON line: {"records": N, "seconds": S}.
"""
import argparse
import json
import time
from collections import Counter, defaultdict

import boto3

try:
    from dateutil import parser as date_parser

    def parse_time(text):
        return date_parser.parse(text)
except ImportError:  # the seed uses dateutil; fall back to the stdlib's parser
    from datetime import datetime

    def parse_time(text):
        return datetime.fromisoformat(text.rstrip("Z"))


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--endpoint-url", required=True)
    args.add_argument("--stream", required=True)
    args.add_argument("--records", type=int, required=True)
    args.add_argument("--limit", type=int, default=10000)
    opts = args.parse_args()
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=opts.endpoint_url,
                           aws_access_key_id="local", aws_secret_access_key="local")
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=opts.stream)["Shards"]]
    time_buckets = defaultdict(Counter)
    seen = 0
    start = time.monotonic()
    iterators = {s: kinesis.get_shard_iterator(StreamName=opts.stream, ShardId=s,
                                               ShardIteratorType="TRIM_HORIZON")["ShardIterator"] for s in shards}
    while seen < opts.records:
        for shard, iterator in list(iterators.items()):
            response = kinesis.get_records(ShardIterator=iterator, Limit=opts.limit)
            for record in response["Records"]:
                ip_addr = record["PartitionKey"]
                # The data is an access-log line that begins with its timestamp.
                timestamp = parse_time(record["Data"].decode().split(" ", 1)[0]).replace(second=0, microsecond=0)
                time_buckets[timestamp][ip_addr] += 1
                seen += 1
            iterators[shard] = response["NextShardIterator"]
    print(json.dumps({"records": seen, "seconds": time.monotonic() - start}))


if __name__ == "__main__":
    main()
