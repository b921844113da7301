/**
 * A fuzz run of the HTTP API on a real loopback server: a fixed number of requests drawn
 * from a fixed seed, mixing valid requests with malformed cursors (`since`, `Last-Event-ID`),
 * odd headers, bodies that are random JSON, truncated, mistyped, huge, deeply nested, or name
 * unknown event types, and oversized bodies and batches.
 *
 * Every answer must be a success or a 4xx whose JSON body has a `message` (never a 5xx); where
 * the input is known to be valid or invalid the answer must say so; the head moves by exactly
 * the number of durable events a request was answered with, and by nothing for any other
 * request; at the end the server still answers, no stream is left subscribed, and the journal
 * holds exactly the accepted events.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fc from "fast-check"
import { isDeepStrictEqual } from "node:util"
import { decodeFrame } from "../src/Client.js"
import { makeSseParser, type SseFrame } from "../src/Sse.js"
import { startLoopback } from "../harness/Loopback.js"
import { Env } from "./support/FeedTesting.js"
import { tempDir } from "./support/TempDir.js"
import { eventually } from "./support/Wait.js"

const SEED = 20261127
const RUNS = 500
const MAX_BODY = 1024 * 1024

/** What an input should get: a success, a 4xx, or either (its validity is not known up front). */
type Expect = "success" | "rejected" | "either"

interface Sent {
  readonly durable: boolean
  /** The event as it must be journaled, when known. */
  readonly event: unknown
}

type Case =
  | {
      readonly kind: "stream"
      readonly query: string
      readonly headers: Record<string, string>
      readonly expect: Expect
    }
  | { readonly kind: "events"; readonly query: string; readonly expect: Expect }
  | {
      readonly kind: "append"
      readonly label: string
      readonly body: string
      readonly headers: Record<string, string>
      readonly expect: Expect
      /** The entries of a body known to be valid, in order. */
      readonly sent?: ReadonlyArray<Sent> | undefined
    }
  | { readonly kind: "status" }

// ---------------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------------

const text = fc.string({ unit: "grapheme", maxLength: 40 })
const content = fc.jsonValue({ maxDepth: 4 })

/** Valid events of the catalog, durable and ephemeral. */
const validEvent: fc.Arbitrary<Sent> = fc.oneof(
  text.map((s) => ({ durable: true, event: { type: "session_created", session_id: s, title: `t${s}` } })),
  text.map((s) => ({ durable: true, event: { type: "session_deleted", session_id: s } })),
  fc.tuple(text, text, content).map(([s, id, c]) => ({
    durable: true,
    event: { type: "message_appended", session_id: s, message_id: id, role: "user", content: c }
  })),
  fc.nat().map((n) => ({ durable: true, event: { type: "complete", usage: { total_tokens: n } } })),
  text.map((p) => ({ durable: true, event: { type: "config.changed", path: p } })),
  fc.tuple(text, fc.array(text, { maxLength: 3 })).map(([s, items]) => ({
    durable: true,
    event: {
      type: "task_list_updated",
      task_list: { session_id: s, items: items.map((t, i) => ({ id: `${i}`, title: t, status: "todo" })) }
    }
  })),
  text.map((c) => ({ durable: false, event: { type: "token", content: c } })),
  fc.tuple(text, content).map(([id, input]) => ({
    durable: false,
    event: { type: "tool_start", tool_call_id: id, tool_name: "bash", input }
  }))
)

const entryOf = (sent: Sent, sessionId: string | null) =>
  sessionId === null ? { event: sent.event } : { session_id: sessionId, event: sent.event }

const validBody: fc.Arbitrary<{ body: unknown; sent: Array<Sent> }> = fc.oneof(
  fc.tuple(validEvent, fc.option(text)).map(([sent, session]) => ({ body: entryOf(sent, session), sent: [sent] })),
  fc.array(fc.tuple(validEvent, fc.option(text)), { minLength: 0, maxLength: 6 }).map((entries) => ({
    body: { events: entries.map(([sent, session]) => entryOf(sent, session)) },
    sent: entries.map(([sent]) => sent)
  }))
)

