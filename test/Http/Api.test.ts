/**
 * The JSON routes end to end: appending one event and batches, reading pages (with cursors,
 * resets and long-polls), the status, and the OpenAPI docs.
 */
import { describe, it, assert } from "@effect/vitest"
import { Deferred, Effect, Fiber, Schema } from "effect"
import { vi } from "vitest"
import { Status } from "../../src/Api.js"
import { append, created, createdMany, post, request, start, status, type TestServer } from "../support/Server.js"
import { range, resetData } from "../support/Expected.js"
import { tempDir } from "../support/TempDir.js"
import { eventually } from "../support/Wait.js"

const fresh = Effect.gen(function* () {
  return yield* start({ directory: yield* tempDir })
})

const events = (server: TestServer, query = "") => `${server.url}/api/v1/events${query}`

describe("POST /api/v1/events", () => {
  it.scopedLive("one_event_answers_its_seq_once_durable_and_is_readable_at_once", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      const one = yield* post(events(server), {
        session_id: "s1",
        event: { type: "session_deleted", session_id: "s1" }
      })
      assert.strictEqual(one.status, 200)
      assert.deepStrictEqual(one.body, { seqs: [1] })

      const page = yield* request(events(server, "?since=0"))
      assert.strictEqual(page.status, 200)
      assert.strictEqual(page.body.events.length, 1)
      const [change] = page.body.events
      assert.strictEqual(change.seq, 1)
      assert.strictEqual(change.session_id, "s1")
      assert.deepStrictEqual(change.event, { type: "session_deleted", session_id: "s1" })
    })
  )

  it.scopedLive("a_batch_answers_one_entry_per_event_with_null_for_ephemeral_ones", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, [created("s0")])
      const batch = yield* post(events(server), {
        events: [
          created("s1"),
          { session_id: "s1", event: { type: "token", content: "Hi" } },
          { session_id: "s1", event: { type: "complete", usage: { total_tokens: 7 } } }
        ]
      })
      assert.strictEqual(batch.status, 200)
      assert.deepStrictEqual(batch.body, { seqs: [2, null, 3] })

      const page = yield* request(events(server, "?since=1"))
      assert.deepStrictEqual(
        page.body.events.map((e: any) => [e.seq, e.session_id, e.event.type]),
        [
          [2, "s1", "session_created"],
          [3, "s1", "complete"]
        ]
      )
      assert.strictEqual(page.body.head_seq, 3)
      assert.notInclude(JSON.stringify(page.body), `"type":"token"`)
    })
  )

  it.scopedLive("only_ephemeral_events_answer_null_and_journal_nothing", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      const response = yield* post(events(server), { event: { type: "token", content: "Hi" } })
      assert.deepStrictEqual([response.status, response.body], [200, { seqs: [null] }])
      assert.strictEqual((yield* status(server)).head_seq, 0)
    })
  )

  it.scopedLive("a_body_as_json_stringify_writes_it_is_never_parsed_and_any_other_is_parsed_once", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      // One entry names its session, the other leaves it to its event: read from its JSON, not parsed.
      const named = (session: string) => ({ session_id: session, ...created(session) })
      const compact = JSON.stringify({ events: [named("s1"), created("s2")] })
      const spaced = JSON.stringify({ events: [named("s3"), named("s4")] }, null, 2)
      const parse = vi.spyOn(JSON, "parse")
      let parses: Array<number>
      try {
        assert.deepStrictEqual((yield* post(events(server), compact)).body, { seqs: [1, 2] })
        assert.deepStrictEqual((yield* post(events(server), spaced)).body, { seqs: [3, 4] })
      } finally {
        // Neither the body nor any of its events: no parse holds "s1" or "s2".
        const texts = parse.mock.calls.map(([text]) => String(text))
        parses = [compact, spaced].map((body) => texts.filter((text) => text === body).length)
        parses.push(texts.filter((text) => text.includes('"s1"') || text.includes('"s2"')).length)
        parse.mockRestore()
      }
      assert.deepStrictEqual(parses, [0, 1, 0])
      const page = yield* request(events(server, "?since=0"))
      assert.deepStrictEqual(
        page.body.events.map((e: any) => [e.seq, e.session_id, e.event]),
        [1, 2, 3, 4].map((seq) => [seq, `s${seq}`, created(`s${seq}`).event])
      )
    })
  )
})

