/**
 * The line codec: one `ChangeEvent` JSON per line, followed in the line by what only the
 * journal keeps: the idempotency key of the request that appended the event, if any, and a
 * CRC-32 of the line (`{"seq":7,"ts":"…","event":{…},"key":"K","crc":"1a2b3c4d"}`). A reader
 * that ignores unknown fields (the original) still reads such a line as the `ChangeEvent`.
 *
 * Encoding turns a whole batch into one buffer (one write per batch); each event's wire JSON is
 * a prefix of its line less the closing brace (its *body*), so the feed hands events on without
 * copying or parsing them. Decoding splits byte chunks into lines without ever holding more than
 * one chunk plus one partial line, then either parses each line or hands it on as bytes: a line
 * whose checksum holds is read in place (the checksum vouches for the JSON), any other is parsed
 * as the decoded read parses it, so that both refuse the same lines.
 */
import { isUtf8 } from "node:buffer"
import { crc32 } from "node:zlib"
import { Either, ParseResult, Schema } from "effect"
import { canonicalCheck } from "../Domain/Canonical.js"
import type { ChangeEvent } from "../Domain/ChangeEvent.js"
import type { LineChange } from "../Domain/FeedItem.js"
import { copyOut, findByte, matchAt, maxUtf8Bytes, Scratch, textOf, viewOf, writeDigits } from "../Scratch.js"
import { controlByteIn } from "./LineScan.js"
import { JournalKeyInvalid } from "./Errors.js"

const NEWLINE = 0x0a
// `ignoreBOM`: a byte-order mark is not ours to strip; kept, it fails the line's parse and leaves offsets exact.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
const encoder = new TextEncoder()

/**
 * An event as the journal stores it: the change, plus the idempotency key of the request that
 * appended it, if any (never part of the change on the wire).
 */
export interface StoredEvent<A> extends ChangeEvent<A> {
  readonly key?: string | undefined
}

/** A change as a reader of lines gets it, with the idempotency key its line holds (journal-side only). */
export interface StoredLine extends LineChange {
  readonly key: string | undefined
}

/** Idempotency keys are stored as they are, so only characters JSON never escapes are allowed. */
const KEY_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/

/** A batch as written to the journal: every line followed by a newline, in one buffer. */
export interface EncodedBatch {
  readonly bytes: Uint8Array
  /** Where each event's line ends in `bytes` (the offset of its newline). */
  readonly ends: ReadonlyArray<number>
  /** Where each event's body ends in `bytes` (just past its `event` object). */
  readonly bodyEnds: ReadonlyArray<number>
}

/** Where event `i`'s line starts in an encoded batch. */
export const lineStart = (batch: EncodedBatch, i: number): number => (i === 0 ? 0 : batch.ends[i - 1]! + 1)

/** The bytes of event `i`'s line in an encoded batch, without its newline (no copy). */
export const lineAt = (batch: EncodedBatch, i: number): Uint8Array =>
  batch.bytes.subarray(lineStart(batch, i), batch.ends[i]!)

/** Event `i`'s body in an encoded batch: its wire JSON less the closing brace (no copy). */
export const bodyAt = (batch: EncodedBatch, i: number): Uint8Array =>
  batch.bytes.subarray(lineStart(batch, i), batch.bodyEnds[i]!)

/** The length of event `i`'s body in an encoded batch (no view made). */
export const bodyLengthAt = (batch: EncodedBatch, i: number): number => batch.bodyEnds[i]! - lineStart(batch, i)

/** Encode and decode events of one schema to and from journal lines. */
export interface LineCodec<A> {
  /**
   * The lines of a batch. `encoded[i].eventJson`, when set, is event `i` already encoded
   * (`JSON.stringify` of the schema's encoding of it, or its UTF-8) and is written as it is.
   */
  readonly encodeBatch: (
    events: ReadonlyArray<StoredEvent<A>>,
    encoded?: ReadonlyArray<{ readonly eventJson?: string | Uint8Array | undefined }>
  ) => EncodedBatch
  /**
   * Parses one line (its bytes too when at hand, for the checksum; otherwise they are encoded
   * from the text); answers the event or a reason the line is invalid.
   */
  readonly decodeLine: (text: string, bytes?: Uint8Array) => StoredEvent<A> | string
}

// ---- checksums --------------------------------------------------------------------------------------------------

