// Counter: counts records per key in fixed windows of the record's own time
// and, after each batch, emits the counts that changed: the JavaScript twin
// of the Rust counter (plugins/counter), with the same config, output and
// state layout, so either can take over the other's state in a hot swap.
//
// Config (JSON, all optional): `key_field`, `time_field`, `event_time`
// ("auto" | "arrival"), `window_seconds` (60), `retention_windows` (1440).
// Output per changed (window, key):
// {"window_start":"2018-07-29T22:36:00Z","key":"8.8.8.8","count":7}
import {
  HashKeyRange, ProcessError, Processor, formatTimestampMillis, parseTimestampMillis,
} from 'kinesis-processor';
import { exports } from 'kinesis-processor/component';

const SETTINGS = ['key_field', 'time_field', 'event_time', 'window_seconds', 'retention_windows'];
const utf8 = new TextDecoder();
const encoder = new TextEncoder();

function wholeSetting(config, name, fallback, min) {
  const v = config[name] ?? fallback;
  if (!Number.isInteger(v) || v < min) throw new Error(`invalid counter config: \`${name}\` must be a whole number of at least ${min}, not ${JSON.stringify(v)}`);
  return v;
}

// Keys are emitted in UTF-8 byte order (as the Rust counter sorts them),
// which is code point order. JavaScript's `<` compares UTF-16 units, the
// same order unless a key holds a surrogate pair or a char from U+E000.
const codePoints = (a, b) => {
  const [x, y] = [[...a], [...b]];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i].codePointAt(0) - y[i].codePointAt(0);
  return x.length - y.length;
};
const units = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const HIGH = /[\ud800-\uffff]/;
const sortKeys = (keys) => keys.sort(keys.some((k) => HIGH.test(k)) ? codePoints : units);

class Counter extends Processor {
  static get processorName() { return 'counter'; }
  static get stateVersion() { return 1; }

  constructor(config, shard) {
    super(config, shard);
    if (typeof config !== 'object' || Array.isArray(config)) throw new Error('invalid counter config: expected a JSON object');
    const unknown = Object.keys(config).filter((k) => !SETTINGS.includes(k));
    if (unknown.length) throw new Error(`invalid counter config: unknown setting(s) ${unknown.join(', ')}`);
    this.keyField = config.key_field;
    if (this.keyField === '') throw new Error('`key_field` must not be empty');
    this.timeField = config.time_field;
    const eventTime = config.event_time ?? 'auto';
    if (!['auto', 'arrival'].includes(eventTime)) throw new Error(`\`event_time\` must be "auto" or "arrival", not ${JSON.stringify(eventTime)}`);
    if (eventTime === 'arrival' && this.timeField !== undefined) throw new Error('`event_time: "arrival"` and `time_field` contradict each other; keep one');
    this.arrivalOnly = eventTime === 'arrival';
    this.windowMillis = wholeSetting(config, 'window_seconds', 60, 1) * 1000;
    this.retention = wholeSetting(config, 'retention_windows', 1440, 1);
    this.counts = new Map(); // window -> Map(key -> count)
    this.changed = new Map(); // window -> Set(key)
    this.frozen = new Map(); // window -> its JSON in the snapshot, while unchanged
    this.newest = null;
  }

  // Record i of the batch, read in place (`batch.partitionKey(i)`, ...):
  // no Record object per record, the fast path in the component.

  /** Record i's JSON fields, when a setting reads them (else null). */
  fields(batch, i) {
    if (this.keyField === undefined && this.timeField === undefined) return null;
    let fields;
    try {
      fields = JSON.parse(batch.text(i));
    } catch {
      return null;
    }
    return fields !== null && typeof fields === 'object' && !Array.isArray(fields) ? fields : null;
  }

  timeOf(batch, i, fields) {
    if (this.arrivalOnly) return batch.approximateArrival(i);
    if (this.timeField !== undefined) {
      const v = fields ? fields[this.timeField] : undefined;
      if (typeof v === 'string') return parseTimestampMillis(v) ?? batch.approximateArrival(i);
      if (Number.isInteger(v)) return v;
      return batch.approximateArrival(i);
    }
    return batch.leadingTimestamp(i) ?? batch.approximateArrival(i);
  }

  /** The key counted, or null when the record has none. */
  keyOf(batch, i, fields) {
    if (this.keyField === undefined) return batch.partitionKey(i);
    const v = fields ? fields[this.keyField] : undefined;
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : JSON.stringify(v);
    return null;
  }

