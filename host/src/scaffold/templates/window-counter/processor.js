// {{name}}: counts records per partition key in windows of the record's
// own time (the timestamp its data starts with, else its arrival) and,
// after each batch, emits each count that changed (start from here):
// {"window_start":"2018-07-29T22:35:00Z","key":"8.8.8.8","count":2}
//
// Config (JSON, all optional): {"window_seconds": 60, "keep_windows": 60}.
// The counts are the state: snapshot/restore carry them across restarts
// and hot swaps, a split keeps each child's own keys, a merge adds both
// parents'.
import { Processor, formatTimestampMillis, jsonRestore, jsonSnapshot, windowStart } from 'kinesis-processor';

const SETTINGS = ['window_seconds', 'keep_windows'];

// Keys go out in code point order, as in Rust and Python (`<` on strings
// compares UTF-16 units, another order for some keys beyond U+FFFF).
const byCodePoint = (a, b) => {
  const [x, y] = [[...a], [...b]];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i].codePointAt(0) - y[i].codePointAt(0);
  }
  return x.length - y.length;
};

function whole(config, name) {
  const value = config[name] ?? 60;
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`invalid config: \`${name}\` must be a whole number of at least 1, not ${JSON.stringify(value)}`);
  }
  return value;
}

export class App extends Processor {
  static get processorName() { return '{{name}}'; }
  // Bump it when the layout of `snapshot` changes (and read the old one in `restore`).
  static get stateVersion() { return 1; }

  constructor(config, shard) {
    super(config, shard);
    const unknown = Object.keys(config).filter((k) => !SETTINGS.includes(k));
    if (unknown.length) throw new Error(`invalid config: unknown setting(s) ${unknown.join(', ')}`);
    this.windowMillis = whole(config, 'window_seconds') * 1000;
    this.keepWindows = whole(config, 'keep_windows');
    // Window start (ms since the epoch) -> Map(partition key -> count): the state.
    this.counts = new Map();
  }

  add(window, key, n) {
    if (!this.counts.has(window)) this.counts.set(window, new Map());
    const keys = this.counts.get(window);
    keys.set(key, (keys.get(key) ?? 0) + n);
  }

  process(batch, out) {
    const changed = new Map(); // window -> Set(key)
    for (const record of batch) {
      const time = record.leadingTimestamp() ?? record.approximateArrival;
      const window = windowStart(time, this.windowMillis);
      this.add(window, record.partitionKey, 1);
      if (!changed.has(window)) changed.set(window, new Set());
      changed.get(window).add(record.partitionKey);
    }
    for (const window of [...changed.keys()].sort((a, b) => a - b)) {
      const start = formatTimestampMillis(window);
      for (const key of [...changed.get(window)].sort(byCodePoint)) {
        out.emit(key, `{"window_start":"${start}","key":${JSON.stringify(key)},"count":${this.counts.get(window).get(key)}}`);
      }
    }
    // Windows too old to change again are forgotten (the state stays small).
    if (this.counts.size) {
      const oldestKept = Math.max(...this.counts.keys()) - this.keepWindows * this.windowMillis;
      for (const window of [...this.counts.keys()]) if (window <= oldestKept) this.counts.delete(window);
    }
  }

  snapshot() {
    // JSON object keys are strings: window starts go as decimal text.
    const state = {};
    for (const [window, keys] of this.counts) state[window] = Object.fromEntries(keys);
    return jsonSnapshot(state);
  }

  restore(data, version) {
    this.counts = new Map();
    for (const [window, keys] of Object.entries(jsonRestore(data, version, App.stateVersion, {}))) {
      for (const [key, count] of Object.entries(keys)) if (this.shard.ownsKey(key)) this.add(Number(window), key, count);
    }
  }

  merge(parents) {
    this.counts = new Map();
    for (const parent of parents) {
      for (const [window, keys] of Object.entries(jsonRestore(parent.data, parent.version, App.stateVersion, {}))) {
        for (const [key, count] of Object.entries(keys)) this.add(Number(window), key, count);
      }
    }
  }
}
