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

function digits(t, a, b) {
  if (b > t.length) return null;
  let v = 0;
  for (let i = a; i < b; i++) {
    if (t[i] < 48 || t[i] > 57) return null;
    v = v * 10 + (t[i] - 48);
  }
  return v;
}

/** [millis, bytes used] of a timestamp at the start of `t` (bytes), or null. */
function prefix(t) {
  if (t.length < 16) return null;
  const [year, month, day, hour, minute] = [[0, 4], [5, 7], [8, 10], [11, 13], [14, 16]].map(([a, b]) => digits(t, a, b));
  if ([year, month, day, hour, minute].includes(null)) return null;
  if (t[4] !== 45 || t[7] !== 45 || ![84, 116, 32].includes(t[10]) || t[13] !== 58) return null;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 || minute > 59) return null;
  let pos = 16, second = 0, millis = 0;
  if (t[pos] === 58) {
    second = digits(t, pos + 1, pos + 3);
    if (second === null || second > 60) return null;
    pos += 3;
    if (t[pos] === 46 || t[pos] === 44) {
      pos += 1;
      const start = pos;
      while (pos < t.length && t[pos] >= 48 && t[pos] <= 57) {
        if (pos - start < 3) millis = millis * 10 + (t[pos] - 48);
        pos++;
      }
      if (pos === start) return null;
      for (let i = pos - start; i < 3; i++) millis *= 10;
    }
  }
  let offset = 0;
  const c = t[pos];
  if (c === 90 || c === 122) {
    pos += 1;
  } else if (c === 43 || c === 45) {
    const hours = digits(t, pos + 1, pos + 3);
    if (hours === null) return null;
    let minutes, used;
    if (t[pos + 3] === 58) {
      minutes = digits(t, pos + 4, pos + 6);
      used = 6;
      if (minutes === null) return null;
    } else {
      minutes = digits(t, pos + 3, pos + 5);
      [minutes, used] = minutes !== null ? [minutes, 5] : [0, 3];
    }
    if (hours > 23 || minutes > 59) return null;
    pos += used;
    offset = c === 43 ? hours * 60 + minutes : -(hours * 60 + minutes);
  }
  const days = daysFromCivil(year, month, day);
  return [days * MS_PER_DAY + (hour * 3600 + minute * 60 + second - offset * 60) * 1000 + millis, pos];
}

const bytesOf = (x) => (typeof x === 'string' ? enc.encode(x) : x);

/** Milliseconds since the epoch of an ISO-8601 timestamp (the whole text,
 * surrounding whitespace allowed), or null. */
export function parseTimestampMillis(text) {
  let t = bytesOf(text);
  let a = 0, b = t.length;
  while (a < b && isWs(t[a])) a++;
  while (b > a && isWs(t[b - 1])) b--;
  t = t.subarray(a, b);
  const got = prefix(t);
  return got && got[1] === t.length ? got[0] : null;
}

/** The timestamp a record's data is or begins with (a log line), or null. */
export function parseLeadingTimestamp(data) {
  let t = bytesOf(data);
  let a = 0;
  while (a < t.length && isWs(t[a])) a++;
  t = t.subarray(a);
  const got = prefix(t);
  if (!got) return null;
  const next = t[got[1]];
  return next === undefined || isWs(next) || next === 44 || next === 59 || next === 124 ? got[0] : null;
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
