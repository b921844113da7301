/**
 * Error answers end to end: 400 with a JSON error naming the field, 413 past the body and
 * batch limits (chunked bodies too), 401 without the configured token (before the body is
 * read), JSON 404 and 405 for routes that do not exist, and a JSON 500 naming what broke (a
 * corrupt journal line by file and offset), logged. Nothing from a rejected request is journaled.
 */
import { HttpApiBuilder } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, it, assert } from "@effect/vitest"
import { Deferred, Effect, Either, Redacted, Stream } from "effect"
import * as Client from "../../src/Client.js"
import {
  append,
  created,
  createdMany,
  damageLine,
  type Damage,
  dataOf,
  openStream,
  post,
  request,
  type JsonResponse,
  seqsOf,
  start,
  status,
  type TestServer
} from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"

/** A server with two events journaled, small limits, so rejections can be checked against its head. */
const limitedServer = Effect.gen(function* () {
  const server = yield* start({
    directory: yield* tempDir,
    http: { maxBodyBytes: 2048, maxBatchEvents: 3 }
  })
  yield* append(server, [created("s1"), created("s2")])
  return server
})

/** Asserts a JSON error of `status` naming `field`, and that the head did not move. */
const assertRejected = (server: TestServer, response: JsonResponse, expected: number, tag: string, field: string) =>
  Effect.gen(function* () {
    assert.strictEqual(response.status, expected, JSON.stringify(response.body))
    assert.include(response.headers["content-type"] ?? "", "application/json")
    assert.strictEqual(response.body._tag, tag)
    assert.strictEqual(response.body.field, field)
    assert.isString(response.body.message)
    assert.isAbove(response.body.message.length, 10, "the message says what was wrong")
    assert.strictEqual((yield* status(server)).head_seq, 2, "nothing was journaled")
  })

const events = (server: TestServer) => `${server.url}/api/v1/events`

describe("400 Bad Request", () => {
  it.scopedLive("a_bad_cursor_on_the_stream_names_since_or_last_event_id", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const stream = `${server.url}/api/v1/stream`
      for (const since of ["-1", "abc", "1.5", "XYZ:1"]) {
        yield* assertRejected(server, yield* request(`${stream}?since=${since}`), 400, "BadRequest", "since")
      }
      for (const id of ["XYZ:1", "-1", "abc", "deadbeef:x"]) {
        const response = yield* request(stream, { headers: { "last-event-id": id } })
        yield* assertRejected(server, response, 400, "BadRequest", "Last-Event-ID")
        assert.include(response.body.message, id)
      }
      // Nothing was left subscribed by the rejected streams.
      assert.strictEqual((yield* status(server)).subscribers, 0)
    })
  )

  it.scopedLive("bad_query_parameters_of_the_events_page_name_the_parameter", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const cases: Array<[string, string]> = [
        ["limit=0", "limit"],
        ["limit=1001", "limit"],
        ["limit=ten", "limit"],
        ["since=-1", "since"],
        ["since=abc", "since"],
        ["wait=61", "wait"],
        ["wait=-1", "wait"]
      ]
      for (const [query, field] of cases) {
        yield* assertRejected(server, yield* request(`${events(server)}?${query}`), 400, "BadRequest", field)
      }
    })
  )

  it.scopedLive("a_body_that_is_not_json_names_body", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      yield* assertRejected(server, yield* post(events(server), `{"event": {"type": `), 400, "BadRequest", "body")
      yield* assertRejected(server, yield* post(events(server), ""), 400, "BadRequest", "body")
    })
  )

  it.scopedLive("an_unknown_event_type_names_event_type", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const response = yield* post(events(server), { event: { type: "session_exploded", session_id: "s1" } })
      yield* assertRejected(server, response, 400, "BadRequest", "event.type")
      assert.include(response.body.message, "session_exploded")
      yield* assertRejected(
        server,
        yield* post(events(server), { event: { session_id: "s1" } }),
        400,
        "BadRequest",
        "event.type"
      )
    })
  )

  it.scopedLive("a_missing_payload_field_in_a_batch_names_its_path_and_rejects_the_whole_batch", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const response = yield* post(events(server), {
        events: [created("s1"), { event: { type: "session_created" } }, created("s3")]
      })
      yield* assertRejected(server, response, 400, "BadRequest", "events[1].event.session_id")
      const wrongType = yield* post(events(server), {
        events: [{ event: { type: "session_pinned_updated", session_id: "s1", pinned: "yes" } }]
      })
      yield* assertRejected(server, wrongType, 400, "BadRequest", "events[0].event.pinned")
    })
  )

  it.scopedLive("a_body_of_neither_shape_names_the_field_at_fault", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const cases: Array<readonly [unknown, string]> = [
        [{ events: "no" }, "events"],
        [[created("s1")], "body"],
        [42, "body"],
        [{ hello: 1 }, "body"],
        [{ session_id: 5, event: created("s1").event }, "session_id"],
        [{ events: [created("s1"), 7] }, "events[1]"],
        [{ events: [{ session_id: [], event: created("s1").event }] }, "events[0].session_id"]
      ]
      for (const [body, field] of cases) {
        yield* assertRejected(server, yield* post(events(server), body), 400, "BadRequest", field)
      }
    })
  )
})

