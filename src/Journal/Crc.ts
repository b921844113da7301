/**
 * CRC-32 arithmetic for checking the checksums of many journal lines at once. CRC-32 is linear:
 * the checksum of A followed by B is the checksum of A "multiplied" by x to the power of B's bit
 * length (modulo the CRC's polynomial), combined with the checksum of B (zlib's `crc32_combine`).
 * So the checksum a run of lines must have, as one span of bytes, follows from the checksums the
 * lines hold and the few bytes between them (each line's checksum field and newline), without
 * computing any line's own: one native call over the whole span then checks every line of it,
 * where a call per line cost more in the call than in the sum. A line whose bytes changed changes
 * the span's checksum whatever the other lines hold (the multiplication is invertible), so a run
 * whose span checks out has every line as written, but for changes to several lines that cancel
 * out (as likely as a change that one line's own checksum misses).
 *
 * The fold over a block's lines runs in WebAssembly (`LineScan`), from the tables made here; what
 * is here serves the rare rest: the checksum of a run that starts inside such a span.
 */

/** The CRC-32 polynomial, reflected (as zlib's `crc32` computes it). */
const POLY = 0xedb88320

/** The CRC-32 of each byte. */
export const CRC_TABLE = (() => {
  const table = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? POLY ^ (c >>> 1) : c >>> 1
    table[n] = c
  }
  return table
})()

/** `crc32` of `bytes` from `from` to `to`, continuing from `crc`, a byte at a time. */
export const crcBytes = (crc: number, bytes: Uint8Array, from: number, to: number): number => {
  let c = ~crc
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

/** a times b modulo the polynomial, both reflected (zlib's `multmodp`). */
const multModP = (a: number, b: number): number => {
  let p = 0
  let rest = a | 0
  // The bits of `a` from x^0 (its top bit) up; `b` times x at each.
  for (let k = 0; k < 32; k++) {
    p ^= b & (rest >> 31)
    rest <<= 1
    b = (b >>> 1) ^ (POLY & -(b & 1))
  }
  return p >>> 0
}

/** x to the power of 2^k, for k from 0 to 31 (zlib's `x2n_table`). */
export const X2N = (() => {
  const table = new Int32Array(32)
  table[0] = 0x40000000 // x^1
  for (let k = 1; k < 32; k++) table[k] = multModP(table[k - 1]!, table[k - 1]!)
  return table
})()

/** The multiplier of a checksum followed by `length` bytes: x to the power of 8 * `length` (zlib's `x2nmodp(length, 3)`). */
const shiftFor = (length: number): number => {
  let p = 0x80000000 // x^0
  for (let n = length, k = 3; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = multModP(X2N[k & 31]!, p)
  return p
}

/** The checksum of the `length` bytes that follow a prefix, from the checksum of the prefix and of the two together. */
export const crcOfRest = (whole: number, prefix: number, length: number): number =>
  (whole ^ multModP(shiftFor(length), prefix)) >>> 0

/** A line's checksum field and the brace closing it, with its 8 hex digits at `FIELD_DIGITS_AT`. */
const FIELD = ',"crc":"00000000"}'
const FIELD_DIGITS_AT = 8
const HEX_DIGITS = "0123456789abcdef"

/**
 * Tables to continue a checksum over a line's checksum field (`,"crc":"`, the 8 hex digits of
 * the checksum the line holds, `"}`: 18 bytes that follow from that checksum): `crc32` continued
 * from `crc` over the field of `stored` is the XOR of entries `i * 256 + byte i of crc` for i
 * from 0 to 3 and `(4 + i) * 256 + byte i of stored` for i from 0 to 3 (byte 0 the lowest). The
 * first four tables multiply `crc` by x^(8 * 18), the field's length (the fixed field's own
 * checksum folded into the first); the last four add what each byte of `stored` (two hex digits)
 * changes in that checksum (`crc32` is linear in the bytes it reads, past a constant). Eight
 * lookups, where a byte at a time over the field takes 18 steps. Made when asked (once, by the
 * scan's module): a few milliseconds that the processes that never read a journal need not spend.
 */
export const crcFieldTables = (): Int32Array => {
  const bytes = Uint8Array.from(FIELD, (c) => c.charCodeAt(0))
  const base = crcBytes(0, bytes, 0, bytes.length)
  const shift = shiftFor(bytes.length)
  /** `digits[16 * k + nibble]`: what hex digit `nibble` at digit `k` (0 the first written) changes in the field's checksum. */
  const digits = new Int32Array(8 * 16)
  for (let k = 0; k < 8; k++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      const changed = bytes.slice()
      changed[FIELD_DIGITS_AT + k] = HEX_DIGITS.charCodeAt(nibble)
      digits[16 * k + nibble] = crcBytes(0, changed, 0, changed.length) ^ base
    }
  }
  const digit = (k: number, nibble: number): number => digits[16 * k + nibble]!
  const tables = new Int32Array(8 * 256)
  for (let i = 0; i < 4; i++) {
    for (let b = 0; b < 256; b++) {
      tables[i * 256 + b] = multModP(shift, b << (8 * i)) ^ (i === 0 ? base : 0)
      // Byte i of a checksum is written as its digits 6 - 2i (high nibble) and 7 - 2i.
      tables[(4 + i) * 256 + b] = digit(6 - 2 * i, b >>> 4) ^ digit(7 - 2 * i, b & 15)
    }
  }
  return tables
}
