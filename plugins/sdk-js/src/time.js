// Event time: ISO-8601 parsing (a zone-less time is UTC, as the seeds'
// Python `isoformat()` output means it), formatting, and windows: the Rust
// SDK's rules (helpers::time), so processors in any language put a record
// in the same window.

const MS_PER_DAY = 86400000;
const enc = new TextEncoder();
const isWs = (c) => c === 32 || (c >= 9 && c <= 13);
const fdiv = (a, b) => Math.floor(a / b);

function isLeap(y) { return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0; }
function daysInMonth(y, m) { return m === 2 ? (isLeap(y) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31; }

function daysFromCivil(y, m, d) {
  y = m <= 2 ? y - 1 : y;
  const era = fdiv(y, 400);
  const yoe = y - era * 400;
  const doy = fdiv(153 * ((m + 9) % 12) + 2, 5) + d - 1;
  return era * 146097 + yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy - 719468;
}

function civilFromDays(days) {
  const z = days + 719468;
  const era = fdiv(z, 146097);
  const doe = z - era * 146097;
  const yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365);
  const doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100));
  const mp = fdiv(5 * doy + 2, 153);
  const day = doy - fdiv(153 * mp + 2, 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (month <= 2 ? 1 : 0), month, day];
}

// The parse below calls no function per record: a call costs more than
// the rest of a record's parse in an interpreter (componentize-js runs
// SpiderMonkey without a JIT).

// The last date seen and its day number: a stream's records mostly share
// one, and the calendar part is the dearest of the parse.
let memoDate = -1;
let memoDays = 0;

// Where the last successful `prefixAt` ended (set there, so it returns a
// number, not an array: no allocation per record).
let endedAt = 0;

/** Millis of a timestamp at `t[a..n]` (bytes), or null; sets `endedAt`. */
function prefixAt(t, a, n) {
  if (n - a < 16) return null;
  // Digit values; `>>> 0` maps a non-digit below '0' above 9.
  const y0 = (t[a] - 48) >>> 0, y1 = (t[a + 1] - 48) >>> 0, y2 = (t[a + 2] - 48) >>> 0, y3 = (t[a + 3] - 48) >>> 0;
  const mo0 = (t[a + 5] - 48) >>> 0, mo1 = (t[a + 6] - 48) >>> 0, d0 = (t[a + 8] - 48) >>> 0, d1 = (t[a + 9] - 48) >>> 0;
  const h0 = (t[a + 11] - 48) >>> 0, h1 = (t[a + 12] - 48) >>> 0, mi0 = (t[a + 14] - 48) >>> 0, mi1 = (t[a + 15] - 48) >>> 0;
  if (y0 > 9 || y1 > 9 || y2 > 9 || y3 > 9 || mo0 > 9 || mo1 > 9 || d0 > 9 || d1 > 9 || h0 > 9 || h1 > 9 || mi0 > 9 || mi1 > 9) return null;
  const sep = t[a + 10];
  if (t[a + 4] !== 45 || t[a + 7] !== 45 || (sep !== 84 && sep !== 116 && sep !== 32) || t[a + 13] !== 58) return null;
  const hour = h0 * 10 + h1, minute = mi0 * 10 + mi1;
  if (hour > 23 || minute > 59) return null;
  const date = (((y0 * 10 + y1) * 10 + y2) * 10 + y3) * 10000 + (mo0 * 10 + mo1) * 100 + d0 * 10 + d1;
  let days = memoDays;
  if (date !== memoDate) {
    const year = y0 * 1000 + y1 * 100 + y2 * 10 + y3, month = mo0 * 10 + mo1, day = d0 * 10 + d1;
    if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null;
    days = daysFromCivil(year, month, day);
    memoDate = date;
    memoDays = days;
  }
  let pos = a + 16, second = 0, millis = 0;
  if (pos < n && t[pos] === 58) {
    if (pos + 3 > n) return null;
    const s0 = (t[pos + 1] - 48) >>> 0, s1 = (t[pos + 2] - 48) >>> 0;
    second = s0 * 10 + s1;
    if (s0 > 9 || s1 > 9 || second > 60) return null;
    pos += 3;
    if (pos < n && (t[pos] === 46 || t[pos] === 44)) {
      pos += 1;
      const start = pos;
      while (pos < n && t[pos] >= 48 && t[pos] <= 57) {
        if (pos - start < 3) millis = millis * 10 + (t[pos] - 48);
        pos++;
      }
      if (pos === start) return null;
      const got = pos - start;
      if (got === 1) millis *= 100;
      else if (got === 2) millis *= 10;
    }
  }
  let offset = 0;
  const c = pos < n ? t[pos] : 0;
  if (c === 90 || c === 122) {
    pos += 1;
  } else if (c === 43 || c === 45) {
    if (pos + 3 > n) return null;
    const oh0 = (t[pos + 1] - 48) >>> 0, oh1 = (t[pos + 2] - 48) >>> 0;
    if (oh0 > 9 || oh1 > 9) return null;
    const hours = oh0 * 10 + oh1;
    let minutes = 0, width = 3;
    if (pos + 3 < n && t[pos + 3] === 58) {
      if (pos + 6 > n) return null;
      const om0 = (t[pos + 4] - 48) >>> 0, om1 = (t[pos + 5] - 48) >>> 0;
      if (om0 > 9 || om1 > 9) return null;
      minutes = om0 * 10 + om1;
      width = 6;
    } else if (pos + 5 <= n) {
      const om0 = (t[pos + 3] - 48) >>> 0, om1 = (t[pos + 4] - 48) >>> 0;
      if (om0 <= 9 && om1 <= 9) {
        minutes = om0 * 10 + om1;
        width = 5;
      }
    }
    if (hours > 23 || minutes > 59) return null;
    pos += width;
    offset = c === 43 ? hours * 60 + minutes : -(hours * 60 + minutes);
  }
  endedAt = pos;
  return days * MS_PER_DAY + (hour * 3600 + minute * 60 + second - offset * 60) * 1000 + millis;
}