describe("400 Bad Request: a body that would not be journaled as sent", () => {
  it.scopedLive("a_body_that_is_not_utf8_is_refused_naming_the_byte_offset", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const text = JSON.stringify({ event: { type: "session_created", session_id: "s1", title: "caf\u00e9 XY" } })
      const at = Buffer.from(text).indexOf("XY")
      // A stray byte, a surrogate encoded as UTF-8 (CESU), an overlong '/', a sequence cut short.
      for (const bad of [[0xff], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xe2, 0x82]]) {
        const bytes = Buffer.concat([
          Buffer.from(text).subarray(0, at),
          Buffer.from(bad),
          Buffer.from(text).subarray(at)
        ])
        const response = yield* request(events(server), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: bytes
        })
        yield* assertRejected(server, response, 400, "BadRequest", "body")
        assert.include(response.body.message, "not valid UTF-8")
        assert.include(response.body.message, `byte ${at} `)
      }
      // The same text, valid, is journaled as sent.
      assert.deepStrictEqual((yield* post(events(server), text)).body, { seqs: [3] })
      const page = yield* request(`${events(server)}?since=2`)
      assert.strictEqual(page.body.events[0].event.title, "caf\u00e9 XY")
    })
  )

  it.scopedLive("an_integer_a_double_cannot_hold_is_refused_naming_its_path", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const complete = (tokens: string) => `{"type":"complete","usage":{"prompt_tokens":1,"total_tokens":${tokens}}}`
      const cases: Array<readonly [string, string]> = [
        [`{"event":${complete("12345678901234567890")}}`, "event.usage.total_tokens"],
        [
          `{"events":[{"event":${complete("1")}},{"event":${complete("9007199254740993")}}]}`,
          "events[1].event.usage.total_tokens"
        ],
        [`{"events":[{"event":${complete("-12345678901234567890")}}]}`, "events[0].event.usage.total_tokens"],
        [
          `{"event":{"type":"message_appended","session_id":"s","message_id":"m","role":"user","content":[{"a\\"[":"1234567890123456789012"},[0,{"n":99999999999999999}]]}}`,
          "event.content[1][1].n"
        ]
      ]
      for (const [body, field] of cases) {
        const response = yield* post(events(server), body)
        yield* assertRejected(server, response, 400, "BadRequest", field)
        assert.include(response.body.message, "cannot hold exactly")
      }
      // Long digits in a string, and integers a double holds exactly (2^53, 2^64), are stored as sent.
      const exact = yield* post(
        events(server),
        `{"events":[{"event":{"type":"session_created","session_id":"12345678901234567890","title":"t"}},` +
          `{"event":${complete("9007199254740992")}},{"event":${complete("18446744073709552000")}}]}`
      )
      assert.deepStrictEqual([exact.status, exact.body], [200, { seqs: [3, 4, 5] }])
      const page = yield* request(`${events(server)}?since=2`)
      assert.deepStrictEqual(
        page.body.events.map((e: any) => e.event.usage?.total_tokens ?? e.event.session_id),
        ["12345678901234567890", 9007199254740992, 18446744073709552000]
      )
    })
  )
})

