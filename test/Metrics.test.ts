/**
 * The metrics: scraped from `GET /metrics` of a real server after real appends, reads and
 * faults, read with a strict parser of the Prometheus text format, and compared with what
 * happened. Each test labels its feed with an account of its own: metrics live in one registry
 * for the whole process.
 */
import { describe, it, assert } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Metric, Redacted, Scope, Stream, TestClock } from "effect"
import * as NFs from "node:fs"
import * as ChangeFeed from "../src/ChangeFeed.js"
import * as Metrics from "../src/Metrics.js"
import { type Family, parse, valueOf } from "./support/Prometheus.js"
import {
  type AppendEntry,
  createdMany,
  damageLine,
  openStream,
  post,
  request,
  start,
  type TestServer
} from "./support/Server.js"
import { tempDir } from "./support/TempDir.js"
import { eventually } from "./support/Wait.js"

let accounts = 0
const freshAccount = () => `account-${process.pid}-${++accounts}`

const scrape = (server: TestServer, headers: Record<string, string> = {}) =>
  Effect.gen(function* () {
    const response = yield* request(`${server.url}/metrics`, { headers })
    assert.strictEqual(response.status, 200, JSON.stringify(response.body))
    assert.strictEqual(response.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
    return parse(response.body as string)
  })

/** The routes of `account`, whose metrics carry its id as their `account` label. */
const accountUrl = (server: TestServer, account: string) => `${server.url}/api/v1/accounts/${account}`

const appendTo = (server: TestServer, account: string, entries: ReadonlyArray<AppendEntry>) =>
  Effect.forEach(entries, (entry) =>
    Effect.flatMap(post(`${accountUrl(server, account)}/events`, entry), (answer) =>
      answer.status === 200 ? Effect.void : Effect.dieMessage(`append answered ${answer.status}`)
    )
  )

/** A feed on an in-memory journal, closed with the returned scope, and a scrape of every metric. */
const feedWithScrape = (options: ChangeFeed.ChangeFeedOptions) =>
  Effect.gen(function* () {
    const scrapeAll = Context.get(yield* Layer.build(Metrics.layerPrometheus), Metrics.PrometheusScrape)
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const feed = Context.get(yield* Layer.buildWithScope(ChangeFeed.layerMemory(options), scope), ChangeFeed.ChangeFeed)
    return { feed, scope, scrapeAll: Effect.map(scrapeAll, parse) }
  })

describe("GET /metrics", () => {
  it.scopedLive("a_scrape_after_appends_and_reads_parses_strictly_and_counts_what_happened", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const server = yield* start({ directory: yield* tempDir })
      yield* appendTo(server, account, createdMany(5))
      // A reader that replays and stays open, and one whose cursor is ahead of the head.
      const reader = yield* openStream(`${accountUrl(server, account)}/stream?since=0`)
      yield* reader.untilCaughtUp
      const aheadScope = yield* Scope.make()
      const ahead = yield* Scope.extend(openStream(`${accountUrl(server, account)}/stream?since=99`), aheadScope)
      yield* ahead.untilCaughtUp

      const families = yield* scrape(server)
      const at = { account }
      const value = (name: string, labels: Record<string, string> = {}) => valueOf(families, name, { ...at, ...labels })
      assert.strictEqual(value("change_feed_journaled_total"), 5)
      assert.strictEqual(value("change_feed_head_seq"), 5)
      assert.strictEqual(value("change_feed_oldest_seq"), 1)
      assert.strictEqual(value("change_feed_subscribers"), 2)
      assert.strictEqual(value("change_feed_queue_depth"), 0)
      assert.strictEqual(value("change_feed_degraded"), 0)
      assert.strictEqual(value("change_feed_segments"), 1)
      assert.isAbove(value("change_feed_journal_bytes"), 0)
      assert.strictEqual(value("change_feed_reader_lag_max"), 0)
      assert.strictEqual(value("change_feed_resets_total", { reason: "ahead_of_head" }), 1)
      assert.strictEqual(value("change_feed_resets_total", { reason: "below_retention" }), 0)
      assert.strictEqual(value("change_feed_dropped_total"), 0)
      assert.strictEqual(value("change_feed_refused_total", { reason: "busy" }), 0)
      assert.strictEqual(value("change_feed_journal_corrupt_total"), 0)
      // One POST per event: five publishes, each one batch of one event, each synced (fsync always).
      assert.strictEqual(value("change_feed_publish_seconds_count"), 5)
      assert.strictEqual(value("change_feed_batch_events_sum"), 5)
      assert.strictEqual(value("change_feed_append_seconds_count"), value("change_feed_batch_events_count"))
      assert.isAtLeast(value("change_feed_fsync_seconds_count"), 5)
      assert.isAbove(value("change_feed_append_seconds_sum"), 0)

      assert.strictEqual(families.get("change_feed_journaled_total")?.type, "counter")
      assert.strictEqual(families.get("change_feed_head_seq")?.type, "gauge")
      assert.strictEqual(families.get("change_feed_publish_seconds")?.type, "histogram")
      assert.include(families.get("change_feed_publish_seconds")?.help ?? "", "durable ack")

      // Gauges are read when scraped: the head moves, and a closed reader is no longer counted.
      yield* appendTo(server, account, createdMany(2))
      yield* Scope.close(aheadScope, Exit.void)
      yield* eventually(
        "one subscriber is left",
        Effect.map(scrape(server), (later) => valueOf(later, "change_feed_subscribers", at) === 1)
      )
      const later = yield* scrape(server)
      assert.strictEqual(valueOf(later, "change_feed_head_seq", at), 7)
      assert.strictEqual(valueOf(later, "change_feed_journaled_total", at), 7)
    })
  )

  it.scopedLive("metrics_need_the_bearer_token_when_the_service_has_one", () =>
    Effect.gen(function* () {
      const token = "metrics-s3cret"
      const server = yield* start({ directory: yield* tempDir, http: { token: Redacted.make(token) } })
      for (const headers of [{}, { authorization: "Bearer wrong" }]) {
        const refused = yield* request(`${server.url}/metrics`, { headers })
        assert.strictEqual(refused.status, 401)
        assert.strictEqual(refused.body._tag, "Unauthorized")
      }
      assert.strictEqual((yield* request(`${server.url}/metrics?access_token=${token}`)).status, 401)
      yield* scrape(server, { authorization: `Bearer ${token}` })
      assert.strictEqual((yield* request(`${server.url}/metrics`, { method: "POST" })).status, 405)
    })
  )

  it.scopedLive("a_corrupt_line_a_reader_meets_is_counted", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const server = yield* start({ directory: yield* tempDir })
      yield* appendTo(server, account, createdMany(3))
      yield* damageLine({ ...server, directory: `${server.directory}/accounts/${account}` }, 2, "not_json")
      const reader = yield* openStream(`${accountUrl(server, account)}/stream?since=0`)
      const frames = yield* reader.takeUntil((frame) => frame.event === "feed_error")
      assert.include(frames.at(-1)!.data, "JournalCorrupt")
      assert.strictEqual(valueOf(yield* scrape(server), "change_feed_journal_corrupt_total", { account }), 1)
    })
  )
})

