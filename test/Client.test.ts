/**
 * The typed client against the real service on loopback: following across a server restart,
 * typed resets, refusals, appends and status; its hole check against a server that skips; and
 * its append retries (same idempotency key) through a proxy that loses answers and fails.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Console, Duration, Effect, Either, Fiber, Option, Queue, Redacted, Stream } from "effect"
import * as NodeHttp from "node:http"
import type { AddressInfo } from "node:net"
import * as Cli from "../src/Cli.js"
import * as Client from "../src/Client.js"
import { JournalCorrupt } from "../src/Domain/Errors.js"
import type { FeedItem, LineItem } from "../src/Domain/FeedItem.js"
import { feedErrorFrame, makeFrameEncoder } from "../src/Http/Sse.js"
import { makeSseParser, type SseFrame } from "../src/Sse.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import { append, createdMany, post, start, status } from "./support/Server.js"
import { range, reset } from "./support/Expected.js"
import { tempDir } from "./support/TempDir.js"

const fastReconnect = { reconnectBase: Duration.millis(20), reconnectMax: Duration.millis(200) }
const fastRetry = { appendRetry: { base: Duration.millis(10), max: Duration.millis(50) } }

type ProxyAction = "forward" | "lose-answer" | 502 | 503

/**
 * A proxy in front of `target` that does to the n-th request what `plan(n)` says: forward it, or
 * forward it and drop the connection once the server has answered (the answer is lost, the
 * request was handled), or answer a 502 or 503 itself. Records each request's idempotency key.
 */
const faultyProxy = (target: string, plan: (n: number) => ProxyAction) =>
  Effect.gen(function* () {
    const keys: Array<string | undefined> = []
    const server = NodeHttp.createServer((request, response) => {
      keys.push(request.headers["idempotency-key"] as string | undefined)
      const action = plan(keys.length)
      if (action === 502 || action === 503) {
        request.resume()
        response.writeHead(action, { "content-type": "application/json" })
        response.end(
          JSON.stringify(
            action === 503
              ? { _tag: "Unavailable", accepted: false, message: "the feed is shutting down; retry shortly" }
              : { message: "bad gateway" }
          )
        )
        return
      }
      const upstream = NodeHttp.request(
        new URL(request.url!, target),
        { method: request.method, headers: request.headers, agent: false },
        (answer) => {
          if (action === "lose-answer") {
            answer.resume()
            answer.on("end", () => request.socket.destroy())
            return
          }
          response.writeHead(answer.statusCode!, answer.headers)
          answer.pipe(response)
        }
      )
      request.pipe(upstream)
    })
    yield* listenScoped(server)
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, keys }
  })

/** Follows in the background; `changes(n)` waits until n change events have arrived. */
const followInBackground = (stream: Stream.Stream<FeedItem<AgentEvent>, unknown>) =>
  Effect.gen(function* () {
    const items = yield* Queue.unbounded<FeedItem<AgentEvent>>()
    const fiber = yield* Effect.forkScoped(Stream.runForEach(stream, (item) => Queue.offer(items, item)))
    const seen: Array<FeedItem<AgentEvent>> = []
    const until = (done: (seen: ReadonlyArray<FeedItem<AgentEvent>>) => boolean) =>
      Effect.gen(function* () {
        while (!done(seen)) seen.push(yield* Queue.take(items))
        return seen
      }).pipe(
        Effect.timeoutFail({
          duration: "30 seconds",
          onTimeout: () => new Error(`waited in vain; saw ${seen.length} items`)
        })
      )
    const changes = (n: number) => until((s) => s.filter((i) => i._tag === "Change").length >= n)
    return { fiber, seen, until, changes }
  })

const seqs = (items: ReadonlyArray<FeedItem<AgentEvent>>) =>
  items.flatMap((item) => (item._tag === "Change" ? [item.change.seq] : []))

