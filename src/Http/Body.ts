/**
 * The body of `POST /api/v1/events`: read within a byte limit, checked to be journaled exactly
 * as sent (valid UTF-8, no number that a double would change, no nesting too deep to encode),
 * parsed once, and decoded to the feed's entries with the first fault named by its field. A
 * body written as `JSON.stringify` writes it, of canonical events (what clients that serialize
 * their events send), is not parsed at all: each event is taken as its bytes (`takeAsSent`).
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { isAscii, isUtf8 } from "node:buffer"
import { IncomingMessage } from "node:http"
import { Effect, Either, Stream } from "effect"
import type * as ChangeFeed from "../ChangeFeed.js"
import {
  AgentEvent,
  type AgentEventType,
  decodeAgentEvent,
  durableTypes,
  ephemeralTypes,
  isCanonicalAgentEvent,
  sessionIdOf
} from "../Domain/AgentEvent.js"
import { canonicalJsonCheck, canonicalStringEnd, canonicalValueEnd, hasEscape } from "../Domain/Canonical.js"
import { sessionPath } from "../Domain/FeedDomain.js"
import { BadRequest, PayloadTooLarge } from "../Domain/Errors.js"
import { JsonEntry } from "../ChangeFeed/Receipts.js"
import { EventJson } from "../Journal.js"
import { hasControlByte } from "../Journal/Lines.js"
import { BytesTable, copyOut, findByte, matchAt, maxUtf8Bytes, Scratch, textOf, viewOf } from "../Scratch.js"
import { type EventSlices, eventSlices, sameKeyCounts } from "./Slices.js"

export interface BodyLimits {
  /** Largest body, in bytes. */
  readonly maxBytes: number
  /** Most events in one batch. */
  readonly maxBatch: number
}

/**
 * How far past the limit a body is still read (and thrown away) so that its sender, which
 * writes the whole body before it reads an answer, gets the 413 rather than a reset connection.
 * A body larger still has its connection closed.
 */
const DRAIN_BYTES = 16 * 1024 * 1024

const tooLarge = (maxBytes: number, size: string) =>
  new PayloadTooLarge({
    field: "body",
    limit: maxBytes,
    message: `the request body is ${size}; at most ${maxBytes} bytes are accepted, split the batch`
  })

const badBody = (message: string) => new BadRequest({ field: "body", message })

/** What has been read of a body: its chunks up to the limit, and its size. */
class Collected {
  readonly chunks: Array<Uint8Array> = []
  size = 0
  constructor(private readonly maxBytes: number) {}

  add(chunk: Uint8Array): this {
    if (this.size + chunk.length <= this.maxBytes) this.chunks.push(chunk)
    this.size += chunk.length
    return this
  }

  /** Whether to go on reading: past the limit only as far as the drain goes. */
  wantsMore(): boolean {
    return this.size <= this.maxBytes + DRAIN_BYTES
  }
}

/**
 * A Node request's body, read from its events as the platform's body stream reads it (the same
 * events, the message let go of at the end), without a stream's machinery around every chunk.
 */
const readIncoming = (incoming: IncomingMessage, maxBytes: number): Effect.Effect<Collected, unknown> =>
  Effect.async<Collected, unknown>((resume) => {
    const collected = new Collected(maxBytes)
    if (!incoming.readable) return resume(Effect.succeed(collected))
    const done = () => {
      incoming.off("data", onData)
      incoming.off("error", onError)
      incoming.off("end", onEnd)
      if (!incoming.closed) incoming.destroy()
    }
    const onData = (chunk: Uint8Array) => {
      if (!collected.add(chunk).wantsMore()) {
        done()
        resume(Effect.succeed(collected))
      }
    }
    const onError = (error: unknown) => {
      done()
      resume(Effect.fail(error))
    }
    const onEnd = () => {
      done()
      resume(Effect.succeed(collected))
    }
    incoming.on("data", onData)
    incoming.on("error", onError)
    incoming.on("end", onEnd)
    return Effect.sync(done)
  })

/**
 * The body's bytes. A declared length over the limit is refused before reading; a body without
 * one (chunked) is read up to the limit and the rest drained, so the 413 reaches its sender.
 */