describe("segment index metrics", () => {
  it.scopedLive("replays_of_sealed_segments_count_their_index_reads_and_the_bytes_the_indexes_hold", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const server = yield* start({ directory: yield* tempDir, feed: { segmentBytes: 1024 } })
      // One event a request: segments of ~1 KiB, rotated between appends.
      yield* appendTo(server, account, createdMany(24))
      const sealed =
        NFs.readdirSync(`${server.directory}/accounts/${account}`).filter((name) => name.startsWith("events-")).length -
        1
      assert.isAtLeast(sealed, 2)
      // Past the time a segment must have been last written before it is indexed.
      yield* Effect.sleep(Duration.millis(100))
      const replay = Effect.flatMap(openStream(`${accountUrl(server, account)}/stream?since=0`), (reader) =>
        reader.takeUntil((frame) => frame.event === "caught_up")
      )
      const reads = (metrics: ReadonlyMap<string, Family>, result: string) =>
        valueOf(metrics, "change_feed_segment_index_reads_total", { result })
      const before = yield* scrape(server)
      yield* replay
      const first = yield* scrape(server)
      yield* replay
      const second = yield* scrape(server)
      // The first replay scans and indexes every sealed segment; the second reads each through its index.
      assert.strictEqual(reads(first, "miss") - reads(before, "miss"), sealed)
      assert.strictEqual(reads(second, "hit") - reads(first, "hit"), sealed)
      assert.strictEqual(reads(second, "miss"), reads(first, "miss"))
      assert.isAtLeast(valueOf(second, "change_feed_segment_index_segments", {}), sealed)
      assert.isAbove(valueOf(second, "change_feed_segment_index_bytes", {}), 0)
    })
  )
})

