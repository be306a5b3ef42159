import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Batch, BatchBuilder, Output, Processor, Snapshot, hashKey, parseTimestampMillis, parseLeadingTimestamp, formatTimestampMillis, windowStart } from '../src/core.js';
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
  // A fraction needs digits, though `,` alone may end a leading timestamp.
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35:46, GET'), null);
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35, GET'), 1532903700000);
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35:46+02'), 1532903746000 - 7200000);
  assert.equal(parseLeadingTimestamp('2018-07-29T22:35:46+0'), null);
  assert.equal(parseTimestampMillis('2018-02-30T00:00'), null);
  // The last date is memoised: a new one must not reuse its day.
  for (const [text, want] of [['2018-07-29T00:00', 1532822400000], ['2027-07-29T00:00', 1816819200000], ['2018-07-29T00:00', 1532822400000]]) {
    assert.equal(parseTimestampMillis(text), want, text);
  }
  // Part of a buffer, as `batch.leadingTimestamp(i)` parses in place.
  const bytes = new TextEncoder().encode('xx2018-07-29T22:35:46Zyy');
  assert.equal(parseLeadingTimestamp(bytes, 2, 22), 1532903746000);
  assert.equal(parseLeadingTimestamp(bytes, 2, 23), null);
});

test('indexed reads match records, and an unaligned index is read right', () => {
  const built = new BatchBuilder().push('k', '2018-07-29T22:35:46Z a', -1500, 2 ** 40 + 3).push('ü', 'b', 2 ** 41 + 7).batch();
  const index = new Uint8Array(built._u32.buffer, built._u32.byteOffset, built._u32.byteLength);
  const shifted = new Uint8Array(index.length + 1);
  shifted.set(index, 1);
  for (const batch of [built, new Batch(built._p, shifted.subarray(1))]) {
    const records = [...batch];
    assert.deepEqual(records.map((r) => r.partitionKey), ['k', 'ü']);
    assert.deepEqual(records.map((r) => r.approximateArrival), [-1500, 2 ** 41 + 7]);
    assert.deepEqual(records.map((r) => r.subSequenceNumber), [2 ** 40 + 3, 0]);
    assert.deepEqual([0, 1].map((i) => batch.text(i)), ['2018-07-29T22:35:46Z a', 'b']);
    assert.deepEqual([0, 1].map((i) => batch.leadingTimestamp(i)), [1532903746000, null]);
    assert.equal(records[1].sequenceNumber, '49000001');
  }
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
  out.emit('é', '€'.repeat(3000));
  const got = [...out];
  assert.deepEqual(got.slice(0, 2).map(([k, d]) => [k, [...d]]), [['a', [120]], ['b', [1, 2]]]);
  assert.deepEqual([got[2][0], new TextDecoder().decode(got[2][1])], ['é', '€'.repeat(3000)]);
});

test('the default merge restores one parent with state and refuses two (restore would keep only the last)', () => {
  class Replacing extends Processor {
    restore(data) { this.state = data; }
  }
  const child = new Replacing({}, {});
  child.merge([new Snapshot(1, new Uint8Array(0)), new Snapshot(1, new Uint8Array([1]))]);
  assert.deepEqual([...child.state], [1]);
  assert.throws(() => new Replacing({}, {}).merge([new Snapshot(1, new Uint8Array([1])), new Snapshot(1, new Uint8Array([2]))]), /does not define merge/);
});

test('a wrong key or data type is named where it is emitted', () => {
  const out = new Output();
  assert.throws(() => out.emit(7, 'x'), /the key must be a string, not a number/);
  assert.throws(() => out.emit('k', { a: 1 }), /data must be a string or a Uint8Array, not an object \(Object\)/);
  assert.throws(() => out.emit('k', [1]), /not an array/);
  out.emit('k', new Uint8Array([111, 107]));
  assert.deepEqual([...out].map(([k, d]) => [k, new TextDecoder().decode(d)]), [['k', 'ok']]);
});
