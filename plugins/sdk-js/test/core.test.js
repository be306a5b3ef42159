import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BatchBuilder, Output, hashKey, parseTimestampMillis, parseLeadingTimestamp, formatTimestampMillis, windowStart } from '../src/core.js';
import { md5 } from '../src/md5.js';

test('md5 matches node', () => {
  for (const s of ['', 'a', '8.8.8.8', 'x'.repeat(55), 'y'.repeat(56), 'z'.repeat(64), 'é'.repeat(100)]) {
    const want = createHash('md5').update(s).digest('hex');
    assert.equal(Buffer.from(md5(new TextEncoder().encode(s))).toString('hex'), want, s);
  }
  assert.equal(hashKey(''), BigInt('0xd41d8cd98f00b204e9800998ecf8427e'));
});

test('time rules are the Rust SDK\'s', () => {
  assert.equal(parseTimestampMillis('2018-07-29T22:35:46.694763'), 1532903746694);
  assert.equal(parseTimestampMillis('  2018-07-29 22:35:46.6\n'), 1532903746600);
  assert.equal(parseTimestampMillis('2019-06-22T19:20:27+02:00'), 1561231227000 - 7200000);
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35:46Z GET /'), 1532903746000);
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35:46Zx'), null);
  assert.equal(formatTimestampMillis(1532903760000), '2018-07-29T22:36:00Z');
  assert.equal(formatTimestampMillis(-1), '1969-12-31T23:59:59.999Z');
  assert.equal(windowStart(-1, 60000), -60000);
});

test('batches and output round-trip', () => {
  const batch = new BatchBuilder().push('k', 'hello', 1700000000123, 2).push('é', new Uint8Array([0, 255]), 5).batch();
  const records = [...batch];
  assert.equal(records.length, 2);
  assert.equal(records[0].partitionKey, 'k');
  assert.equal(records[0].text, 'hello');
  assert.equal(records[0].approximateArrival, 1700000000123);
  assert.equal(records[0].subSequenceNumber, 2);
  assert.deepEqual([...records[1].data], [0, 255]);
  const out = new Output();
  out.emit('a', 'x');
  out.emit('b', new Uint8Array([1, 2]));
  assert.deepEqual([...out].map(([k, d]) => [k, [...d]]), [['a', [120]], ['b', [1, 2]]]);
});