  emitChanged(out) {
    for (const window of [...this.changed.keys()].sort((a, b) => a - b)) {
      const counts = this.counts.get(window);
      const head = `{"window_start":"${formatTimestampMillis(window)}","key":`;
      for (const key of sortKeys([...this.changed.get(window)])) out.emit(key, `${head}${JSON.stringify(key)},"count":${counts.get(key)}}`);
    }
    this.changed.clear();
  }

  add(window, key, n) {
    if (!this.counts.has(window)) this.counts.set(window, new Map());
    const counts = this.counts.get(window);
    counts.set(key, (counts.get(key) ?? 0) + n);
  }

  process(batch, out) {
    const size = this.windowMillis;
    // The window of the last record, with its maps: consecutive records
    // mostly share it.
    let window = null, counts = null, changed = null;
    for (let i = 0; i < batch.length; i++) {
      const fields = this.fields(batch, i);
      const key = this.keyOf(batch, i, fields);
      if (key === null) {
        // Keep what the records before it counted, then name the poison record.
        this.emitChanged(out);
        throw ProcessError.at(i, `record data is not a JSON object with a string or number field \`${this.keyField}\``);
      }
      const time = this.timeOf(batch, i, fields);
      const w = time - (((time % size) + size) % size);
      if (w !== window) {
        window = w;
        this.frozen.delete(w);
        if (!this.counts.has(w)) this.counts.set(w, new Map());
        if (!this.changed.has(w)) this.changed.set(w, new Set());
        counts = this.counts.get(w);
        changed = this.changed.get(w);
        if (this.newest === null || w > this.newest) this.newest = w;
      }
      counts.set(key, (counts.get(key) ?? 0) + 1);
      changed.add(key);
    }
    this.emitChanged(out);
    if (this.newest !== null) {
      const oldestKept = this.newest - this.retention * size;
      for (const w of [...this.counts.keys()]) if (w <= oldestKept) {
        this.counts.delete(w);
        this.frozen.delete(w);
      }
    }
  }

  // A snapshot is taken after every batch and holds every window kept (a
  // day of them by default), while a batch changes one or two: each
  // window's JSON is kept until it changes, so a snapshot costs a join.
  snapshot() {
    const parts = [];
    for (const w of [...this.counts.keys()].sort((a, b) => a - b)) {
      let text = this.frozen.get(w);
      if (text === undefined) {
        const cells = this.counts.get(w);
        text = JSON.stringify([w, sortKeys([...cells.keys()]).map((k) => [k, cells.get(k)])]);
        this.frozen.set(w, text);
      }
      parts.push(text);
    }
    const r = this.shard.hashKeyRange;
    return encoder.encode(`{"windows":[${parts.join(',')}],"range":["${r.start}","${r.end}"]}`);
  }

  load(data, version, what = 'counter state') {
    if (version !== Counter.stateVersion) throw new Error(`counter cannot read state version ${version} (it writes ${Counter.stateVersion})`);
    let state;
    try {
      state = JSON.parse(utf8.decode(data));
    } catch (e) {
      throw new Error(`${what} is corrupt: ${e.message}`);
    }
    if (!Array.isArray(state?.windows)) throw new Error(`${what} is corrupt: no windows`);
    return state;
  }

  restore(data, version) {
    const state = this.load(data, version);
    this.counts = new Map();
    this.frozen = new Map();
    for (const [w, cells] of state.windows) for (const [k, c] of cells) this.add(w, k, c);
    this.newest = state.windows.length ? Math.max(...state.windows.map(([w]) => w)) : null;
    // After a split: keep this shard's share (see the Rust counter).
    const mine = this.shard.hashKeyRange;
    const parent = state.range ? new HashKeyRange(BigInt(state.range[0]), BigInt(state.range[1])) : null;
    if ((parent && parent.start === mine.start && parent.end === mine.end) || mine.isFull()) return;
    if (this.keyField === undefined) {
      for (const counts of this.counts.values()) for (const key of [...counts.keys()]) if (!this.shard.ownsKey(key)) counts.delete(key);
    } else if (parent && !(mine.start <= parent.start && parent.start <= mine.end)) {
      this.counts = new Map();
    }
  }

  merge(parents) {
    this.counts = new Map();
    this.frozen = new Map();
    parents.forEach((p, i) => {
      if (!p.data.length) return;
      for (const [w, cells] of this.load(p.data, p.version, `parent ${i}'s state`).windows) for (const [k, c] of cells) this.add(w, k, c);
    });
    this.newest = this.counts.size ? Math.max(...this.counts.keys()) : null;
  }
}

// componentize-js takes the exported interfaces from these names.
export const { processor, merge } = exports(Counter);
