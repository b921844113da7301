/**
 * The life of the service and its stream connections: a token no client could send refused at
 * startup, keepalive comments driven by the clock (under `TestClock`), streams ending when the
 * server shuts down, and resuming across a restart on the same journal directory and port.
 */
import { describe, it, assert } from "@effect/vitest"
import {
  Chunk,
  ConfigProvider,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Option,
  Queue,
  Redacted,
  TestClock
} from "effect"
import * as NodeHttp from "node:http"
import * as Settings from "../../src/Config.js"
import * as Http from "../../src/Http.js"
import { DEFAULT_SEGMENT_INDEX_BYTES, SegmentIndexes } from "../../src/Journal/SegmentIndex.js"
import { append, createdMany, openStream, request, seqsOf, start, status, type TestServer } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"
import { eventually } from "../support/Wait.js"

/** Closes the server; `false` if that takes longer than `limit` (the close goes on in the background). */
const closeWithin = (server: TestServer, limit: Duration.DurationInput) =>
  server.close.pipe(Effect.disconnect, Effect.timeout(limit), Effect.option, Effect.map(Option.isSome))

/** Waits until some fiber of the server sleeps until `at` on the test clock. */
const sleeperAt = (at: number) =>
  eventually(
    `a fiber sleeps until ${at} on the test clock`,
    Effect.map(TestClock.sleeps(), (wakeups) => Chunk.some(wakeups, (t) => t === at))
  )

describe("startup", () => {
  it.scopedLive("a_token_no_client_could_send_is_refused_at_startup_saying_what_to_do", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      for (const [token, problem] of [
        ["", "is set but empty"],
        ["   ", "is set but empty"],
        [" s3cret", "whitespace at its start or end"]
      ] as const) {
        const refused = yield* start({ directory, http: { token: Redacted.make(token) } }).pipe(Effect.flip)
        assert.include(String((refused as Error).message), problem)
        assert.include(String((refused as Error).message), "FEED_TOKEN")
      }
      // From the environment, a configuration error naming the variable.
      const fromEnv = (env: Record<string, string>) =>
        Settings.ServerConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromJson(env)), Effect.either)
      const empty = yield* fromEnv({ FEED_TOKEN: "" })
      assert.isTrue(empty._tag === "Left" && String(empty.left).includes("FEED_TOKEN is set but empty"), String(empty))
      // Unset, there is no token; set, it is the token.
      const unset = yield* fromEnv({})
      assert.isTrue(unset._tag === "Right" && Option.isNone(unset.right.token))
      const set = yield* fromEnv({ FEED_TOKEN: "s3cret" })
      assert.isTrue(set._tag === "Right" && Option.isSome(set.right.token))
      // A server with a token it can check starts in the same directory.
      const server = yield* start({ directory, http: { token: Redacted.make("s3cret") } })
      assert.strictEqual((yield* request(`${server.url}/api/v1/stream?access_token=`)).status, 401)
    })
  )
  it.effect("the_budget_of_the_segment_indexes_is_32_mib_unless_set_0_for_none_and_never_negative", () =>
    Effect.gen(function* () {
      const budget = (env: Record<string, string>) =>
        Effect.either(
          Effect.map(
            Settings.ServerConfig.pipe(Effect.withConfigProvider(ConfigProvider.fromJson(env))),
            (settings) => settings.segmentIndexBytes
          )
        )
      assert.deepStrictEqual(yield* budget({}), Either.right(32 * 1024 * 1024))
      assert.deepStrictEqual(yield* budget({ FEED_SEGMENT_INDEX_BYTES: "0" }), Either.right(0))
      const negative = yield* budget({ FEED_SEGMENT_INDEX_BYTES: "-1" })
      assert.isTrue(
        Either.isLeft(negative) && String(negative.left).includes("FEED_SEGMENT_INDEX_BYTES must be 0 or more"),
        String(negative)
      )
    })
  )

  it.scopedLive("the_service_sizes_the_process_s_segment_indexes_as_its_settings_say", () =>
    Effect.gen(function* () {
      yield* Effect.addFinalizer(() => Effect.sync(() => SegmentIndexes.shared.resize(DEFAULT_SEGMENT_INDEX_BYTES)))
      const settings = yield* Settings.ServerConfig.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromJson({ PORT: "0", FEED_DIR: yield* tempDir, FEED_SEGMENT_INDEX_BYTES: "4096" })
        )
      )
      yield* Layer.build(Http.layerFromSettings(settings))
      assert.strictEqual(SegmentIndexes.shared.maxBytes, 4096)
    })
  )
})