const nested = (depth: number, leaf: unknown = 1): unknown => {
  let value: unknown = leaf
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

const message = (content: unknown) => ({
  event: { type: "message_appended", session_id: "s", message_id: "m", role: "user", content }
})

const json = { "content-type": "application/json" }

const append = (label: string, body: unknown, expect: Expect, sent?: ReadonlyArray<Sent>): Case => ({
  kind: "append",
  label,
  body: typeof body === "string" ? body : JSON.stringify(body),
  headers: json,
  expect,
  sent
})

const appendCase = (): fc.Arbitrary<Case> =>
  fc.oneof(
    { weight: 6, arbitrary: validBody.map(({ body, sent }) => append("valid", body, "success", sent)) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(
          validBody,
          fc.constantFrom(
            "application/json; charset=utf-8",
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "*/*",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=x",
            "application/merge-patch+json",
            "image/png"
          )
        )
        .map(([{ body }, type]) => ({
          ...append(`content-type '${type}'`, body, "either"),
          headers: type === "" ? {} : { "content-type": type }
        }))
    },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 5 }).map((body) => append("random JSON", body, "either")) },
    {
      weight: 2,
      arbitrary: fc.tuple(validBody, fc.double({ min: 0, max: 1, noNaN: true })).map(([{ body }, at]) => {
        const full = JSON.stringify(body)
        return append("truncated JSON", full.slice(0, Math.floor(at * (full.length - 1))), "rejected")
      })
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 200 }).map((s) => append("garbage", s, "either")) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          text.filter((t) => !/^[a-z_.]+$/.test(t)),
          fc.jsonValue({ maxDepth: 2 })
        )
        .map(([type, extra]) => append("unknown event type", { event: { type, extra } }, "rejected"))
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom("session_created", "session_deleted", "session_title_updated"),
          fc.oneof(
            fc.integer(),
            fc.boolean(),
            fc.constant(null),
            fc.array(fc.nat(), { maxLength: 2 }),
            fc.object({ maxDepth: 1 })
          )
        )
        .map(([type, wrong]) =>
          append(`wrong type for session_id of ${type}`, { event: { type, session_id: wrong, title: "t" } }, "rejected")
        )
    },
    {
      weight: 2,
      arbitrary: fc
        .constantFrom<[string, unknown]>(
          ["events not an array", { events: { event: { type: "token", content: "x" } } }],
          ["event missing", { session_id: "s" }],
          ["event not an object", { event: "session_deleted" }],
          ["session_id not a string", { session_id: 7, event: { type: "session_deleted", session_id: "s" } }],
          ["top-level array", [{ event: { type: "session_deleted", session_id: "s" } }]],
          ["top-level null", null],
          ["top-level number", 42],
          ["batch entry not an object", { events: [1, 2] }],
          ["a number too large for a double", { event: { type: "complete", usage: { total_tokens: "1e999" } } }],
          ["usage not an object", { event: { type: "complete", usage: [] } }]
        )
        .map(([label, body]) =>
          // 1e999 cannot be written by JSON.stringify: splice the literal into the text.
          append(label, JSON.stringify(body).replace('"1e999"', "1e999"), "rejected")
        )
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(1e999, -1e999)
        .map((n) =>
          append(
            "a huge number in content",
            JSON.stringify(message("PLACEHOLDER")).replace(
              '"PLACEHOLDER"',
              String(n === Infinity ? "1e999" : "-1e999")
            ),
            "rejected"
          )
        )
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(10, 200)
        .map((depth) =>
          append(`nested ${depth} deep`, message(nested(depth)), "success", [
            { durable: true, event: message(nested(depth)).event }
          ])
        )
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(300, 5_000, 100_000)
        .map((depth) =>
          append(
            `nested ${depth} deep`,
            JSON.stringify(message("P")).replace('"P"', "[".repeat(depth) + "]".repeat(depth)),
            "rejected"
          )
        )
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(100_000, 1_000_000).map((length) => {
        const body = message("x".repeat(length))
        return append(`a ${length}-character string`, body, "success", [{ durable: true, event: body.event }])
      })
    },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom(MAX_BODY + 1, 3 * MAX_BODY)
        .map((length) => append(`a ${length}-byte body`, message("x".repeat(length)), "rejected"))
    },
    {
      weight: 1,
      arbitrary: fc.constant(
        append(
          "a batch of 1001 events",
          { events: Array.from({ length: 1001 }, () => ({ event: { type: "token", content: "" } })) },
          "rejected"
        )
      )
    }
  )