const bytesOf = (x) => (typeof x === 'string' ? enc.encode(x) : x);

/** Milliseconds since the epoch of an ISO-8601 timestamp (the whole text,
 * surrounding whitespace allowed), or null. */
export function parseTimestampMillis(text) {
  const t = bytesOf(text);
  let a = 0, b = t.length;
  while (a < b && isWs(t[a])) a++;
  while (b > a && isWs(t[b - 1])) b--;
  const got = prefixAt(t, a, b);
  return got !== null && endedAt === b ? got : null;
}

/** The timestamp `data` (or `data[start..end]`) is or begins with (a log
 * line), or null. */
export function parseLeadingTimestamp(data, start = 0, end = undefined) {
  const t = bytesOf(data);
  const n = end === undefined ? t.length : end;
  let a = start;
  while (a < n && (t[a] === 32 || (t[a] >= 9 && t[a] <= 13))) a++;
  const got = prefixAt(t, a, n);
  if (got === null || endedAt === n) return got;
  const next = t[endedAt];
  return next === 32 || (next >= 9 && next <= 13) || next === 44 || next === 59 || next === 124 ? got : null;
}

const pad = (n, w) => String(n).padStart(w, '0');

/** `2018-07-29T22:36:00Z` (with `.mmm` when not on a whole second). */
export function formatTimestampMillis(millis) {
  const days = fdiv(millis, MS_PER_DAY);
  const inDay = millis - days * MS_PER_DAY;
  const [y, m, d] = civilFromDays(days);
  const ms = inDay % 1000;
  const frac = ms ? `.${pad(ms, 3)}` : '';
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}T${pad(fdiv(inDay, 3600000), 2)}:${pad(fdiv(inDay, 60000) % 60, 2)}:${pad(fdiv(inDay, 1000) % 60, 2)}${frac}Z`;
}

/** Start of the fixed window of `sizeMillis` holding `millis`. */
export function windowStart(millis, sizeMillis) {
  return millis - (((millis % sizeMillis) + sizeMillis) % sizeMillis);
}
