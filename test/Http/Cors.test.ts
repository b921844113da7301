/**
 * CORS: with `FEED_CORS_ORIGINS`, a page on another origin (another loopback port, in Chromium)
 * follows the stream with `EventSource`, posts with `fetch` (preflighted: JSON, a bearer token,
 * an idempotency key) and resumes across a server restart; without it, the browser blocks both.
 * On the wire: preflights, the headers on every answer (the stream, errors), none when off.
 */
import { describe, it, assert } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Redacted } from "effect"
import * as NodeHttp from "node:http"
import type { Page } from "playwright-core"
import * as Settings from "../../src/Config.js"
import { type CorsOrigins, parseOrigins } from "../../src/Http/Cors.js"
import { hasChromium, launch } from "../support/Chromium.js"
import { append, createdMany, openStream, request, start, status, type TestServer } from "../support/Server.js"
import { range } from "../support/Expected.js"
import { tempDir } from "../support/TempDir.js"

const app = "http://app.test:3000"

const corsServer = (corsOrigins: CorsOrigins | undefined) =>
  Effect.gen(function* () {
    return yield* start({ directory: yield* tempDir, http: { corsOrigins } })
  })

const preflight = (server: TestServer, origin: string, path = "/api/v1/events") =>
  request(`${server.url}${path}`, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,content-type,idempotency-key"
    }
  })

