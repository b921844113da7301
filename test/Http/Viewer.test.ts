/**
 * The live viewer at `/`, in Chromium: it shows the status and the events posted while it is
 * open, filters them by session and type, resumes after a server restart with no gap and no
 * duplicate, and asks for the token when the service has one. Its page runs under a content
 * security policy that allows only its own script: a console error would say otherwise.
 *
 * `VIEWER_SCREENSHOT=docs/viewer.png npx vitest run test/Http/Viewer.test.ts` also saves a
 * screenshot of the viewer (the one in the README).
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import type { Page } from "playwright-core"
import { hasChromium, launch } from "../support/Chromium.js"
import { type AppendEntry, append, request, start, status } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"

/** A short agent session, as the platform journals it. */
const sessionEvents = (sid: string, topic: string): Array<AppendEntry> => [
  { event: { type: "session_created", session_id: sid, title: topic } },
  { event: { type: "message_appended", session_id: sid, message_id: `${sid}-m1`, role: "user", content: topic } },
  { event: { type: "execution_started", session_id: sid, execution_id: `${sid}-run` } },
  {
    event: {
      type: "task_list_updated",
      task_list: {
        session_id: sid,
        items: [
          { id: "t1", title: "read the code", status: "done" },
          { id: "t2", title: "make the change", status: "in_progress" }
        ]
      }
    }
  },
  {
    event: { type: "message_appended", session_id: sid, message_id: `${sid}-m2`, role: "assistant", content: "Done." }
  },
  {
    session_id: sid,
    event: { type: "complete", usage: { prompt_tokens: 812, completion_tokens: 96, total_tokens: 908 } }
  }
]

/** A page that records what goes wrong in it (script errors, console errors such as CSP refusals). */
const openViewer = (url: string) =>
  Effect.gen(function* () {
    const browser = yield* launch
    const tab = yield* Effect.promise(() => browser.newPage({ viewport: { width: 1280, height: 760 } }))
    const problems: Array<string> = []
    tab.on("pageerror", (error) => problems.push(String(error)))
    tab.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text())
    })
    yield* Effect.promise(() => tab.goto(url))
    return { tab, problems }
  })

const waitFor = (tab: Page, f: (arg: number) => boolean, arg: number) =>
  Effect.promise(() => tab.waitForFunction(f, arg, { timeout: 30_000, polling: 50 }))

const live = (tab: Page) => waitFor(tab, () => document.getElementById("connection")?.dataset["state"] === "live", 0)

/** The rows shown, newest first. */
const rows = (tab: Page) =>
  Effect.promise(() =>
    tab.$$eval("#rows tr[data-seq]", (trs) =>
      trs.map((tr) => ({
        seq: Number((tr as HTMLElement).dataset["seq"]),
        session: (tr as HTMLElement).dataset["session"]!,
        type: (tr as HTMLElement).dataset["type"]!
      }))
    )
  )

const rowCount = (tab: Page, n: number) =>
  waitFor(tab, (count) => document.querySelectorAll("#rows tr[data-seq]").length >= count, n)

const text = (tab: Page, id: string) =>
  Effect.promise(() => tab.$eval(`#${id}`, (element) => element.textContent ?? ""))

