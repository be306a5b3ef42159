"""Puts KPL-aggregated records written by AWS's own aggregation library
(aws-kinesis-agg, PyPI) through boto3, as a Python producer using the KPL
format would.

usage: kpl_put.py ENDPOINT STREAM AGGREGATES PER_AGGREGATE [POISON_AGG:POISON_INDEX] [--corrupt]

User record n (counting from 0) has partition key k{n % 7} and data n-{n};
the poison user record's data is `fail` (the faulty plugin fails on it).
--corrupt adds one record with the magic bytes but a bad digest. Prints the
number of user records put.
"""
import sys

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator

endpoint, stream, aggregates, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rest = sys.argv[5:]
corrupt = "--corrupt" in rest
poison = next((tuple(int(x) for x in a.split(":")) for a in rest if ":" in a), None)
client = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
n = 0
for a in range(aggregates):
    aggregator = RecordAggregator()
    for i in range(per):
        data = "fail" if poison == (a, i) else f"n-{n}"
        full = aggregator.add_user_record(f"k{n % 7}", data.encode())
        assert full is None, "one aggregate per round"
        n += 1
    partition_key, explicit_hash_key, blob = aggregator.clear_and_get().get_contents()
    extra = {"ExplicitHashKey": explicit_hash_key} if explicit_hash_key else {}
    client.put_record(StreamName=stream, Data=blob, PartitionKey=partition_key, **extra)
if corrupt:
    bad = b"\xf3\x89\x9a\xc2" + b"not an aggregate" + bytes(16)
    client.put_record(StreamName=stream, Data=bad, PartitionKey="junk")
print(n)