describe("feed metrics", () => {
  it.scopedLive("the_lag_gauge_is_how_far_the_furthest_reader_is_behind_the_head", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const { feed, scrapeAll } = yield* feedWithScrape({ account })
      const pull = yield* Stream.toPull(feed.changes({ since: 0 }))
      yield* pull // caught up at 0
      for (let i = 0; i < 10; i++) yield* feed.publish("s1", { type: "session_deleted", session_id: "s1" })
      assert.strictEqual(valueOf(yield* scrapeAll, "change_feed_reader_lag_max", { account }), 10)
      const read = yield* pull
      assert.strictEqual(read.length, 10)
      assert.strictEqual(valueOf(yield* scrapeAll, "change_feed_reader_lag_max", { account }), 0)
    })
  )

  it.scopedLive("every_dropped_event_is_counted_when_it_is_dropped_not_when_the_warning_is_logged", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const { feed, scrapeAll } = yield* feedWithScrape({ account, queueCapacity: 1 })
      const burst = () => {
        // No yield in between: the writer cannot take anything, so all but one are dropped.
        for (let i = 0; i < 20; i++) feed.unsafeRecord("s1", { type: "session_deleted", session_id: "s1" })
      }
      burst()
      yield* eventually(
        "drops are counted",
        Effect.map(scrapeAll, (families) => valueOf(families, "change_feed_dropped_total", { account }) > 0)
      )
      // A second burst within the warning's quiet period (10 s): counted all the same.
      burst()
      const { dropped: total } = yield* feed.status
      assert.isAtLeast(total, 38)
      assert.strictEqual(valueOf(yield* scrapeAll, "change_feed_dropped_total", { account }), total)
    })
  )

  it.scopedLive("a_publish_refused_at_shutdown_is_counted_and_the_gauges_keep_the_state_after_the_drain", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const { feed, scope, scrapeAll } = yield* feedWithScrape({ account })
      yield* feed.publish("s1", { type: "session_deleted", session_id: "s1" })
      // Still queued when the feed closes: journaled by its drain.
      for (let i = 0; i < 5; i++) feed.unsafeRecord("s1", { type: "session_deleted", session_id: "s1" })
      yield* Scope.close(scope, Exit.void)
      const refused = yield* Effect.flip(feed.publish("s1", { type: "session_deleted", session_id: "s1" }))
      assert.strictEqual(refused._tag, "FeedClosed")
      const families = yield* scrapeAll
      assert.strictEqual(valueOf(families, "change_feed_refused_total", { account, reason: "closed" }), 1)
      assert.strictEqual(valueOf(families, "change_feed_head_seq", { account }), 6)
      assert.strictEqual(valueOf(families, "change_feed_queue_depth", { account }), 0)
      assert.strictEqual(valueOf(families, "change_feed_subscribers", { account }), 0)
    })
  )
})