export const readBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number
): Effect.Effect<Uint8Array, BadRequest | PayloadTooLarge> =>
  Effect.gen(function* () {
    const length = request.headers["content-length"]
    if (length !== undefined && Number(length) > maxBytes) return yield* tooLarge(maxBytes, `${length} bytes`)
    // Other media types are not read as JSON; a body is JSON, sent as such or without a type.
    const type = request.headers["content-type"]
    if (type !== undefined && type.trim() !== "" && !/^application\/json\s*(;|$)/i.test(type.trim())) {
      return yield* new BadRequest({
        field: "content-type",
        message: `the request body must be JSON, sent with 'content-type: application/json' (got '${type}')`
      })
    }
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    const read = yield* (
      incoming instanceof IncomingMessage
        ? readIncoming(incoming, maxBytes)
        : request.stream.pipe(
            Stream.runFoldWhile(
              new Collected(maxBytes),
              (state) => state.wantsMore(),
              (state, chunk) => state.add(chunk)
            )
          )
    ).pipe(
      Effect.mapError(() => badBody("the request body could not be read (the connection failed while sending it)"))
    )
    if (read.size > maxBytes) return yield* tooLarge(maxBytes, `over ${maxBytes} bytes`)
    return read.chunks.length === 1 ? read.chunks[0]! : Buffer.concat(read.chunks)
  })

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** Offset of the first byte that does not belong to a well-formed UTF-8 sequence (RFC 3629). */
export const invalidUtf8At = (bytes: Uint8Array): number | undefined => {
  let i = 0
  while (i < bytes.length) {
    const b = bytes[i]!
    if (b < 0x80) {
      i++
      continue
    }
    // The length of the sequence and the range its second byte must be in (no overlongs, no surrogates, <= U+10FFFF).
    let length: number
    let low = 0x80
    let high = 0xbf
    if (b >= 0xc2 && b <= 0xdf) length = 2
    else if (b >= 0xe0 && b <= 0xef) {
      length = 3
      if (b === 0xe0) low = 0xa0
      if (b === 0xed) high = 0x9f
    } else if (b >= 0xf0 && b <= 0xf4) {
      length = 4
      if (b === 0xf0) low = 0x90
      if (b === 0xf4) high = 0x8f
    } else return i
    for (let k = 1; k < length; k++) {
      const next = bytes[i + k]
      if (next === undefined) return i
      if (k === 1 ? next < low || next > high : next < 0x80 || next > 0xbf) return i
    }
    i += length
  }
  return undefined
}

/** Deeper than this, encoding an event for the journal could overflow the stack. */
const MAX_DEPTH = 256

/** What walking the parsed body found that keeps it from being journaled as sent. */
interface Unstorable {
  /** Why the body cannot be journaled (the first problem met), if it cannot. */
  readonly problem: string | undefined
  /** A number past 2^53 was seen: its literal may have been rounded (see `inexactInteger`). */
  readonly large: boolean
}

/**
 * Why parsed JSON could not be journaled as sent, if it could not: nested so deep that encoding
 * it would overflow the stack (and take the writer down), or holding a number literal too large
 * for a double (`1e999` parses as Infinity and would be written as `null`, a line that no longer
 * decodes). Notes too whether a number past 2^53 was seen, since only a literal that parses to
 * one can have been rounded. The walk recurses at most `MAX_DEPTH` levels, so the check itself
 * cannot overflow, and allocates nothing.
 */
const cannotBeJournaled = (value: unknown): Unstorable => {
  const walk = new StorableWalk()
  walk.visit(value, 1)
  return walk
}

/**
 * What `cannotBeJournaled` found. Of several problems it names the one met first when each
 * value's children are taken last first (as the check has always named it): the last one met
 * taking them in order, once the children of a value are behind it, as this walk does.
 */
class StorableWalk implements Unstorable {
  problem: string | undefined = undefined
  large = false

