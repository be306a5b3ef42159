// Unit tests under Node: `node --test` (no component needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchBuilder, Output, ProcessError, ShardContext } from 'kinesis-processor';
import { App } from './processor.js';

function run(config, records) {
  const app = new App(config, new ShardContext());
  const batch = new BatchBuilder();
  for (const data of records) batch.push('web-1', data);
  const out = new Output();
  let error = null;
  try {
    app.process(batch.batch(), out);
  } catch (e) {
    if (!(e instanceof ProcessError)) throw e;
    error = e;
  }
  return [[...out].map(([, d]) => new TextDecoder().decode(d)), error];
}

test('keeps the records whose field matches', () => {
  const [kept, error] = run({}, ['{"level":"INFO"}', '{"level":"ERROR","msg":"x"}', '{"msg":"no level"}']);
  assert.equal(error, null);
  assert.deepEqual(kept, ['{"level":"ERROR","msg":"x"}']);
  const [status] = run({ field: 'status', keep: [500, 503] }, ['{"status":503}', '{"status":200}']);
  assert.deepEqual(status, ['{"status":503}']);
});

test('refuses a record that is not JSON, naming it', () => {
  const [kept, error] = run({}, ['{"level":"ERROR"}', 'not json']);
  assert.equal(kept.length, 1, 'the record before it is done');
  assert.equal(error.recordIndex, 1);
});

test('a typo in the config is an error', () => {
  assert.throws(() => new App({ feild: 'level' }, new ShardContext()), /unknown setting/);
});
