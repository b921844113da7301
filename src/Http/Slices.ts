/**
 * Where each event's JSON lies in a POST body, and whether those bytes are exactly what
 * `JSON.stringify` of the parsed event writes: then the journal can take them as the event's
 * JSON without stringifying it again. A lexical walk over a body `JSON.parse` has accepted
 * (so it is valid JSON), which answers "not exact" for anything `JSON.stringify` would write
 * otherwise: whitespace, an escape it does not write (`\/`, `\u0041`, an escaped surrogate), a
 * number in another form (`1.0`, `1e3`, `-0`), a key that may be ordered otherwise (one that
 * starts with a digit or `-`). Duplicate keys cannot be seen from the text alone (the parsed
 * object keeps one); the walk counts each object's keys, and `sameKeyCounts` compares them with
 * the parsed event's. A "not exact" is never wrong, only slower: the caller stringifies then.
 */
import { findByte } from "../Scratch.js"

/** The events of a body as the walk found them. */
export interface EventSlices {
  /** Per entry: where its event's JSON starts in the body, or -1 where it is not taken as sent. */
  readonly starts: Int32Array
  /** Per entry: where its event's JSON ends (exclusive). */
  readonly ends: Int32Array
  /** Per entry: its event's objects (`from` up to `to` in `keyCounts`), in the order their `{` come. */
  readonly from: Int32Array
  readonly to: Int32Array
  /** How many keys each object in the text has. */
  readonly keyCounts: Array<number>
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COMMA = 0x2c
const MINUS = 0x2d
const ZERO = 0x30
const NINE = 0x39

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0))
const EVENTS = ascii("events")
const EVENT = ascii("event")

/** The escapes `JSON.stringify` writes for the control characters it does not write as `\u00XX`. */
const SHORT_ESCAPE = new Map([
  [0x08, 0x62],
  [0x09, 0x74],
  [0x0a, 0x6e],
  [0x0c, 0x66],
  [0x0d, 0x72]
])

const lowerHex = (c: number): number => (c >= ZERO && c <= NINE ? c - ZERO : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1)

class Walk {
  pos = 0
  /** Whether what was walked since it was last set is as `JSON.stringify` writes it. */
  exact = true
  readonly keyCounts: Array<number> = []
  /** The last string walked as a key: where its content starts and ends, and whether it held an escape. */
  keyStart = 0
  keyEnd = 0
  keyEscaped = false
  /** Where the next backslash is, at or after where it was last looked for (the body's length if none). */
  backslash = -1

  constructor(readonly bytes: Uint8Array) {}

  /** Skips whitespace, which `JSON.stringify` never writes. */
  space(): void {
    const b = this.bytes
    let i = this.pos
    let c = b[i]
    while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = b[++i]
    if (i !== this.pos) {
      this.exact = false
      this.pos = i
    }
  }

  /** A string from its opening quote; its escapes checked against the ones `JSON.stringify` writes. */
  string(): void {
    const b = this.bytes
    let i = this.pos + 1
    // Most strings hold no escape: their end is the next quote, found by memchr rather than a byte at a time.
    if (this.backslash < i) {
      this.backslash = findByte(b, BACKSLASH, i)
      if (this.backslash < 0) this.backslash = b.length
    }
    const quote = findByte(b, QUOTE, i)
    if (quote < this.backslash) {
      this.keyStart = i
      this.keyEnd = quote
      this.keyEscaped = false
      this.pos = quote + 1
      return
    }
    let escaped = false
    while (true) {
      const c = b[i]!
      if (c === QUOTE) break
      if (c !== BACKSLASH) {
        i++
        continue
      }
      escaped = true
      const e = b[i + 1]!
      if (e === 0x75 /* u */) {
        // Only a control character without a short escape is written as `\u00xx` (lowercase).
        const high = b[i + 2] === ZERO && b[i + 3] === ZERO ? lowerHex(b[i + 4]!) : -1
        const low = lowerHex(b[i + 5]!)
        if (high < 0 || high > 1 || low < 0 || SHORT_ESCAPE.has(high * 16 + low)) this.exact = false
        i += 6
      } else {
        if (e !== QUOTE && e !== BACKSLASH && !(e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74))
          this.exact = false
        i += 2
      }
    }
    this.keyStart = this.pos + 1
    this.keyEnd = i
    this.keyEscaped = escaped
    this.pos = i + 1
  }

  /** A number, exact when it is the text `String` gives for its value (so not `1.0`, `1e3`, `-0`, `01`). */
  number(): void {
    const b = this.bytes
    const start = this.pos
    let i = start
    if (b[i] === MINUS) i++
    const digits = i
    while (b[i]! >= ZERO && b[i]! <= NINE) i++
    const c = b[i]
    const fraction = c === 0x2e || c === 0x65 || c === 0x45 /* . e E */
    if (fraction) {
      while (
        i < b.length &&
        ((b[i]! >= ZERO && b[i]! <= NINE) ||
          b[i] === 0x2e ||
          b[i] === 0x65 ||
          b[i] === 0x45 ||
          b[i] === 0x2b ||
          b[i] === MINUS)
      )
        i++
    }
    // Short integers without a leading zero print as they are read; the rest are checked.
    if (fraction || i - digits > 15 || (b[digits] === ZERO && (i - digits > 1 || digits > start))) {
      const text = String.fromCharCode(...b.subarray(start, i))
      if (String(Number(text)) !== text) this.exact = false
    }
    this.pos = i
  }

  value(): void {
    const c = this.bytes[this.pos]
    if (c === QUOTE) this.string()
    else if (c === OPEN_BRACE) this.object()
    else if (c === OPEN_BRACKET) this.array()
    else if (c === 0x74 /* true */ || c === 0x6e /* null */) this.pos += 4
    else if (c === 0x66 /* false */) this.pos += 5
    else this.number()
  }

