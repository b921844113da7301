/**
 * The canonical check: a value it accepts is one decoding would only copy, so its JSON is
 * byte for byte what the journal's encoder writes for it (the HTTP path then skips decode and
 * encode); what decoding would change (fields out of order, unknown fields, a transformation)
 * is never accepted. Checked against the schema's own decode and encode, on events the schema
 * itself generates, read back from JSON as a request body would give them, and mangled.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { AgentEvent, isCanonicalAgentEvent } from "../../src/Domain/AgentEvent.js"
import { canonicalCheck, canonicalJsonCheck } from "../../src/Domain/Canonical.js"
import { entryText, entryTextOfJson } from "../../src/ChangeFeed/Idempotency.js"
import { leftToTheParse } from "../support/CanonicalJson.js"

const decode = Schema.decodeUnknownEither(AgentEvent)
const encode = Schema.encodeSync(AgentEvent)

/** An event as a POST body holds it: its encoding, through JSON. */
const parsedEvent = Arbitrary.make(AgentEvent).map(
  (event) => JSON.parse(JSON.stringify(encode(event))) as Record<string, unknown>
)

/** The same event as another client might send it: fields reordered, added or left out. */
const mangled = fc
  .tuple(parsedEvent, fc.nat(), fc.constantFrom("reverse", "extra", "drop", "retype"))
  .map(([event, n, how]) => {
    const entries = Object.entries(event)
    if (how === "reverse") return Object.fromEntries(entries.reverse())
    if (how === "extra") return { ...event, extra_field: n }
    if (how === "drop") return Object.fromEntries(entries.filter((_, i) => i !== n % entries.length))
    const [key] = entries[n % entries.length]!
    return { ...event, [key]: key === "type" ? event[key] : { n } }
  })

/** Whether a field anywhere in `value` is undefined (a field JSON leaves out). */
const holdsUndefined = (value: unknown): boolean =>
  typeof value === "object" &&
  value !== null &&
  Object.values(value).some((field) => field === undefined || holdsUndefined(field))

/** When the check accepts a value: decoding succeeds and the encoder's JSON is the value's own. */
const holdsWhenAccepted = (value: unknown) => {
  if (!isCanonicalAgentEvent(value)) return
  const decoded = decode(value)
  assert.isTrue(Either.isRight(decoded), "a canonical value decodes")
  assert.strictEqual(JSON.stringify(encode(Either.getOrThrow(decoded))), JSON.stringify(value))
}

describe("canonicalCheck", () => {
  it.prop("an_event_read_back_from_its_json_is_canonical_and_its_json_is_the_encoders", [parsedEvent], ([value]) => {
    const decoded = decode(value)
    // An `Unknown` payload may be undefined, which JSON drops: read back, the event lacks a field
    // that decoding puts back (as undefined), so decoding does more than copy it and the check
    // rightly refuses it. Only events JSON carries whole are this property's.
    if (
      Either.isLeft(decoded) ||
      holdsUndefined(encode(decoded.right)) ||
      JSON.stringify(encode(decoded.right)) !== JSON.stringify(value)
    )
      return
    assert.isTrue(isCanonicalAgentEvent(value))
    holdsWhenAccepted(value)
  })

  it.prop("a_value_it_accepts_is_one_decoding_only_copies", [mangled], ([value]) => {
    holdsWhenAccepted(value)
  })

  it("refuses_fields_out_of_order_unknown_fields_and_missing_ones", () => {
    const event = { type: "session_created", session_id: "s1", title: "t", project_id: "p" }
    assert.isTrue(isCanonicalAgentEvent(event))
    assert.isTrue(isCanonicalAgentEvent({ type: "session_created", session_id: "s1", project_id: "p" }))
    assert.isFalse(isCanonicalAgentEvent({ session_id: "s1", type: "session_created" }))
    assert.isFalse(isCanonicalAgentEvent({ ...event, extra: 1 }))
    assert.isFalse(isCanonicalAgentEvent({ type: "session_created" }))
    assert.isFalse(isCanonicalAgentEvent({ type: "session_created", session_id: 1 }))
    assert.isFalse(isCanonicalAgentEvent({ type: "no_such_type", session_id: "s1" }))
    assert.isFalse(isCanonicalAgentEvent([event]))
    assert.isFalse(isCanonicalAgentEvent(null))
  })

  it("refuses_an_object_that_is_not_plain_which_may_write_itself_otherwise", () => {
    const fields = { type: "session_created", session_id: "s1", project_id: "p" }
    assert.isTrue(isCanonicalAgentEvent(Object.assign(Object.create(null), fields)))
    assert.isFalse(isCanonicalAgentEvent(Object.assign(Object.create({ toJSON: () => "x" }), fields)))
    class Created {
      readonly type = "session_created"
      readonly session_id = "s1"
      readonly project_id = "p"
    }
    assert.isFalse(isCanonicalAgentEvent(new Created()))
  })

  it("compiles_a_schema_s_check_once_however_many_journals_ask_for_it", () => {
    assert.strictEqual(canonicalCheck(AgentEvent), canonicalCheck(AgentEvent))
    const other = Schema.Struct({ n: Schema.Number })
    assert.notStrictEqual(canonicalCheck(other), canonicalCheck(AgentEvent))
    assert.isTrue(canonicalCheck(other)({ n: 1 }))
  })

  it("answers_false_for_a_schema_whose_decoding_does_more_than_copy", () => {
    const transformed = canonicalCheck(Schema.Struct({ n: Schema.NumberFromString }))
    assert.isFalse(transformed({ n: "1" }))
    const refined = canonicalCheck(Schema.Struct({ n: Schema.Number.pipe(Schema.int()) }))
    assert.isFalse(refined({ n: 1 }))
    class Note extends Schema.Class<Note>("Note")({ text: Schema.String }) {}
    assert.isFalse(canonicalCheck(Note)({ text: "x" }))
    const plain = canonicalCheck(Schema.Struct({ n: Schema.Number, tags: Schema.Array(Schema.String) }))
    assert.isTrue(plain({ n: 1, tags: ["a"] }))
    assert.isFalse(plain({ n: 1, tags: ["a", 2] }))
  })
})