describe("GET /api/v1/events", () => {
  it.scopedLive("a_page_of_large_events_is_bounded_in_bytes_and_the_next_pages_carry_the_rest", () =>
    Effect.gen(function* () {
      const server = yield* start({
        directory: yield* tempDir,
        feed: { fsync: "never" },
        http: { maxPageBytes: 64 * 1024 }
      })
      // Ten events of ~20,000 characters: about 40 KB each in memory, so a page holds one.
      const big = Array.from({ length: 10 }, (_, i) => created(`s${i}`, "x".repeat(20_000)))
      yield* append(server, big)
      const seen: Array<number> = []
      let since = 0
      for (let pages = 0; pages < 20 && since < 10; pages++) {
        const page = yield* request(events(server, `?since=${since}&limit=1000`))
        assert.strictEqual(page.status, 200)
        assert.isAtLeast(page.body.events.length, 1, "a page is never empty while events remain")
        assert.isAtMost(page.body.events.length, 2)
        seen.push(...page.body.events.map((e: any) => e.seq))
        since = page.body.next_since
      }
      assert.deepStrictEqual(seen, range(1, 10))
    })
  )

  it.scopedLive("pages_follow_next_since_to_the_head", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, createdMany(5))
      const { epoch } = yield* status(server)
      const seen: Array<number> = []
      const cursors: Array<number> = []
      let since = "0"
      while (true) {
        const page = yield* request(events(server, `?since=${since}&limit=2`))
        assert.strictEqual(page.status, 200)
        assert.strictEqual(page.body.head_seq, 5)
        assert.strictEqual(page.body.epoch, epoch)
        assert.isAtMost(page.body.events.length, 2)
        if (page.body.events.length === 0) {
          assert.strictEqual(page.body.next_since, 5)
          break
        }
        seen.push(...page.body.events.map((e: any) => e.seq))
        cursors.push(page.body.next_since)
        since = String(page.body.next_since)
      }
      assert.deepStrictEqual(seen, range(1, 5))
      assert.deepStrictEqual(cursors, [2, 4, 5])

      // The default limit covers a small feed; an epoch-qualified cursor is accepted.
      const all = yield* request(events(server, `?since=${epoch}:3`))
      assert.deepStrictEqual(
        all.body.events.map((e: any) => e.seq),
        [4, 5]
      )
    })
  )

  it.scopedLive("a_session_filter_returns_only_that_session_and_still_advances", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, [created("s1"), created("s2"), created("s2"), created("s1"), created("s2")])
      const page = yield* request(events(server, "?since=0&session_id=s1"))
      assert.deepStrictEqual(
        page.body.events.map((e: any) => e.seq),
        [1, 4]
      )
      assert.strictEqual(page.body.next_since, 5)
      const none = yield* request(events(server, "?since=0&session_id=nobody"))
      assert.deepStrictEqual([none.body.events, none.body.next_since], [[], 5])
    })
  )

  it.scopedLive("a_cursor_that_needs_a_reset_gets_the_reset_object_instead_of_events", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, createdMany(3))
      const { epoch } = yield* status(server)
      const ahead = yield* request(events(server, "?since=9"))
      assert.strictEqual(ahead.status, 200)
      assert.deepStrictEqual(ahead.body, {
        reset: resetData("ahead_of_head", 9, { oldestSeq: 1, headSeq: 3 }),
        next_since: 3,
        head_seq: 3,
        epoch
      })
      const otherEpoch = yield* request(events(server, "?since=deadbeef:2"))
      assert.deepStrictEqual(otherEpoch.body.reset, resetData("epoch_mismatch", 2, { oldestSeq: 1, headSeq: 3 }))
      assert.strictEqual(otherEpoch.body.next_since, 3)
      assert.isUndefined(otherEpoch.body.events)
      // Following the reset's cursor reads normally.
      const after = yield* request(events(server, `?since=${epoch}:${otherEpoch.body.next_since}`))
      assert.deepStrictEqual([after.body.events, after.body.next_since], [[], 3])
    })
  )

  it.scopedLive("a_long_poll_made_before_an_append_returns_with_that_event", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, createdMany(2))
      const answered = yield* Deferred.make<void>()
      // wait=30 (the route allows up to 60 s): if the request were not woken by the append it
      // would answer empty long after this test has failed on its timeout.
      const poll = yield* request(events(server, "?since=2&wait=30")).pipe(
        Effect.tap(() => Deferred.succeed(answered, undefined)),
        Effect.fork
      )
      // The request is in: its reader has subscribed. And it has not answered.
      yield* eventually(
        "the long poll's reader subscribes",
        Effect.map(status(server), (s) => s.subscribers === 1)
      )
      assert.isFalse(yield* Deferred.isDone(answered))

      yield* append(server, [created("s7")])
      const page = yield* Fiber.join(poll)
      assert.strictEqual(page.status, 200)
      assert.deepStrictEqual(
        page.body.events.map((e: any) => [e.seq, e.session_id]),
        [[3, "s7"]]
      )
      assert.strictEqual(page.body.next_since, 3)
    })
  )

  it.scopedLive("a_long_poll_with_nothing_new_answers_empty_after_the_wait", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, createdMany(1))
      const startedAt = Date.now()
      const page = yield* request(events(server, "?since=1&wait=1"))
      assert.isAtLeast(Date.now() - startedAt, 900)
      assert.deepStrictEqual([page.status, page.body.events, page.body.next_since], [200, [], 1])
    })
  )
})

