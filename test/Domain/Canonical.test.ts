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
import { canonicalCheck } from "../../src/Domain/Canonical.js"
import { entryText, entryTextOfJson } from "../../src/ChangeFeed/Idempotency.js"

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

describe("entryTextOfJson", () => {
  it.prop(
    "is_the_fingerprinted_text_of_the_event_it_encodes",
    [fc.option(fc.string(), { nil: undefined }), parsedEvent],
    ([sessionId, event]) => {
      assert.strictEqual(entryTextOfJson(sessionId, JSON.stringify(event)), entryText(sessionId, event))
    }
  )
})
