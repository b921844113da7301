/**
 * Canonical events taken from a POST body as sent: whatever JSON text a client writes for its
 * events (whitespace, keys reordered or written twice, escapes `JSON.stringify` does not write,
 * numbers in other forms, nested payloads, text of every plane, line separators), a body decodes
 * to the same entries, journal lines and fingerprints as when every event's JSON is made by
 * `JSON.stringify`; and the bytes of the body are what is taken, whenever they are its form.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Either, FastCheck as fc, Schema } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { chainFingerprintOfJson } from "../../src/ChangeFeed/Idempotency.js"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import { decodeAppendBody, parseBody } from "../../src/Http/Body.js"
import { makeLineCodec } from "../../src/Journal/Lines.js"
import { request, start } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"

const encode = Schema.encodeSync(AgentEvent)
const codec = makeLineCodec(AgentEvent)

/** Text with what JSON and the line format treat specially. */
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), maxLength: 2 }),
  fc.constantFrom(
    "\u2028",
    "a\u2029b",
    "é€😀—…",
    '\n\t"\\/',
    "\u0000\u001f\u007f",
    "</script>",
    "a/b",
    "\b\f\u0001\u001b"
  )
)

/** Payloads of `Unknown` fields: nested objects and arrays, keys an object orders first or that repeat. */
const payload = fc.oneof(
  fc.jsonValue(),
  fc.dictionary(fc.oneof(text, fc.constantFrom("0", "1", "10", "-1", "01", "1.5", "__proto__", "a")), fc.jsonValue())
)

/** Events as a body holds them (their encoding, through JSON), most of them canonical. */
const event = fc.oneof(
  Arbitrary.make(AgentEvent).map((e) => JSON.parse(JSON.stringify(encode(e))) as unknown),
  fc
    .record({ session_id: text, message_id: text, role: fc.constantFrom("user", "assistant"), content: payload })
    .map((e) => ({ type: "message_appended", ...e })),
  fc.record({ type: fc.constant("message_appended"), session_id: text, message_id: text, role: text, content: text })
)

/** Choices for one rendering: each a small number read in turn (and cycled), so runs shrink. */
const choices = fc.array(fc.nat({ max: 63 }), { minLength: 1, maxLength: 200 })

/** A value of the same shape as `value`, every string in it another. */
const unlike = (value: unknown): unknown =>
  typeof value === "string"
    ? `${value}!`
    : Array.isArray(value)
      ? value.map(unlike)
      : typeof value === "object" && value !== null
        ? Object.fromEntries(Object.entries(value).map(([k, x]) => [k, unlike(x)]))
        : value

/** What a rendering may do other than `JSON.stringify` does. */
const KINDS = ["space", "escape", "slash", "control", "number", "duplicate", "reorder"] as const
type Kind = (typeof KINDS)[number]

/**
 * Renders JSON text of `value` as a client might write it: as `JSON.stringify` does, but for
 * the kinds of difference asked for, each now and then: whitespace, escapes of any character
 * (`\u0041`, upper-case hex, `\/`), numbers in another form (`1.0`, `1E2`, `-0`), a key written
 * twice (an earlier value that the parser drops), an object's keys in reverse (integer-like keys
 * then move when parsed).
 */