const ascii = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0))
const CRC_OPEN = ascii(',"crc":"')
/** `,"crc":"hhhhhhhh"}`: the checksum field and the brace closing the line. */
const CRC_SUFFIX = CRC_OPEN.length + 8 + 2
const KEY_OPEN = ascii(',"key":"')
const SEQ_OPEN = ascii('{"seq":')
const TS_OPEN = ascii(',"ts":"')
const SESSION_OPEN = ascii(',"session_id":"')
const EVENT_OPEN = ascii(',"event":{')
const HEX = ascii("0123456789abcdef")
const QUOTE = 0x22
const BACKSLASH = 0x5c
const CLOSE_BRACE = 0x7d

/**
 * Whether a line ends in a checksum field (what `verifyChecksum` then checks). The line is
 * `bytes` from `start` to `end` (all of them by default), here and in the other readers of a
 * line that take both: so that lines are read where they lie in a chunk, without a view of each.
 */
export const hasChecksum = (bytes: Uint8Array, start = 0, end = bytes.length): boolean =>
  end - start >= CRC_SUFFIX + 2 &&
  bytes[end - 1] === CLOSE_BRACE &&
  bytes[end - 2] === QUOTE &&
  matchAt(bytes, end - CRC_SUFFIX, CRC_OPEN)

/**
 * Checks a line's checksum: answers where the checksummed part ends (the checksum field's
 * start), `-1` for a line without one (written by the original or an earlier version), or why
 * the line fails.
 */
export const verifyChecksum = (bytes: Uint8Array, start = 0, lineEnd = bytes.length): number | string => {
  if (!hasChecksum(bytes, start, lineEnd)) return -1
  const end = lineEnd - CRC_SUFFIX
  const digits = end + CRC_OPEN.length
  let stored = 0
  for (let i = digits; i < digits + 8; i++) {
    const c = bytes[i]!
    const nibble = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1
    if (nibble < 0) return "field `crc` is not 8 lowercase hex digits"
    stored = stored * 16 + nibble
  }
  const actual = crc32(bytes.subarray(start, end))
  return actual === stored
    ? end
    : `checksum mismatch: the line changed after it was written (crc ${hex(stored)}, the bytes give ${hex(actual)})`
}

const hex = (crc: number) => crc.toString(16).padStart(8, "0")

/** Writes a checksum's 8 hex digits into `bytes` at `at`. */
const writeHex = (bytes: Uint8Array, at: number, crc: number) => {
  for (let k = 0; k < 8; k++) bytes[at + k] = HEX[(crc >>> (28 - 4 * k)) & 15]!
}

// ---- line separators --------------------------------------------------------------------------------------------

/**
 * U+2028 and U+2029 escaped: JSON allows them raw in strings, but many line readers (and
 * JavaScript before ES2019) take them for line breaks. Escaped, it is still the same JSON.
 */
const escapeSeparators = (json: string): string =>
  json.includes("\u2028") || json.includes("\u2029")
    ? json.replace(/[\u2028\u2029]/g, (c) => (c === "\u2028" ? "\\u2028" : "\\u2029"))
    : json

/** Where a raw U+2028/U+2029 (E2 80 A8/A9 in UTF-8) starts in `bytes`, or -1. */
const separatorAt = (bytes: Uint8Array, from = 0): number => {
  for (let at = findByte(bytes, 0xe2, from); at >= 0; at = findByte(bytes, 0xe2, at + 1)) {
    if (bytes[at + 1] === 0x80 && (bytes[at + 2] === 0xa8 || bytes[at + 2] === 0xa9)) return at
  }
  return -1
}

const ESCAPED_2028 = ascii("\\u2028")
const ESCAPED_2029 = ascii("\\u2029")
/** `bytes` with every raw U+2028/U+2029 escaped (a copy), for the rare line written before they were. */
const escapeSeparatorBytes = (bytes: Uint8Array, first: number): Uint8Array => {
  const parts: Array<Uint8Array> = []
  let from = 0
  for (let at = first; at >= 0; at = separatorAt(bytes, at + 3)) {
    parts.push(bytes.subarray(from, at), bytes[at + 2] === 0xa8 ? ESCAPED_2028 : ESCAPED_2029)
    from = at + 3
  }
  parts.push(bytes.subarray(from))
  return Buffer.concat(parts)
}