/** Cursors: valid seqs and `<epoch>:<seq>`, other epochs (a reset, still a success), and malformed text. */
const cursor = (
  epoch: string,
  headerSafe: boolean
): fc.Arbitrary<{ readonly text: string; readonly expect: Expect }> => {
  const arbitraries: Array<fc.Arbitrary<{ readonly text: string; readonly expect: Expect }>> = [
    fc.nat({ max: 60 }).map((n) => ({ text: String(n), expect: "success" })),
    fc.nat({ max: 60 }).map((n) => ({ text: `${epoch}:${n}`, expect: "success" })),
    fc
      .tuple(fc.stringMatching(/^[0-9a-f]{1,16}$/), fc.nat({ max: 60 }))
      .map(([other, n]) => ({ text: `${other}:${n}`, expect: "success" })),
    fc.integer({ min: -100_000, max: -1 }).map((n) => ({ text: String(n), expect: "rejected" })),
    fc.stringMatching(/^[0-9]{17,40}$/).map((t) => ({ text: t, expect: "rejected" })),
    fc
      .double({ noNaN: true, noDefaultInfinity: true })
      .filter((d) => !Number.isInteger(d))
      .map((d) => ({ text: String(d), expect: "rejected" })),
    fc
      .constantFrom(
        "abc",
        "1e3",
        "0x10",
        "+5",
        "5:",
        ":5",
        "ABCD:5",
        "zz:1",
        "1:2:3",
        "NaN",
        "Infinity",
        "9007199254740993",
        "--1",
        "1 2"
      )
      .map((t) => ({ text: t, expect: "rejected" })),
    fc.string({ unit: "grapheme-ascii", maxLength: 30 }).map((t) => ({ text: t, expect: "either" }))
  ]
  if (!headerSafe) {
    arbitraries.push(fc.string({ unit: "grapheme", maxLength: 20 }).map((t) => ({ text: t, expect: "either" })))
  }
  return fc.oneof(...arbitraries)
}

const both = (a: Expect, b: Expect): Expect =>
  a === "rejected" || b === "rejected" ? "rejected" : a === "either" || b === "either" ? "either" : "success"

const caseOf = (epoch: string): fc.Arbitrary<Case> =>
  fc.oneof(
    { weight: 5, arbitrary: appendCase() },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.option(cursor(epoch, false)),
          fc.option(cursor(epoch, true)),
          fc.option(text),
          fc.option(fc.constantFrom("Bearer nonsense", "Basic Zm9vOmJhcg==", "garbage", ""))
        )
        .map(([since, lastEventId, session, authorization]): Case => {
          const query = new URLSearchParams()
          if (since !== null) query.set("since", since.text)
          if (session !== null) query.set("session_id", session)
          const headers: Record<string, string> = {}
          if (lastEventId !== null) headers["last-event-id"] = lastEventId.text
          if (authorization !== null) headers["authorization"] = authorization
          // `Last-Event-ID` wins over `since` when present and not empty (fetch trims header values).
          const header = lastEventId !== null && lastEventId.text.trim() !== "" ? lastEventId : undefined
          const expect =
            header !== undefined ? header.expect : since !== null && since.text !== "" ? since.expect : "success"
          return { kind: "stream", query: query.toString(), headers, expect }
        })
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.option(cursor(epoch, false)),
          fc.option(
            fc.oneof(
              fc.integer({ min: 1, max: 1000 }).map((n) => ({ text: String(n), expect: "success" as Expect })),
              fc
                .constantFrom("0", "1001", "-1", "abc", "1.5", "1e2", "99999999999")
                .map((t) => ({ text: t, expect: "rejected" as Expect }))
            )
          ),
          fc.option(
            fc.oneof(
              { weight: 4, arbitrary: fc.constant({ text: "0", expect: "success" as Expect }) },
              { weight: 1, arbitrary: fc.constant({ text: "1", expect: "success" as Expect }) },
              {
                weight: 2,
                arbitrary: fc
                  .constantFrom("61", "-1", "x", "1.5", "9999999999")
                  .map((t) => ({ text: t, expect: "rejected" as Expect }))
              }
            )
          ),
          fc.option(text)
        )
        .map(([since, limit, wait, session]): Case => {
          const query = new URLSearchParams()
          let expect: Expect = "success"
          for (const [name, value] of [
            ["since", since],
            ["limit", limit],
            ["wait", wait]
          ] as const) {
            if (value === null) continue
            query.set(name, value.text)
            if (value.text !== "") expect = both(expect, value.expect)
          }
          if (session !== null) query.set("session_id", session)
          return { kind: "events", query: query.toString(), expect }
        })
    },
    { weight: 1, arbitrary: fc.constant<Case>({ kind: "status" }) }
  )

