/**
 * Canonical events taken from a POST body as sent: whatever JSON text a client writes for its
 * events (whitespace, keys reordered or written twice, escapes `JSON.stringify` does not write,
 * numbers in other forms, nested payloads, text of every plane, line separators), a body decodes
 * to the same entries, journal lines and fingerprints as when every event's JSON is made by
 * `JSON.stringify`; and the bytes of the body are what is taken, whenever they are its form.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { chainFingerprintOfJson } from "../../src/ChangeFeed/Idempotency.js"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import { decodeAppendBody, parseBody } from "../../src/Http/Body.js"
import { makeLineCodec } from "../../src/Journal/Lines.js"

const encode = Schema.encodeSync(AgentEvent)
const codec = makeLineCodec(AgentEvent)

/** Text with what JSON and the line format treat specially. */
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), maxLength: 2 }),
  fc.constantFrom("\u2028", "a\u2029b", "é€😀—…", '\n\t"\\/', "\u0000\u001f\u007f", "</script>")
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

/**
 * Renders JSON text of `value` as a client might write it: with `clean`, exactly as
 * `JSON.stringify` does; otherwise, now and then, with whitespace, escapes of any character
 * (`\u0041`, `\/`, upper-case hex), numbers in another form (`1.0`, `1E2`, `-0`), and a key
 * written twice (an earlier value that the parser drops).
 */
const render = (value: unknown, picks: ReadonlyArray<number>, clean: boolean): string => {
  let n = 0
  // One in eight picks perturbs, so most of a rendering stays in `JSON.stringify`'s form.
  const pick = (): number => (clean ? 63 : picks[n++ % picks.length]!)
  const space = () => ["", "", "", "", "", "", "", "", " ", "\n", "\t", "\r\n "][pick() % 12]!
  const string = (s: string): string => {
    let out = '"'
    const escape = (c: string, upper: boolean) =>
      c
        .split("")
        .map((unit) => {
          const hex = unit.charCodeAt(0).toString(16).padStart(4, "0")
          return `\\u${upper ? hex.toUpperCase() : hex}`
        })
        .join("")
    // By code point, as `JSON.stringify` writes a pair raw and a lone surrogate escaped.
    for (const unit of Array.from(s)) {
      const p = pick()
      if (p === 0) out += escape(unit, false)
      else if (p === 1) out += escape(unit, true)
      else if (p === 2 && unit === "/") out += "\\/"
      else out += JSON.stringify(unit).slice(1, -1)
    }
    return out + '"'
  }
  const number = (x: number): string => {
    const p = pick()
    if (p === 0 && Number.isInteger(x)) return `${x}.0`
    if (p === 1) return x.toExponential().replace("e+", "E")
    if (p === 2 && x === 0) return "-0"
    if (p === 3) return x.toExponential()
    return JSON.stringify(x)
  }
  const go = (v: unknown): string => {
    if (typeof v === "string") return string(v)
    if (typeof v === "number") return number(v)
    if (v === null || typeof v !== "object") return JSON.stringify(v)
    if (Array.isArray(v)) return `[${space()}${v.map((x) => go(x)).join(`${space()},${space()}`)}${space()}]`
    const fields: Array<string> = []
    for (const [k, x] of Object.entries(v)) {
      if (pick() === 0) fields.push(`${string(k)}:${go("dropped")}`)
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
  clean: fc.boolean(),
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
  return render(value, b.picks, b.clean)
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
    assert.strictEqual(got.event, want.event)
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