  visit(next: unknown, depth: number): void {
    if (typeof next === "number") {
      if (!Number.isFinite(next)) this.problem = "holds a number too large to store"
      else if (next > Number.MAX_SAFE_INTEGER || next < -Number.MAX_SAFE_INTEGER) this.large = true
      return
    }
    if (next === null || typeof next !== "object") return
    if (depth > MAX_DEPTH) {
      this.problem = `nests arrays and objects more than ${MAX_DEPTH} levels deep`
      return
    }
    if (Array.isArray(next)) {
      for (let i = 0; i < next.length; i++) {
        const child: unknown = next[i]
        // A string needs no look: most of a body is strings.
        if (typeof child !== "string") this.visit(child, depth + 1)
      }
      return
    }
    for (const key in next) {
      const child: unknown = (next as Record<string, unknown>)[key]
      if (typeof child !== "string") this.visit(child, depth + 1)
    }
  }
}

/** An open array or object while walking JSON text: where its current value sits. */
interface Frame {
  readonly array: boolean
  index: number
  key: string
  /** In an object: the next string is a key. */
  expectKey: boolean
}

const pathOf = (frames: ReadonlyArray<Frame>): string =>
  frames.map((f, depth) => (f.array ? `[${f.index}]` : depth === 0 ? f.key : `.${f.key}`)).join("")

const isNumberChar = (c: number) =>
  (c >= 0x30 && c <= 0x39) || c === 0x2e /* . */ || c === 0x65 || c === 0x45 /* e E */ || c === 0x2b || c === 0x2d

/**
 * The first integer literal in JSON `text` that a double cannot hold exactly (it would be
 * stored as another number), with the path to it (`events[0].event.usage.total_tokens`).
 * A lexical walk over text `JSON.parse` has accepted, since the parsed value no longer shows
 * what was sent; the caller runs it only when the parsed body holds a number past 2^53, which is rare.
 */
export const inexactInteger = (
  text: string
): { readonly path: string; readonly literal: string; readonly stored: string } | undefined => {
  const frames: Array<Frame> = []
  let i = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      // Jump to the closing quote: the first one not escaped by an odd run of backslashes.
      let end = text.indexOf('"', i + 1)
      while (true) {
        let backslashes = 0
        while (text.charCodeAt(end - 1 - backslashes) === 0x5c) backslashes++
        if (backslashes % 2 === 0) break
        end = text.indexOf('"', end + 1)
      }
      const top = frames[frames.length - 1]
      if (top !== undefined && top.expectKey) {
        const raw = text.slice(i + 1, end)
        top.key = raw.includes("\\") ? (JSON.parse(text.slice(i, end + 1)) as string) : raw
        top.expectKey = false
      }
      i = end + 1
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      frames.push({ array: c === 0x5b, index: 0, key: "", expectKey: c === 0x7b })
      i++
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      frames.pop()
      i++
    } else if (c === 0x2c /* , */) {
      const top = frames[frames.length - 1]!
      if (top.array) top.index++
      else top.expectKey = true
      i++
    } else if (c === 0x2d /* - */ || (c >= 0x30 && c <= 0x39)) {
      let end = i + 1
      while (end < text.length && isNumberChar(text.charCodeAt(end))) end++
      const literal = text.slice(i, end)
      if (/^-?\d{16,}$/.test(literal)) {
        const stored = String(Number(literal))
        if (stored !== literal) return { path: pathOf(frames), literal, stored }
      }
      i = end
    } else {
      i++
    }
  }
  return undefined
}

/**
 * The body as JSON, parsed once, or a `BadRequest` naming what keeps it from being journaled
 * exactly as sent: bytes that are not UTF-8 (with the offset of the first), text that is not
 * JSON, an integer a double would round, nesting too deep. Decoded and parsed whole: how
 * `parseBody` judges any body it does not parse in parts.
 */
export const parseWholeBody = (bytes: Uint8Array): Either.Either<unknown, BadRequest> => {
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    const at = invalidUtf8At(bytes) ?? 0
    return Either.left(
      badBody(`the request body is not valid UTF-8 (byte ${at} of ${bytes.length}); send the text encoded as UTF-8`)
    )
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (error) {
    return Either.left(badBody(`the request body is not valid JSON: ${(error as Error).message}`))
  }
  const unstorable = cannotBeJournaled(body)
  // Only a literal that parsed to a number past 2^53 can have been rounded; the text is walked
  // for it then, or when the walk stopped early, since a rounded integer is named first.
  if (unstorable.large || unstorable.problem !== undefined) {
    const inexact = inexactInteger(text)
    if (inexact !== undefined) {
      const field = inexact.path === "" ? "body" : inexact.path
      return Either.left(
        new BadRequest({
          field,
          message:
            `${field} is ${inexact.literal}, which a double cannot hold exactly (it would be stored as ${inexact.stored}); ` +
            `send integers beyond 2^53 as strings`
        })
      )
    }
  }
  return unstorable.problem === undefined
    ? Either.right(body)
    : Either.left(badBody(`the request body ${unstorable.problem}`))
}