describe("keepalive", () => {
  // `it.scoped` runs on the TestClock, and so does the server built inside it: the fibers the
  // handlers fork take their clock from the runtime the server was built with. Real I/O does not
  // wait for the clock, so the test waits for frames and for the keepalive's sleep to be
  // registered, then moves the clock.
  it.scoped("a_keepalive_comment_arrives_every_15_seconds_of_clock_time", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* append(server, createdMany(1))
      const stream = yield* openStream(`${server.url}/api/v1/stream`)
      yield* stream.untilCaughtUp
      const t0 = yield* TestClock.currentTimeMillis

      yield* sleeperAt(t0 + 15_000)
      assert.strictEqual(yield* Queue.size(stream.comments), 0, "no keepalive before 15 s")
      yield* TestClock.adjust("14999 millis")
      yield* append(server, createdMany(1))
      assert.deepStrictEqual(seqsOf([yield* stream.next]), [2])
      assert.strictEqual(yield* Queue.size(stream.comments), 0, "no keepalive before 15 s")

      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Queue.take(stream.comments), "keepalive")
      yield* sleeperAt(t0 + 30_000)
      yield* TestClock.adjust("15 seconds")
      assert.strictEqual(yield* Queue.take(stream.comments), "keepalive")

      // A comment line, not a data frame: EventSource clients never see it.
      assert.include(stream.text(), "\n\n: keepalive\n\n: keepalive\n\n")
      assert.strictEqual(yield* Queue.size(stream.frames), 0)
    })
  )

  // A timer (and a fiber) per connection would be memory every idle stream holds: the server's
  // one timer sends every connection's keepalive.
  it.scopedLive("idle_streams_share_the_servers_one_keepalive_timer", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, http: { keepalive: Duration.millis(50) } })
      const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === "Timeout").length
      const before = timers()
      const streams = yield* Effect.forEach(Array.from({ length: 20 }), () => openStream(`${server.url}/api/v1/stream`))
      for (const stream of streams) yield* stream.untilCaughtUp
      // Every one of them still gets its keepalives.
      for (const stream of streams) assert.strictEqual(yield* Queue.take(stream.comments), "keepalive")
      assert.isBelow(timers() - before, streams.length / 2, "timers added by 20 open streams")
    })
  )

  it.scopedLive("the_keepalive_period_is_configurable", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, http: { keepalive: Duration.millis(50) } })
      const stream = yield* openStream(`${server.url}/api/v1/stream`)
      yield* stream.untilCaughtUp
      assert.strictEqual(yield* Queue.take(stream.comments), "keepalive")
      assert.strictEqual(yield* Queue.take(stream.comments), "keepalive")
    })
  )
})