const render = (value: unknown, picks: ReadonlyArray<number>, kinds: ReadonlyArray<Kind>): string => {
  let n = 0
  /** A choice of 0 to 7 when a difference of `kind` is made (one time in eight), else undefined. */
  const differ = (kind: Kind): number | undefined => {
    if (!kinds.includes(kind)) return undefined
    const p = picks[n++ % picks.length]!
    return p < 8 ? p : undefined
  }
  const space = () => ["", " ", "\n", "\t", "\r\n "][(differ("space") ?? -1) + 1] ?? ""
  const escape = (c: string, upper: boolean) =>
    c
      .split("")
      .map((unit) => {
        const hex = unit.charCodeAt(0).toString(16).padStart(4, "0")
        return `\\u${upper ? hex.toUpperCase() : hex}`
      })
      .join("")
  const string = (s: string): string => {
    let out = '"'
    // By code point, as `JSON.stringify` writes a pair raw and a lone surrogate escaped.
    for (const unit of Array.from(s)) {
      // Control characters, when asked for, are all written as `\\u00XX`, in either case.
      const control = unit < " " && kinds.includes("control") ? picks[n++ % picks.length]! : undefined
      const p = differ("escape")
      if (unit === "/" && differ("slash") !== undefined) out += "\\/"
      else if (control !== undefined) out += escape(unit, control % 2 === 1)
      else if (p !== undefined) out += escape(unit, p % 2 === 1)
      else out += JSON.stringify(unit).slice(1, -1)
    }
    return out + '"'
  }
  const number = (x: number): string => {
    const p = differ("number")
    if (p === 0 && Number.isInteger(x)) return `${x}.0`
    if (p === 1) return x.toExponential().replace("e+", "E")
    if (p === 2 && x === 0) return "-0"
    if (p === 3) return x.toExponential()
    if (p === 4) return `${x}0`.includes(".") ? `${x}0` : `${x}e0`
    return JSON.stringify(x)
  }
  const go = (v: unknown): string => {
    if (typeof v === "string") return string(v)
    if (typeof v === "number") return number(v)
    if (v === null || typeof v !== "object") return JSON.stringify(v)
    if (Array.isArray(v)) return `[${space()}${v.map((x) => go(x)).join(`${space()},${space()}`)}${space()}]`
    const entries = Object.entries(v)
    // An object with integer-like keys is always reversed (they are parsed first wherever they are written).
    const integerKeys = entries.some(([k]) => /^(0|[1-9][0-9]*)$/.test(k))
    if (kinds.includes("reorder") && (integerKeys || differ("reorder") !== undefined)) entries.reverse()
    const fields: Array<string> = []
    for (const [k, x] of entries) {
      // The value the parser drops is like the one it keeps, so that taking the wrong one shows.
      if (differ("duplicate") !== undefined) fields.push(`${string(k)}:${JSON.stringify(unlike(x))}`)
      fields.push(`${string(k)}${space()}:${space()}${go(x)}`)
    }
    return `{${space()}${fields.join(`${space()},${space()}`)}${space()}}`
  }
  return go(value)
}

const entry = fc.record({ session_id: fc.option(text, { nil: undefined }), event })

const body = fc.record({
  batch: fc.boolean(),
  entries: fc.array(entry, { minLength: 1, maxLength: 8 }),
  picks: choices,
  kinds: fc.subarray([...KINDS]),
  // The body's own fields: `events` elsewhere than first, with another field around it.
  extra: fc.option(payload, { nil: undefined })
})

type Body = typeof body extends fc.Arbitrary<infer T> ? T : never

const bodyText = (b: Body): string => {
  const value = b.batch
    ? b.extra === undefined
      ? { events: b.entries }
      : { first: b.extra, events: b.entries, last: b.extra }
    : b.entries[0]!
  return render(value, b.picks, b.kinds)
}

/** How many events were taken from their body, across a property's runs (so it is known to have been tried). */
let taken = 0
let stringified = 0

/** Decodes `bytes` both ways and checks that the journal gets the same from both. */
const sameAsStringified = (bytes: Uint8Array) => {
  const parsed = parseBody(bytes)
  if (Either.isLeft(parsed)) return
  const reference = decodeAppendBody(parsed.right, 100)
  const decoded = decodeAppendBody(parsed.right, 100, bytes)
  assert.strictEqual(Either.isRight(decoded), Either.isRight(reference), "accepted as before")
  if (Either.isLeft(decoded) || Either.isLeft(reference)) {
    assert.deepStrictEqual(decoded, reference)
    return
  }
  assert.strictEqual(decoded.right.length, reference.right.length)
  decoded.right.forEach((got, i) => {
    const want = reference.right[i]!
    assert.strictEqual(got.sessionId, want.sessionId)
    assert.deepStrictEqual(got.event, want.event)
    assert.strictEqual(got.eventJson === undefined, want.eventJson === undefined)
    if (got.eventJson === undefined || want.eventJson === undefined) return
    assert.strictEqual(Buffer.from(got.eventJson).toString("hex"), Buffer.from(want.eventJson).toString("hex"))
    assert.strictEqual(
      chainFingerprintOfJson("f", got.sessionId, got.eventJson),
      chainFingerprintOfJson("f", want.sessionId, want.eventJson)
    )
    if (got.eventJson.buffer === bytes.buffer) taken++
    else stringified++
  })
  const stored = decoded.right.map((e, i) => ({
    seq: 7 + i,
    ts: "2026-11-29T17:00:00.000Z",
    event: e.event,
    ...(e.sessionId === undefined ? {} : { session_id: e.sessionId })
  }))
  assert.strictEqual(
    Buffer.from(codec.encodeBatch(stored, decoded.right).bytes).toString("hex"),
    Buffer.from(codec.encodeBatch(stored, reference.right).bytes).toString("hex"),
    "the same journal lines"
  )
}