// ---------------------------------------------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------------------------------------------

interface Answer {
  readonly status: number
  readonly contentType: string
  readonly text: string
  /** For a stream answered 200: its first frame. */
  readonly frame?: SseFrame | undefined
}

const send = async (url: string, init: RequestInit & { firstFrameOnly?: boolean } = {}): Promise<Answer> => {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 30_000)
  try {
    const response = await fetch(url, { ...init, signal: abort.signal })
    const contentType = response.headers.get("content-type") ?? ""
    if (init.firstFrameOnly === true && response.status === 200) {
      // Only the first frame: then the request is aborted, as a client that goes away does.
      let frame: SseFrame | undefined
      const parse = makeSseParser((f) => (frame ??= f))
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      while (frame === undefined) {
        const { done, value } = await reader.read()
        if (done) break
        parse(decoder.decode(value, { stream: true }))
      }
      return { status: response.status, contentType, text: "", frame }
    }
    return { status: response.status, contentType, text: await response.text() }
  } finally {
    clearTimeout(timer)
    abort.abort()
  }
}

const headSeq = async (url: string): Promise<number> => {
  const answer = await send(`${url}/api/v1/status`)
  assert.strictEqual(answer.status, 200, `GET /api/v1/status answered ${answer.status}: ${answer.text}`)
  return JSON.parse(answer.text).head_seq as number
}

const describeCase = (c: Case) =>
  c.kind === "append"
    ? `POST (${c.label}) ${c.body.length > 300 ? `${c.body.slice(0, 300)}... (${c.body.length} chars)` : c.body}`
    : c.kind === "status"
      ? "GET /api/v1/status"
      : `GET ${c.kind} ?${c.query} ${c.kind === "stream" ? JSON.stringify(c.headers) : ""}`

