/**
 * Bodies taken as they are (`takeAsSent`): a body the walk takes is one the parse takes, with the
 * same entries (session, event JSON byte for byte, the event itself, its durability), whatever
 * the events, their payloads and how the body was written; and a compact body of canonical events
 * is taken, its events left unparsed until read.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { vi } from "vitest"
import type * as ChangeFeed from "../../src/ChangeFeed.js"
import { JsonEntry } from "../../src/ChangeFeed/Receipts.js"
import { AgentDomain, AgentEvent, isCanonicalAgentEvent, isDurableChange } from "../../src/Domain/AgentEvent.js"
import { routeSession } from "../../src/Domain/FeedDomain.js"
import { decodeAppendBody, parseBody, takeAsSent } from "../../src/Http/Body.js"
import { leftToTheParse } from "../support/CanonicalJson.js"

const MAX_BATCH = 50
const encode = Schema.encodeSync(AgentEvent)

/** An event as a client sends it: its encoding, read back from JSON. */
const sentEvent = Arbitrary.make(AgentEvent).map((event) => JSON.parse(JSON.stringify(encode(event))) as unknown)

const sessionId = fc.oneof(
  fc.constantFrom("s1", "sess-0001", "s1"),
  fc.string({ maxLength: 12 }),
  fc.string({ unit: "grapheme", maxLength: 6 })
)

const entry = fc.record(
  { session_id: sessionId, event: fc.oneof(sentEvent, fc.constant({ type: "token", content: "Hi" })) },
  { requiredKeys: ["event"] }
)

const compactBody = fc.oneof(
  fc.array(entry, { minLength: 1, maxLength: 8 }).map((events) => JSON.stringify({ events })),
  entry.map((one) => JSON.stringify(one))
)

/** Bodies as other clients write them, and damaged ones. */
const otherBody = fc
  .tuple(compactBody, fc.nat(), fc.constantFrom("space", "reorder", "extra", "null", "cut", "byte", "newline"))
  .map(([text, n, how]) => {
    const at = n % text.length
    switch (how) {
      case "space":
        return text.slice(0, at) + " " + text.slice(at)
      case "reorder":
        return text.replace(
          /\{"session_id":("(?:[^"\\]|\\.)*"),"event":/,
          '{"event":{"type":"token","content":""},"session_id":$1,"event":'
        )
      case "extra":
        return text.replace(/^\{/, '{"more":1,')
      case "null":
        return text.replace(/"session_id":"(?:[^"\\]|\\.)*"/, '"session_id":null')
      case "cut":
        return text.slice(0, at)
      case "byte":
        return text.slice(0, at) + "\u0001" + text.slice(at)
      case "newline":
        return text + "\n"

      default:
        throw new Error(`no such rewrite: ${how}`)
    }
  })

const parsedWay = (bytes: Uint8Array) =>
  Either.flatMap(parseBody(bytes), (body) => decodeAppendBody(body, MAX_BATCH, bytes))

const sameEntries = (
  taken: ReadonlyArray<ChangeFeed.Entry<AgentEvent>>,
  parsed: ReadonlyArray<ChangeFeed.Entry<AgentEvent>>
) => {
  assert.strictEqual(taken.length, parsed.length)
  for (let i = 0; i < taken.length; i++) {
    const [a, b] = [taken[i]!, parsed[i]!]
    assert.instanceOf(a, JsonEntry)
    // The session it is journaled under: the caller's, else the one its event names (read from its
    // JSON when the entry says it is routed, so that its event need not be parsed to route it).
    const session = routeSession(AgentDomain, b.sessionId, b.event)
    assert.strictEqual(routeSession(AgentDomain, a.sessionId, a.event), session)
    if ((a as JsonEntry<AgentEvent>).routed) assert.strictEqual(a.sessionId, session)
    else assert.isUndefined(a.sessionId)
    assert.deepStrictEqual(Buffer.from(a.eventJson!), Buffer.from(b.eventJson ?? JSON.stringify(b.event)))
    assert.deepStrictEqual(a.event, b.event)
    assert.strictEqual((a as JsonEntry<AgentEvent>).durable, isDurableChange(b.event))
  }
}