const EMPTY = new Uint8Array(0)
const TS_KEY = ascii(',"ts":')
const SESSION_KEY = ascii(',"session_id":')
const EVENT_KEY = ascii(',"event":')
/** The checksum field with its digits still to fill in, the closing brace and the newline. */
const CRC_TAIL = ascii(',"crc":"00000000"}\n')
/**
 * The most a line's head takes besides its `ts` and `session_id` values: the longest number
 * `JSON.stringify` writes is 25 bytes (`-0.0000012345678901234567`), 32 leaves room to spare.
 */
const HEAD_BYTES = SEQ_OPEN.length + 32 + TS_KEY.length + SESSION_KEY.length + EVENT_KEY.length
/** The most a line's tail takes: the longest key, the checksum. */
const TAIL_BYTES = KEY_OPEN.length + 128 + 1 + CRC_TAIL.length

/** Copies a short run of ASCII into `out` at `at`; answers where it ends. */
const writeAscii = (out: Uint8Array, at: number, bytes: Uint8Array): number => {
  for (let k = 0; k < bytes.length; k++) out[at + k] = bytes[k]!
  return at + bytes.length
}

/** Writes `JSON.stringify(seq)` into `out` at `at`, digit by digit for the safe integers seqs are. */
const writeSeq = (out: Buffer, at: number, seq: number): number =>
  Number.isSafeInteger(seq) && seq >= 0 ? writeDigits(out, at, seq) : at + out.write(JSON.stringify(seq), at, "latin1")

/** The most UTF-8 `JSON.stringify(text)` takes with its separators escaped: six bytes a unit (`\u001f`), and the quotes. */
const maxJsonStringBytes = (text: string): number => 6 * text.length + 2

/**
 * Writes `JSON.stringify(text)` with its separators escaped into `out` at `at`; answers where
 * it ends. A string of printable ASCII without quote or backslash (a session id, nearly always)
 * is its own JSON: its characters are copied as they are, without making the JSON string.
 */
const writeJsonString = (out: Buffer, at: number, text: string): number => {
  out[at] = QUOTE
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k)
    if (c < 0x20 || c >= 0x7f || c === QUOTE || c === BACKSLASH)
      return at + out.write(escapeSeparators(JSON.stringify(text)), at, "utf8")
    out[at + 1 + k] = c
  }
  out[at + 1 + text.length] = QUOTE
  return at + text.length + 2
}

/** Where batches are written before they are copied out (any codec's: encoding is synchronous). */
const scratch = new Scratch(64 * 1024, 1024 * 1024)

// ---- the codec --------------------------------------------------------------------------------------------------

