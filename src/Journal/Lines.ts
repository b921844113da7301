/**
 * The line codec: one `ChangeEvent` JSON per line. Encoding turns a whole batch into one
 * buffer (one write per batch) whose lines the feed hands on as they are; decoding splits byte
 * chunks into lines without ever holding more than one chunk plus one partial line, either as
 * text to parse or as the raw bytes of each line with its envelope (seq, session) read in place.
 */
import { isUtf8 } from "node:buffer"
import { Either, ParseResult, Schema } from "effect"
import type { ChangeEvent } from "../Domain/ChangeEvent.js"
import type { LineChange } from "../Domain/FeedItem.js"

const NEWLINE = 0x0a
// `ignoreBOM`: a byte-order mark is not ours to strip; kept, it fails the line's parse and leaves offsets exact.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const encoder = new TextEncoder()

/** A batch as written to the journal: every line followed by a newline, in one buffer. */
export interface EncodedBatch {
  readonly bytes: Uint8Array
  /** Where each event's line ends in `bytes` (the offset of its newline). */
  readonly ends: ReadonlyArray<number>
}

/** The bytes of event `i`'s line in an encoded batch, without its newline (no copy). */
export const lineAt = (batch: EncodedBatch, i: number): Uint8Array =>
  batch.bytes.subarray(i === 0 ? 0 : batch.ends[i - 1]! + 1, batch.ends[i]!)

/** A change as a line holds it: with the idempotency key of the request that appended it, if any. */
export type KeyedChange<A> = ChangeEvent<A> & { readonly key?: string | undefined }

/** Encode and decode events of one schema to and from journal lines. */
export interface LineCodec<A> {
  readonly encodeBatch: (events: ReadonlyArray<KeyedChange<A>>) => EncodedBatch
  /** Parses one line; answers the event or a reason the line is invalid. */
  readonly decodeLine: (line: string) => KeyedChange<A> | string
}

export const makeLineCodec = <A, I>(schema: Schema.Schema<A, I>): LineCodec<A> => {
  const encodeEvent = Schema.encodeSync(schema)
  const decodeEvent = Schema.decodeUnknownEither(schema)
  return {
    encodeBatch: (events) => {
      let text = ""
      for (const e of events) {
        const line =
          e.session_id === undefined
            ? JSON.stringify({ seq: e.seq, ts: e.ts, event: encodeEvent(e.event) })
            : JSON.stringify({ seq: e.seq, ts: e.ts, session_id: e.session_id, event: encodeEvent(e.event) })
        // After the event, so the envelope readers peek at (seq, ts, session_id, event) keeps its layout.
        text += e.key === undefined ? line : line.slice(0, -1) + ',"key":' + JSON.stringify(e.key) + "}"
        text += "\n"
      }
      const bytes = encoder.encode(text)
      // JSON text never holds a raw newline: each one ends a line.
      const ends: Array<number> = []
      for (let at = bytes.indexOf(NEWLINE); at >= 0; at = bytes.indexOf(NEWLINE, at + 1)) ends.push(at)
      return { bytes, ends }
    },
    decodeLine: (line) => {
      let raw: any
      try {
        raw = JSON.parse(line)
      } catch (error) {
        return `invalid JSON (${(error as Error).message})`
      }
      if (raw === null || typeof raw !== "object") return "line is not a JSON object"
      const seq = raw.seq
      if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1)
        return "field `seq` is not a positive integer"
      if (typeof raw.ts !== "string") return "field `ts` is not a string"
      const sessionId = raw.session_id
      if (sessionId !== undefined && sessionId !== null && typeof sessionId !== "string") {
        return "field `session_id` is not a string"
      }
      const key = raw.key
      if (key !== undefined && typeof key !== "string") return "field `key` is not a string"
      const event = decodeEvent(raw.event)
      if (Either.isLeft(event)) {
        return `field \`event\` is invalid: ${ParseResult.TreeFormatter.formatErrorSync(event.left)}`
      }
      const change: ChangeEvent<A> =
        typeof sessionId === "string"
          ? { seq, ts: raw.ts, session_id: sessionId, event: event.right }
          : { seq, ts: raw.ts, event: event.right }
      return key === undefined ? change : { ...change, key }
    }
  }
}

