// The JavaScript SDK's core: plain JavaScript, no component imports, so a
// processor's logic runs under Node for unit tests. `component.js` wires it
// to the host.

import { parseLeadingTimestamp } from './time.js';

const ENTRY = 40; // WIT `record-entry`: u32 x6, u64 sub-sequence, s64 arrival
const WORDS = ENTRY / 4;
const utf8 = new TextDecoder('utf-8');
const latin1 = new TextDecoder('latin1');
const encoder = new TextEncoder();

// Two to the 32nd: a u64 / s64 field is read as two u32 halves, since a
// BigInt per record costs more than the record's processing.
const HI = 4294967296;

/** One record of a batch; fields are read from the batch's buffer when asked for. */
export class Record {
  constructor(batch, i) {
    this._b = batch;
    this._i = i;
  }
  /** The partition key (string). */
  get partitionKey() { return this._b.partitionKey(this._i); }
  /** The data (Uint8Array, a view into the batch: copy it to keep it). */
  get data() { return this._b.data(this._i); }
  /** The data as UTF-8 text. */
  get text() { return this._b.text(this._i); }
  get sequenceNumber() { return this._b.sequenceNumber(this._i); }
  /** Position inside a KPL-aggregated record; 0 for plain records. */
  get subSequenceNumber() { return this._b.subSequenceNumber(this._i); }
  /** When Kinesis accepted the record, in ms since the Unix epoch. */
  get approximateArrival() { return this._b.approximateArrival(this._i); }
  /** The timestamp the data is or begins with, or null (`parseLeadingTimestamp`). */
  leadingTimestamp() { return this._b.leadingTimestamp(this._i); }
}

/** u32 words of a byte buffer, copied only when it is not 4-byte aligned.
 * (WebAssembly and every platform Node runs on are little-endian, as the
 * WIT layout is.) */
function words(bytes, Type) {
  const b = bytes.byteOffset % 4 ? bytes.slice() : bytes;
  return new Type(b.buffer, b.byteOffset, b.byteLength / 4);
}

/** Consecutive records of one shard, in order. */
export class Batch {
  constructor(payload, index, millisBehindLatest = 0) {
    if (index.length % ENTRY) throw new Error(`a batch index of ${index.length} bytes is not whole ${ENTRY}-byte entries`);
    this._p = payload;
    this._u32 = words(index, Uint32Array);
    this._i32 = new Int32Array(this._u32.buffer, this._u32.byteOffset, this._u32.length);
    this.length = index.length / ENTRY;
    this.millisBehindLatest = Number(millisBehindLatest);
  }
  // Record i's fields, read in place: `for (let i = 0; i < batch.length; i++)`
  // with these costs no Record object (the fast path in an interpreter,
  // where each call and allocation counts).
  /** Record i's partition key. */
  partitionKey(i) { const u = this._u32, w = i * WORDS; return utf8.decode(this._p.subarray(u[w], u[w] + u[w + 1])); }
  /** Record i's data (a view into the batch: copy it to keep it). */
  data(i) { const u = this._u32, w = i * WORDS + 2; return this._p.subarray(u[w], u[w] + u[w + 1]); }
  /** Record i's data as UTF-8 text. */
  text(i) { const u = this._u32, w = i * WORDS + 2; return utf8.decode(this._p.subarray(u[w], u[w] + u[w + 1])); }
  sequenceNumber(i) { const u = this._u32, w = i * WORDS + 4; return latin1.decode(this._p.subarray(u[w], u[w] + u[w + 1])); }
  subSequenceNumber(i) { const u = this._u32, w = i * WORDS + 6; return u[w] + u[w + 1] * HI; }
  approximateArrival(i) { const w = i * WORDS + 8; return this._u32[w] + this._i32[w + 1] * HI; }
  /** The timestamp record i's data is or begins with, or null; parsed in place. */
  leadingTimestamp(i) { const u = this._u32, w = i * WORDS + 2; return parseLeadingTimestamp(this._p, u[w], u[w] + u[w + 1]); }
  /** Record i as an object. */
  get(i) { return new Record(this, i); }
  [Symbol.iterator]() {
    // A plain iterator: cheaper than a generator in an interpreter.
    const n = this.length;
    let i = 0;
    return { next: () => (i < n ? { value: new Record(this, i++), done: false } : { value: undefined, done: true }) };
  }
}