describe("canonical events taken from the body", () => {
  it("give_the_same_entries_lines_and_fingerprints_as_stringified_ones_whatever_the_text", () => {
    taken = 0
    stringified = 0
    fc.assert(
      fc.property(body, (b) => sameAsStringified(new TextEncoder().encode(bodyText(b)))),
      { numRuns: 2000 }
    )
    // Both ways were taken, many times: the property compared something.
    assert.isAbove(taken, 500)
    assert.isAbove(stringified, 200)
  })

  it("are_taken_as_sent_exactly_when_the_text_is_json_stringify_s", () => {
    const e = { type: "message_appended", session_id: "s", message_id: "m", role: "user", content: { a: [1, 2.5] } }
    const json = JSON.stringify(e)
    const takenFrom = (bodyJson: string): boolean => {
      const bytes = new TextEncoder().encode(bodyJson)
      const entries = Either.getOrThrow(decodeAppendBody(Either.getOrThrow(parseBody(bytes)), 10, bytes))
      sameAsStringified(bytes)
      return entries[0]!.eventJson!.buffer === bytes.buffer
    }
    assert.isTrue(takenFrom(`{"events":[{"event":${json}}]}`))
    assert.isTrue(takenFrom(` { "event" : ${json} } `))
    assert.isTrue(takenFrom(`{"events":[{"event":${json.replace('"s"', '"\\"\\\\\\n\\u001f"')}}]}`))
    for (const variant of [
      json.replace(":[1,", ": [1,"),
      json.replace('"m"', '"\\u006d"'),
      json.replace('"m"', '"\\/"'),
      json.replace('"m"', '"\\u001F"'),
      json.replace('"m"', '"\\u000a"'),
      json.replace('"m"', '"\\ud83d\\ude00"'),
      json.replace("2.5", "2.50"),
      json.replace("[1,", "[1.0,"),
      json.replace("[1,", "[-0,"),
      json.replace("[1,", "[1e0,"),
      json.replace('{"a"', '{"a":0,"a"'),
      json.replace('{"a"', '{"0":1,"a"'),
      json.replace('"role"', '"role":"x","role"')
    ]) {
      assert.isFalse(takenFrom(`{"events":[{"event":${variant}}]}`), variant)
    }
    // An entry or a body with a field written twice, or a key written with escapes, is parsed as its last.
    assert.isFalse(takenFrom(`{"events":[{"event":${json},"event":${json}}]}`))
    assert.isFalse(takenFrom(`{"events":[{"\\u0065vent":${json}}]}`))
    assert.isFalse(takenFrom(`{"events":[],"events":[{"event":${json}}]}`))
    assert.isFalse(takenFrom(`{"\\u0065vents":[{"event":${json}}]}`))
  })
})

/** Every journal line under `directory`, in seq order. */
const journalLines = (directory: string): Array<Buffer> =>
  (Fs.readdirSync(directory, { recursive: true }) as Array<string>)
    .filter((name) => name.endsWith(".jsonl"))
    .sort()
    .flatMap((name) => {
      const bytes = Fs.readFileSync(Path.join(directory, name))
      const lines: Array<Buffer> = []
      for (let start = 0, end = bytes.indexOf(0x0a); end >= 0; start = end + 1, end = bytes.indexOf(0x0a, start))
        lines.push(bytes.subarray(start, end))
      return lines
    })

describe("a server taking events from their bodies", () => {
  it.scopedLive("journals_every_body_with_the_seqs_and_the_lines_the_journal_writes_itself", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      let head = 0
      for (const b of fc.sample(body, { seed: 20261129, numRuns: 100 })) {
        const bytes = new TextEncoder().encode(bodyText(b))
        const parsed = parseBody(bytes)
        const entries = Either.isRight(parsed) ? decodeAppendBody(parsed.right, 1000) : parsed
        const answer = yield* request(`${server.url}/api/v1/events`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: bytes
        })
        if (Either.isLeft(entries)) {
          assert.strictEqual(answer.status, 400)
          continue
        }
        assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
        // Seqs run on from the last body's, one per durable event, null for the rest.
        for (const seq of answer.body.seqs as Array<number | null>) if (seq !== null) assert.strictEqual(seq, ++head)
      }
      yield* server.close
      const lines = journalLines(server.directory)
      assert.strictEqual(lines.length, head)
      assert.isAbove(head, 50)
      // Each line is the one the journal writes for its event when it encodes it itself.
      lines.forEach((line, i) => {
        const stored = codec.decodeLine(line.toString("utf8"), line)
        assert.notStrictEqual(typeof stored, "string", String(stored))
        if (typeof stored === "string") return
        assert.strictEqual(stored.seq, i + 1)
        const again = codec.encodeBatch([stored]).bytes
        assert.strictEqual(Buffer.from(again).toString("hex"), Buffer.concat([line, Buffer.from("\n")]).toString("hex"))
      })
    })
  )
})
