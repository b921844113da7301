/**
 * Large batch bodies parsed in parts (so that no string of the whole body is made): the parts
 * give what parsing the body whole gives, whatever the entries hold (`},{"` in strings, arrays
 * of objects, text that is not ASCII, keys besides `events`, `events` twice), and a body that
 * is not a valid, storable batch is answered exactly as the whole-body parse answers it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { parseBody, parseInParts, parseWholeBody } from "../../src/Http/Body.js"

/** Over the size past which a body is parsed in parts, ASCII or not. */
const LARGE = 130 * 1024

/** Text that trips a cut at `},{"`: the sequence at the end of a string, or escaped within one. */
const tricky = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: "grapheme", maxLength: 6 }),
  fc.constantFrom("},{", 'a},{"b', "]}", "\\", "é€😀", "\u2028")
)

const event = fc.oneof(
  fc.record({ type: fc.constant("message_appended"), content: tricky }),
  fc.record({ type: fc.constant("note"), items: fc.array(fc.record({ a: tricky }), { maxLength: 3 }) }),
  fc.jsonValue({ maxDepth: 3 })
)

const entry = fc.record({ session_id: fc.option(tricky, { nil: undefined }), event })

/** Entries repeated (each with its own padding and index) until the body is large. */
const largeBatch = fc
  .tuple(fc.array(entry, { minLength: 1, maxLength: 4 }), fc.integer({ min: 40, max: 400 }))
  .map(([templates, pad]) => {
    const entries: Array<unknown> = []
    let size = 0
    for (let i = 0; size < LARGE; i++) {
      const template = templates[i % templates.length]!
      const one = { ...template, n: i, pad: "x".repeat(pad) }
      entries.push(one)
      size += JSON.stringify(one).length + 1
    }
    return entries
  })

/** The answer of a parse, comparable: the value, or the error's field and message. */
const answer = (parsed: Either.Either<unknown, { readonly field: string; readonly message: string }>) =>
  Either.isRight(parsed) ? { value: parsed.right } : { field: parsed.left.field, message: parsed.left.message }

const sameAsWhole = (bytes: Uint8Array) =>
  assert.deepStrictEqual(answer(parseBody(bytes)), answer(parseWholeBody(bytes)))

describe("a large batch body parsed in parts", () => {
  it.prop(
    "gives_the_entries_parsing_it_whole_gives",
    [largeBatch],
    ([entries]) => {
      const text = JSON.stringify({ events: entries })
      const bytes = Buffer.from(text)
      const parts = parseInParts(bytes)
      const whole = JSON.parse(text) as unknown
      if (parts !== undefined) assert.deepStrictEqual(parts, whole)
      assert.deepStrictEqual(answer(parseBody(bytes)), { value: whole })
    },
    { fastCheck: { numRuns: 60 } }
  )

  it("is_parsed_in_parts_when_compact_and_not_when_small", () => {
    const entries = Array.from({ length: 600 }, (_, i) => ({
      session_id: "s",
      event: { type: "message_appended", content: `é ${"x".repeat(300)} ${i}` }
    }))
    const large = Buffer.from(JSON.stringify({ events: entries }))
    assert.deepStrictEqual(parseInParts(large), JSON.parse(large.toString()))
    assert.isUndefined(parseInParts(Buffer.from(JSON.stringify({ events: entries.slice(0, 10) }))))
  })

  it.prop(
    "answers_a_damaged_body_as_parsing_it_whole_does",
    [largeBatch, fc.nat(), fc.constantFrom("", ",", "}", "]", '"', "\\", "1e999", "[[", " ", "é", "\xff")],
    ([entries, at, splice]) => {
      const text = JSON.stringify({ events: entries })
      const cut = at % (text.length + 1)
      const bytes = Buffer.concat([
        Buffer.from(text.slice(0, cut)),
        splice === "\xff" ? Buffer.from([0xff]) : Buffer.from(splice),
        Buffer.from(text.slice(cut + (splice === "" ? 1 : 0)))
      ])
      sameAsWhole(bytes)
    },
    { fastCheck: { numRuns: 60 } }
  )

  it("leaves_other_shapes_to_the_whole_body_parse", () => {
    const entries = Array.from({ length: 500 }, (_, i) => ({ event: { type: "note", text: `${"y".repeat(300)}${i}` } }))
    const events = JSON.stringify(entries)
    const half = JSON.stringify(entries.slice(0, 250))
    for (const text of [
      // `events` twice, the cut in the first: the last one is the body's.
      `{"events":${events},"events":${half}}`,
      `{"events":${half},"events":${events}}`,
      `{"other":1,"events":${events}}`,
      `{"events":${events},"other":[{"a":1},{"b":2}]}`,
      `{"other":${events}}`,
      `[${events}]`,
      `{"events":${events}} x`,
      `{"events":${events.slice(0, -1)}`,
      `{"events":${events.replace("y}", "y},{")}}`,
      `{"events":${events.replace('"text"', '"n":1e999,"text"')}}`,
      `{"events":${events.replace('"text"', '"n":12345678901234567890,"text"')}}`
    ]) {
      sameAsWhole(Buffer.from(text))
    }
  })
})