export const makeLineCodec = <A, I>(schema: Schema.Schema<A, I>): LineCodec<A> => {
  const encodeEvent = Schema.encodeSync(schema)
  const decodeEvent = Schema.decodeUnknownEither(schema)
  // An event that is its own encoding (`Domain/Canonical.ts`) is written without the encoder's
  // copy of it: what a producer builds as the schema reads it, fields in order, usually is.
  const isCanonical = canonicalCheck(schema)
  const jsonOf = (event: A): string => JSON.stringify(isCanonical(event) ? event : encodeEvent(event))
  return {
    encodeBatch: (events, encoded) => {
      // Each line is `JSON.stringify({ seq, ts, session_id?, event })` less its closing brace,
      // put together from its fields' JSON so that an event already encoded is not encoded again,
      // and written as UTF-8 piece by piece: neither the batch nor a line is ever one string.
      let out = scratch.buffer
      let at = 0
      const ends: Array<number> = new Array(events.length)
      const bodyEnds: Array<number> = new Array(events.length)
      let ts: string | undefined = undefined
      let tsJson: Uint8Array = EMPTY
      for (let i = 0; i < events.length; i++) {
        const e = events[i]!
        if (e.ts !== ts) {
          ts = e.ts
          tsJson = Buffer.from(escapeSeparators(JSON.stringify(ts)), "utf8")
        }
        const given = encoded?.[i]?.eventJson
        // The event's JSON with raw line separators escaped (as bytes, or as text to write).
        let body: Uint8Array | undefined = undefined
        let text: string | undefined = undefined
        if (given instanceof Uint8Array) {
          const first = separatorAt(given)
          body = first < 0 ? given : escapeSeparatorBytes(given, first)
        } else text = escapeSeparators(given ?? jsonOf(e.event))
        const session = e.session_id
        out = scratch.room(
          out,
          at,
          HEAD_BYTES +
            tsJson.length +
            (session === undefined ? 0 : maxJsonStringBytes(session)) +
            (body === undefined ? maxUtf8Bytes(text!.length) : body.length) +
            TAIL_BYTES
        )
        at = writeAscii(out, at, SEQ_OPEN)
        at = writeSeq(out, at, e.seq)
        at = writeAscii(out, at, TS_KEY)
        out.set(tsJson, at)
        at += tsJson.length
        if (session !== undefined) {
          at = writeAscii(out, at, SESSION_KEY)
          at = writeJsonString(out, at, session)
        }
        at = writeAscii(out, at, EVENT_KEY)
        if (body === undefined) at += out.write(text!, at, "utf8")
        else {
          out.set(body, at)
          at += body.length
        }
        bodyEnds[i] = at
        if (e.key !== undefined) {
          if (!KEY_PATTERN.test(e.key)) throw new JournalKeyInvalid({ key: e.key })
          at = writeAscii(out, at, KEY_OPEN)
          // A key is ASCII (its pattern says so): its characters are its bytes.
          for (let k = 0; k < e.key.length; k++) out[at++] = e.key.charCodeAt(k)
          out[at++] = QUOTE
        }
        // The checksum's digits are filled in below, once the line is in its own buffer.
        at = writeAscii(out, at, CRC_TAIL)
        // JSON text never holds a raw newline: each line's is its last byte.
        ends[i] = at - 1
      }
      const bytes = copyOut(out, at)
      let start = 0
      for (let i = 0; i < ends.length; i++) {
        const checked = ends[i]! - CRC_SUFFIX
        writeHex(bytes, checked + CRC_OPEN.length, crc32(viewOf(bytes, start, checked)))
        start = ends[i]! + 1
      }
      return { bytes, ends, bodyEnds }
    },
    decodeLine: (line, lineBytes) => {
      const parsed = parseLine(line, lineBytes ?? encoder.encode(line))
      if (typeof parsed === "string") return parsed
      const event = decodeEvent(parsed.event)
      if (Either.isLeft(event)) {
        return `field \`event\` is invalid: ${ParseResult.TreeFormatter.formatErrorSync(event.left)}`
      }
      const change: StoredEvent<A> =
        parsed.sessionId === undefined
          ? { seq: parsed.seq, ts: parsed.ts, event: event.right }
          : { seq: parsed.seq, ts: parsed.ts, session_id: parsed.sessionId, event: event.right }
      return parsed.key === undefined ? change : { ...change, key: parsed.key }
    }
  }
}

/** A line parsed as far as the journal's own fields go: the event is JSON, not yet judged against a schema. */
interface ParsedLine {
  readonly seq: number
  readonly ts: string
  readonly sessionId: string | undefined
  readonly event: unknown
  readonly key: string | undefined
  /** Where the checksummed part of the line ends (-1: the line has no checksum). */
  readonly checked: number
}

/**
 * Parses a line (its text and bytes) and checks its checksum and the fields the journal reads:
 * the one check of a line that both reads, recovery and `inspect` make, before the event.
 */
const parseLine = (text: string, bytes: Uint8Array): ParsedLine | string => {
  const checked = verifyChecksum(bytes)
  if (typeof checked === "string") return checked
  let raw: any
  try {
    raw = JSON.parse(text)
  } catch (error) {
    return `invalid JSON (${(error as Error).message})`
  }
  if (raw === null || typeof raw !== "object") return "line is not a JSON object"
  const seq = raw.seq
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) return "field `seq` is not a positive integer"
  if (typeof raw.ts !== "string") return "field `ts` is not a string"
  const sessionId = raw.session_id
  if (sessionId !== undefined && sessionId !== null && typeof sessionId !== "string") {
    return "field `session_id` is not a string"
  }
  if (checked < 0 && raw.crc !== undefined) return "field `crc` is not at the end of the line"
  const key = raw.key
  if (key !== undefined && (typeof key !== "string" || !KEY_PATTERN.test(key))) {
    return "field `key` is not an idempotency key"
  }
  return { seq, ts: raw.ts, sessionId: sessionId ?? undefined, event: raw.event, key, checked }
}

/**
 * The seq of a line whose envelope is whole (`seq`, `ts`, `event`) and whose checksum, if it
 * has one, holds, without judging the event against a schema (recovery must not refuse an
 * event a newer catalog wrote; reads report those); otherwise why the line is invalid.
 */