describe("GET /api/v1/status", () => {
  it.scopedLive("reports_the_journal_and_the_feed", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      const empty = yield* status(server)
      assert.deepStrictEqual(
        { ...empty, epoch: "", bytes: 0 },
        {
          head_seq: 0,
          oldest_seq: 1,
          epoch: "",
          segments: 0,
          bytes: 0,
          dropped: 0,
          subscribers: 0,
          degraded: false,
          last_error: null,
          queued: 0,
          fsync: "always"
        }
      )
      assert.match(empty.epoch, /^[0-9a-f]{16}$/)

      yield* append(server, createdMany(3))
      const after = yield* status(server)
      assert.strictEqual(after.head_seq, 3)
      assert.strictEqual(after.oldest_seq, 1)
      assert.strictEqual(after.epoch, empty.epoch)
      assert.strictEqual(after.segments, 1)
      assert.isAbove(after.bytes, 100)
    })
  )
  it.scopedLive("the_status_answer_is_exactly_what_the_status_schema_encodes", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      yield* append(server, createdMany(2))
      const response = yield* request(`${server.url}/api/v1/accounts/default/status`)
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.headers["content-type"], "application/json; charset=utf-8")
      // The same fields, in the same order, as the API's schema gives them.
      const encoded = Schema.encodeSync(Status)(Schema.decodeUnknownSync(Status)(response.body))
      assert.strictEqual(JSON.stringify(response.body), JSON.stringify(encoded))
    })
  )
})

describe("content types", () => {
  it.scopedLive("every_json_answer_says_charset_utf_8", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      const answers = [
        yield* post(events(server), created("s1")),
        yield* post(events(server), "{"),
        yield* request(events(server, "?since=0")),
        yield* request(events(server, "?since=x")),
        yield* request(`${server.url}/api/v1/status`),
        yield* request(`${server.url}/docs/openapi.json`),
        yield* request(`${server.url}/nowhere`),
        yield* request(`${server.url}/api/v1/status`, { method: "DELETE" })
      ]
      assert.deepStrictEqual(
        answers.map((a) => a.status),
        [200, 400, 200, 400, 200, 200, 404, 405]
      )
      for (const answer of answers)
        assert.strictEqual(answer.headers["content-type"], "application/json; charset=utf-8")
    })
  )
})

describe("docs", () => {
  it.scopedLive("docs_answers_html_and_the_openapi_document_lists_the_routes", () =>
    Effect.gen(function* () {
      const server = yield* fresh
      const html = yield* request(`${server.url}/docs`)
      assert.strictEqual(html.status, 200)
      assert.include(html.headers["content-type"] ?? "", "text/html")
      assert.include(html.body, "swagger-ui")

      const spec = yield* request(`${server.url}/docs/openapi.json`)
      assert.strictEqual(spec.status, 200)
      const paths = spec.body.paths as Record<string, Record<string, unknown>>
      assert.deepStrictEqual(Object.keys(paths).sort(), [
        "/api/v1/accounts",
        "/api/v1/accounts/{account}/events",
        "/api/v1/accounts/{account}/status",
        "/api/v1/accounts/{account}/stream",
        "/api/v1/events",
        "/api/v1/status",
        "/api/v1/stream"
      ])
      for (const prefix of ["/api/v1", "/api/v1/accounts/{account}"]) {
        assert.deepStrictEqual(Object.keys(paths[`${prefix}/events`]!).sort(), ["get", "post"])
        assert.deepStrictEqual(Object.keys(paths[`${prefix}/stream`]!), ["get"])
        assert.deepStrictEqual(Object.keys(paths[`${prefix}/status`]!), ["get"])
      }
      assert.deepStrictEqual(Object.keys(paths["/api/v1/accounts"]!), ["get"])
      const accountParameter = (paths["/api/v1/accounts/{account}/stream"]!["get"] as any).parameters.find(
        (p: any) => p.name === "account"
      )
      assert.strictEqual(accountParameter?.in, "path")
      assert.property((paths["/api/v1/stream"]!["get"] as any).responses["200"].content, "text/event-stream")
      // A page over a corrupt journal answers 500 with the JournalCorrupt error.
      assert.property((paths["/api/v1/events"]!["get"] as any).responses, "500")
    })
  )
})