describe("the series of accounts no longer open", () => {
  /** Whether Effect's registry holds a series of `account`. */
  const registered = (account: string) =>
    Metric.unsafeSnapshot().some(({ metricKey }) =>
      metricKey.tags.some((label) => label.key === "account" && label.value === account)
    )

  const scraped = (families: Map<string, Family>, account: string) =>
    [...families.values()].some((family) => family.samples.some((sample) => sample.labels.account === account))

  const deleted = { type: "session_deleted", session_id: "s1" } as const

  it.scopedLive("a_closed_account_is_scraped_once_more_with_its_final_values_then_dropped_and_starts_afresh", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      const { feed, scope, scrapeAll } = yield* feedWithScrape({ account })
      for (let i = 0; i < 3; i++) yield* feed.publish("s1", deleted)
      yield* Scope.close(scope, Exit.void)

      const last = yield* scrapeAll
      assert.strictEqual(valueOf(last, "change_feed_journaled_total", { account }), 3)
      assert.strictEqual(valueOf(last, "change_feed_head_seq", { account }), 3)
      assert.strictEqual(valueOf(last, "change_feed_subscribers", { account }), 0)
      assert.isFalse(scraped(yield* scrapeAll, account), "the next scrape has no series of the closed account")
      assert.isFalse(registered(account))

      // Opened again (on a journal of its own): counters from zero, gauges from the feed.
      const again = yield* feedWithScrape({ account })
      yield* again.feed.publish("s1", deleted)
      const reopened = yield* again.scrapeAll
      assert.strictEqual(valueOf(reopened, "change_feed_journaled_total", { account }), 1)
      assert.strictEqual(valueOf(reopened, "change_feed_publish_seconds_count", { account }), 1)
      assert.strictEqual(valueOf(reopened, "change_feed_head_seq", { account }), 1)
    })
  )

  it.scopedLive("an_account_still_held_elsewhere_keeps_its_series", () =>
    Effect.gen(function* () {
      const account = freshAccount()
      // What a second feed of the account does (another journal, a reader of its metrics).
      yield* Metrics.holdAccount(account)
      const { feed, scope, scrapeAll } = yield* feedWithScrape({ account })
      yield* feed.publish("s1", deleted)
      yield* Scope.close(scope, Exit.void)
      yield* scrapeAll
      const later = yield* scrapeAll
      assert.strictEqual(valueOf(later, "change_feed_journaled_total", { account }), 1)
      assert.isTrue(registered(account))
    })
  )

  it.scoped("with_no_scrape_a_closed_accounts_series_go_once_they_have_been_kept_their_time", () =>
    Effect.gen(function* () {
      // A collection first, so that no account let go by another test (on the real clock) waits.
      const scrapeAll = Context.get(yield* Layer.build(Metrics.layerPrometheus), Metrics.PrometheusScrape)
      yield* scrapeAll
      const account = freshAccount()
      const { scope } = yield* feedWithScrape({ account })
      yield* Scope.close(scope, Exit.void)
      // Another account opening and closing is when the time kept is looked at.
      const openAndClose = Effect.scoped(Metrics.holdAccount(freshAccount()))
      yield* TestClock.adjust(Duration.subtract(Metrics.releasedSeriesKept, Duration.millis(1)))
      yield* openAndClose
      assert.isTrue(registered(account), "kept until its time is up")
      yield* TestClock.adjust(Duration.millis(1))
      yield* openAndClose
      assert.isFalse(registered(account), "dropped once it is")
    })
  )

  it.scopedLive("a_service_that_served_accounts_in_turn_keeps_no_series_of_those_it_closed", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, feed: { idleTimeToLive: "20 millis" } })
      const before = Metric.unsafeSnapshot().length
      const served = Array.from({ length: 20 }, freshAccount)
      for (const account of served) yield* appendTo(server, account, createdMany(2))
      // Scraped until no series of theirs is left: the last one that had any had their final values.
      let lastSeen: Map<string, Family> | undefined
      yield* eventually(
        "the closed accounts' series are dropped",
        Effect.map(scrape(server), (families) => {
          if (served.some((account) => scraped(families, account))) lastSeen = families
          return served.every((account) => !scraped(families, account))
        })
      )
      for (const account of served) {
        if (lastSeen !== undefined && scraped(lastSeen, account)) {
          assert.strictEqual(valueOf(lastSeen, "change_feed_journaled_total", { account }), 2)
        }
        assert.isFalse(registered(account))
      }
      assert.isAtMost(Metric.unsafeSnapshot().length, before)
    })
  )
})

describe("the exposition parser", () => {
  it("refuses_what_the_text_format_does_not_allow", () => {
    const bad = [
      'metric{a="1"} one', // a value that is no number
      "9metric 1", // a name starting with a digit
      "metric{a=1} 1", // an unquoted label value
      'metric{__a="1"} 1', // a reserved label name
      "# TYPE metric kind\nmetric 1", // an unknown type
      'metric 1\nother 1\nmetric{a="2"} 1', // one family in two groups
      "metric 1\nmetric 2", // one series twice
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1' // not cumulative
    ]
    for (const text of bad) assert.throws(() => parse(text), undefined, undefined, text)
    assert.strictEqual(
      parse('# HELP m a \\\\ help\n# TYPE m gauge\nm{a="x\\"y"} -Inf 123\n').get("m")?.help,
      "a \\ help"
    )
  })
})
