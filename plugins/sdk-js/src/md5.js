// MD5 (RFC 1321), for `hashKey`: Kinesis routes a record by the MD5 of its
// partition key. The component has no crypto module; this is small and
// checked against Node's in the tests.

const S = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
const K = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);

export function md5(bytes) {
  const n = bytes.length;
  const padded = new Uint8Array(((n + 8) >> 6) * 64 + 64);
  padded.set(bytes);
  padded[n] = 0x80;
  const bits = new DataView(padded.buffer);
  bits.setUint32(padded.length - 8, (n * 8) >>> 0, true);
  bits.setUint32(padded.length - 4, Math.floor(n / 2 ** 29), true);
  let [a0, b0, c0, d0] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  for (let chunk = 0; chunk < padded.length; chunk += 64) {
    const m = Array.from({ length: 16 }, (_, i) => bits.getUint32(chunk + i * 4, true));
    let [a, b, c, d] = [a0, b0, c0, d0];
    for (let i = 0; i < 64; i++) {
      let f, g;
      if (i < 16) { f = (b & c) | (~b & d); g = i; }
      else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) % 16; }
      else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) % 16; }
      else { f = c ^ (b | ~d); g = (7 * i) % 16; }
      const s = S[(i >> 4) * 4 + (i % 4)];
      const sum = (a + f + K[i] + m[g]) >>> 0;
      [a, d, c] = [d, c, b];
      b = (b + ((sum << s) | (sum >>> (32 - s)))) >>> 0;
    }
    [a0, b0, c0, d0] = [(a0 + a) >>> 0, (b0 + b) >>> 0, (c0 + c) >>> 0, (d0 + d) >>> 0];
  }
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  [a0, b0, c0, d0].forEach((w, i) => v.setUint32(i * 4, w, true));
  return out;
}

/** Where Kinesis routes a partition key: its MD5 read as a big-endian integer. */
export function hashKey(partitionKey) {
  const bytes = typeof partitionKey === 'string' ? new TextEncoder().encode(partitionKey) : partitionKey;
  let h = 0n;
  for (const b of md5(bytes)) h = (h << 8n) | BigInt(b);
  return h;
}