/**
 * The seq of a line whose envelope is whole (`seq`, `ts`, `event`), without judging the
 * event against a schema: recovery cuts only what a torn write leaves, never an event a
 * newer catalog wrote (reads report those instead).
 */
export const envelopeSeq = (line: string): number | undefined => {
  let raw: any
  try {
    raw = JSON.parse(line)
  } catch {
    return undefined
  }
  if (raw === null || typeof raw !== "object" || typeof raw.ts !== "string" || raw.event === undefined) return undefined
  return typeof raw.seq === "number" && Number.isSafeInteger(raw.seq) && raw.seq >= 1 ? raw.seq : undefined
}

/**
 * The seq of a line without parsing all of it, for skipping lines below a cursor.
 * Lines written here start with `{"seq":`; anything else answers `undefined` (parse it fully).
 */
export const peekSeq = (line: string): number | undefined => {
  if (!line.startsWith('{"seq":')) return undefined
  let seq = 0
  let i = 7
  for (; i < line.length && i < 24; i++) {
    const c = line.charCodeAt(i)
    if (c < 48 || c > 57) break
    seq = seq * 10 + (c - 48)
  }
  return i > 7 && line.charCodeAt(i) === 44 /* , */ ? seq : undefined
}

/** `peekSeq` on a line's bytes. */
export const peekSeqBytes = (bytes: Uint8Array): number | undefined => {
  if (!matchAt(bytes, 0, SEQ_OPEN)) return undefined
  let seq = 0
  let i = SEQ_OPEN.length
  for (; i < bytes.length && i < 24; i++) {
    const c = bytes[i]!
    if (c < 48 || c > 57) break
    seq = seq * 10 + (c - 48)
  }
  return i > SEQ_OPEN.length && bytes[i] === 44 /* , */ ? seq : undefined
}

/** A line with the byte offset where it starts in its file. */
export interface Line {
  readonly text: string
  readonly offset: number
}

/** A line's bytes (without its newline) with the byte offset where it starts in its file. */
export interface ByteLine {
  readonly bytes: Uint8Array
  readonly offset: number
}

/**
 * Splits a file's bytes, fed in chunks, into complete lines. Checks each chunk's run of
 * complete lines as UTF-8 at once; only on failure does it look for the bad line.
 */
export abstract class Splitter<L> {
  private carry: Uint8Array | undefined = undefined
  /** File offset of the first byte of `carry` (or of the next chunk when there is none). */
  private base = 0

  constructor(startOffset = 0) {
    this.base = startOffset
  }

  /** Bytes held back as an incomplete line. */
  get pending(): number {
    return this.carry === undefined ? 0 : this.carry.length
  }

  /** Offset just past the last complete line returned. */
  get offset(): number {
    return this.base
  }

  /** The lines of `complete` (valid UTF-8 or not, without its final newline) at file offset `base`; `undefined` when not UTF-8. */
  protected abstract split(complete: Uint8Array, base: number): Array<L> | undefined