/**
 * A string longer than this (in bytes) is a large object to V8 (over 128 KiB): making one
 * maps fresh memory, several times the cost of a string just under it. A batch body past it
 * is parsed in parts below it (`parseInParts`).
 */
const LARGE_STRING_BYTES = 120 * 1024
/** Where a part ends: at the first entry boundary this far into it (half as far for text that is not ASCII, two bytes a character). */
const PART_BYTES = 64 * 1024
/** The bytes between two entries of a compact batch: a part ends at the brace, the next starts past the comma. */
const ENTRY_JOIN = Buffer.from('},{"')

const isSpace = (c: number | undefined) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

/**
 * A batch body, `{"events": [...]}`, parsed in parts each short of a large string, or undefined
 * (then `parseWholeBody` judges it, and names any fault). It is cut after an entry's closing
 * brace, at `},{"`; the first part is parsed with `]}` after it, the others as arrays. Each part
 * parsing proves the whole is JSON: the first ends inside the array of the body's last key with
 * nothing open past it (else `]}` would not close it), and each later part continues an array
 * from where the last one ended; a cut inside a string fails its part's parse. The first part
 * must hold the one key `events` (an array), and the body end with the array's `]` and the
 * object's `}`, so the entries are the parts' in order: what parsing it whole gives. A part that
 * does not parse, or a body that is not storable as it is, is left to `parseWholeBody`.
 */
export const parseInParts = (bytes: Uint8Array): { readonly events: Array<unknown> } | undefined => {
  const ascii = isAscii(bytes)
  if (bytes.length <= (ascii ? LARGE_STRING_BYTES : LARGE_STRING_BYTES / 2) || !isUtf8(bytes)) return undefined
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
  const text = (start: number, end: number) => buffer.toString(ascii ? "latin1" : "utf8", start, end)
  // The array's closing bracket: the last bytes are `]`, `}` and spaces.
  let last = bytes.length - 1
  while (isSpace(bytes[last])) last--
  if (bytes[last] !== 0x7d) return undefined
  last--
  while (isSpace(bytes[last])) last--
  if (bytes[last] !== 0x5d) return undefined
  // Where each later part starts: just past the comma after an entry.
  const step = ascii ? PART_BYTES : PART_BYTES / 2
  const starts: Array<number> = []
  for (let from = step; from < last;) {
    const join = buffer.indexOf(ENTRY_JOIN, from)
    if (join < 0 || join >= last) break
    starts.push(join + 2)
    from = join + 2 + step
  }
  if (starts.length === 0) return undefined
  let body: unknown
  try {
    body = JSON.parse(text(0, starts[0]! - 1) + "]}")
  } catch {
    return undefined
  }
  if (!isObject(body) || !Array.isArray(body["events"])) return undefined
  for (const key in body) if (key !== "events") return undefined
  const events = body["events"] as Array<unknown>
  for (let k = 0; k < starts.length; k++) {
    // A later part ends before the comma that follows it; the last, with the array's bracket.
    const end = k + 1 < starts.length ? starts[k + 1]! - 1 : last + 1
    let part: Array<unknown>
    try {
      part = JSON.parse(k + 1 < starts.length ? `[${text(starts[k]!, end)}]` : `[${text(starts[k]!, end)}`)
    } catch {
      return undefined
    }
    for (let i = 0; i < part.length; i++) events.push(part[i])
  }
  const unstorable = cannotBeJournaled(body)
  return unstorable.problem === undefined && !unstorable.large ? { events } : undefined
}

/**
 * The body as JSON, parsed once, or a `BadRequest` naming what keeps it from being journaled
 * exactly as sent: bytes that are not UTF-8 (with the offset of the first), text that is not
 * JSON, an integer a double would round, nesting too deep. A large batch is parsed in parts
 * (`parseInParts`), any other body whole (`parseWholeBody`), with the same answer.
 */
