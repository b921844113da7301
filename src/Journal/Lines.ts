/**
 * The line codec: one `ChangeEvent` JSON per line. Encoding turns a whole batch into one
 * buffer (one write per batch); decoding splits byte chunks into lines without ever
 * holding more than one chunk plus one partial line.
 */
import { Either, ParseResult, Schema } from "effect"
import type { ChangeEvent } from "../Domain/ChangeEvent.js"

const NEWLINE = 0x0a
// `ignoreBOM`: a byte-order mark is not ours to strip; kept, it fails the line's parse and leaves offsets exact.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const encoder = new TextEncoder()

/** Encode and decode events of one schema to and from journal lines. */
export interface LineCodec<A> {
  readonly encodeBatch: (events: ReadonlyArray<ChangeEvent<A>>) => Uint8Array
  /** Parses one line; answers the event or a reason the line is invalid. */
  readonly decodeLine: (line: string) => ChangeEvent<A> | string
}

export const makeLineCodec = <A, I>(schema: Schema.Schema<A, I>): LineCodec<A> => {
  const encodeEvent = Schema.encodeSync(schema)
  const decodeEvent = Schema.decodeUnknownEither(schema)
  return {
    encodeBatch: (events) => {
      let text = ""
      for (const e of events) {
        text +=
          e.session_id === undefined
            ? JSON.stringify({ seq: e.seq, ts: e.ts, event: encodeEvent(e.event) })
            : JSON.stringify({ seq: e.seq, ts: e.ts, session_id: e.session_id, event: encodeEvent(e.event) })
        text += "\n"
      }
      return encoder.encode(text)
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
      const event = decodeEvent(raw.event)
      if (Either.isLeft(event)) {
        return `field \`event\` is invalid: ${ParseResult.TreeFormatter.formatErrorSync(event.left)}`
      }
      return typeof sessionId === "string"
        ? { seq, ts: raw.ts, session_id: sessionId, event: event.right }
        : { seq, ts: raw.ts, event: event.right }
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

/** A line with the byte offset where it starts in its file. */
export interface Line {
  readonly text: string
  readonly offset: number
}

/**
 * Splits a file's bytes, fed in chunks, into complete lines. Decodes each chunk's run of
 * complete lines with one strict UTF-8 decode; only on failure does it look for the bad line.
 */
export class LineSplitter {
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

  /**
   * Complete lines in `chunk` (plus what was carried), or the offset of a line that is not UTF-8
   * together with the complete lines before it (so a reader can deliver those first).
   */
  push(chunk: Uint8Array): Array<Line> | { readonly invalidUtf8At: number; readonly lines: Array<Line> } {
    let bytes = chunk
    if (this.carry !== undefined) {
      bytes = new Uint8Array(this.carry.length + chunk.length)
      bytes.set(this.carry, 0)
      bytes.set(chunk, this.carry.length)
      this.carry = undefined
    }
    const last = bytes.lastIndexOf(NEWLINE)
    if (last < 0) {
      this.carry = bytes
      return []
    }
    if (last + 1 < bytes.length) this.carry = bytes.slice(last + 1)
    const complete = bytes.subarray(0, last)
    let text: string
    try {
      text = utf8.decode(complete)
    } catch {
      const bad = firstInvalidLine(complete)
      const before = bad === 0 ? [] : splitLines(utf8.decode(complete.subarray(0, bad - 1)), bad - 1, this.base)
      return { invalidUtf8At: this.base + bad, lines: before }
    }
    const lines = splitLines(text, complete.length, this.base)
    this.base += last + 1
    return lines
  }
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