  /**
   * Complete lines in `chunk` (plus what was carried), or the offset of a line that is not UTF-8
   * together with the complete lines before it (so a reader can deliver those first).
   */
  push(chunk: Uint8Array): Array<L> | { readonly invalidUtf8At: number; readonly lines: Array<L> } {
    // Views of a plain `Uint8Array` cost less to make than views of a `Buffer`, and a line is one.
    let bytes = Buffer.isBuffer(chunk) ? new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength) : chunk
    let lines: Array<L> = []
    if (this.carry !== undefined) {
      // Only the carried line is joined with the start of the chunk, not the whole chunk.
      const first = bytes.indexOf(NEWLINE)
      const joined = new Uint8Array(this.carry.length + (first < 0 ? bytes.length : first + 1))
      joined.set(this.carry, 0)
      joined.set(first < 0 ? bytes : bytes.subarray(0, first + 1), this.carry.length)
      this.carry = undefined
      if (first < 0) {
        this.carry = joined
        return []
      }
      const result = this.complete(joined, joined.length - 1)
      if (!Array.isArray(result)) return result
      lines = result
      bytes = bytes.subarray(first + 1)
    }
    const last = bytes.lastIndexOf(NEWLINE)
    if (last < 0) {
      if (bytes.length > 0) this.carry = bytes.slice()
      return lines
    }
    if (last + 1 < bytes.length) this.carry = bytes.slice(last + 1)
    const result = this.complete(bytes, last)
    if (Array.isArray(result)) return lines.length === 0 ? result : lines.concat(result)
    return { invalidUtf8At: result.invalidUtf8At, lines: lines.concat(result.lines) }
  }

  /** The lines of `bytes` up to the newline at `last`, moving the offset past them unless one is not UTF-8. */
  private complete(
    bytes: Uint8Array,
    last: number
  ): Array<L> | { readonly invalidUtf8At: number; readonly lines: Array<L> } {
    const complete = bytes.subarray(0, last)
    const lines = this.split(complete, this.base)
    if (lines === undefined) {
      const bad = firstInvalidLine(complete)
      const before = bad === 0 ? [] : this.split(complete.subarray(0, bad - 1), this.base)!
      return { invalidUtf8At: this.base + bad, lines: before }
    }
    this.base += last + 1
    return lines
  }
}

/** Lines as text, for parsing. */
export class LineSplitter extends Splitter<Line> {
  protected split(complete: Uint8Array, base: number): Array<Line> | undefined {
    let text: string
    try {
      text = utf8.decode(complete)
    } catch {
      return undefined
    }
    return splitLines(text, complete.length, base)
  }
}

/** Lines as bytes, passed on without decoding (the bytes are views of the chunk, not copies). */
export class ByteLineSplitter extends Splitter<ByteLine> {
  protected split(complete: Uint8Array, base: number): Array<ByteLine> | undefined {
    if (!isUtf8(complete)) return undefined
    const lines: Array<ByteLine> = []
    let start = 0
    while (start <= complete.length) {
      let end = complete.indexOf(NEWLINE, start)
      if (end < 0) end = complete.length
      lines.push({ bytes: complete.subarray(start, end), offset: base + start })
      start = end + 1
    }
    return lines
  }
}

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0))
const SEQ_OPEN = ascii('{"seq":')
const TS_OPEN = ascii(',"ts":"')
const SESSION_OPEN = ascii(',"session_id":"')
const EVENT_OPEN = ascii(',"event":{')
const QUOTE = 0x22
const BACKSLASH = 0x5c
const CLOSE_BRACE = 0x7d

/** The text of a short run of UTF-8 bytes (a session id): ASCII is read directly, since a decoder call costs more. */
const textOf = (bytes: Uint8Array, from: number, end: number): string => {
  let text = ""
  for (let i = from; i < end; i++) {
    const b = bytes[i]!
    if (b >= 0x80) return utf8.decode(bytes.subarray(from, end))
    text += String.fromCharCode(b)
  }
  return text
}

const matchAt = (bytes: Uint8Array, at: number, expected: Uint8Array): boolean => {
  if (at + expected.length > bytes.length) return false
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false
  return true
}

/** Index of the quote closing a JSON string that starts at `from`; -1 if it holds an escape or never closes. */
const plainStringEnd = (bytes: Uint8Array, from: number): number => {
  for (let i = from; i < bytes.length; i++) {
    const b = bytes[i]!
    if (b === QUOTE) return i
    if (b === BACKSLASH) return -1
  }
  return -1
}

/**
 * A line as a change item, its envelope read in place from the layout this codec writes (`{"seq":N,"ts":"…",("session_id":"…",)"event":{…}}`),
 * read in place; `undefined` for any other layout (an escaped session id, another key order) or a
 * line that is not whole, which the caller parses in full instead (and so reports as invalid).
 */
