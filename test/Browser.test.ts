/**
 * A real browser on the stream: a page using `EventSource` in Debian's Chromium, driven by
 * `playwright-core`, receives events, loses its connection when the server restarts,
 * reconnects on its own (with the `Last-Event-ID` the stream gave it) and resumes with no gap
 * and no duplicate. The page is served by the service itself (a test-only route), so the
 * stream is same-origin and needs no CORS.
 */
import { HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { describe, it, assert } from "@effect/vitest"
import { Effect } from "effect"
import { type Page } from "playwright-core"
import { hasChromium, launch } from "./support/Chromium.js"
import { append, createdMany, start, status } from "./support/Server.js"
import { range } from "./support/Expected.js"
import { tempDir } from "./support/TempDir.js"

const page = `<!doctype html>
<html>
  <head><meta charset="utf-8"><title>change feed</title></head>
  <body>
    <script>
      window.received = []
      window.opens = 0
      window.errors = 0
      const source = new EventSource("/api/v1/stream")
      source.onopen = () => { window.opens++ }
      source.onerror = () => { window.errors++ }
      source.onmessage = (message) => {
        const data = JSON.parse(message.data)
        window.received.push({ id: message.lastEventId, seq: data.seq ?? null, type: data.type ?? "change" })
      }
    </script>
  </body>
</html>`

const pageRoute = HttpApiBuilder.Router.use((router) =>
  router.get("/test/page.html", Effect.succeed(HttpServerResponse.html(page)))
)

interface Received {
  readonly id: string
  readonly seq: number | null
  readonly type: string
}

/** Waits (in the page, up to 30 s) until it has received `n` messages. */
const receivedCount = (tab: Page, n: number) =>
  Effect.promise(() =>
    tab.waitForFunction((count) => (window as any).received.length >= count, n, { timeout: 30_000, polling: 50 })
  )

const received = (tab: Page) => Effect.promise(() => tab.evaluate(() => (window as any).received as Array<Received>))

const counter = (tab: Page, name: "opens" | "errors") =>
  Effect.promise(() => tab.evaluate((key) => (window as any)[key] as number, name))

describe("browser", () => {
  it.scopedLive.skipIf(!hasChromium)(
    "event_source_resumes_across_a_server_restart_with_no_gap_and_no_duplicate",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const first = yield* start({ directory, routes: pageRoute })
        const { epoch } = yield* status(first)
        const browser = yield* launch
        const tab = yield* Effect.promise(() => browser.newPage())
        yield* Effect.promise(() => tab.goto(`${first.url}/test/page.html`))

        // Live: the page is connected once the server counts its subscription.
        yield* append(first, createdMany(3))
        yield* receivedCount(tab, 3)

        // Restart on the same journal directory and port: the stream ends, the browser
        // reconnects by itself to the new server.
        yield* first.close
        const second = yield* start({ directory, port: first.port, routes: pageRoute })
        // Appended while the browser is (most likely) still waiting to reconnect: served by replay.
        yield* append(second, createdMany(3))
        yield* receivedCount(tab, 6)
        // And live again after the reconnect.
        yield* append(second, createdMany(3))
        yield* receivedCount(tab, 9)

        const messages = yield* received(tab)
        assert.deepStrictEqual(
          messages.map((m) => m.seq),
          range(1, 9),
          JSON.stringify(messages)
        )
        assert.deepStrictEqual(
          messages.map((m) => m.id),
          range(1, 9).map((seq) => `${epoch}:${seq}`)
        )
        assert.isTrue(
          messages.every((m) => m.type === "change"),
          "no reset"
        )
        assert.isAtLeast(yield* counter(tab, "opens"), 2, "the page reconnected")
        assert.isAtLeast(yield* counter(tab, "errors"), 1, "the page saw its connection drop")
      }),
    120_000
  )
})