export const envelopeSeq = (bytes: Uint8Array): number | string => {
  const parsed = parseEnvelope(bytes)
  return typeof parsed === "string" ? parsed : parsed.seq
}

/** A line's bytes decoded and parsed, its checksum checked and its event an object; or why not. */
const parseEnvelope = (bytes: Uint8Array) => {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    return "line is not valid UTF-8"
  }
  const parsed = parseLine(text, bytes)
  if (typeof parsed === "string") return parsed
  return parsed.event === null || typeof parsed.event !== "object" ? "field `event` is not an object" : parsed
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
export const peekSeqBytes = (bytes: Uint8Array, start = 0, end = bytes.length): number | undefined => {
  if (!matchAt(bytes, start, SEQ_OPEN)) return undefined
  let seq = 0
  const from = start + SEQ_OPEN.length
  let i = from
  for (; i < end && i < start + 24; i++) {
    const c = bytes[i]!
    if (c < 48 || c > 57) break
    seq = seq * 10 + (c - 48)
  }
  return i > from && bytes[i] === 44 /* , */ ? seq : undefined
}

/** A line as text and bytes, with the byte offset where it starts in its file. */
export interface Line {
  readonly text: string
  /** The line's bytes, a view of the chunk it was read from (for its checksum). */
  readonly bytes: Uint8Array
  readonly offset: number
}

/** A line's bytes (without its newline) with the byte offset where it starts in its file. */
export interface ByteLine {
  readonly bytes: Uint8Array
  readonly offset: number
  /** Known to hold no control byte (checked for a whole run of lines at once); otherwise unknown. */
  readonly controlFree: boolean
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
    return splitLines(text, complete, base)
  }
}

/**
 * Complete lines as bytes, as one block per run of them (a view of the chunk, its lines separated
 * by newlines, the last one without), for readers that go through the lines where they lie.
 * Control bytes are looked for in the whole block at once (unless the reader looks for them line
 * by line: `checkControl` false); a line of a block with one checks itself.
 */
export class ByteBlockSplitter extends Splitter<ByteLine> {
  constructor(
    startOffset = 0,
    private readonly checkControl = true,
    /** False for a reader whose lines were checked already (a sealed segment's index): UTF-8 is not looked at. */
    private readonly checkUtf8 = true
  ) {
    super(startOffset)
  }

  protected split(complete: Uint8Array, base: number): Array<ByteLine> | undefined {
    if (this.checkUtf8 && !isUtf8(complete)) return undefined
    return [{ bytes: complete, offset: base, controlFree: this.checkControl && !hasControlByte(complete) }]
  }
}

/** Where the line starting at `start` in a block ends (its newline, or the block's end). */
export const lineEndIn = (block: Uint8Array, start: number): number => {
  const end = findByte(block, NEWLINE, start)
  return end < 0 ? block.length : end
}

/** Lines as bytes, passed on without decoding (the bytes are views of the chunk, not copies). */
export class ByteLineSplitter extends ByteBlockSplitter {
  protected override split(complete: Uint8Array, base: number): Array<ByteLine> | undefined {
    const block = super.split(complete, base)?.[0]
    if (block === undefined) return undefined
    const lines: Array<ByteLine> = []
    for (let start = 0; start <= complete.length;) {
      const end = lineEndIn(complete, start)
      lines.push({ bytes: complete.subarray(start, end), offset: base + start, controlFree: block.controlFree })
      start = end + 1
    }
    return lines
  }
}

/** Index of the quote closing a JSON string that starts at `from` before `end`; -1 if it holds an escape or never closes. */
const plainStringEnd = (bytes: Uint8Array, from: number, end: number): number => {
  for (let i = from; i < end; i++) {
    const b = bytes[i]!
    if (b === QUOTE) return i
    if (b === BACKSLASH) return -1
  }
  return -1
}

/**
 * Where the fields of a line in this codec's layout lie, as `scanLayout` last found them (one
 * record, rewritten by every scan, so that scanning a line allocates nothing).
 */
export interface LineLayout {
  readonly seq: number
  /** The session id's text is `sessionFrom` to `sessionTo` (-1 when the line has none). */
  readonly sessionFrom: number
  readonly sessionTo: number
  /** The idempotency key's text is `keyFrom` to `keyTo` (-1 when the line has none). */
  readonly keyFrom: number
  readonly keyTo: number
  /** Where the line's body (its wire JSON less the closing brace) ends. */
  readonly bodyEnd: number
}