describe("413 Payload Too Large", () => {
  it.scopedLive("a_body_over_max_body_bytes_is_rejected_before_it_is_read", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const big = JSON.stringify({ event: { type: "session_created", session_id: "s1", title: "x".repeat(4096) } })
      const response = yield* post(events(server), big)
      yield* assertRejected(server, response, 413, "PayloadTooLarge", "body")
      assert.strictEqual(response.body.limit, 2048)
      assert.include(response.body.message, `${Buffer.byteLength(big)} bytes`)
    })
  )

  it.scopedLive("a_chunked_body_over_max_body_bytes_answers_413_naming_the_limit", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const body = (length: number) =>
        JSON.stringify({ event: { type: "session_created", session_id: "s1", title: "x".repeat(length) } })
      // Without a content-length the limit is found while reading: the body is read to its end
      // (what is past the limit thrown away) so that the client, which sends it all before it
      // reads, gets the answer rather than a reset connection. With `Expect: 100-continue` too,
      // and for a body far over the limit.
      for (const [length, expectContinue] of [
        [4096, false],
        [4096, true],
        [1024 * 1024, false],
        [1024 * 1024, true]
      ] as const) {
        const big = body(length)
        const response = yield* request(events(server), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: big,
          chunked: true,
          expectContinue
        })
        yield* assertRejected(server, response, 413, "PayloadTooLarge", "body")
        assert.strictEqual(response.body.limit, 2048)
        assert.include(response.body.message, "at most 2048 bytes")
      }
      // A chunked body within the limit is read and journaled, with or without `Expect`.
      for (const expectContinue of [false, true]) {
        const small = yield* request(events(server), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(created("s3")),
          chunked: true,
          expectContinue
        })
        assert.strictEqual(small.status, 200, JSON.stringify(small.body))
      }
      assert.strictEqual((yield* status(server)).head_seq, 4)
    })
  )

  it.scopedLive("a_batch_over_max_batch_events_is_rejected", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      const response = yield* post(events(server), { events: [1, 2, 3, 4].map((i) => created(`s${i}`)) })
      yield* assertRejected(server, response, 413, "PayloadTooLarge", "events")
      assert.strictEqual(response.body.limit, 3)
      // At the limit it is accepted.
      const ok = yield* post(events(server), { events: [1, 2, 3].map((i) => created(`s${i}`)) })
      assert.deepStrictEqual(ok.body, { seqs: [3, 4, 5] })
    })
  )
})