export const peekEnvelope = (bytes: Uint8Array): LineChange | undefined => {
  if (!matchAt(bytes, 0, SEQ_OPEN) || bytes[bytes.length - 1] !== CLOSE_BRACE) return undefined
  let seq = 0
  let i = SEQ_OPEN.length
  for (; i < bytes.length && i < SEQ_OPEN.length + 16; i++) {
    const c = bytes[i]!
    if (c < 48 || c > 57) break
    seq = seq * 10 + (c - 48)
  }
  if (i === SEQ_OPEN.length || seq < 1 || !Number.isSafeInteger(seq) || !matchAt(bytes, i, TS_OPEN)) return undefined
  const tsEnd = plainStringEnd(bytes, i + TS_OPEN.length)
  if (tsEnd < 0) return undefined
  let sessionId: string | undefined = undefined
  let next = tsEnd + 1
  if (matchAt(bytes, next, SESSION_OPEN)) {
    const from = next + SESSION_OPEN.length
    const end = plainStringEnd(bytes, from)
    if (end < 0) return undefined
    sessionId = textOf(bytes, from, end)
    next = end + 1
  }
  // The envelope up to the event's brace is checked; the rest must close it and then the line.
  return matchAt(bytes, next, EVENT_OPEN) && closesAtEnd(bytes, next + EVENT_OPEN.length - 1)
    ? { _tag: "Change", seq, sessionId, line: bytes }
    : undefined
}

/**
 * Whether the value opening at `from` (inside the line's outer object) is whole as far as its
 * brackets and strings go, and the line ends right after it closes: every string closed,
 * brackets balanced. It catches what damage to a file looks like (a line cut short, two lines
 * run together) without building the value, and skips over each string with a native search,
 * since strings are most of a line.
 */
const closesAtEnd = (bytes: Uint8Array, from: number): boolean => {
  let depth = 1
  const last = bytes.length - 1
  for (let i = from; i <= last; i++) {
    const b = bytes[i]!
    if (b === QUOTE) {
      i = closingQuote(bytes, i + 1)
      if (i < 0) return false
    } else if (b === 0x7b || b === 0x5b) depth++
    else if (b === CLOSE_BRACE || b === 0x5d) {
      if (--depth === 0) return i === last
      if (depth < 0) return false
    }
  }
  return false
}

/** Index of the unescaped quote that closes a string whose content starts at `from`, or -1. */
const closingQuote = (bytes: Uint8Array, from: number): number => {
  let at = bytes.indexOf(QUOTE, from)
  while (at >= 0) {
    let backslashes = 0
    while (bytes[at - 1 - backslashes] === BACKSLASH) backslashes++
    if (backslashes % 2 === 0) return at
    at = bytes.indexOf(QUOTE, at + 1)
  }
  return -1
}

/** The lines of `text` (decoded from `byteLength` bytes without their final newline), starting at file offset `base`. */
const splitLines = (text: string, byteLength: number, base: number): Array<Line> => {
  const lines: Array<Line> = []
  let offset = base
  let start = 0
  // Byte offsets are only needed for error reports; track them cheaply for ASCII lines.
  const ascii = text.length === byteLength
  while (start <= text.length) {
    let end = text.indexOf("\n", start)
    if (end < 0) end = text.length
    const line = text.slice(start, end)
    lines.push({ text: line, offset })
    offset += (ascii ? line.length : Buffer.byteLength(line)) + 1
    start = end + 1
  }
  return lines
}

/** Offset of the first line in `bytes` that is not valid UTF-8. */
const firstInvalidLine = (bytes: Uint8Array): number => {
  let start = 0
  while (start <= bytes.length) {
    let end = bytes.indexOf(NEWLINE, start)
    if (end < 0) end = bytes.length
    try {
      utf8.decode(bytes.subarray(start, end))
    } catch {
      return start
    }
    start = end + 1
  }
  return 0
}