describe("shutdown", () => {
  it.scopedLive("open_streams_end_when_the_server_shuts_down_and_the_close_completes", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* append(server, createdMany(2))
      const all = yield* openStream(`${server.url}/api/v1/stream`)
      const filtered = yield* openStream(`${server.url}/api/v1/stream?session_id=s2&since=1`)
      yield* all.untilCaughtUp
      yield* filtered.untilCaughtUp
      assert.strictEqual((yield* status(server)).subscribers, 2)

      assert.isTrue(yield* closeWithin(server, "20 seconds"), "the server's close completed")
      for (const stream of [all, filtered]) {
        const how = yield* Deferred.await(stream.ended).pipe(
          Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("a stream did not end") })
        )
        assert.strictEqual(how, "end", "the response ended cleanly")
      }
      // The port is closed.
      const refused = yield* request(`${server.url}/api/v1/status`).pipe(
        Effect.as("answered"),
        Effect.catchAllDefect((defect) => Effect.succeed(String((defect as { code?: string }).code)))
      )
      assert.strictEqual(refused, "ECONNREFUSED")
    })
  )

  it.scopedLive("a_long_poll_in_flight_answers_when_the_server_shuts_down", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* append(server, createdMany(1))
      const poll = yield* request(`${server.url}/api/v1/events?since=1&wait=60`).pipe(Effect.fork)
      yield* eventually(
        "the long poll's reader subscribes",
        Effect.map(status(server), (s) => s.subscribers === 1)
      )

      assert.isTrue(yield* closeWithin(server, "20 seconds"), "the server's close completed")
      const page = yield* Fiber.join(poll)
      assert.deepStrictEqual([page.status, page.body.events, page.body.next_since], [200, [], 1])
    })
  )

  it.scopedLive("requests_arriving_during_shutdown_are_all_answered_and_the_close_completes", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* append(server, createdMany(1))
      // Clients keep sending while the server closes: each request must get an answer (or be
      // refused once the port is closed), none may be left hanging, holding the close up.
      const outcomes: Array<string> = []
      const pending = new Set<NodeHttp.ClientRequest>()
      const once = () =>
        new Promise<string>((resolve) => {
          const req = NodeHttp.request(`${server.url}/api/v1/status`, { agent: false }, (response) => {
            response.resume()
            response.on("end", () => done(String(response.statusCode)))
            response.on("error", (error) => done(error.message))
          })
          const done = (outcome: string) => {
            pending.delete(req)
            outcomes.push(outcome)
            resolve(outcome)
          }
          pending.add(req)
          req.on("error", (error: NodeJS.ErrnoException) => done(error.code ?? error.message))
          req.end()
        })
      let stopped = false
      const loop = async () => {
        while (!stopped && (await once()) !== "ECONNREFUSED") {}
      }
      const loops = Array.from({ length: 8 }, loop)
      yield* eventually("16 requests are answered", () => outcomes.length >= 16)

      const closed = yield* closeWithin(server, "20 seconds")
      stopped = true
      yield* Effect.promise(() => Promise.all(loops)).pipe(Effect.timeout("20 seconds"), Effect.ignore)
      const unanswered = pending.size
      for (const req of pending) req.destroy()
      assert.isTrue(closed, "the server's close completed")
      assert.strictEqual(unanswered, 0, `requests left unanswered; outcomes: ${[...new Set(outcomes)]}`)
      assert.includeMembers(outcomes, ["200", "ECONNREFUSED"])
      for (const outcome of outcomes)
        assert.oneOf(outcome, ["200", "503", "ECONNREFUSED", "ECONNRESET", "socket hang up"])
    })
  )

  it.scopedLive("once_the_app_is_detached_requests_are_answered_rather_than_left_hanging", () =>
    Effect.gen(function* () {
      // The server as it is between the app's handler being detached and its close.
      const bare = Http.createNodeServer()
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void bare.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.async<void>((resume) => void bare.close(() => resume(Effect.void)))
      )
      const url = `http://127.0.0.1:${(bare.address() as { port: number }).port}`
      const api = yield* request(`${url}/api/v1/status`)
      assert.deepStrictEqual([api.status, api.body._tag], [503, "Unavailable"])
      // An EventSource would give up on a 503; an empty event stream makes it reconnect.
      const stream = yield* request(`${url}/api/v1/stream?since=3`)
      assert.deepStrictEqual(
        [stream.status, stream.headers["content-type"], stream.body],
        [200, "text/event-stream; charset=utf-8", ""]
      )
    })
  )

  it.scopedLive("a_restart_on_the_same_directory_and_port_keeps_epoch_and_head_and_streams_resume", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* start({ directory })
      yield* append(first, createdMany(3))
      const before = yield* status(first)
      const stream = yield* openStream(`${first.url}/api/v1/stream`)
      const frames = yield* stream.untilCaughtUp
      yield* first.close
      assert.strictEqual(yield* Deferred.await(stream.ended), "end")

      const second = yield* start({ directory, port: first.port })
      assert.strictEqual(second.url, first.url)
      const after = yield* status(second)
      assert.deepStrictEqual([after.epoch, after.head_seq], [before.epoch, 3])

      // Resume from the last id seen, as a reconnecting EventSource does: no reset, no repeat.
      const resumed = yield* openStream(`${second.url}/api/v1/stream`, {
        "last-event-id": frames[frames.length - 1]!.id!
      })
      const replay = yield* resumed.untilCaughtUp
      assert.deepStrictEqual(
        replay.map((f) => [f.event, f.data]),
        [["caught_up", `{"type":"caught_up","seq":3}`]]
      )
      assert.deepStrictEqual(yield* append(second, createdMany(1)), [4])
      assert.deepStrictEqual(seqsOf([yield* resumed.next]), [4])
    })
  )
})