export const parseBody = (bytes: Uint8Array): Either.Either<unknown, BadRequest> => {
  const inParts = parseInParts(bytes)
  return inParts === undefined ? parseWholeBody(bytes) : Either.right(inParts)
}

/** Where a body's canonical events are encoded before they are copied out (decoding is synchronous). */
const scratch = new Scratch(64 * 1024, 1024 * 1024)

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `{"session_id"?, "event"}` or `{"events": [...]}`, every entry checked, the first fault named. */
export const decodeAppendBody = (
  body: unknown,
  maxBatch: number,
  /** The body's bytes, when at hand: a canonical event's JSON is then taken from them where they are exact. */
  bytes?: Uint8Array
): Either.Either<Array<ChangeFeed.Entry<AgentEvent>>, BadRequest | PayloadTooLarge> => {
  if (!isObject(body) || (!("events" in body) && !("event" in body))) {
    return Either.left(
      badBody('the body must be {"session_id"?: string, "event": {...}} or {"events": [{"session_id"?, "event"}, ...]}')
    )
  }
  const batch = "events" in body
  const entries = batch ? body["events"] : [body]
  if (!Array.isArray(entries))
    return Either.left(new BadRequest({ field: "events", message: "events must be an array" }))
  if (entries.length > maxBatch) {
    return Either.left(
      new PayloadTooLarge({
        field: "events",
        limit: maxBatch,
        message: `a batch holds at most ${maxBatch} events, got ${entries.length}; split it`
      })
    )
  }
  // Field names are made only for a fault, not for every entry.
  const fieldOf = (i: number) => (batch ? `events[${i}]` : "")
  const decoded: Array<{ sessionId: string | undefined; event: AgentEvent; eventJson: Uint8Array | undefined }> =
    new Array(entries.length)
  // The JSON of canonical events, written one after another into the scratch buffer; each
  // entry's is a view of one copy of it, made once every entry is known to be valid.
  let json = scratch.buffer
  let jsonBytes = 0
  const jsonEnds: Array<number> = new Array(entries.length)
  // Where the events lie in the body, found when the first canonical event needs it.
  let slices: EventSlices | undefined | null = bytes === undefined ? undefined : null
  for (let i = 0; i < entries.length; i++) {
    const entry: unknown = entries[i]
    if (!isObject(entry))
      return Either.left(new BadRequest({ field: fieldOf(i), message: `${fieldOf(i)} must be an object` }))
    const sessionId = entry["session_id"]
    if (sessionId !== undefined && typeof sessionId !== "string") {
      const field = batch ? `${fieldOf(i)}.session_id` : "session_id"
      return Either.left(new BadRequest({ field, message: `${field} must be a string` }))
    }
    const raw = entry["event"]
    // An event decoding would only copy is taken as parsed, and its JSON is what the journal writes.
    if (isCanonicalAgentEvent(raw)) {
      if (slices === null) slices = eventSlices(bytes!, batch, entries.length)
      if (slices !== undefined && slices.starts[i]! >= 0 && sameKeyCounts(raw, slices, i)) {
        // Its bytes in the body are what `JSON.stringify` would write: a view of them, no copy.
        jsonEnds[i] = -1
        decoded[i] = {
          sessionId,
          event: raw as AgentEvent,
          eventJson: viewOf(bytes!, slices.starts[i]!, slices.ends[i]!)
        }
        continue
      }
      const text = JSON.stringify(raw)
      json = scratch.room(json, jsonBytes, maxUtf8Bytes(text.length))
      jsonBytes += json.write(text, jsonBytes, "utf8")
      jsonEnds[i] = jsonBytes
      decoded[i] = { sessionId, event: raw as AgentEvent, eventJson: undefined }
      continue
    }
    const event = decodeAgentEvent(batch ? `${fieldOf(i)}.event` : "event", raw)
    if (Either.isLeft(event)) return Either.left(new BadRequest(event.left))
    jsonEnds[i] = -1
    decoded[i] = { sessionId, event: event.right, eventJson: undefined }
  }
  if (jsonBytes > 0) {
    const bytes = copyOut(json, jsonBytes)
    let start = 0
    for (let i = 0; i < decoded.length; i++) {
      const end = jsonEnds[i]!
      if (end < 0) continue
      decoded[i]!.eventJson = bytes.subarray(start, end)
      start = end
    }
  }
  return Either.right(decoded)
}

