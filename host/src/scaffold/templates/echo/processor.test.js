// Unit tests under Node: `node --test` (no component needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchBuilder, Output, ShardContext } from 'kinesis-processor';
import { App } from './processor.js';

test('echoes each record', () => {
  const app = new App({}, new ShardContext());
  const out = new Output();
  app.process(new BatchBuilder().push('8.8.8.8', 'hello').batch(), out);
  assert.deepEqual([...out].map(([k, d]) => [k, new TextDecoder().decode(d)]), [['8.8.8.8', '8.8.8.8 : hello']]);
});