const layout = { seq: 0, sessionFrom: -1, sessionTo: -1, keyFrom: -1, keyTo: -1, bodyEnd: 0 }

/**
 * A checksummed line read in place from the layout this codec writes
 * (`{"seq":N,"ts":"…",("session_id":"…",)"event":{…}(,"key":"…"),"crc":"…"}`): where its
 * fields lie (the shared `LineLayout`, valid until the next scan). The checksum vouches that the
 * bytes are what the encoder wrote (JSON, line separators escaped), so the line is not parsed.
 * What could still break a frame if someone wrote a line by hand, checksum and all, is checked
 * anyway: a raw control byte (such a line's JSON may be wrong in other ways, which the frame
 * carries to the client as it is). Answers why the line is invalid when its checksum fails, and
 * `undefined` for a line it cannot vouch for (no checksum, another layout, an escaped session
 * id), which `readParsed` reads. `controlFree` says the caller already knows the line holds no
 * control byte.
 */
export const scanInPlace = (
  bytes: Uint8Array,
  start: number,
  end: number,
  controlFree: boolean
): LineLayout | string | undefined => {
  const checked = verifyChecksum(bytes, start, end)
  if (typeof checked === "string") return checked
  if (checked < 0 || !(controlFree || !hasControlByte(bytes.subarray(start, end)))) return undefined
  return scanLayout(bytes, start, end, checked, true) ? layout : undefined
}

/** A checksummed line as a reader's item, read in place (`scanInPlace`): its body is a view of the line. */
export const readInPlace = (
  bytes: Uint8Array,
  controlFree: boolean = !hasControlByte(bytes)
): StoredLine | string | undefined => {
  const scanned = scanInPlace(bytes, 0, bytes.length, controlFree)
  return scanned === undefined || typeof scanned === "string" ? scanned : lineOf(bytes, scanned)
}

/**
 * A line `readInPlace` cannot vouch for, parsed in full and checked as `read` checks it (but for
 * the event's schema): its item, or why it is invalid. Its body is still the line's own bytes
 * where its layout is this codec's (so an event keeps every field and digit it was written with),
 * and is otherwise encoded anew from the parsed line.
 */
export const readParsed = (bytes: Uint8Array, controlFree: boolean = !hasControlByte(bytes)): StoredLine | string => {
  const parsed = parseEnvelope(bytes)
  if (typeof parsed === "string") return parsed
  const inPlace = controlFree ? locate(bytes, parsed.checked < 0 ? bytes.length - 1 : parsed.checked) : undefined
  if (inPlace !== undefined) return inPlace
  const json = escapeSeparators(
    JSON.stringify(
      parsed.sessionId === undefined
        ? { seq: parsed.seq, ts: parsed.ts, event: parsed.event }
        : { seq: parsed.seq, ts: parsed.ts, session_id: parsed.sessionId, event: parsed.event }
    )
  )
  const body = encoder.encode(json)
  return {
    _tag: "Change",
    seq: parsed.seq,
    sessionId: parsed.sessionId,
    body: body.subarray(0, body.length - 1),
    key: parsed.key
  }
}

/**
 * Whether the line `bytes` from `start` to `lineEnd` is in this codec's layout, with its fields
 * before the line's closing brace (or its checksum field) ending at `end`; where they lie goes
 * into `layout`. A line the checksum `vouched` for is what the encoder wrote: its event ends where
 * its key or checksum begins and holds no raw line separator. Any other line is looked at more
 * closely: its brackets must close where its event ends (it may hold fields after it).
 */