  object(): void {
    const at = this.keyCounts.length
    this.keyCounts.push(0)
    this.pos++
    this.space()
    if (this.bytes[this.pos] === CLOSE_BRACE) {
      this.pos++
      return
    }
    while (true) {
      this.key()
      this.value()
      this.keyCounts[at]++
      this.space()
      if (this.bytes[this.pos++] === CLOSE_BRACE) return
      this.space()
    }
  }

  /** A key, its colon and the space after it. Keys that may be ordered other than as written are not exact. */
  key(): void {
    this.string()
    const first = this.bytes[this.keyStart]
    if ((first !== undefined && first >= ZERO && first <= NINE) || first === MINUS) this.exact = false
    this.space()
    this.pos++
    this.space()
  }

  array(): void {
    this.pos++
    this.space()
    if (this.bytes[this.pos] === CLOSE_BRACKET) {
      this.pos++
      return
    }
    while (true) {
      this.value()
      this.space()
      if (this.bytes[this.pos++] === CLOSE_BRACKET) return
      this.space()
    }
  }

  keyIs(name: Uint8Array): boolean {
    if (this.keyEscaped || this.keyEnd - this.keyStart !== name.length) return false
    for (let k = 0; k < name.length; k++) if (this.bytes[this.keyStart + k] !== name[k]) return false
    return true
  }
}

/**
 * Walks the object at the walk's position as an entry (`{"session_id"?, "event"}`), noting
 * where its event lies if the bytes are exact. An entry with a key written with escapes, or with
 * `event` twice, is not taken as sent: the parsed entry's event may not be the one found.
 */
const entry = (walk: Walk, slices: EventSlices, i: number): void => {
  slices.starts[i] = -1
  if (walk.bytes[walk.pos] !== OPEN_BRACE) return walk.value()
  walk.pos++
  walk.space()
  if (walk.bytes[walk.pos] === CLOSE_BRACE) {
    walk.pos++
    return
  }
  let seen = false
  let usable = true
  while (true) {
    walk.key()
    if (walk.keyEscaped) usable = false
    if (walk.keyIs(EVENT)) {
      if (seen) usable = false
      seen = true
      const start = walk.pos
      const from = walk.keyCounts.length
      walk.exact = true
      walk.value()
      if (walk.exact && walk.bytes[start] === OPEN_BRACE) {
        slices.starts[i] = start
        slices.ends[i] = walk.pos
        slices.from[i] = from
        slices.to[i] = walk.keyCounts.length
      }
    } else {
      walk.value()
    }
    walk.space()
    if (walk.bytes[walk.pos++] === CLOSE_BRACE) break
    walk.space()
  }
  if (!usable) slices.starts[i] = -1
}

/**
 * The events of a body `JSON.parse` accepted, `count` entries (as parsed): in `events` of a
 * batch, or the body itself. Undefined when the body's shape is not the one parsed (a key of
 * the body written with escapes, `events` twice, another number of entries).
 */
export const eventSlices = (bytes: Uint8Array, batch: boolean, count: number): EventSlices | undefined => {
  const walk = new Walk(bytes)
  const slices: EventSlices = {
    starts: new Int32Array(count).fill(-1),
    ends: new Int32Array(count),
    from: new Int32Array(count),
    to: new Int32Array(count),
    keyCounts: walk.keyCounts
  }
  walk.space()
  if (!batch) {
    if (count !== 1) return undefined
    entry(walk, slices, 0)
    return slices
  }
  if (bytes[walk.pos] !== OPEN_BRACE) return undefined
  walk.pos++
  walk.space()
  let found = -1
  while (bytes[walk.pos] !== CLOSE_BRACE) {
    walk.key()
    if (walk.keyEscaped) return undefined
    if (walk.keyIs(EVENTS)) {
      if (found >= 0 || bytes[walk.pos] !== OPEN_BRACKET) return undefined
      found = 0
      walk.pos++
      walk.space()
      if (bytes[walk.pos] === CLOSE_BRACKET) walk.pos++
      else {
        while (true) {
          if (found >= count) return undefined
          entry(walk, slices, found++)
          walk.space()
          if (bytes[walk.pos++] === CLOSE_BRACKET) break
          walk.space()
        }
      }
    } else {
      walk.value()
    }
    walk.space()
    if (bytes[walk.pos] === COMMA) {
      walk.pos++
      walk.space()
    }
  }
  return found === count ? slices : undefined
}

/**
 * Whether the parsed event has as many keys in each of its objects as the text does (in the
 * order their `{` come), so that no key was written twice: `JSON.parse` keeps one of them, and
 * `JSON.stringify` would then write other bytes.
 */
export const sameKeyCounts = (value: unknown, slices: EventSlices, i: number): boolean => {
  const counts = slices.keyCounts
  const to = slices.to[i]!
  let next = slices.from[i]!
  // Most events hold no object but themselves (each `{` in the text is one parsed object): their keys are counted.
  if (to - next === 1 && typeof value === "object" && value !== null && !Array.isArray(value)) {
    let keys = 0
    for (const _ in value) keys++
    return keys === counts[next]
  }
  const visit = (u: unknown): boolean => {
    if (typeof u !== "object" || u === null) return true
    if (Array.isArray(u)) {
      for (let k = 0; k < u.length; k++) if (!visit(u[k])) return false
      return true
    }
    if (next >= to) return false
    const expected = counts[next++]!
    let keys = 0
    for (const key in u) {
      keys++
      const child = (u as Record<string, unknown>)[key]
      if (typeof child === "object" && child !== null && !visit(child)) return false
    }
    return keys === expected
  }
  return visit(value) && next === to
}