const isCanonicalAgentEventJson = canonicalJsonCheck(AgentEvent)
const encoder = new TextEncoder()

/** Where the text check ends on `text` followed by `after` (which it must not read as part of the value). */
const checkedEnd = (text: string, after = ',"next":1}') => {
  const bytes = encoder.encode(text + after)
  const end = isCanonicalAgentEventJson(bytes, 0)
  return end < 0 ? end : new TextDecoder().decode(bytes.subarray(0, end)).length
}

/** The `n`th string of `text` (any of them) rewritten by `f`. */
const inString = (text: string, n: number, f: (content: string) => string) => {
  const strings = [...text.matchAll(/"((?:[^"\\]|\\.)*)"/g)]
  const chosen = strings[n % strings.length]!
  return text.slice(0, chosen.index) + `"${f(chosen[1]!)}"` + text.slice(chosen.index + chosen[0].length)
}

/** Text as other clients write JSON: spaces, escapes and number forms `JSON.stringify` never writes, keys twice. */
const rewritten = fc
  .tuple(parsedEvent, fc.nat(), fc.constantFrom("space", "slash", "unicode", "number", "twice", "surrogate", "cut"))
  .map(([event, n, how]) => {
    const text = JSON.stringify(event)
    const at = n % text.length
    switch (how) {
      case "space":
        return text.slice(0, at) + " " + text.slice(at)
      case "slash":
        return inString(text, n, (s) => s + "\\/")
      case "unicode":
        return inString(text, n, (s) => "\\u0061" + s)
      case "number":
        return text.replace(/:(-?\d+)([,}\]])/, ":$1.0$2").replace(/:"[^"]*"}$/, ":1e2}")
      case "twice":
        return text.replace(/^\{("type":"[^"]*")/, "{$1,$1")
      case "surrogate":
        return inString(text, n, (s) => s + "\\ud83d\\ude00")
      case "cut":
        return text.slice(0, at)

      default:
        throw new Error(`no such rewrite: ${how}`)
    }
  })

describe("canonicalJsonCheck", () => {
  it.prop(
    "text_it_accepts_is_what_json_stringify_writes_for_a_canonical_value",
    [
      fc.oneof(
        parsedEvent.map((e) => JSON.stringify(e)),
        rewritten
      )
    ],
    ([text]) => {
      if (checkedEnd(text) !== text.length) return
      const parsed: unknown = JSON.parse(text)
      assert.strictEqual(JSON.stringify(parsed), text)
      assert.isTrue(isCanonicalAgentEvent(parsed))
    }
  )

  it.prop("takes_the_json_of_a_canonical_event_whole", [parsedEvent], ([value]) => {
    const text = JSON.stringify(value)
    if (leftToTheParse(value)) return
    if (!isCanonicalAgentEvent(value) || JSON.stringify(JSON.parse(text)) !== text) return
    assert.strictEqual(checkedEnd(text), text.length, text)
  })

  it("refuses_what_json_stringify_does_not_write_and_what_the_schema_does_not_hold", () => {
    const event = '{"type":"session_created","session_id":"s1","title":"t","project_id":"p"}'
    assert.strictEqual(checkedEnd(event), event.length)
    assert.strictEqual(checkedEnd('{"type":"session_created","session_id":"s1","project_id":"p"}'), 61)
    for (const text of [
      '{"session_id":"s1","type":"session_created"}',
      '{"type":"session_created","session_id":"s1","extra":1}',
      '{"type":"session_created"}',
      '{"type":"session_created","session_id":1}',
      '{"type":"no_such_type","session_id":"s1"}',
      '{"type":"session_created", "session_id":"s1"}',
      '{"type":"session_created","session_id":"s\\/1"}',
      '{"type":"session_created","session_id":"s\\u0031"}',
      '{"type":"session_created","session_id":"s\\u000a"}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":{"a":1,"a":2}}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":{"b":1,"1":2}}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":1.0}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":-0}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":1e999}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":tru}',
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":"x'
    ]) {
      assert.strictEqual(checkedEnd(text, ""), -1, text)
    }
    const escapes =
      '{"type":"message_appended","session_id":"s","message_id":"m","role":"r","content":"a\\"b\\\\c\\n\\u001f"}'
    assert.strictEqual(checkedEnd(escapes), escapes.length)
    assert.strictEqual(JSON.stringify(JSON.parse(escapes)), escapes)
  })
})

describe("entryTextOfJson", () => {
  it.prop(
    "is_the_fingerprinted_text_of_the_event_it_encodes",
    [fc.option(fc.string(), { nil: undefined }), parsedEvent],
    ([sessionId, event]) => {
      assert.strictEqual(entryTextOfJson(sessionId, JSON.stringify(event)), entryText(sessionId, event))
    }
  )
})
