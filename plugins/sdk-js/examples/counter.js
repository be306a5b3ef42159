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
  HashKeyRange, ProcessError, Processor, formatTimestampMillis, jsonSnapshot, parseLeadingTimestamp, parseTimestampMillis,
} from 'kinesis-processor';
import { exports } from 'kinesis-processor/component';

const SETTINGS = ['key_field', 'time_field', 'event_time', 'window_seconds', 'retention_windows'];
const utf8 = new TextDecoder();

function wholeSetting(config, name, fallback, min) {
  const v = config[name] ?? fallback;
  if (!Number.isInteger(v) || v < min) throw new Error(`invalid counter config: \`${name}\` must be a whole number of at least ${min}, not ${JSON.stringify(v)}`);
  return v;
}

// Keys compare as UTF-8 bytes do (as the Rust counter sorts them).
const byBytes = (a, b) => {
  const [x, y] = [new TextEncoder().encode(a), new TextEncoder().encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
};

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
    this.newest = null;
  }

  keyAndTime(record) {
    const arrival = record.approximateArrival;
    const data = record.data;
    let fields = null;
    if (this.keyField !== undefined || this.timeField !== undefined) {
      try {
        fields = JSON.parse(utf8.decode(data));
      } catch {
        fields = null;
      }
      if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) fields = null;
    }
    let time;
    if (this.arrivalOnly) time = arrival;
    else if (this.timeField !== undefined) {
      const v = fields ? fields[this.timeField] : undefined;
      if (typeof v === 'string') time = parseTimestampMillis(v) ?? arrival;
      else if (Number.isInteger(v)) time = v;
      else time = arrival;
    } else time = parseLeadingTimestamp(data) ?? arrival;
    if (this.keyField === undefined) return [record.partitionKey, time];
    const v = fields ? fields[this.keyField] : undefined;
    if (typeof v === 'string') return [v, time];
    if (typeof v === 'number') return [Number.isInteger(v) ? String(v) : JSON.stringify(v), time];
    return [null, time];
  }

  emitChanged(out) {
    for (const window of [...this.changed.keys()].sort((a, b) => a - b)) {
      const counts = this.counts.get(window);
      for (const key of [...this.changed.get(window)].sort(byBytes)) {
        out.emit(key, `{"window_start":"${formatTimestampMillis(window)}","key":${JSON.stringify(key)},"count":${counts.get(key)}}`);
      }
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
    let index = 0;
    for (const record of batch) {
      const [key, time] = this.keyAndTime(record);
      if (key === null) {
        // Keep what the records before it counted, then name the poison record.
        this.emitChanged(out);
        throw ProcessError.at(index, `record data is not a JSON object with a string or number field \`${this.keyField}\``);
      }
      const window = time - (((time % size) + size) % size);
      this.add(window, key, 1);
      if (!this.changed.has(window)) this.changed.set(window, new Set());
      this.changed.get(window).add(key);
      this.newest = this.newest === null ? window : Math.max(this.newest, window);
      index++;
    }
    this.emitChanged(out);
    if (this.newest !== null) {
      const oldestKept = this.newest - this.retention * size;
      for (const window of [...this.counts.keys()]) if (window <= oldestKept) this.counts.delete(window);
    }
  }

  snapshot() {
    const windows = [...this.counts.keys()].sort((a, b) => a - b).map((w) => [w, [...this.counts.get(w)].sort((a, b) => byBytes(a[0], b[0]))]);
    const r = this.shard.hashKeyRange;
    return jsonSnapshot({ windows, range: [String(r.start), String(r.end)] });
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
    parents.forEach((p, i) => {
      if (!p.data.length) return;
      for (const [w, cells] of this.load(p.data, p.version, `parent ${i}'s state`).windows) for (const [k, c] of cells) this.add(w, k, c);
    });
    this.newest = this.counts.size ? Math.max(...this.counts.keys()) : null;
  }
}

// componentize-js takes the exported interfaces from these names.
export const { processor, merge } = exports(Counter);