const scanLayout = (bytes: Uint8Array, start: number, lineEnd: number, end: number, vouched: boolean): boolean => {
  if (!matchAt(bytes, start, SEQ_OPEN) || bytes[lineEnd - 1] !== CLOSE_BRACE) return false
  let seq = 0
  let i = start + SEQ_OPEN.length
  for (; i < lineEnd && i < start + SEQ_OPEN.length + 16; i++) {
    const c = bytes[i]!
    if (c < 48 || c > 57) break
    seq = seq * 10 + (c - 48)
  }
  if (i === start + SEQ_OPEN.length || seq < 1 || !Number.isSafeInteger(seq) || !matchAt(bytes, i, TS_OPEN)) {
    return false
  }
  const tsEnd = plainStringEnd(bytes, i + TS_OPEN.length, lineEnd)
  if (tsEnd < 0) return false
  let sessionFrom = -1
  let sessionTo = -1
  let next = tsEnd + 1
  if (matchAt(bytes, next, SESSION_OPEN)) {
    sessionFrom = next + SESSION_OPEN.length
    sessionTo = plainStringEnd(bytes, sessionFrom, lineEnd)
    if (sessionTo < 0) return false
    next = sessionTo + 1
  }
  if (!matchAt(bytes, next, EVENT_OPEN)) return false
  // The event ends where the key field begins, if there is one, or at `end`.
  let bodyEnd = end
  let keyFrom = -1
  let keyTo = -1
  if (bytes[end - 1] === QUOTE) {
    const open = bytes.lastIndexOf(QUOTE, end - 2)
    const fieldStart = open - KEY_OPEN.length + 1
    if (open < start || !matchAt(bytes, fieldStart, KEY_OPEN)) return false
    keyFrom = open + 1
    keyTo = end - 1
    if (!isKeyText(bytes, keyFrom, keyTo)) return false
    bodyEnd = fieldStart
  }
  if (vouched ? bytes[bodyEnd - 1] !== CLOSE_BRACE : !closesAt(bytes, next + EVENT_OPEN.length - 1, bodyEnd - 1)) {
    return false
  }
  layout.seq = seq
  layout.sessionFrom = sessionFrom
  layout.sessionTo = sessionTo
  layout.keyFrom = keyFrom
  layout.keyTo = keyTo
  layout.bodyEnd = bodyEnd
  return true
}

/** Whether `bytes` from `from` to `to` are an idempotency key (`KEY_PATTERN`, byte by byte). */
const isKeyText = (bytes: Uint8Array, from: number, to: number): boolean => {
  if (to - from < 1 || to - from > 128) return false
  for (let i = from; i < to; i++) {
    const b = bytes[i]!
    const ok =
      (b >= 0x30 && b <= 0x3a) || // 0-9 :
      (b >= 0x41 && b <= 0x5a) ||
      (b >= 0x61 && b <= 0x7a) ||
      b === 0x2e || // .
      b === 0x5f || // _
      b === 0x2d // -
    if (!ok) return false
  }
  return true
}

/** The item of a line (its own bytes, from 0) whose layout was just scanned. */
const lineOf = (bytes: Uint8Array, scanned: LineLayout): StoredLine => ({
  _tag: "Change",
  seq: scanned.seq,
  sessionId: scanned.sessionFrom < 0 ? undefined : textOf(bytes, scanned.sessionFrom, scanned.sessionTo),
  body: bytes.subarray(0, scanned.bodyEnd),
  key: scanned.keyFrom < 0 ? undefined : textOf(bytes, scanned.keyFrom, scanned.keyTo)
})

/**
 * The item of a line in this codec's layout that the checksum did not vouch for, its fields
 * before the line's closing brace (or its checksum field) ending at `end`; `undefined` when the
 * line is not in that layout. The separators an earlier version left raw are escaped.
 */
const locate = (bytes: Uint8Array, end: number): StoredLine | undefined => {
  if (!scanLayout(bytes, 0, bytes.length, end, false)) return undefined
  const line = lineOf(bytes, layout)
  const separator = separatorAt(line.body)
  return separator < 0 ? line : { ...line, body: escapeSeparatorBytes(line.body, separator) }
}

const isControl = (b: number) => b < 0x20 && b !== NEWLINE

/** Bytes from which a search goes to WebAssembly (`controlByteIn`): below, the copy and the call cost more than they save. */
const SIMD_SEARCH_BYTES = 1024

/**
 * Whether `bytes` hold a byte below 0x20 other than a newline: a chunk's worth with WebAssembly
 * SIMD where there is some (`LineScan`), a line's worth (or a chunk's without it) here.
 */
export const hasControlByte = (bytes: Uint8Array): boolean =>
  (bytes.length >= SIMD_SEARCH_BYTES ? controlByteIn(bytes) : undefined) ?? wordsHoldControl(bytes)

/**
 * `hasControlByte` in JavaScript. Looks at the bytes 16 at a time (a byte-at-a-time loop doubled
 * the cost of reading lines in place), as 4 aligned words. The few bytes before and after those
 * are looked at one by one first, and the words in a function of their own with nothing after
 * its loop: a whole chunk is one call, so its loop is optimized while it runs (on-stack), and
 * any code after the loop that had not run by then lacked the type feedback to be optimized,
 * cost a deoptimization at every chunk, and kept a process's first replay in the interpreter.
 */
