// Unit tests under Node: `node --test` (no component needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchBuilder, HashKeyRange, Output, ShardContext, Snapshot } from 'kinesis-processor';
import { App } from './processor.js';

function process(app, records) {
  const batch = new BatchBuilder();
  for (const [key, data] of records) batch.push(key, data);
  const out = new Output();
  app.process(batch.batch(), out);
  return [...out].map(([, d]) => new TextDecoder().decode(d));
}

test('counts per key and window across batches', () => {
  const app = new App({}, new ShardContext());
  const first = process(app, [['a', '2018-07-29T22:35:46Z x'], ['b', '2018-07-29T22:35:50Z y']]);
  assert.equal(first.length, 2);
  const second = process(app, [['a', '2018-07-29T22:35:59Z z']]);
  assert.deepEqual(second, ['{"window_start":"2018-07-29T22:35:00Z","key":"a","count":2}']);
});

test('state survives a restart and merges add up', () => {
  const app = new App({}, new ShardContext());
  process(app, [['a', '2018-07-29T22:35:46Z'], ['a', '2018-07-29T22:35:47Z']]);
  const state = app.snapshot();
  const again = new App({}, new ShardContext());
  again.restore(state, App.stateVersion);
  assert.match(process(again, [['a', '2018-07-29T22:35:48Z']])[0], /"count":3/);
  const merged = new App({}, new ShardContext());
  const parent = new Snapshot(App.stateVersion, state);
  merged.merge([parent, parent]);
  assert.match(process(merged, [['a', '2018-07-29T22:35:49Z']])[0], /"count":5/);
});

test('a split child keeps only its own keys', () => {
  const app = new App({}, new ShardContext());
  process(app, [['a', '2018-07-29T22:35:46Z'], ['b', '2018-07-29T22:35:47Z']]);
  const state = app.snapshot();
  const max = (1n << 128n) - 1n;
  const half = max / 2n;
  let kept = 0;
  for (const [start, end] of [[0n, half], [half + 1n, max]]) {
    const child = new App({}, new ShardContext({ hashKeyRange: new HashKeyRange(start, end) }));
    child.restore(state, App.stateVersion);
    for (const keys of child.counts.values()) kept += keys.size;
  }
  assert.equal(kept, 2, 'each key lives on in exactly one child');
});
