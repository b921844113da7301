/**
 * A scratch buffer: text written as UTF-8 piece by piece, then copied out at its exact size, so
 * that many small strings become one buffer without being joined into one string first (which
 * would copy them all again to flatten it before encoding it); and the small byte helpers of
 * code that writes or reads bytes so (views without a copy, decimal digits without a string,
 * memchr on a typed array, short text and keys read where they lie).
 */
export class Scratch {
  private kept: Buffer

  constructor(
    initialBytes: number,
    /** Larger buffers are used once and let go, so that one huge batch does not hold memory for good. */
    private readonly maxKeptBytes: number
  ) {
    this.kept = Buffer.allocUnsafeSlow(initialBytes)
  }

  /** The buffer to start writing into. */
  get buffer(): Buffer {
    return this.kept
  }

  /** `buffer` if it has room for `more` bytes after its first `used`, else a larger one holding those. */
  room(buffer: Buffer, used: number, more: number): Buffer {
    if (buffer.length - used >= more) return buffer
    const next = Buffer.allocUnsafeSlow(Math.max(2 * buffer.length, used + more))
    buffer.copy(next, 0, 0, used)
    if (next.length <= this.maxKeptBytes) this.kept = next
    return next
  }
}

/** The first `length` bytes of `buffer`, as a plain `Uint8Array` of their own (not zeroed first: all are copied over). */
export const copyOut = (buffer: Buffer, length: number): Uint8Array => {
  const own = Buffer.allocUnsafeSlow(length)
  buffer.copy(own, 0, 0, length)
  return new Uint8Array(own.buffer, own.byteOffset, length)
}

/** Most bytes of UTF-8 a string of `length` UTF-16 units can take. */
export const maxUtf8Bytes = (length: number): number => 3 * length

/**
 * Bytes `start` to `end` of `bytes` as a plain `Uint8Array` view (no copy). Made directly on
 * the underlying memory: `subarray` of a Buffer makes a Buffer, at twice the cost, and this is
 * made for every event of a batch.
 */
export const viewOf = (bytes: Uint8Array, start: number, end: number): Uint8Array =>
  new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start)

/**
 * Where `byte` first occurs in `bytes` from `from`, or -1: Buffer's search (memchr) called on
 * the typed array directly, since the typed array's own `indexOf` took twice as long on a line,
 * and a wrapper around the call a fifth more.
 */
export const findByte = Function.prototype.call.bind(Buffer.prototype.indexOf) as (
  bytes: Uint8Array,
  byte: number,
  from: number
) => number

/** Whether `expected` is written in `bytes` at `at`. */
export const matchAt = (bytes: Uint8Array, at: number, expected: ArrayLike<number>): boolean => {
  if (at + expected.length > bytes.length) return false
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false
  return true
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * Values keyed by short strings, looked up by their UTF-8 bytes where they lie, without making a
 * string of them: the keys of the bytes' length, compared byte by byte (an event's type among a
 * catalog's, for every event of a body).
 */
export class BytesTable<V> {
  /** The keys of each length, by length. */
  private readonly byLength: Array<Array<{ readonly key: Uint8Array; readonly value: V }> | undefined> = []

  constructor(entries: Iterable<readonly [string, V]>) {
    const encoder = new TextEncoder()
    for (const [text, value] of entries) {
      const key = encoder.encode(text)
      const same = this.byLength[key.length]
      if (same === undefined) this.byLength[key.length] = [{ key, value }]
      else same.push({ key, value })
    }
  }

  /** The value of the key that bytes `from` to `to` spell, if any. */
  get(bytes: Uint8Array, from: number, to: number): V | undefined {
    const candidates = to > from ? this.byLength[to - from] : undefined
    if (candidates === undefined) return undefined
    for (const { key, value } of candidates) if (matchAt(bytes, from, key)) return value
    return undefined
  }
}

const latin1 = Function.prototype.call.bind(Buffer.prototype.latin1Slice) as (
  bytes: Uint8Array,
  start: number,
  end: number
) => string

/**
 * The text of a short run of UTF-8 bytes (a session id): ASCII is read by Buffer's one-byte
 * decoder on the typed array directly (one string made, where adding a character at a time made
 * one per character, and a UTF-8 decoder call costs more). The bytes must be UTF-8 (the decoder
 * throws otherwise).
 */
export const textOf = (bytes: Uint8Array, from: number, end: number): string => {
  for (let i = from; i < end; i++) if (bytes[i]! >= 0x80) return utf8.decode(bytes.subarray(from, end))
  return latin1(bytes, from, end)
}

/** The number of decimal digits of a non-negative integer. */
export const digitsOf = (n: number): number => {
  let digits = 1
  for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++
  return digits
}

/** Writes a non-negative safe integer's decimal digits into `out` at `at` (no string made); answers where they end. */
export const writeDigits = (out: Uint8Array, at: number, n: number): number => {
  const digits = digitsOf(n)
  for (let k = at + digits - 1, rest = n; k >= at; k--, rest = Math.floor(rest / 10)) out[k] = 0x30 + (rest % 10)
  return at + digits
}