// ---- bodies taken as they are -----------------------------------------------------------

const isCanonicalAgentEventJson = canonicalJsonCheck(AgentEvent)

const QUOTE = 0x22
const COMMA = 0x2c
const CLOSE_BRACE = 0x7d
const CLOSE_BRACKET = 0x5d
const BATCH_HEAD = Buffer.from('{"events":[')
const SESSION_KEY = Buffer.from('"session_id":')
const EVENT_KEY = Buffer.from('"event":')
/** Where an event's type starts in its canonical JSON (`{"type":"`). */
const TYPE_AT = '{"type":"'.length
/** What the feed needs of an event of one type without reading it: whether it is durable, and how it is routed. */
interface TypeFacts {
  readonly durable: boolean
  /**
   * The keys (`"name":`) on the path to the session the event names, as `sessionIdOf` reads it
   * (`SessionPath`); an empty path for a type that names none; undefined when the event must be read.
   */
  readonly session: ReadonlyArray<Uint8Array> | undefined
}

const factsOf = (type: AgentEventType, durable: boolean): readonly [string, TypeFacts] => {
  const path = sessionPath(sessionIdOf, "type", type)
  const session =
    path._tag === "None" ? [] : path._tag === "Field" ? path.path.map((name) => Buffer.from(`"${name}":`)) : undefined
  return [type, { durable, session }]
}

/** Each event type's facts, looked up by its bytes. */
const typeFacts = new BytesTable([
  ...[...durableTypes].map((type) => factsOf(type, true)),
  ...[...ephemeralTypes].map((type) => factsOf(type, false))
])

/**
 * Where the value of the field with the key `key` (`"name":`) starts in the canonical object at
 * `at`, or -1 if it has none. The object has passed the canonical check, so each value the walk
 * skips is known to end.
 */
const fieldIn = (bytes: Uint8Array, at: number, key: Uint8Array): number => {
  let i = at + 1
  if (bytes[i] === CLOSE_BRACE) return -1
  while (true) {
    if (matchAt(bytes, i, key)) return i + key.length
    const end = canonicalValueEnd(bytes, canonicalStringEnd(bytes, i) + 1)
    if (end < 0 || bytes[end] !== COMMA) return -1
    i = end + 1
  }
}

/** An event's JSON, parsed: for canonical JSON, the decoded event itself. */
const parseEvent = (json: Uint8Array): AgentEvent => JSON.parse(utf8.decode(json)) as AgentEvent

/** The entries of a body taken as it is, read one at a time from `pos`. */
class EntryScan {
  pos = 0
  /** The last session id read (`textAt`), and where: the events of a batch often share one, and its text is then made once. */
  private lastSessionId = ""
  private lastFrom = 0
  private lastTo = 0

  constructor(readonly bytes: Uint8Array) {}

  private textAt(from: number, to: number): string {
    const bytes = this.bytes
    const length = to - from
    if (length === this.lastTo - this.lastFrom) {
      let k = 0
      while (k < length && bytes[from + k] === bytes[this.lastFrom + k]) k++
      if (k === length) return this.lastSessionId
    }
    this.lastSessionId = textOf(bytes, from, to)
    this.lastFrom = from
    this.lastTo = to
    return this.lastSessionId
  }