describe("fuzz", () => {
  it.scopedLive(
    `${RUNS}_random_requests_get_a_success_or_a_4xx_with_a_message_and_only_accepted_events_are_journaled`,
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const server = yield* startLoopback({ directory, feed: { fsync: "never" } })
        const url = server.url
        const epoch = server.feed.epoch
        // What the journal must hold at the end: each accepted durable event, or `undefined` where
        // an accepted body's content is not known exactly (random input the server found valid).
        const journaled: Array<unknown> = []
        const tally = new Map<string, number>()

        const check = async (c: Case) => {
          const before = await headSeq(url)
          let answer: Answer
          if (c.kind === "append") {
            answer = await send(`${url}/api/v1/events`, { method: "POST", headers: c.headers, body: c.body })
          } else if (c.kind === "status") {
            answer = await send(`${url}/api/v1/status`)
          } else {
            const path = c.kind === "stream" ? "/api/v1/stream" : "/api/v1/events"
            answer = await send(`${url}${path}?${c.query}`, {
              headers: c.kind === "stream" ? c.headers : {},
              firstFrameOnly: c.kind === "stream"
            })
          }
          const what = `${describeCase(c)} -> ${answer.status} ${answer.text.slice(0, 300)}`
          tally.set(`${c.kind} ${answer.status}`, (tally.get(`${c.kind} ${answer.status}`) ?? 0) + 1)

          assert.isBelow(answer.status, 500, `never a server error: ${what}`)
          if (answer.status >= 400) {
            assert.isAtLeast(answer.status, 400)
            assert.include(answer.contentType, "application/json", `a JSON error: ${what}`)
            const body = JSON.parse(answer.text)
            assert.isString(body.message, `the error says what is wrong: ${what}`)
            assert.isAbove(body.message.length, 0)
            if (c.kind !== "status") assert.notStrictEqual(c.expect, "success", `a valid request was refused: ${what}`)
          } else {
            assert.oneOf(answer.status, [200], what)
            if (c.kind !== "status")
              assert.notStrictEqual(c.expect, "rejected", `an invalid request was accepted: ${what}`)
          }

          const after = await headSeq(url)
          if (c.kind === "append" && answer.status === 200) {
            const seqs = JSON.parse(answer.text).seqs as Array<number | null>
            const numbers = seqs.filter((seq): seq is number => seq !== null)
            assert.deepStrictEqual(
              numbers,
              Array.from({ length: after - before }, (_, i) => before + 1 + i),
              `the head moved by exactly the events acknowledged: ${what}`
            )
            if (c.sent !== undefined) {
              assert.deepStrictEqual(
                seqs.map((seq) => seq !== null),
                c.sent.map((sent) => sent.durable),
                `a seq for each durable event, null for each ephemeral one: ${what}`
              )
              for (const sent of c.sent) if (sent.durable) journaled.push(sent.event)
            } else {
              for (let i = 0; i < numbers.length; i++) journaled.push(undefined)
            }
          } else {
            assert.strictEqual(after, before, `nothing journaled from this request: ${what}`)
          }

          if (c.kind === "stream" && answer.status === 200) {
            const frame = answer.frame
            assert.isDefined(frame, `a stream answered 200 sends a frame: ${what}`)
            const item = decodeFrame(frame!)
            assert.isTrue(
              Either.isRight(item) && item.right !== undefined,
              `the first frame is an event, a reset, caught_up or progress: ${JSON.stringify(frame)}`
            )
          }
        }

        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(caseOf(epoch), async (c) => {
              await check(c)
            }),
            { seed: SEED, numRuns: RUNS, endOnFailure: true }
          )
        )

        // The server is still there, every aborted stream let go of its subscription...
        const status = yield* Effect.promise(() => send(`${url}/api/v1/status`))
        assert.strictEqual(status.status, 200)
        yield* eventually(
          "no stream is left subscribed",
          Effect.map(server.feed.status, (s) => s.subscribers === 0)
        )
        // ...and the journal holds the accepted events, in order, and nothing else.
        const head = JSON.parse(status.text).head_seq as number
        assert.strictEqual(head, journaled.length)
        let since = 0
        const events: Array<{ seq: number; event: unknown }> = []
        while (since < head) {
          const page = yield* Effect.promise(() => send(`${url}/api/v1/events?since=${since}&limit=1000`))
          assert.strictEqual(page.status, 200, page.text.slice(0, 300))
          const body = JSON.parse(page.text) as { events: Array<{ seq: number; event: unknown }>; next_since: number }
          events.push(...body.events)
          since = body.next_since
        }
        assert.deepStrictEqual(
          events.map((e) => e.seq),
          Array.from({ length: head }, (_, i) => i + 1)
        )
        for (const [i, expected] of journaled.entries()) {
          if (expected !== undefined) {
            assert.isTrue(isDeepStrictEqual(events[i]!.event, expected), `seq ${i + 1} holds what was sent`)
          }
        }
        // Enough of each kind of answer that the run means something.
        const count = (prefix: string) =>
          [...tally].filter(([key]) => key.startsWith(prefix)).reduce((sum, [, n]) => sum + n, 0)
        assert.isAbove(count("append 200"), 50)
        assert.isAbove(count("append 4"), 50)
        assert.isAbove(count("stream 200") + count("events 200"), 20)
        assert.isAbove(count("stream 400") + count("events 400"), 20)
      }).pipe(Effect.provide(Env)),
    300_000
  )
})
