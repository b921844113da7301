/**
 * Events handed from the body to the journal as the UTF-8 of their JSON: the lines written from
 * those bytes are the lines the journal writes when it encodes the events itself (line separators
 * escaped, keys and sessions in place), an idempotency fingerprint hashed from the bytes is the
 * one hashed from the text, and a body's entries carry exactly their event's JSON.
 */
import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { chainFingerprint, chainFingerprintOfJson, entryTextOfJson } from "../../src/ChangeFeed/Idempotency.js"
import { decodeAppendBody } from "../../src/Http/Body.js"
import { type EncodedBatch, makeLineCodec } from "../../src/Journal/Lines.js"

const utf8 = (text: string) => new TextEncoder().encode(text)

/** Whether two encoded batches are the same bytes with the same line and body ends (a cheap check to fail on). */
const sameBatch = (a: EncodedBatch, b: EncodedBatch): boolean =>
  Buffer.compare(a.bytes, b.bytes) === 0 &&
  a.ends.length === b.ends.length &&
  a.ends.every((end, i) => end === b.ends[i] && a.bodyEnds[i] === b.bodyEnds[i])

/** Text with what JSON and the line format treat specially: separators, quotes, non-ASCII, control characters. */
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.constantFrom("\u2028", "a\u2029b", "\u2028\u2029", "é€😀—…", '\n\t"\\', "\u0000\u001f")
)

const stored = fc.record({
  ts: fc.constantFrom("2026-11-29T17:00:00.000Z", "t"),
  session_id: fc.option(text, { nil: undefined }),
  event: fc.oneof(fc.jsonValue(), fc.dictionary(text, text)),
  key: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,20}$/), { nil: undefined }),
  given: fc.boolean()
})

describe("events given as the UTF-8 of their JSON", () => {
  it("are_written_as_the_same_lines_as_events_the_journal_encodes_itself", () => {
    const codec = makeLineCodec(Schema.Unknown)
    fc.assert(
      fc.property(fc.array(stored, { maxLength: 30 }), fc.integer({ min: 1, max: 1e12 }), (specs, first) => {
        const events = specs.map((s, i) => ({
          seq: first + i,
          ts: s.ts,
          event: s.event,
          ...(s.session_id === undefined ? {} : { session_id: s.session_id }),
          ...(s.key === undefined ? {} : { key: s.key })
        }))
        const given = specs.map((s) => ({ eventJson: s.given ? utf8(JSON.stringify(s.event)) : undefined }))
        assert.isTrue(sameBatch(codec.encodeBatch(events, given), codec.encodeBatch(events)))
      }),
      { numRuns: 500 }
    )
  })

  it("make_a_batch_larger_than_the_kept_scratch_buffer_whole", () => {
    const codec = makeLineCodec(Schema.Unknown)
    const events = Array.from({ length: 600 }, (_, i) => ({
      seq: i + 1,
      ts: "t",
      event: { text: `é\u2028${i}`.repeat(1000) }
    }))
    const given = events.map((e) => ({ eventJson: utf8(JSON.stringify(e.event)) }))
    assert.isTrue(sameBatch(codec.encodeBatch(events, given), codec.encodeBatch(events)))
  })

  it("fingerprint_a_request_as_its_text_does", () => {
    fc.assert(
      fc.property(fc.string(), fc.option(text, { nil: undefined }), fc.jsonValue(), (previous, sessionId, event) => {
        const json = JSON.stringify(event)
        assert.strictEqual(
          chainFingerprintOfJson(previous, sessionId, utf8(json)),
          chainFingerprint(previous, entryTextOfJson(sessionId, json))
        )
      })
    )
  })

  it("are_what_a_body_s_entries_carry_for_its_canonical_events_and_only_those", () => {
    const canonical = { type: "message_appended", session_id: "s", message_id: "m1", role: "user", content: "é\u2028" }
    // Fields out of order: decoded, not taken as sent.
    const reordered = { role: "user", type: "message_appended", session_id: "s", message_id: "m2", content: "x" }
    const body = { events: [{ event: canonical }, { session_id: "s", event: reordered }, { event: canonical }] }
    const entries = Either.getOrThrow(decodeAppendBody(JSON.parse(JSON.stringify(body)), 10))
    const json = entries.map((e) => (e.eventJson === undefined ? undefined : new TextDecoder().decode(e.eventJson)))
    assert.deepStrictEqual(json, [JSON.stringify(canonical), undefined, JSON.stringify(canonical)])
  })

  it("are_plain_views_of_the_body_s_own_bytes_where_the_body_holds_them_as_sent", () => {
    const events = [0, 1, 2].map((i) => ({
      type: "message_appended",
      session_id: "s",
      message_id: `m${i}`,
      role: "user",
      content: `é${i}`
    }))
    const text = JSON.stringify({ events: events.map((event) => ({ session_id: "s", event })) })
    // As the socket hands it over: a Buffer, here one that starts part way into its memory.
    const bytes = Buffer.concat([Buffer.from("xx"), Buffer.from(text)]).subarray(2)
    const entries = Either.getOrThrow(decodeAppendBody(JSON.parse(text), 10, bytes))
    entries.forEach((entry, i) => {
      const json = entry.eventJson!
      assert.strictEqual(new TextDecoder().decode(json), JSON.stringify(events[i]))
      assert.strictEqual(json.buffer, bytes.buffer, "no copy: the body's own memory")
      // A plain view costs half what a Buffer does to make, and one is made for every event.
      assert.isFalse(Buffer.isBuffer(json))
    })
  })
})