/** A growable byte buffer. */
class Bytes {
  constructor(size = 4096) { this.buf = new Uint8Array(size); this.len = 0; }
  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }
  push(bytes) { this.reserve(bytes.length); this.buf.set(bytes, this.len); this.len += bytes.length; }
  /** Appends a string as UTF-8; returns its length in bytes. */
  pushText(s) {
    // At most 3 bytes per UTF-16 unit.
    this.reserve(s.length * 3);
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.len));
    this.len += written;
    return written;
  }
  u32(v) { this.reserve(4); new DataView(this.buf.buffer).setUint32(this.len, v, true); this.len += 4; }
  bytes() { return this.buf.slice(0, this.len); }
}

/** A growable list of u32: the output index, WIT `output-entry` = u32 x4. */
class Words {
  constructor(size = 256) { this.buf = new Uint32Array(size); this.len = 0; }
  push4(a, b, c, d) {
    if (this.len + 4 > this.buf.length) {
      const grown = new Uint32Array(this.buf.length * 2);
      grown.set(this.buf);
      this.buf = grown;
    }
    const w = this.buf;
    w[this.len] = a; w[this.len + 1] = b; w[this.len + 2] = c; w[this.len + 3] = d;
    this.len += 4;
  }
  bytes() { return new Uint8Array(this.buf.buffer.slice(0, this.len * 4)); }
}

/** A Uint8Array, whichever global made it (the host's bindings make theirs). */
export function isBytes(v) {
  return Object.prototype.toString.call(v) === '[object Uint8Array]';
}

/** What a wrong argument is, for an error: `an object`, `a number`, `null`. */
function kind(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? `an object (${v.constructor?.name || 'Object'})` : `${/^[aeiou]/.test(t) ? 'an' : 'a'} ${t}`;
}

/** Output records of one call, packed as they come and handed to the host
 * once when the call returns (also when it fails: what was emitted for the
 * records before a failing one is kept). */
export class Output {
  constructor() { this.payload = new Bytes(); this.index = new Words(); this.count = 0; }
  /** Sends one record to the sink: a key and data (string or Uint8Array). */
  emit(key, data) {
    if (typeof key !== 'string') throw new TypeError(`emit(key, data): the key must be a string, not ${kind(key)}`);
    if (typeof data !== 'string' && !isBytes(data)) {
      throw new TypeError(`emit(key, data): data must be a string or a Uint8Array, not ${kind(data)} (JSON.stringify(value) makes one)`);
    }
    const at = this.payload.len;
    const kn = this.payload.pushText(key);
    let dn;
    if (typeof data === 'string') dn = this.payload.pushText(data);
    else { this.payload.push(data); dn = data.length; }
    this.index.push4(at, kn, at + kn, dn);
    this.count++;
  }
  /** [key, data] pairs, for tests. */
  *[Symbol.iterator]() {
    const w = this.index.buf;
    const p = this.payload.buf;
    for (let i = 0; i < this.count * 4; i += 4) {
      yield [utf8.decode(p.subarray(w[i], w[i] + w[i + 1])), p.slice(w[i + 2], w[i + 2] + w[i + 3])];
    }
  }
  clear() { this.payload.len = 0; this.index.len = 0; this.count = 0; }
}

/** Builds a batch in plain JavaScript, for unit tests of a processor. */
export class BatchBuilder {
  constructor() { this.payload = new Bytes(); this.index = new Bytes(); this.n = 0; }
  push(partitionKey, data, arrivalMillis = 0, subSequenceNumber = 0) {
    const k = encoder.encode(partitionKey);
    const d = typeof data === 'string' ? encoder.encode(data) : data;
    const s = encoder.encode(String(49000000 + this.n++));
    const at = this.payload.len;
    [k, d, s].forEach((b) => this.payload.push(b));
    [at, k.length, at + k.length, d.length, at + k.length + d.length, s.length].forEach((v) => this.index.u32(v));
    this.index.reserve(16);
    const v = new DataView(this.index.buf.buffer);
    v.setBigUint64(this.index.len, BigInt(subSequenceNumber), true);
    v.setBigInt64(this.index.len + 8, BigInt(arrivalMillis), true);
    this.index.len += 16;
    return this;
  }
  batch() { return new Batch(this.payload.bytes(), this.index.bytes()); }
}