  /** The entry at `pos` (`{"session_id"?, "event"}`, either order), moving past it; undefined if it is not taken as it is. */
  entry(): ChangeFeed.Entry<AgentEvent> | undefined {
    const bytes = this.bytes
    if (bytes[this.pos] !== 0x7b) return undefined
    let at = this.pos + 1
    let sessionId: string | undefined = undefined
    let eventStart = -1
    let eventEnd = -1
    while (true) {
      if (sessionId === undefined && matchAt(bytes, at, SESSION_KEY)) {
        const start = at + SESSION_KEY.length
        if (bytes[start] !== QUOTE) return undefined
        const end = canonicalStringEnd(bytes, start)
        // An id with an escape is left to the parse, which reads it.
        if (end < 0 || hasEscape(bytes, start, end)) return undefined
        sessionId = this.textAt(start + 1, end - 1)
        at = end
      } else if (eventStart < 0 && matchAt(bytes, at, EVENT_KEY)) {
        eventStart = at + EVENT_KEY.length
        eventEnd = isCanonicalAgentEventJson(bytes, eventStart)
        if (eventEnd < 0) return undefined
        at = eventEnd
      } else return undefined
      const next = bytes[at++]
      if (next === CLOSE_BRACE) break
      if (next !== COMMA) return undefined
    }
    if (eventStart < 0) return undefined
    this.pos = at
    // Its type is written first, without escapes (the check matched it to a member's).
    const facts = typeFacts.get(bytes, eventStart + TYPE_AT, findByte(bytes, QUOTE, eventStart + TYPE_AT))
    if (facts === undefined) return undefined
    const json = new EventJson(bytes, parseEvent, eventStart, eventEnd)
    if (sessionId !== undefined) return new JsonEntry(sessionId, json, facts.durable)
    const named = this.namedSession(eventStart, facts)
    return new JsonEntry(named ?? undefined, json, facts.durable, named !== null)
  }

  /**
   * The session the event at `at` names, read from its JSON along the path the routing rule
   * reads: undefined for a type that names none; null when the event must be read to tell (a
   * rule no path captures, a field not there, a value that is not a string without escapes).
   */
  private namedSession(at: number, facts: TypeFacts): string | undefined | null {
    if (facts.session === undefined) return null
    const bytes = this.bytes
    let value = at
    for (const key of facts.session) {
      if (bytes[value] !== 0x7b) return null
      value = fieldIn(bytes, value, key)
      if (value < 0) return null
    }
    if (facts.session.length === 0) return undefined
    if (bytes[value] !== QUOTE) return null
    const end = canonicalStringEnd(bytes, value)
    return end < 0 || hasEscape(bytes, value, end) ? null : this.textAt(value + 1, end - 1)
  }
}

/**
 * The entries of a body written as `JSON.stringify` writes a batch or a single event (no
 * whitespace, the escapes it writes, numbers as it prints them) whose every event is canonical
 * (`canonicalJsonCheck`), each taken as it is: no string of the body, no parse, each event's JSON
 * a view of the body and parsed only if a reader asks for it. Undefined for any other body (then
 * it is parsed, and judged, as before): a body this takes is one the parse takes, with the same
 * entries, and so is never refused here.
 */
export const takeAsSent = (bytes: Uint8Array, maxBatch: number): Array<ChangeFeed.Entry<AgentEvent>> | undefined => {
  // Canonical JSON holds no byte below 0x20 (no whitespace, no raw control character in a string).
  if (!isUtf8(bytes) || hasControlByte(bytes) || findByte(bytes, 0x0a, 0) >= 0) return undefined
  const scan = new EntryScan(bytes)
  if (!matchAt(bytes, 0, BATCH_HEAD)) {
    const entry = scan.entry()
    return entry !== undefined && scan.pos === bytes.length ? [entry] : undefined
  }
  scan.pos = BATCH_HEAD.length
  const entries: Array<ChangeFeed.Entry<AgentEvent>> = []
  if (bytes[scan.pos] === CLOSE_BRACKET) return undefined
  while (true) {
    if (entries.length === maxBatch) return undefined
    const entry = scan.entry()
    if (entry === undefined) return undefined
    entries.push(entry)
    const next = bytes[scan.pos++]
    if (next === CLOSE_BRACKET) break
    if (next !== COMMA) return undefined
  }
  return bytes[scan.pos] === CLOSE_BRACE && scan.pos + 1 === bytes.length ? entries : undefined
}

/** The entries of an append request: read, checked, taken as they are or parsed once, decoded. */
export const appendEntries = (
  request: HttpServerRequest.HttpServerRequest,
  limits: BodyLimits
): Effect.Effect<Array<ChangeFeed.Entry<AgentEvent>>, BadRequest | PayloadTooLarge> =>
  Effect.flatMap(readBody(request, limits.maxBytes), (bytes) => {
    const taken = takeAsSent(bytes, limits.maxBatch)
    return taken !== undefined
      ? Either.right(taken)
      : Either.flatMap(parseBody(bytes), (body) => decodeAppendBody(body, limits.maxBatch, bytes))
  })