describe("401 Unauthorized", () => {
  const token = "s3cret-token"
  const bearer = { authorization: `Bearer ${token}` }

  const securedServer = Effect.gen(function* () {
    const server = yield* start({ directory: yield* tempDir, http: { token: Redacted.make(token) } })
    yield* append(server, [created("s1")], bearer)
    return server
  })

  const assertUnauthorized = (response: JsonResponse) => {
    assert.strictEqual(response.status, 401, JSON.stringify(response.body))
    assert.strictEqual(response.body._tag, "Unauthorized")
    assert.isString(response.body.message)
  }

  it.scopedLive("every_api_route_needs_the_bearer_token", () =>
    Effect.gen(function* () {
      const server = yield* securedServer
      const routes = [
        request(`${server.url}/api/v1/status`),
        request(`${server.url}/api/v1/events`),
        request(`${server.url}/api/v1/stream`),
        post(`${server.url}/api/v1/events`, created("s2"))
      ]
      for (const route of routes) assertUnauthorized(yield* route)
      assertUnauthorized(yield* request(`${server.url}/api/v1/status`, { headers: { authorization: "Bearer wrong" } }))
      assertUnauthorized(
        yield* request(`${server.url}/api/v1/status`, { headers: { authorization: `Bearer ${token}x` } })
      )
      assertUnauthorized(yield* request(`${server.url}/api/v1/status`, { headers: { authorization: token } }))
      assertUnauthorized(yield* post(`${server.url}/api/v1/events`, created("s2"), { authorization: "Bearer wrong" }))

      const ok = yield* request(`${server.url}/api/v1/status`, { headers: bearer })
      assert.strictEqual(ok.status, 200)
      assert.strictEqual(ok.body.head_seq, 1, "the rejected POSTs journaled nothing")
    })
  )

  it.scopedLive("the_token_is_checked_before_the_body_is_read", () =>
    Effect.gen(function* () {
      const server = yield* start({
        directory: yield* tempDir,
        http: { token: Redacted.make(token), maxBodyBytes: 2048 }
      })
      const big = JSON.stringify({ event: { type: "session_created", session_id: "s1", title: "x".repeat(4096) } })
      const bodies: Array<{ readonly body: string | Uint8Array; readonly chunked?: boolean; readonly type?: string }> =
        [
          { body: big },
          { body: big, chunked: true },
          { body: `{"event": {"type": ` },
          { body: Buffer.from([0x7b, 0xff, 0x7d]) },
          { body: JSON.stringify(created("s1")), type: "text/plain" }
        ]
      for (const { body, chunked, type } of bodies) {
        for (const headers of [{}, { authorization: "Bearer wrong" }]) {
          const response = yield* request(`${server.url}/api/v1/events`, {
            method: "POST",
            headers: { "content-type": type ?? "application/json", ...headers },
            body,
            ...(chunked === true ? { chunked } : {})
          })
          assertUnauthorized(response)
        }
      }
      assert.strictEqual((yield* status(server, bearer)).head_seq, 0)
    })
  )

  it.scopedLive("the_stream_accepts_the_token_as_access_token_and_other_routes_do_not", () =>
    Effect.gen(function* () {
      const server = yield* securedServer
      const stream = yield* openStream(`${server.url}/api/v1/stream?access_token=${token}`)
      assert.strictEqual(stream.status, 200)
      const frames = yield* stream.untilCaughtUp
      assert.strictEqual(frames[frames.length - 1]!.data, `{"type":"caught_up","seq":1}`)

      const byHeader = yield* openStream(`${server.url}/api/v1/stream`, bearer)
      assert.strictEqual(byHeader.status, 200)

      assertUnauthorized(yield* request(`${server.url}/api/v1/stream?access_token=wrong`))
      assertUnauthorized(yield* request(`${server.url}/api/v1/status?access_token=${token}`))
      assertUnauthorized(yield* request(`${server.url}/api/v1/events?access_token=${token}`))
    })
  )

  it.scopedLive("the_docs_stay_readable_without_the_token", () =>
    Effect.gen(function* () {
      const server = yield* securedServer
      assert.strictEqual((yield* request(`${server.url}/docs`)).status, 200)
      assert.strictEqual((yield* request(`${server.url}/docs/openapi.json`)).status, 200)
    })
  )
})

describe("404 Not Found and 405 Method Not Allowed", () => {
  it.scopedLive("an_unknown_route_answers_a_json_404_naming_it", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      for (const [method, path] of [
        ["GET", "/x"],
        ["GET", "/api/v1/nothing"],
        ["POST", "/api/v2/events"]
      ] as const) {
        const response = yield* request(`${server.url}${path}?q=1`, { method })
        assert.strictEqual(response.status, 404, JSON.stringify(response.body))
        assert.include(response.headers["content-type"] ?? "", "application/json")
        assert.strictEqual(response.body._tag, "NotFound")
        assert.include(response.body.message, `${method} ${path}`)
        assert.notInclude(response.body.message, "q=1")
      }
    })
  )

  it.scopedLive("a_known_path_with_another_method_answers_405_with_allow_and_a_json_body", () =>
    Effect.gen(function* () {
      const server = yield* limitedServer
      for (const [method, path, allow] of [
        ["DELETE", "/api/v1/events", ["GET", "POST"]],
        ["PUT", "/api/v1/events", ["GET", "POST"]],
        ["POST", "/api/v1/status", ["GET"]],
        ["POST", "/api/v1/stream", ["GET"]],
        ["DELETE", "/docs", ["GET"]]
      ] as const) {
        const response = yield* request(`${server.url}${path}`, { method })
        assert.strictEqual(response.status, 405, JSON.stringify(response.body))
        assert.strictEqual(response.headers["allow"], allow.join(", "))
        assert.include(response.headers["content-type"] ?? "", "application/json")
        assert.strictEqual(response.body._tag, "MethodNotAllowed")
        assert.deepStrictEqual(response.body.allow, [...allow])
        assert.include(response.body.message, method)
      }
      assert.strictEqual((yield* status(server)).head_seq, 2, "nothing was journaled")
    })
  )
})