describe("takeAsSent", () => {
  it.prop(
    "a_body_it_takes_is_one_the_parse_takes_with_the_same_entries",
    [fc.oneof(compactBody, otherBody)],
    ([text]) => {
      const bytes = Buffer.from(text)
      const taken = takeAsSent(bytes, MAX_BATCH)
      if (taken === undefined) return
      const parsed = parsedWay(bytes)
      assert.isTrue(Either.isRight(parsed), text)
      sameEntries(taken, Either.getOrThrow(parsed))
    }
  )

  it.prop("takes_a_compact_body_of_canonical_events_whole", [compactBody], ([text]) => {
    const bytes = Buffer.from(text)
    // An event JSON cannot carry whole (a number that is not finite reads back as null) is refused by the parse.
    const answer = parsedWay(bytes)
    if (Either.isLeft(answer)) return
    const parsed = answer.right
    // What is left to the parse: an event it finds other than canonical as sent (its JSON then not
    // a view of the body), a session id written with escapes, what the walk leaves to it.
    const asSent = parsed.every(
      (e) =>
        isCanonicalAgentEvent(e.event) &&
        e.eventJson?.buffer === bytes.buffer &&
        (e.sessionId === undefined || JSON.stringify(e.sessionId) === `"${e.sessionId}"`) &&
        !leftToTheParse(e.event)
    )
    if (!asSent) return
    const taken = takeAsSent(bytes, MAX_BATCH)
    assert.isDefined(taken, text)
    sameEntries(taken!, parsed)
  })

  it("leaves_what_it_does_not_take_to_the_parse_which_judges_it", () => {
    const event = '{"type":"session_created","session_id":"s1"}'
    for (const text of [
      `{"events":[]}`,
      `{"events":[{"event":${event}}], "more": 1}`,
      `{"events":[{"event":${event}},{"event":${event}}]}`.replace("}}]", "}} ]"),
      `{"session_id":null,"event":${event}}`,
      `{"session_id":"s\\"1","event":${event}}`,
      `{"event":${event},"event":${event}}`,
      `{"event":${event}}\n`,
      `{"event":{"session_id":"s1","type":"session_created"}}`,
      `{"events":[${Array.from({ length: MAX_BATCH + 1 }, () => `{"event":${event}}`).join(",")}]}`
    ]) {
      assert.isUndefined(takeAsSent(Buffer.from(text), MAX_BATCH), text)
    }
    const taken = takeAsSent(Buffer.from(`{"events":[{"session_id":"a","event":${event}},{"event":${event}}]}`), 2)
    assert.deepStrictEqual(
      taken?.map((e) => [e.sessionId, Buffer.from(e.eventJson!).toString()]),
      [
        ["a", event],
        ["s1", event]
      ]
    )
  })

  it("reads_the_session_an_event_names_where_the_routing_rule_reads_it_or_leaves_it_to_the_event", () => {
    const routing = (event: string) => {
      const [entry] = takeAsSent(Buffer.from(`{"event":${event}}`), MAX_BATCH)! as Array<JsonEntry<AgentEvent>>
      return [entry!.sessionId, entry!.routed]
    }
    assert.deepStrictEqual(routing('{"type":"session_deleted","session_id":"s1"}'), ["s1", true])
    assert.deepStrictEqual(
      routing(
        '{"type":"task_list_updated","task_list":{"session_id":"s2","items":[{"id":"1","title":"t","status":"s"}]}}'
      ),
      ["s2", true]
    )
    assert.deepStrictEqual(
      routing('{"type":"sub_agent_started","parent_session_id":"s3","child_session_id":"c","agent_name":"a"}'),
      ["s3", true]
    )
    // A type that names no session is routed to none, without reading it.
    assert.deepStrictEqual(routing('{"type":"complete","usage":{}}'), [undefined, true])
    // An id written with an escape is left to the event's own routing, once parsed.
    assert.deepStrictEqual(routing('{"type":"session_deleted","session_id":"s\\"1"}'), [undefined, false])
  })

  it("parses_an_event_only_when_it_is_read_and_once", () => {
    const bytes = Buffer.from(`{"event":{"type":"session_created","session_id":"s1","title":"t"}}`)
    const parse = vi.spyOn(JSON, "parse")
    try {
      const [taken] = takeAsSent(bytes, MAX_BATCH)!
      assert.strictEqual(parse.mock.calls.length, 0)
      assert.deepStrictEqual(taken!.event, { type: "session_created", session_id: "s1", title: "t" })
      assert.strictEqual(taken!.event, taken!.event)
      assert.strictEqual(parse.mock.calls.length, 1)
    } finally {
      parse.mockRestore()
    }
  })
})