/** Throw from `process` / `onTimer` to fail a call on purpose. Fatal by
 * default (a poison record: retried, bisected, dead-lettered);
 * `retryable: true` for a passing fault. With a record index, the records
 * before it count as processed. */
export class ProcessError extends Error {
  constructor(message, { retryable = false, recordIndex } = {}) {
    super(message);
    this.retryable = retryable;
    this.recordIndex = recordIndex;
  }
  /** A poison record: records before `index` are done, this one is bad. */
  static at(index, message) { return new ProcessError(message, { recordIndex: index }); }
}

const MAX_HASH = (1n << 128n) - 1n;

/** The hash keys (MD5 of a partition key, a 128-bit integer) a shard receives. */
export class HashKeyRange {
  constructor(start = 0n, end = MAX_HASH) { this.start = BigInt(start); this.end = BigInt(end); }
  containsKey(partitionKey) { const h = hashKey(partitionKey); return this.start <= h && h <= this.end; }
  isFull() { return this.start === 0n && this.end === MAX_HASH; }
}

/** Where an instance runs, given at start. */
export class ShardContext {
  constructor({ stream = '', shardId = '', application = '', hashKeyRange = new HashKeyRange(), parents = [] } = {}) {
    Object.assign(this, { stream, shardId, application, hashKeyRange, parents });
  }
  /** Whether records with this partition key come to this shard now. */
  ownsKey(partitionKey) { return this.hashKeyRange.containsKey(partitionKey); }
}

/** A state as `snapshot` wrote it. */
export class Snapshot {
  constructor(version, data) { this.version = version; this.data = data; }
}

/** Base of a processor: every method but `process` has a default. */
export class Processor {
  /** `config` is the --config JSON, parsed ({} when none); throw to refuse it. */
  constructor(config, shard) { this.config = config; this.shard = shard; }
  static get processorName() { return 'js-processor'; }
  /** Layout version of what `snapshot` writes; bump it when that changes. */
  static get stateVersion() { return 0; }
  process(_batch, _out) { throw new Error('a processor must define process(batch, out)'); }
  onTimer(_nowMillis, _out) {}
  /** All state needed to go on after a restart (empty when stateless). */
  snapshot() { return new Uint8Array(0); }
  restore(data, _version) {
    if (data.length) throw new Error(`${this.constructor.processorName} keeps no state but was given ${data.length} bytes; define restore()`);
  }
  /**
   * A merge child's start: take over both parents' states. The default
   * restores the one parent that has state; two need a merge of your own
   * (restoring both would keep only the last).
   */
  merge(parents) {
    const withState = parents.filter((p) => p.data.length);
    if (withState.length > 1) {
      throw new Error(`${this.constructor.processorName} keeps state but does not define merge(parents), so the state of merged shards would be lost`);
    }
    for (const p of withState) this.restore(p.data, p.version);
  }
  /** Last call: `reason` is "shard-ended", "lease-lost" or "requested". */
  shutdown(_reason, _out) {}
}

/** A JSON-able value as snapshot bytes. */
export function jsonSnapshot(value) { return encoder.encode(JSON.stringify(value)); }

/** Snapshot bytes back to a value; empty bytes give `fallback`. */
export function jsonRestore(data, version, expected, fallback = undefined) {
  if (!data.length) return fallback;
  if (version !== expected) throw new Error(`cannot read state version ${version} (this processor writes ${expected}); migrate it in restore()`);
  return JSON.parse(utf8.decode(data));
}

let host = null;
/** Set by component.js once running in the host. */
export function setHost(h) { host = h; }
/** A log line attributed to this shard: level trace|debug|info|warn|error. */
export function log(level, message) {
  if (host) host.log(level, String(message));
  else console.error(`[${level}] ${message}`);
}
/** The host's clock (the replayed input's under `host test`). */
export function nowMillis() { return host ? host.nowMillis() : Date.now(); }

export * from './time.js';
export { hashKey } from './md5.js';
import { hashKey } from './md5.js';

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** Standard base64 with padding (the component has no Buffer). */
export function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const [a, b, c] = [bytes[i], bytes[i + 1], bytes[i + 2]];
    const n = (a << 16) | ((b ?? 0) << 8) | (c ?? 0);
    s += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] + (b === undefined ? '=' : B64[(n >> 6) & 63]) + (c === undefined ? '=' : B64[n & 63]);
  }
  return s;
}