/** Listens on a free loopback port for the scope's lifetime; the close drops open connections. */
const listenScoped = (server: NodeHttp.Server) =>
  Effect.acquireRelease(
    Effect.async<void>((resume) => {
      server.listen(0, "127.0.0.1", () => resume(Effect.void))
    }),
    () =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

/** The signing secret of `securedServer`'s account tokens. */
const secret = "a-signing-secret-of-thirty-two-bytes!"

/** The service with the admin token `admin` and account tokens signed with `secret`. */
const securedServer = Effect.flatMap(tempDir, (directory) =>
  start({ directory, http: { token: Redacted.make("admin"), jwtSecret: Redacted.make(secret) } })
)

/** The command line in-process, with `env` as its configuration; what it prints to stdout is kept in `printed`. */
const capturedCli = Effect.map(Effect.console, (base) => {
  const printed: Array<string> = []
  const console: Console.Console = {
    ...base,
    log: (...args) => Effect.sync(() => void printed.push(args.join(" ")))
  }
  const run = (env: Record<string, string>, ...args: Array<string>) =>
    Cli.run(["node", "change-feed", ...args]).pipe(
      Effect.withConsole(console),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
    )
  return { printed, run }
})

describe("Client", () => {
  it.scopedLive("follow_survives_a_server_restart_with_no_gap_and_no_duplicate", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* start({ directory })
      const client = yield* Client.make({ baseUrl: first.url, ...fastReconnect })
      const follower = yield* followInBackground(client.follow({ since: 0 }))
      yield* append(first, createdMany(5))
      yield* follower.changes(5)
      yield* first.close
      // While the server is down the client keeps trying; it resumes from seq 5 once it is back.
      const second = yield* start({ directory, port: first.port })
      yield* append(second, createdMany(5))
      const seen = yield* follower.changes(10)
      assert.deepStrictEqual(seqs(seen), range(1, 10))
      assert.strictEqual(seen.filter((i) => i._tag === "Reset").length, 0)
      yield* second.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("follow_surfaces_a_reset_as_a_typed_item_then_continues_live", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* start({ directory })
      yield* append(server, createdMany(3))
      const client = yield* Client.make({ baseUrl: server.url, ...fastReconnect })
      const follower = yield* followInBackground(client.follow({ since: 99 }))
      yield* follower.until((s) => s.some((i) => i._tag === "CaughtUp"))
      yield* append(server, createdMany(2))
      const seen = yield* follower.changes(2)
      assert.deepStrictEqual(
        seen.find((i) => i._tag === "Reset"),
        reset("ahead_of_head", 99, { oldestSeq: 1, headSeq: 3 })
      )
      assert.deepStrictEqual(seqs(seen), [4, 5])
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("follow_with_a_session_filter_delivers_only_that_session", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* start({ directory })
      const client = yield* Client.make({ baseUrl: server.url, ...fastReconnect })
      yield* append(server, [...createdMany(2, "a"), ...createdMany(1, "b"), ...createdMany(2, "a")])
      const follower = yield* followInBackground(client.follow({ sessionId: "b" }))
      const seen = yield* follower.until((s) => s.some((i) => i._tag === "CaughtUp"))
      assert.deepStrictEqual(seqs(seen), [3])
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("follow_fails_with_refused_when_the_token_is_wrong", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* start({ directory, http: { token: Redacted.make("secret") } })
      const wrong = yield* Client.make({ baseUrl: server.url, token: "nope", ...fastReconnect })
      const error = yield* wrong.follow().pipe(Stream.runDrain, Effect.flip)
      assert.strictEqual(error._tag, "Refused")
      assert.strictEqual(error._tag === "Refused" ? error.status : 0, 401)
      const right = yield* Client.make({ baseUrl: server.url, token: Redacted.make("secret") })
      assert.deepStrictEqual(yield* right.append([{ sessionId: "s1", event: { type: "cancelled" } }]), [1])
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("append_answers_seqs_and_null_for_ephemeral_events_and_status_reflects_them", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* start({ directory })
      const client = yield* Client.make({ baseUrl: server.url })
      const result = yield* client.append([
        { sessionId: "s1", event: { type: "session_created", session_id: "s1" } },
        { sessionId: "s1", event: { type: "token", content: "hi" } },
        { event: { type: "session_deleted", session_id: "s1" } }
      ])
      assert.deepStrictEqual(result, [1, null, 2])
      const now = yield* client.status
      assert.strictEqual(now.head_seq, 2)
      assert.strictEqual((yield* status(server)).epoch, now.epoch)
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("append_retries_lost_answers_5xx_and_503_with_one_key_and_appends_once", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const plan: Array<ProxyAction> = [503, "lose-answer", 502, "lose-answer", "forward"]
      const proxy = yield* faultyProxy(server.url, (n) => plan[n - 1] ?? "forward")
      const client = yield* Client.make({ baseUrl: proxy.url, ...fastRetry })
      const seqs = yield* client.append([
        { sessionId: "s1", event: { type: "session_created", session_id: "s1" } },
        { sessionId: "s1", event: { type: "token", content: "hi" } },
        { event: { type: "session_deleted", session_id: "s1" } }
      ])
      // Handled twice by the server (each lost answer), journaled once, answered with the first seqs.
      assert.deepStrictEqual(seqs, [1, null, 2])
      assert.strictEqual(proxy.keys.length, 5)
      assert.strictEqual(new Set(proxy.keys).size, 1, `one key for every attempt: ${proxy.keys.join(", ")}`)
      assert.match(proxy.keys[0]!, /^[0-9a-f-]{36}$/)
      assert.strictEqual((yield* status(server)).head_seq, 2)
      // The next call is a new request, with a new key.
      assert.deepStrictEqual(yield* client.append([{ event: { type: "session_deleted", session_id: "s2" } }]), [3])
      assert.notStrictEqual(proxy.keys[5], proxy.keys[0])
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("append_with_a_key_of_the_callers_own_is_answered_the_same_on_a_later_call", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const client = yield* Client.make({ baseUrl: server.url, ...fastRetry })
      const entries = [{ event: { type: "session_deleted", session_id: "s1" } } as const]
      assert.deepStrictEqual(yield* client.append(entries, { idempotencyKey: "job-42" }), [1])
      assert.deepStrictEqual(yield* client.append(entries, { idempotencyKey: "job-42" }), [1])
      assert.strictEqual((yield* status(server)).head_seq, 1)
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("append_does_not_retry_a_request_the_server_refused", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const proxy = yield* faultyProxy(server.url, () => "forward")
      const client = yield* Client.make({ baseUrl: proxy.url, ...fastRetry })
      yield* client.append([{ event: { type: "session_deleted", session_id: "s1" } }], { idempotencyKey: "k" })
      const error = yield* Effect.flip(
        client.append([{ event: { type: "session_deleted", session_id: "other" } }], { idempotencyKey: "k" })
      )
      assert.strictEqual(error._tag, "IdempotencyKeyReused")
      assert.strictEqual(proxy.keys.length, 2, "a refusal is final: no retry")
      yield* server.close
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("a_hole_in_an_unfiltered_stream_makes_the_client_resync_from_its_last_seq", () =>
    Effect.gen(function* () {
      // A server that skips seq 3 on the first connection. The client must not deliver 4 after 2:
      // it reconnects with Last-Event-ID 2 and gets 3 and 4 in order.
      const cursors: Array<string | undefined> = []
      const change = (seq: number) =>
        `id: e0:${seq}\ndata: ${JSON.stringify({ seq, ts: "2026-11-27T10:00:00.000Z", event: { type: "cancelled" } })}\n\n`
      const server = NodeHttp.createServer((request, response) => {
        const cursor = request.headers["last-event-id"] as string | undefined
        cursors.push(cursor)
        response.writeHead(200, { "content-type": "text/event-stream" })
        if (cursors.length === 1) response.write(change(1) + change(2) + change(4))
        else response.write(change(3) + change(4))
      })
      yield* listenScoped(server)
      const port = (server.address() as AddressInfo).port
      const client = yield* Client.make({ baseUrl: `http://127.0.0.1:${port}`, ...fastReconnect })
      const follower = yield* followInBackground(client.follow({ since: 0 }))
      const seen = yield* follower.changes(4)
      assert.deepStrictEqual(seqs(seen), [1, 2, 3, 4])
      assert.deepStrictEqual(cursors.slice(0, 2), ["0", "e0:2"])
      yield* Fiber.interrupt(follower.fiber)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))
  )

  it.scopedLive("the_cli_append_with_an_idempotency_key_appends_once_however_often_it_is_run", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const event = JSON.stringify({ type: "session_deleted", session_id: "s1" })
      const printed: Array<string> = []
      const console: Console.Console = {
        ...(yield* Effect.console),
        log: (...args) => Effect.sync(() => void printed.push(args.join(" ")))
      }
      const append = (key: string) =>
        Cli.run([
          "node",
          "change-feed",
          "append",
          "--url",
          server.url,
          "--event",
          event,
          "--idempotency-key",
          key
        ]).pipe(Effect.withConsole(console))
      yield* append("deploy-17")
      yield* append("deploy-17")
      assert.strictEqual((yield* status(server)).head_seq, 1)
      yield* append("deploy-18")
      assert.deepStrictEqual(printed, ['{"seqs":[1]}', '{"seqs":[1]}', '{"seqs":[2]}'])
      assert.strictEqual((yield* status(server)).head_seq, 2)
      yield* server.close
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive("the_cli_mints_an_account_token_that_appends_and_reads_only_its_account", () =>
    Effect.gen(function* () {
      const server = yield* securedServer
      const { printed, run } = yield* capturedCli
      const cli = (...args: Array<string>) => run({}, ...args)
      yield* cli(
        "token",
        "--account",
        "acme",
        "--scope",
        "read",
        "--scope",
        "append",
        "--ttl",
        "10m",
        "--secret",
        secret
      )
      const token = printed.pop()!
      assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
      const event = JSON.stringify({ type: "session_deleted", session_id: "s1" })
      yield* cli("append", "--url", server.url, "--token", token, "--account", "acme", "--event", event)
      yield* cli("append", "--url", server.url, "--token", token, "--account", "acme", "--event", event)
      assert.deepStrictEqual(printed.splice(0), ['{"seqs":[1]}', '{"seqs":[2]}'])
      yield* cli("status", "--url", server.url, "--token", token, "--account", "acme")
      assert.strictEqual(JSON.parse(printed.pop()!).head_seq, 2)
      // The token opens nothing of another account, and the default account is untouched.
      const refused = yield* cli("status", "--url", server.url, "--token", token, "--account", "globex").pipe(
        Effect.flip
      )
      assert.match(String(refused), /403|Forbidden/)
      assert.strictEqual((yield* status(server, { authorization: "Bearer admin" })).head_seq, 0)
      // Bad input is named.
      const badTtl = yield* cli("token", "--account", "acme", "--ttl", "soon", "--secret", secret).pipe(Effect.flip)
      assert.match(String(badTtl), /--ttl: 'soon' is not a duration/)
      const badAccount = yield* cli("token", "--account", "../x", "--secret", secret).pipe(Effect.flip)
      assert.match(String(badAccount), /--account: .* is not valid/)
      const weak = yield* cli("token", "--account", "acme", "--secret", "short").pipe(Effect.flip)
      assert.match(String(weak), /at least 32/)
      yield* server.close
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive("the_cli_takes_the_url_token_and_signing_secret_from_configuration_when_no_flag_gives_them", () =>
    Effect.gen(function* () {
      const server = yield* securedServer
      const { printed, run: cli } = yield* capturedCli
      const event = JSON.stringify({ type: "session_deleted", session_id: "s1" })
      yield* cli({ FEED_URL: server.url, FEED_TOKEN: "admin" }, "append", "--event", event)
      assert.deepStrictEqual(printed.splice(0), ['{"seqs":[1]}'])
      // A flag wins over its variable.
      const refused = yield* cli({ FEED_URL: server.url, FEED_TOKEN: "admin" }, "status", "--token", "wrong").pipe(
        Effect.flip
      )
      assert.match(String(refused), /401|Unauthorized/)
      yield* cli({ FEED_JWT_SECRET: secret }, "token", "--account", "acme")
      const token = printed.pop()!
      yield* cli({ FEED_URL: server.url }, "status", "--token", token, "--account", "acme")
      assert.strictEqual(JSON.parse(printed.pop()!).head_seq, 0)
      const unsigned = yield* cli({}, "token", "--account", "acme").pipe(Effect.flip)
      assert.match(String(unsigned), /no signing secret: set FEED_JWT_SECRET or pass --secret/)
      yield* server.close
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive("the_cli_inspects_an_accounts_journal_under_the_service_directory", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* start({ directory })
      for (let i = 1; i <= 3; i++) {
        yield* post(`${server.url}/api/v1/accounts/acme/events`, {
          event: { type: "session_deleted", session_id: `s${i}` }
        })
      }
      yield* server.close
      const printed: Array<string> = []
      const console: Console.Console = {
        ...(yield* Effect.console),
        log: (...args) => Effect.sync(() => void printed.push(args.join(" ")))
      }
      yield* Cli.run(["node", "change-feed", "inspect", directory, "--account", "acme", "--json"]).pipe(
        Effect.withConsole(console)
      )
      const report = JSON.parse(printed.join("\n"))
      assert.strictEqual(report.events, 3)
      assert.match(report.directory, /accounts\/acme$/)
      const refused = yield* Cli.run(["node", "change-feed", "inspect", directory, "--account", ".."]).pipe(
        Effect.withConsole(console),
        Effect.flip
      )
      assert.match(String(refused), /--account: .* is not valid/)
    }).pipe(Effect.provide(NodeContext.layer))
  )
})

describe("Client frames", () => {
  it("decodes_every_frame_the_server_encodes_back_into_the_item_it_was", () => {
    const epoch = "00ab"
    const change = {
      seq: 4,
      ts: "2026-11-27T10:00:00.123Z",
      session_id: "s1",
      event: { type: "complete", usage: { total_tokens: 3 } }
    }
    const json = JSON.stringify(change)
    const body = new TextEncoder().encode(json.slice(0, -1))
    const items: Array<LineItem> = [
      { _tag: "Change", seq: 4, sessionId: "s1", body },
      { _tag: "CaughtUp", seq: 4 },
      { _tag: "Progress", seq: 9 },
      reset("epoch_mismatch", 2, { oldestSeq: 1, headSeq: 9 })
    ]
    const frames: Array<SseFrame> = []
    makeSseParser((frame) => frames.push(frame))(
      new TextDecoder().decode(Buffer.concat(makeFrameEncoder(epoch)(items)))
    )
    const expected: ReadonlyArray<unknown> = [
      { _tag: "Change", change },
      { _tag: "CaughtUp", seq: 4 },
      { _tag: "Progress", seq: 9 },
      reset("epoch_mismatch", 2, { oldestSeq: 1, headSeq: 9 })
    ]
    assert.deepStrictEqual<ReadonlyArray<unknown>>(
      frames.map((frame) => Either.getOrThrow(Client.decodeFrame(frame))),
      expected
    )
  })

  it("a_feed_error_frame_ends_the_stream_with_the_servers_reason_and_a_frame_not_of_the_feed_is_refused", () => {
    const frames: Array<SseFrame> = []
    const parse = makeSseParser((frame) => frames.push(frame))
    parse(feedErrorFrame(new JournalCorrupt({ message: "journal corrupt in f at byte 7", file: "f", offset: 7 })))
    parse(`event: caught_up\ndata: {"type":"caught_up","seq":-1}\n\n`)
    parse(`data: {"type":"feed_reset","reason":"because"}\n\n`)
    parse(`data: {"seq":1}\n\n`)
    const decoded = frames.map(Client.decodeFrame)
    assert.isTrue(decoded.every(Either.isLeft), "each is refused")
    assert.include(
      String(Either.getLeft(decoded[0]!).pipe(Option.getOrThrow).message),
      "journal corrupt in f at byte 7"
    )
  })
})
