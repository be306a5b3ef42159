// Adapts a Processor class to the component's exports (componentize-js).
// One processor per instance, in a module variable. A `ProcessError` is a
// failure on purpose; any other exception is a bug: its type, message and
// place go to stderr (the host's error line shows them), then the call
// traps, and the host's failure policy retries and bisects.

import { emitBatch, log as hostLog, nowMillis as hostNow } from 'kinesis:processor/host@0.2.0';
import { Batch, HashKeyRange, Output, ProcessError, ShardContext, Snapshot, isBytes, setHost } from './core.js';

/** What every way to the network does in the sandbox: say so, where it is called. */
function noNetwork() {
  throw new Error('there is no network in the sandbox: a processor cannot fetch or open connections (emit what you would send; the host\'s sink delivers it)');
}
globalThis.fetch = noNetwork;

/** A stack frame (`process@app.bundle.js:362:9`) in the author's terms:
 * the file and line the bundle's line came from (build.mjs' table). */
function place(frame) {
  const m = /^(.*)@(.*\.bundle\.js):(\d+):\d+$/.exec(frame);
  const table = globalThis.__kinesisSourceLines;
  const hit = m && table ? table.lines[Number(m[3]) - 1] : null;
  // A frame it cannot map is nobody's for sure: an author's frame wins over it.
  if (!hit) return { text: frame, sdk: true };
  return { text: `${m[1]}@${table.sources[hit[0]]}:${hit[1]}`, sdk: table.sdk[hit[0]] };
}

/** `TypeError: x is undefined (process@processor.js:12)`: the first frame
 * in the author's code (not the SDK's). */
function describe(e) {
  if (!(e instanceof Error)) return `thrown ${typeof e}: ${String(e)}`;
  const frames = String(e.stack || '').split('\n').map((l) => l.trim()).filter(Boolean).map(place);
  const frame = frames.find((f) => !f.sdk) ?? frames[0];
  return `${e.name}: ${e.message}${frame ? ` (${frame.text})` : ''}`;
}

/** A bug: said on stderr, then a trap (a thrown value the binding cannot
 * turn into the call's error type). */
function crash(e) {
  console.error(`Uncaught ${describe(e)}`);
  throw Symbol('crash');
}

export function exports(cls) {
  let processor = null;
  const out = new Output();
  setHost({ log: hostLog, nowMillis: () => Number(hostNow()) });

  const flush = () => {
    if (out.count) emitBatch({ payload: out.payload.bytes(), index: out.index.bytes() });
    out.clear();
  };
  // Runs a method that may emit: a ProcessError is the call's error result.
  const call = (f) => {
    out.clear();
    try {
      f();
    } catch (e) {
      if (e instanceof ProcessError) {
        flush();
        throw { retryable: e.retryable, message: e.message, recordIndex: e.recordIndex };
      }
      crash(e);
    }
    flush();
  };
  // Runs `f`; an exception is the call's error string (init/restore/merge).
  const refusing = (what, f) => {
    try {
      return f();
    } catch (e) {
      throw `${what}: ${describe(e)}`;
    }
  };

  const processorExport = {
    init(config, context) {
      let parsed;
      try {
        parsed = config.trim() ? JSON.parse(config) : {};
      } catch (e) {
        throw `invalid config (not JSON): ${e.message}`;
      }
      const r = context.hashKeyRange;
      const shard = new ShardContext({
        stream: context.streamName,
        shardId: context.shardId,
        application: context.application,
        hashKeyRange: new HashKeyRange(BigInt(r.startingHashKey), BigInt(r.endingHashKey)),
        parents: context.parentShardIds,
      });
      processor = refusing('init failed', () => new cls(parsed, shard));
      return { name: cls.processorName, stateVersion: cls.stateVersion };
    },
    process(batch) {
      const view = new Batch(batch.payload, batch.index, batch.millisBehindLatest);
      call(() => processor.process(view, out));
    },
    onTimer(now) {
      call(() => processor.onTimer(Number(now), out));
    },
    snapshot() {
      let data;
      try {
        data = processor.snapshot();
        if (data != null && !isBytes(data)) {
          throw new TypeError(`snapshot() must return a Uint8Array, not ${typeof data} (jsonSnapshot(value) makes one of a JSON-able value)`);
        }
      } catch (e) {
        crash(e);
      }
      return { version: cls.stateVersion, bytes: data || new Uint8Array(0) };
    },
    restore(state) {
      refusing('restore refused the state', () => processor.restore(state.bytes, state.version));
    },
    shutdown(reason) {
      out.clear();
      try {
        processor.shutdown(reason, out);
      } catch (e) {
        crash(e);
      }
      flush();
    },
  };
  const mergeExport = {
    merge(parents) {
      const states = parents.map((s) => new Snapshot(s.version, s.bytes));
      refusing("merge refused the parents' states", () => processor.merge(states));
    },
  };
  return { processor: processorExport, merge: mergeExport };
}