describe("the viewer at /", () => {
  it.scopedLive("the_page_is_served_with_a_policy_that_allows_only_its_own_script_and_origin", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const page = yield* request(`${server.url}/`)
      assert.strictEqual(page.status, 200)
      assert.strictEqual(page.headers["content-type"], "text/html; charset=utf-8")
      const policy = String(page.headers["content-security-policy"])
      assert.match(policy, /script-src 'sha256-[A-Za-z0-9+/=]+'/)
      assert.include(policy, "connect-src 'self'")
      assert.notMatch(page.body as string, /(src|href)="(https?:)?\/\//, "nothing is loaded from elsewhere")
      assert.strictEqual((yield* request(`${server.url}/`, { method: "POST" })).status, 405)
    })
  )

  it.scopedLive.skipIf(!hasChromium)(
    "it_shows_the_status_and_the_events_posted_while_it_is_open_filters_them_and_resumes_after_a_restart",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const first = yield* start({ directory })
        yield* append(first, sessionEvents("demo-1", "refactor the billing module"))
        const { epoch } = yield* status(first)
        const { problems, tab } = yield* openViewer(`${first.url}/`)
        yield* live(tab)
        yield* rowCount(tab, 6)
        assert.strictEqual(yield* text(tab, "epoch"), epoch)

        // Posted while it is open: shown at once, newest first; the status follows.
        yield* append(first, sessionEvents("demo-2", "summarise the incident report"))
        yield* append(first, sessionEvents("demo-3", "plan the Q3 roadmap"))
        yield* rowCount(tab, 18)
        assert.deepStrictEqual(
          (yield* rows(tab)).map((row) => row.seq),
          Array.from({ length: 18 }, (_, i) => 18 - i)
        )
        yield* waitFor(tab, () => document.getElementById("head_seq")?.textContent === "18", 0)
        assert.strictEqual(yield* text(tab, "oldest_seq"), "1")
        assert.strictEqual(yield* text(tab, "health"), "healthy")

        // Filters: by session, then by type as well.
        yield* Effect.promise(() => tab.fill("#session", "demo-2"))
        const bySession = yield* rows(tab)
        assert.strictEqual(bySession.length, 6)
        assert.isTrue(bySession.every((row) => row.session === "demo-2"))
        yield* Effect.promise(() => tab.selectOption("#type", "message_appended"))
        assert.deepStrictEqual(
          (yield* rows(tab)).map((row) => [row.seq, row.type]),
          [
            [11, "message_appended"],
            [8, "message_appended"]
          ]
        )
        yield* Effect.promise(() => tab.fill("#session", ""))
        yield* Effect.promise(() => tab.selectOption("#type", ""))

        // The server restarts: the page reconnects by itself and goes on from its last id.
        yield* first.close
        const second = yield* start({ directory, port: first.port })
        yield* append(second, sessionEvents("demo-4", "fix the flaky test"))
        yield* rowCount(tab, 24)
        yield* live(tab)
        const seqs = (yield* rows(tab)).map((row) => row.seq)
        assert.deepStrictEqual(
          seqs,
          Array.from({ length: 24 }, (_, i) => 24 - i),
          "no gap, no duplicate"
        )
        yield* waitFor(tab, () => document.getElementById("head_seq")?.textContent === "24", 0)
        assert.deepStrictEqual(problems, [])

        const screenshot = process.env["VIEWER_SCREENSHOT"]
        if (screenshot !== undefined && screenshot !== "") {
          yield* Effect.promise(() => tab.evaluate(() => (document.activeElement as HTMLElement | null)?.blur()))
          yield* Effect.promise(() => tab.screenshot({ path: screenshot }))
        }
      }),
    120_000
  )

  it.scopedLive.skipIf(!hasChromium)(
    "it_asks_for_the_token_when_the_service_has_one_and_follows_the_feed_once_given",
    () =>
      Effect.gen(function* () {
        const token = "viewer-s3cret"
        const bearer = { authorization: `Bearer ${token}` }
        const server = yield* start({ directory: yield* tempDir, http: { token: Redacted.make(token) } })
        const { problems, tab } = yield* openViewer(`${server.url}/`)
        yield* waitFor(tab, () => !(document.getElementById("token-form") as HTMLFormElement).hidden, 0)
        assert.include(yield* text(tab, "token-message"), "needs a bearer token")

        yield* Effect.promise(() => tab.fill("#token", "wrong"))
        yield* Effect.promise(() => tab.click("#token-form button"))
        yield* waitFor(
          tab,
          () => document.getElementById("token-message")?.textContent?.includes("refused") === true,
          0
        )

        yield* Effect.promise(() => tab.fill("#token", token))
        yield* Effect.promise(() => tab.click("#token-form button"))
        yield* live(tab)
        assert.isTrue(yield* Effect.promise(() => tab.$eval("#token-form", (form) => (form as HTMLFormElement).hidden)))
        yield* append(server, sessionEvents("s1", "hello"), bearer)
        yield* rowCount(tab, 6)
        // The two refused status reads are the only errors the page saw (as the browser logs them).
        assert.isTrue(
          problems.every((problem) => problem.includes("401")),
          problems.join("\n")
        )
      }),
    120_000
  )
})