export const wordsHoldControl = (bytes: Uint8Array): boolean => {
  const n = bytes.length
  const head = Math.min(n, (4 - (bytes.byteOffset & 3)) & 3)
  const groups = (n - head) >>> 4
  const tail = head + 16 * groups
  return (
    controlIn(bytes, 0, head) ||
    controlIn(bytes, tail, n) ||
    (groups > 0 && groupsHoldControl(new Uint32Array(bytes.buffer, bytes.byteOffset + head, 4 * groups)))
  )
}

const controlIn = (bytes: Uint8Array, from: number, to: number): boolean => {
  for (let i = from; i < to; i++) if (isControl(bytes[i]!)) return true
  return false
}

/**
 * Whether words (a multiple of 4 of them) hold a control byte. `(w - 0x20202020) & ~w &
 * 0x80808080` is 0 for a word with no byte below 0x20 (it may flag more bytes than there are,
 * never fewer): four words are let through at once on that, and only the few it flags (a newline
 * is one) are tested exactly.
 */
const groupsHoldControl = (view: Uint32Array): boolean => {
  for (let k = 0; k < view.length; k += 4) {
    const a = view[k]!
    const b = view[k + 1]!
    const c = view[k + 2]!
    const d = view[k + 3]!
    const low = ((a - 0x20202020) & ~a) | ((b - 0x20202020) & ~b) | ((c - 0x20202020) & ~c) | ((d - 0x20202020) & ~d)
    if ((low & 0x80808080) !== 0 && (controlInWord(a) || controlInWord(b) || controlInWord(c) || controlInWord(d))) {
      return true
    }
  }
  return false
}

/**
 * Whether a word holds a byte below 0x20 that is not a newline, exactly: per byte, with no carry
 * between bytes, `((b & 0x7f) + 0x60) | b` has its high bit clear only for b below 0x20, and
 * `((x & 0x7f) + 0x7f) | x` only for x = 0, x being b xor the newline.
 */
const controlInWord = (w: number): boolean => {
  const low = ~((((w & 0x7f7f7f7f) + 0x60606060) | w) & 0x80808080)
  const x = w ^ 0x0a0a0a0a
  const notNewline = (((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) & 0x80808080
  return (low & notNewline) !== 0
}

/**
 * Whether the value opening at `from` is whole as far as its brackets and strings go and closes
 * exactly at `close`: every string closed, brackets balanced. It catches what damage to a file
 * looks like (a line cut short, two lines run together) without building the value, and skips
 * over each string with a native search, since strings are most of a line.
 */
const closesAt = (bytes: Uint8Array, from: number, close: number): boolean => {
  let depth = 0
  for (let i = from; i <= close; i++) {
    const b = bytes[i]!
    if (b === QUOTE) {
      i = closingQuote(bytes, i + 1)
      if (i < 0 || i > close) return false
    } else if (b === 0x7b || b === 0x5b) depth++
    else if (b === CLOSE_BRACE || b === 0x5d) {
      if (--depth === 0) return i === close
      if (depth < 0) return false
    }
  }
  return false
}

/** Index of the unescaped quote that closes a string whose content starts at `from`, or -1. */
const closingQuote = (bytes: Uint8Array, from: number): number => {
  let at = findByte(bytes, QUOTE, from)
  while (at >= 0) {
    let backslashes = 0
    while (bytes[at - 1 - backslashes] === BACKSLASH) backslashes++
    if (backslashes % 2 === 0) return at
    at = findByte(bytes, QUOTE, at + 1)
  }
  return -1
}

/** The lines of `text`, decoded from `bytes` (without their final newline), starting at file offset `base`. */
const splitLines = (text: string, bytes: Uint8Array, base: number): Array<Line> => {
  const lines: Array<Line> = []
  let at = 0
  let start = 0
  // Text and byte positions are the same for ASCII; otherwise each line's byte length is counted.
  const ascii = text.length === bytes.length
  while (start <= text.length) {
    let end = text.indexOf("\n", start)
    if (end < 0) end = text.length
    const line = text.slice(start, end)
    const length = ascii ? line.length : Buffer.byteLength(line)
    lines.push({ text: line, bytes: bytes.subarray(at, at + length), offset: base + at })
    at += length + 1
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