describe("500 Internal Server Error", () => {
  /** A server with three events journaled, the line of the second then damaged on disk. */
  const damagedServer = (damage: Damage) =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* append(server, createdMany(3))
      const at = yield* damageLine(server, 2, damage)
      return { server, ...at }
    })

  const errorsLogged = (server: TestServer) => server.logs().filter((entry) => entry.level === "ERROR")

  for (const damage of ["not_json", "wrong_seq"] as const) {
    it.scopedLive(
      `a_corrupt_journal_line_${damage}_answers_the_page_with_a_json_500_naming_file_and_offset_and_is_logged`,
      () =>
        Effect.gen(function* () {
          const { server, file, offset } = yield* damagedServer(damage)
          const page = yield* request(`${events(server)}?since=0`)
          assert.strictEqual(page.status, 500, JSON.stringify(page.body))
          assert.include(page.headers["content-type"] ?? "", "application/json")
          assert.deepInclude(page.body, { _tag: "JournalCorrupt", file, offset })
          assert.include(page.body.message, `${file} at byte ${offset}`)
          const logged = errorsLogged(server)
          assert.lengthOf(logged, 1, JSON.stringify(server.logs()))
          assert.include(logged[0]!.message, "GET /api/v1/events answered 500")
          assert.include(logged[0]!.cause, `${file} at byte ${offset}`)
          // Below the damage the journal is still served.
          const before = yield* request(`${events(server)}?since=0&limit=1`)
          assert.deepStrictEqual([before.status, before.body.events.length], [200, 1])
        })
    )

    it.scopedLive(
      `a_corrupt_journal_line_${damage}_ends_the_stream_with_a_feed_error_frame_naming_file_and_offset`,
      () =>
        Effect.gen(function* () {
          const { server, file, offset } = yield* damagedServer(damage)
          const stream = yield* openStream(`${server.url}/api/v1/stream?since=0`)
          const frames = yield* stream.takeUntil((frame) => frame.event !== "message")
          assert.deepStrictEqual(seqsOf(frames), [1], "the events before the damage, none after")
          const last = frames[frames.length - 1]!
          assert.strictEqual(last.event, "feed_error")
          // A frame of its own, without an `id:`: it moves no cursor.
          assert.isTrue(stream.text().endsWith(`\n\nevent: feed_error\ndata: ${last.data}\n\n`), stream.text())
          assert.deepInclude(dataOf(last), { type: "feed_error", _tag: "JournalCorrupt", file, offset })
          assert.include(dataOf(last).message, `${file} at byte ${offset}`)
          assert.strictEqual(yield* Deferred.await(stream.ended), "end", "and the stream ends")
          const logged = errorsLogged(server)
          assert.lengthOf(logged, 1, JSON.stringify(server.logs()))
          assert.include(logged[0]!.cause, `${file} at byte ${offset}`)
        })
    )
  }

  it.scopedLive("the_typed_client_fails_with_the_feed_error_of_the_stream", () =>
    Effect.gen(function* () {
      const { server, file, offset } = yield* damagedServer("not_json")
      const client = yield* Client.make({ baseUrl: server.url })
      // A client that did not know the frame would take the end of the stream for a dropped
      // connection and reconnect for ever.
      const outcome = yield* client
        .follow({ since: 0 })
        .pipe(
          Stream.runCollect,
          Effect.either,
          Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the client never failed") })
        )
      assert.isTrue(Either.isLeft(outcome))
      const error = (outcome as Either.Left<Client.Refused | Client.ProtocolError, unknown>).left
      assert.strictEqual(error._tag, "ProtocolError")
      assert.include(error.message, `${file} at byte ${offset}`, error.message)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("a_handler_that_dies_answers_a_json_500_and_the_cause_is_logged", () =>
    Effect.gen(function* () {
      const dies = HttpApiBuilder.Router.use((router) =>
        router.get("/test/dies", Effect.die(new Error("an invariant broke")))
      )
      const server = yield* start({ directory: yield* tempDir, routes: dies })
      const response = yield* request(`${server.url}/test/dies`)
      assert.strictEqual(response.status, 500)
      assert.include(response.headers["content-type"] ?? "", "application/json")
      assert.strictEqual(response.body._tag, "InternalError")
      assert.include(response.body.message, "log")
      assert.notInclude(response.body.message, "invariant", "the cause stays in the log")
      const logged = errorsLogged(server)
      assert.lengthOf(logged, 1)
      assert.include(logged[0]!.message, "GET /test/dies answered 500")
      assert.include(logged[0]!.cause, "an invariant broke")
    })
  )
})
