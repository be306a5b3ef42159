"""Seed 001's boto3 session, adapted to an endpoint given on the command line.

Does what the seed does against kinesalite: list, create, describe, put a JSON
record, produce 25 JSON documents, read them back 5 at a time from
TRIM_HORIZON, then LATEST, and delete the stream. Prints one JSON summary;
exits non-zero at the first thing that is not as the seed shows it.
"""
import json
import random
import sys
import time

import boto3

endpoint = sys.argv[1]
stream = sys.argv[2] if len(sys.argv) > 2 else "mystream"
names = ["james", "stefan", "pete", "tom", "frank", "peter", "ruan"]

client = boto3.Session(region_name="eu-west-1").client(
    "kinesis", aws_access_key_id="local", aws_secret_access_key="local", endpoint_url=endpoint
)


def check(condition, what):
    if not condition:
        print(f"seed 001 step failed: {what}", file=sys.stderr)
        sys.exit(1)


before = client.list_streams()["StreamNames"]
check(stream not in before, f"{stream} already exists: {before}")
client.create_stream(StreamName=stream, ShardCount=1)
for _ in range(100):
    status = client.describe_stream(StreamName=stream)["StreamDescription"]["StreamStatus"]
    if status == "ACTIVE":
        break
    time.sleep(0.1)
check(status == "ACTIVE", f"stream status {status}")
check(stream in client.list_streams()["StreamNames"], "the new stream is listed")

response = client.put_record(StreamName=stream, Data=json.dumps({"name": "ruan"}), PartitionKey="a01")
shard_id = response["ShardId"]
check(response["SequenceNumber"], "put_record returns a sequence number")

for count in range(1, 26):
    client.put_record(
        StreamName=stream,
        Data=json.dumps({"number": count, "name": random.choice(names), "age": random.randint(20, 50)}),
        PartitionKey="a01",
    )

shard_id = client.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][0]["ShardId"]
iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
documents = []
for _ in range(20):
    response = client.get_records(ShardIterator=iterator, Limit=5)
    check(len(response["Records"]) <= 5, "get_records honours Limit=5")
    iterator = response["NextShardIterator"]
    documents += [json.loads(r["Data"]) for r in response["Records"] if "Data" in r and len(r["Data"]) > 0]
    if len(documents) >= 26:
        break
check(documents[0] == {"name": "ruan"}, f"first record: {documents[0]}")
check([d["number"] for d in documents[1:]] == list(range(1, 26)), "the 25 documents, in order")
check(all(set(d) == {"number", "name", "age"} for d in documents[1:]), "document fields")

latest = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="LATEST")["ShardIterator"]
check(client.get_records(ShardIterator=latest)["Records"] == [], "LATEST sees nothing old")

client.delete_stream(StreamName=stream)
for _ in range(100):
    if stream not in client.list_streams()["StreamNames"]:
        break
    time.sleep(0.1)
check(stream not in client.list_streams()["StreamNames"], "the stream is deleted")
print(json.dumps({"records_read": len(documents), "shard_id": shard_id}))