describe("CORS on the wire", () => {
  it.scopedLive("preflights_are_answered_and_every_answer_to_an_allowed_origin_carries_the_headers", () =>
    Effect.gen(function* () {
      const server = yield* corsServer([app, "https://other.test"])
      const answer = yield* preflight(server, app)
      assert.strictEqual(answer.status, 204)
      assert.strictEqual(answer.headers["access-control-allow-origin"], app)
      assert.include(answer.headers["access-control-allow-methods"] ?? "", "POST")
      const allowed = (answer.headers["access-control-allow-headers"] ?? "").toLowerCase().split(/,\s*/)
      assert.includeMembers(allowed, ["authorization", "content-type", "idempotency-key", "last-event-id"])
      assert.strictEqual(answer.headers["access-control-allow-credentials"], undefined)

      const origin = { origin: app }
      for (const path of ["/api/v1/status", "/api/v1/events?since=x", "/nowhere", "/metrics", "/docs/openapi.json"]) {
        const response = yield* request(`${server.url}${path}`, { headers: origin })
        assert.strictEqual(response.headers["access-control-allow-origin"], app, path)
        assert.include(response.headers["vary"] ?? "", "Origin", path)
      }
      const stream = yield* openStream(`${server.url}/api/v1/stream`, origin)
      assert.strictEqual(stream.status, 200)
      assert.strictEqual(stream.headers["access-control-allow-origin"], app)
      yield* stream.untilCaughtUp

      // Another origin: no permission, and a preflight that is not answered as one.
      const stranger = yield* request(`${server.url}/api/v1/status`, { headers: { origin: "http://evil.test" } })
      assert.strictEqual(stranger.headers["access-control-allow-origin"], undefined)
      const refused = yield* preflight(server, "http://evil.test")
      assert.strictEqual(refused.status, 405)
      assert.strictEqual(refused.headers["access-control-allow-origin"], undefined)
    })
  )

  it.scopedLive("with_a_star_every_origin_may_read", () =>
    Effect.gen(function* () {
      const server = yield* corsServer("*")
      assert.strictEqual((yield* preflight(server, "http://any.test")).headers["access-control-allow-origin"], "*")
      const stream = yield* openStream(`${server.url}/api/v1/stream`, { origin: "http://any.test" })
      assert.strictEqual(stream.headers["access-control-allow-origin"], "*")
    })
  )

  it.scopedLive("without_the_setting_no_cors_header_is_sent_and_preflights_are_refused", () =>
    Effect.gen(function* () {
      const server = yield* corsServer(undefined)
      const answer = yield* preflight(server, app)
      assert.strictEqual(answer.status, 405)
      const stream = yield* openStream(`${server.url}/api/v1/stream`, { origin: app })
      for (const response of [
        answer,
        yield* request(`${server.url}/api/v1/status`, { headers: { origin: app } }),
        stream
      ]) {
        const cors = Object.keys(response.headers).filter((name) => name.startsWith("access-control-"))
        assert.deepStrictEqual(cors, [])
      }
    })
  )

  it.effect("the_setting_takes_origins_or_a_star_and_says_what_is_wrong_with_anything_else", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(parseOrigins(" * "), Either.right("*"))
      assert.deepStrictEqual(
        parseOrigins("https://app.example.com, http://127.0.0.1:3000/,"),
        Either.right(["https://app.example.com", "http://127.0.0.1:3000"])
      )
      for (const bad of ["app.example.com", "https://app.example.com/viewer", "ftp://x.test", " , "]) {
        assert.isTrue(Either.isLeft(parseOrigins(bad)), bad)
      }
      const failure = yield* Effect.flip(
        Effect.withConfigProvider(
          Settings.ServerConfig,
          ConfigProvider.fromMap(new Map([["FEED_CORS_ORIGINS", "https://app.example.com/viewer"]]))
        )
      )
      assert.include(String(failure), "FEED_CORS_ORIGINS 'https://app.example.com/viewer' is not an origin")
      const unset = yield* Effect.withConfigProvider(Settings.ServerConfig, ConfigProvider.fromMap(new Map()))
      assert.strictEqual(unset.corsOrigins._tag, "None")
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------
// In a browser
// ---------------------------------------------------------------------------------------------------------------

/** A page that follows the feed at `?feed=` (with `?token=`) from its own origin, and can post to it. */
const page = `<!doctype html>
<html>
  <head><meta charset="utf-8"><title>cross-origin follower</title></head>
  <body>
    <script>
      const params = new URLSearchParams(location.search)
      const feed = params.get("feed")
      const token = params.get("token") ?? ""
      window.received = []
      window.opens = 0
      window.errors = 0
      window.source = new EventSource(feed + "/api/v1/stream" + (token ? "?access_token=" + encodeURIComponent(token) : ""))
      source.onopen = () => { window.opens++ }
      source.onerror = () => { window.errors++ }
      source.onmessage = (message) => {
        const data = JSON.parse(message.data)
        window.received.push({ id: message.lastEventId, seq: data.seq ?? null, type: data.type ?? "change" })
      }
      window.post = async (body) => {
        try {
          const response = await fetch(feed + "/api/v1/events", {
            method: "POST",
            headers: {
              "content-type": "application/json",
              "idempotency-key": String(Math.random()),
              ...(token ? { authorization: "Bearer " + token } : {})
            },
            body: JSON.stringify(body)
          })
          return { status: response.status, body: await response.json() }
        } catch (error) {
          return { blocked: String(error) }
        }
      }
    </script>
  </body>
</html>`

/** The page's own origin: a plain server on another loopback port. */
const pageServer = Effect.acquireRelease(
  Effect.async<{ readonly origin: string; readonly server: NodeHttp.Server }>((resume) => {
    const server = NodeHttp.createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8", connection: "close" }).end(page)
    })
    server.listen(0, "127.0.0.1", () => {
      resume(Effect.succeed({ origin: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server }))
    })
  }),
  ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)

const inPage = <A>(tab: Page, f: () => A) => Effect.promise(() => tab.evaluate(f))

const receivedCount = (tab: Page, n: number) =>
  Effect.promise(() =>
    tab.waitForFunction((count) => (window as any).received.length >= count, n, { timeout: 30_000, polling: 50 })
  )

describe("CORS in a browser", () => {
  it.scopedLive.skipIf(!hasChromium)(
    "a_page_on_another_origin_follows_the_stream_posts_and_resumes_across_a_restart",
    () =>
      Effect.gen(function* () {
        const { origin } = yield* pageServer
        const token = "cors-s3cret"
        const bearer = { authorization: `Bearer ${token}` }
        const directory = yield* tempDir
        const options = { directory, http: { token: Redacted.make(token), corsOrigins: [origin] } }
        const first = yield* start(options)
        assert.notStrictEqual(new URL(first.url).origin, origin, "two origins")
        const { epoch } = yield* status(first, bearer)
        const browser = yield* launch
        const tab = yield* Effect.promise(() => browser.newPage())
        yield* Effect.promise(() => tab.goto(`${origin}/?feed=${encodeURIComponent(first.url)}&token=${token}`))

        // A preflighted POST from the page.
        const posted = yield* Effect.promise(() =>
          tab.evaluate(() => (window as any).post({ event: { type: "session_created", session_id: "p", title: "t" } }))
        )
        assert.deepStrictEqual(posted, { status: 200, body: { seqs: [1] } })
        yield* append(first, createdMany(2), bearer)
        yield* receivedCount(tab, 3)

        yield* first.close
        const second = yield* start({ ...options, port: first.port })
        yield* append(second, createdMany(3), bearer)
        yield* receivedCount(tab, 6)
        yield* append(second, createdMany(3), bearer)
        yield* receivedCount(tab, 9)

        const messages = yield* inPage(tab, () => (window as any).received as Array<{ id: string; seq: number }>)
        assert.deepStrictEqual(
          messages.map((m) => m.seq),
          range(1, 9),
          JSON.stringify(messages)
        )
        assert.deepStrictEqual(
          messages.map((m) => m.id),
          range(1, 9).map((seq) => `${epoch}:${seq}`)
        )
        assert.isAtLeast(yield* inPage(tab, () => (window as any).opens as number), 2, "the page reconnected")
      }),
    120_000
  )

  it.scopedLive.skipIf(!hasChromium)(
    "without_the_setting_the_browser_blocks_the_stream_and_the_post",
    () =>
      Effect.gen(function* () {
        const { origin } = yield* pageServer
        const server = yield* corsServer(undefined)
        yield* append(server, createdMany(2))
        const browser = yield* launch
        const tab = yield* Effect.promise(() => browser.newPage())
        const console: Array<string> = []
        tab.on("console", (message) => console.push(message.text()))
        yield* Effect.promise(() => tab.goto(`${origin}/?feed=${encodeURIComponent(server.url)}`))

        // A CORS failure is fatal to an EventSource: it closes for good.
        yield* Effect.promise(() =>
          tab.waitForFunction(() => (window as any).source.readyState === 2, undefined, {
            timeout: 30_000,
            polling: 50
          })
        )
        const posted = yield* Effect.promise(() =>
          tab.evaluate(() => (window as any).post({ event: { type: "session_created", session_id: "p", title: "t" } }))
        )
        assert.include((posted as { blocked?: string }).blocked ?? "", "Failed to fetch")
        assert.deepStrictEqual(yield* inPage(tab, () => (window as any).received), [])
        assert.isTrue(
          console.some((text) => text.includes("blocked by CORS policy")),
          console.join("\n")
        )
        assert.strictEqual((yield* status(server)).head_seq, 2, "the refused POST journaled nothing")
      }),
    120_000
  )
})
