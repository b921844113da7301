/**
 * The change feed on real journals in temp directories: the seed's three tests, then one group
 * per invariant of DESIGN.md §4 (resets and the interleaving property have files of their own
 * under `test/ChangeFeed/`), then markers, epochs, the clock and the in-memory layer.
 */
import { FileSystem, Path } from "@effect/platform"
import * as NFs from "node:fs"
import { describe, it, assert } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Logger, LogLevel, Option, Stream, TestClock } from "effect"
import * as ChangeFeed from "../src/ChangeFeed.js"
import { JsonEntry } from "../src/ChangeFeed/Receipts.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import { type FeedItem, type LineChange, type LineItem, wireJson } from "../src/Domain/FeedItem.js"
import { EventJson } from "../src/Journal.js"
import { FaultInjector } from "./support/FailingFileSystem.js"
import {
  complete,
  deleted,
  delivered,
  Env,
  eventually,
  FaultyEnv,
  follow,
  headReaches,
  joinWithin,
  journaled,
  linesOnDisk,
  numbered,
  openFeed,
  range,
  reset,
  seen,
  settle,
  tempDir,
  token
} from "./support/FeedTesting.js"

const recordAll = (feed: ChangeFeed.ChangeFeedService<AgentEvent>, events: ReadonlyArray<AgentEvent>) =>
  Effect.sync(() => {
    for (const event of events) feed.unsafeRecord(undefined, event)
  })

const sessionsOf = (events: ReadonlyArray<{ readonly event: AgentEvent }>) =>
  events.map(({ event }) => ("session_id" in event ? event.session_id : undefined))

/** A logger that keeps the messages logged at `level`, as text, in `lines`. */
const capturing = (level: "Debug" | "Warning") => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    if (logLevel._tag === level) lines.push((Array.isArray(message) ? message : [message]).join(" "))
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

// ---------------------------------------------------------------------------------------------------------------
// The seed's tests (account_sink.rs), on the agent domain through the `ChangeFeed` layer
// ---------------------------------------------------------------------------------------------------------------

describe("seed", () => {
  it.scopedLive("assigns_monotonic_seq_and_journals", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* Effect.gen(function* () {
        const feed = yield* ChangeFeed.ChangeFeed
        const live = yield* follow(feed.changes())
        yield* delivered(live, 1) // caught up: subscribed to the live tail
        for (let i = 0; i < 3; i++) yield* feed.record(undefined, deleted(`s${i}`))

        yield* seen(live, 3)
        assert.deepStrictEqual(live.seqs(), [1, 2, 3])
        assert.deepStrictEqual(sessionsOf(live.changes()), ["s0", "s1", "s2"])
        const onDisk = yield* journaled(feed)
        assert.deepStrictEqual(
          onDisk.map((e) => e.seq),
          [1, 2, 3]
        )
        assert.deepStrictEqual(onDisk, [...live.changes()])
        assert.strictEqual(yield* feed.headSeq, 3)
      }).pipe(Effect.provide(ChangeFeed.layer({ directory })))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("ephemeral_events_never_reach_the_feed", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* Effect.gen(function* () {
        const feed = yield* ChangeFeed.ChangeFeed
        const live = yield* follow(feed.changes())
        yield* delivered(live, 1)
        yield* feed.record("s1", token("hi"))
        feed.unsafeRecord("s1", { type: "tool_start", tool_call_id: "t1", tool_name: "bash" })
        assert.deepStrictEqual(yield* feed.publish("s1", token("there")), Option.none())
        yield* feed.record("s1", deleted("s1"))

        yield* seen(live, 1)
        const onDisk = yield* journaled(feed)
        assert.strictEqual(onDisk.length, 1, "only the durable event is journaled")
        assert.strictEqual(onDisk[0]!.seq, 1)
        assert.deepStrictEqual(onDisk[0]!.event, deleted("s1"))
        assert.deepStrictEqual(
          live.items.filter((item) => item._tag === "Change"),
          [{ _tag: "Change", change: onDisk[0]! }]
        )
        // Filtered, not dropped: a dropped event would count.
        assert.strictEqual(yield* feed.droppedCount, 0)
        assert.strictEqual(yield* feed.headSeq, 1)
      }).pipe(Effect.provide(ChangeFeed.layer({ directory })))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("terminal_event_routes_via_caller_session_id", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* Effect.gen(function* () {
        const feed = yield* ChangeFeed.ChangeFeed
        // One routing rule for every entry point: record, unsafeRecord, publish, publishAll.
        yield* feed.record("sess-7", complete)
        feed.unsafeRecord("sess-8", { type: "cancelled" })
        yield* feed.publish("sess-9", { type: "error", message: "boom" })
        yield* feed.publishAll([
          { sessionId: "sess-10", event: deleted("s-own") }, // the caller's id wins over the event's own
          { event: deleted("s-own") }, // without one, the event's own
          { event: complete } // terminal events carry none
        ])
        yield* feed.record(undefined, { type: "cancelled", reason: "user" })
        yield* feed.record(undefined, { type: "error", message: "lost" })

        yield* headReaches(feed, 8)
        const onDisk = yield* journaled(feed)
        assert.deepStrictEqual(
          onDisk.map((e) => [e.seq, e.event.type, e.session_id]),
          [
            [1, "complete", "sess-7"],
            [2, "cancelled", "sess-8"],
            [3, "error", "sess-9"],
            [4, "session_deleted", "sess-10"],
            [5, "session_deleted", "s-own"],
            [6, "complete", undefined],
            [7, "cancelled", undefined],
            [8, "error", undefined]
          ]
        )
        // Absent, not null: `session_id` is omitted from the line.
        const lines = yield* linesOnDisk(directory)
        assert.isFalse("session_id" in lines[5]!)
        assert.strictEqual(lines[0]!.session_id, "sess-7")
      }).pipe(Effect.provide(ChangeFeed.layer({ directory })))
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 1: journal order == broadcast order == seq order, from 1, +1, across restarts
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 1: one order", () => {
  it.scopedLive("journal_broadcast_and_seq_order_agree_across_a_restart", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir

      const first = yield* openFeed(directory)
      const live1 = yield* follow(first.feed.changes())
      yield* delivered(live1, 1)
      yield* recordAll(first.feed, numbered(1, 5))
      yield* seen(live1, 5)
      yield* first.close
      yield* joinWithin(live1.fiber, "the first reader ends with its feed")

      const second = yield* openFeed(directory)
      assert.strictEqual(yield* second.feed.headSeq, 5, "the head is recovered at open")
      const live2 = yield* follow(second.feed.changes({ since: 5 }), 5)
      yield* delivered(live2, 1)
      // Both entry points share the one writer: interleave them.
      yield* recordAll(second.feed, numbered(6, 2))
      const published = yield* second.feed.publishAll(numbered(8, 2).map((event) => ({ event })))
      yield* recordAll(second.feed, numbered(10, 3))
      yield* seen(live2, 12)

      assert.deepStrictEqual(published, [8, 9])
      assert.deepStrictEqual(live1.seqs(), range(1, 5))
      assert.deepStrictEqual(live2.seqs(), range(6, 12))
      const broadcast = [...live1.changes(), ...live2.changes()]
      const onDisk = yield* journaled(second.feed)
      assert.deepStrictEqual(onDisk, broadcast, "the journal holds what was broadcast, in the same order")
      assert.deepStrictEqual(
        sessionsOf(onDisk),
        range(1, 12).map((i) => `e${i}`),
        "seq order is the order the events were recorded in"
      )
      assert.deepStrictEqual(yield* linesOnDisk(directory), onDisk)
      for (let i = 1; i < onDisk.length; i++) assert.isTrue(onDisk[i - 1]!.ts <= onDisk[i]!.ts)
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 2: write-ahead; a failed append consumes no seq, the feed says it is degraded
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 2: write-ahead", () => {
  // Under TestClock the writer's retry backoff only passes when the test says so: the
  // "still failing" state is held for as long as the assertions need.
  it.scoped("failed_appends_broadcast_nothing_consume_no_seq_and_degrade_until_recovery", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { retryBase: 1_000, retryMax: 1_000 })
      const live = yield* follow(feed.changes())
      yield* delivered(live, 1)

      faults.failWrites(3, "disk full")
      yield* recordAll(feed, numbered(1, 5))
      for (let failure = 1; failure <= 3; failure++) {
        yield* eventually(`append failure ${failure}`, () => faults.writeFailures === failure)
        yield* eventually(
          "the writer is backing off",
          Effect.map(TestClock.sleeps(), (sleeps) => sleeps.length === 1)
        )
        const status = yield* feed.status
        assert.isTrue(status.degraded, "degraded while appends fail")
        assert.include(status.lastError ?? "", "disk full")
        assert.strictEqual(status.headSeq, 0, "a failed append does not move the head")
        assert.deepStrictEqual(live.items, [{ _tag: "CaughtUp", seq: 0 }], "nothing is broadcast meanwhile")
        assert.deepStrictEqual(yield* journaled(feed), [])
        yield* TestClock.adjust(1_000)
      }

      yield* seen(live, 5)
      assert.deepStrictEqual(live.seqs(), range(1, 5), "no seq was consumed by the failures")
      assert.deepStrictEqual(
        sessionsOf(live.changes()),
        range(1, 5).map((i) => `e${i}`)
      )
      assert.isFalse((yield* feed.status).degraded, "recovered once an append succeeds")
      // The failed writes left half a batch behind each time: it was cut back, not kept.
      const lines = yield* linesOnDisk(directory)
      assert.deepStrictEqual(lines, [...live.changes()], "each event is on disk exactly once")
      assert.strictEqual(faults.writeFailures, 3)
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("failed_sync_is_retried_without_duplicating_lines", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { retryBase: 1, retryMax: 5 })
      faults.failSyncs(2)
      // The write itself succeeds; only the sync fails: the retry must not append the batch again.
      const seqs = yield* feed.publishAll(numbered(1, 3).map((event) => ({ event })))
      assert.deepStrictEqual(seqs, [1, 2, 3])
      assert.strictEqual(faults.syncFailures, 2)
      assert.deepStrictEqual(
        (yield* linesOnDisk(directory)).map((e) => e.seq),
        [1, 2, 3]
      )
      assert.isFalse((yield* feed.status).degraded)
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("publish_waits_through_a_degraded_journal_and_gets_the_next_seq", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { retryBase: 1, retryMax: 5 })
      yield* feed.publish(undefined, deleted("e1"))
      faults.failWrites(5)
      assert.deepStrictEqual(yield* feed.publish(undefined, deleted("e2")), Option.some(2))
      assert.strictEqual(faults.writeFailures, 5)
      assert.deepStrictEqual(sessionsOf(yield* linesOnDisk(directory)), ["e1", "e2"])
    }).pipe(Effect.provide(FaultyEnv))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 3: record never blocks nor fails; a full queue drops, counts and warns (rate-limited)
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 3: record never blocks", () => {
  it.scopedLive("full_queue_drops_and_counts_without_blocking", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory, { queueCapacity: 4 })
      const events = numbered(1, 100)

      const started = Date.now()
      for (const event of events) feed.unsafeRecord(undefined, event)
      const elapsed = Date.now() - started

      assert.isBelow(elapsed, 1_000, "100 records return at once, whatever the writer does")
      const dropped = yield* feed.droppedCount
      assert.isAbove(dropped, 0)
      assert.isAtMost(dropped, 100 - 4, "a queue of 4 accepts at least 4")
      const accepted = 100 - dropped
      yield* headReaches(feed, accepted)
      yield* settle()
      assert.strictEqual(yield* feed.headSeq, accepted, "journaled + dropped == recorded")
      // What was accepted is what came first; the rest was dropped, not reordered.
      assert.deepStrictEqual(
        sessionsOf(yield* journaled(feed)),
        range(1, accepted).map((i) => `e${i}`)
      )
      assert.strictEqual((yield* feed.status).dropped, dropped)
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("record_after_close_drops_instead_of_failing", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed, close } = yield* openFeed(directory)
      yield* close
      yield* feed.record(undefined, deleted("late"))
      feed.unsafeRecord(undefined, deleted("later"))
      assert.strictEqual(yield* feed.droppedCount, 2)
      const error = yield* Effect.flip(feed.publish(undefined, deleted("latest")))
      assert.strictEqual(error._tag, "FeedClosed")
    }).pipe(Effect.provide(Env))
  )

  it.scoped("drop_warnings_are_rate_limited", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { layer, lines: warnings } = capturing("Warning")
      const { feed } = yield* openFeed(directory, { queueCapacity: 4, dropWarningInterval: 10_000 }).pipe(
        Effect.provide(layer)
      )

      yield* recordAll(feed, numbered(1, 100))
      const firstDrops = yield* feed.droppedCount
      assert.isAbove(firstDrops, 0)
      yield* eventually("the first drop warns", () => warnings.length >= 1)
      assert.include(warnings[0]!, `dropped ${firstDrops} event(s) (${firstDrops} since start)`)

      // Many more drops within the period: no more warnings, however long the writer takes.
      yield* headReaches(feed, 100 - firstDrops)
      yield* recordAll(feed, numbered(101, 100))
      const allDrops = yield* feed.droppedCount
      assert.isAbove(allDrops, firstDrops)
      yield* headReaches(feed, 200 - allDrops)
      yield* settle()
      assert.strictEqual(warnings.length, 1, "one warning for many drops")

      // The period ends: one summary of what came in meanwhile, then quiet again.
      yield* TestClock.adjust(10_000)
      yield* eventually("the next period reports the drops meanwhile", () => warnings.length >= 2)
      assert.include(warnings[1]!, `dropped ${allDrops - firstDrops} event(s) (${allDrops} since start)`)
      yield* settle()
      yield* TestClock.adjust(10_000)
      yield* settle()
      assert.strictEqual(warnings.length, 2, "no warning without new drops")
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 4: publish waits for durability, with backpressure and a timeout
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 4: publish is durable", () => {
  it.scopedLive("publish_answers_a_seq_that_is_already_journaled", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory)
      yield* recordAll(feed, numbered(1, 3))
      for (let i = 4; i <= 8; i++) {
        const seq = yield* feed.publish("s1", deleted(`e${i}`))
        assert.deepStrictEqual(seq, Option.some(i))
        // Readable at once: no waiting, no polling.
        const [first] = yield* journaled(feed, i - 1)
        assert.strictEqual(first?.seq, i)
        assert.deepStrictEqual(first?.event, deleted(`e${i}`))
        assert.isAtLeast(faults.syncs, 1, "synced before acknowledging in 'always' mode")
      }
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("publish_of_an_ephemeral_event_answers_none_and_journals_nothing", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      assert.deepStrictEqual(yield* feed.publish("s1", token("hi")), Option.none())
      assert.deepStrictEqual(yield* feed.publishAll([{ event: token("a") }, { event: token("b") }]), [null, null])
      assert.deepStrictEqual(yield* feed.publish(undefined, deleted("e1")), Option.some(1))
      assert.deepStrictEqual(sessionsOf(yield* journaled(feed)), ["e1"])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("publish_all_answers_seqs_in_order_with_null_for_ephemeral_events", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      yield* feed.publish(undefined, deleted("e1"))
      const seqs = yield* feed.publishAll([
        { event: token("a") },
        { sessionId: "s1", event: deleted("e2") },
        { event: token("b") },
        { event: deleted("e3") },
        { event: deleted("e4") },
        { event: token("c") }
      ])
      assert.deepStrictEqual(seqs, [null, 2, null, 3, 4, null])
      assert.deepStrictEqual(yield* feed.publishAll([]), [])
      const onDisk = yield* journaled(feed)
      assert.deepStrictEqual(
        onDisk.map((e) => [e.seq, e.session_id]),
        [
          [1, "e1"],
          [2, "s1"],
          [3, "e3"],
          [4, "e4"]
        ]
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("publish_with_a_full_queue_times_out_as_busy_and_journals_nothing", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { queueCapacity: 4, retryBase: 20, retryMax: 20 })
      faults.failWrites(Number.POSITIVE_INFINITY)
      yield* feed.record(undefined, deleted("e1"))
      // The writer holds its batch in retry; then the queue behind it fills up.
      yield* eventually("the writer is stuck", () => faults.writeFailures >= 1)
      yield* recordAll(feed, numbered(2, 19))
      assert.strictEqual((yield* feed.status).queued, 4)
      const accepted = 20 - (yield* feed.droppedCount)
      assert.strictEqual(accepted, 5)

      const error = yield* Effect.flip(feed.publish(undefined, deleted("busy"), { timeout: 50 }))
      assert.strictEqual(error._tag, "FeedBusy")
      assert.include(error.message, "50 ms")

      faults.heal()
      const after = yield* feed.publish(undefined, deleted("after"))
      assert.deepStrictEqual(after, Option.some(accepted + 1), "the busy event never got a seq")
      assert.deepStrictEqual(sessionsOf(yield* journaled(feed)), [...range(1, accepted).map((i) => `e${i}`), "after"])
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("publish_times_out_as_not_yet_durable_and_lands_after_recovery", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { retryBase: 5, retryMax: 20 })
      faults.failWrites(Number.POSITIVE_INFINITY)
      const error = yield* Effect.flip(feed.publish(undefined, deleted("e1"), { timeout: 100 }))
      assert.strictEqual(error._tag, "NotYetDurable")
      assert.isTrue((yield* feed.status).degraded)
      faults.heal()
      yield* headReaches(feed, 1)
      assert.deepStrictEqual(sessionsOf(yield* journaled(feed)), ["e1"])
    }).pipe(Effect.provide(FaultyEnv))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 6: a slow reader slows neither the writer nor other readers, and catches up
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 6: slow readers", () => {
  const stalledReaderCatchesUp = (batched: boolean) =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const liveBuffer = 16
      const total = 3 * liveBuffer
      const { feed } = yield* openFeed(directory, { liveBuffer })

      // Subscribed (its first pull has run), then left alone.
      const pull = yield* Stream.toPull(feed.changes())
      assert.deepStrictEqual(Array.from(yield* pull), [{ _tag: "CaughtUp", seq: 0 }])
      const other = yield* follow(feed.changes())
      yield* delivered(other, 1)

      const writing = yield* Effect.fork(
        batched
          ? feed.publishAll(numbered(1, total).map((event) => ({ event })))
          : Effect.forEach(numbered(1, total), (event) => Effect.map(feed.publish(undefined, event), Option.getOrNull))
      )
      const seqs = yield* joinWithin(writing, "every publish completes while a reader is stalled")
      assert.deepStrictEqual(seqs, range(1, total))
      yield* seen(other, total)
      assert.deepStrictEqual(other.seqs(), range(1, total), "the other reader is not held back")

      // Now drain the stalled one: it fell out of the live buffer and catches up from the journal.
      const got: Array<number> = []
      yield* Effect.gen(function* () {
        while (got.length === 0 || got[got.length - 1]! < total) {
          for (const item of yield* pull) if (item._tag === "Change") got.push(item.change.seq)
        }
      }).pipe(Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => `the stalled reader got only ${got}` }))
      assert.deepStrictEqual(got, range(1, total), "every event exactly once, in order")
      // And it rejoins the live tail.
      yield* feed.publish(undefined, deleted(`e${total + 1}`))
      const next = Array.from(yield* pull)
      assert.deepStrictEqual(
        next.map((item) => (item._tag === "Change" ? item.change.seq : item._tag)),
        [total + 1]
      )
    }).pipe(Effect.provide(Env))

  it.scopedLive("stalled_reader_catches_up_from_the_journal_without_slowing_the_writer", () =>
    stalledReaderCatchesUp(false)
  )
  it.scopedLive("stalled_reader_catches_up_after_a_batch_larger_than_its_buffer", () => stalledReaderCatchesUp(true))
})

// ---------------------------------------------------------------------------------------------------------------
// Invariant 7: graceful shutdown journals everything accepted, and ends the readers
// ---------------------------------------------------------------------------------------------------------------

describe("invariant 7: shutdown drains", () => {
  it.scopedLive("shutdown_journals_every_accepted_event_and_ends_live_readers", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const count = 2_000
      const first = yield* openFeed(directory, { queueCapacity: 1_024, maxBatch: 64 })
      const live = yield* follow(first.feed.changes())
      yield* delivered(live, 1)
      yield* recordAll(first.feed, numbered(1, count))
      const dropped = yield* first.feed.droppedCount
      const accepted = count - dropped
      assert.isAbove(accepted, 1_000)
      yield* first.close

      // The live reader's stream completes (no error) with a gap-free prefix of the feed.
      yield* joinWithin(live.fiber, "the live reader ends when its feed closes")
      assert.deepStrictEqual(live.seqs(), range(1, live.seqs().length))

      const second = yield* openFeed(directory)
      assert.strictEqual(yield* second.feed.headSeq, accepted, "every accepted event was journaled")
      assert.deepStrictEqual(
        sessionsOf(yield* journaled(second.feed)),
        range(1, accepted).map((i) => `e${i}`)
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("shutdown_right_after_a_record_keeps_it", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* openFeed(directory)
      yield* settle() // the writer is idle, waiting for work
      first.feed.unsafeRecord(undefined, deleted("e1"))
      yield* first.close // before the writer has run again

      const second = yield* openFeed(directory)
      assert.deepStrictEqual(sessionsOf(yield* journaled(second.feed)), ["e1"])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("shutdown_reports_how_many_queued_items_it_journaled", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { layer, lines: debug } = capturing("Debug")
      // The feed's finalizers log as it was opened.
      const first = yield* openFeed(directory).pipe(Logger.withMinimumLogLevel(LogLevel.Debug), Effect.provide(layer))
      yield* settle() // the writer is idle, waiting for work
      for (const id of ["e1", "e2", "e3"]) first.feed.unsafeRecord(undefined, deleted(id))
      yield* first.close // before the writer has run again
      assert.isTrue(
        debug.some((line) => line.includes("change feed closed: drained 3 queued item(s), head 3")),
        debug.join("\n")
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("shutdown_journals_the_batch_the_writer_was_retrying", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      // A long backoff: the shutdown comes while the writer waits to retry its batch.
      const first = yield* openFeed(directory, { retryBase: 60_000, retryMax: 60_000 })
      faults.failWrites(1)
      const publishing = yield* Effect.fork(first.feed.publish(undefined, deleted("e1")))
      yield* eventually("the append fails", () => faults.writeFailures === 1)
      yield* recordAll(first.feed, numbered(2, 2))
      yield* first.close
      assert.deepStrictEqual(yield* joinWithin(publishing, "the publish is answered"), Option.some(1))

      const second = yield* openFeed(directory)
      assert.deepStrictEqual(sessionsOf(yield* journaled(second.feed)), ["e1", "e2", "e3"])
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("publish_after_close_fails_as_closed", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed, close } = yield* openFeed(directory)
      yield* close
      const error = yield* Effect.flip(feed.publishAll([{ event: deleted("late") }]))
      assert.strictEqual(error._tag, "FeedClosed")
      // Nothing durable to wait for: answered without the feed.
      assert.deepStrictEqual(yield* feed.publishAll([{ event: token("t") }]), [null])
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Markers: caught-up, and progress under a session filter
// ---------------------------------------------------------------------------------------------------------------

describe("markers", () => {
  it.scopedLive("caught_up_is_sent_once_when_replay_reaches_the_head", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)

      const empty = yield* follow(feed.changes())
      yield* delivered(empty, 1)
      assert.deepStrictEqual(empty.items, [{ _tag: "CaughtUp", seq: 0 }])

      yield* feed.publishAll(numbered(1, 3).map((event) => ({ event })))
      const replaying = yield* follow(feed.changes())
      const atHead = yield* follow(feed.changes({ since: 3 }), 3)
      yield* seen(replaying, 3)
      yield* delivered(replaying, 4)
      yield* delivered(atHead, 1)
      yield* feed.publish(undefined, deleted("e4"))
      yield* seen(replaying, 4)
      yield* seen(atHead, 4)
      yield* seen(empty, 4)

      const shape = (items: ReadonlyArray<FeedItem<AgentEvent>>) =>
        items.map((item) =>
          item._tag === "Change" ? item.change.seq : item._tag === "Reset" ? "Reset" : `${item._tag}:${item.seq}`
        )
      assert.deepStrictEqual(shape(replaying.items), [1, 2, 3, "CaughtUp:3", 4])
      assert.deepStrictEqual(shape(atHead.items), ["CaughtUp:3", 4])
      assert.deepStrictEqual(shape(empty.items), ["CaughtUp:0", 1, 2, 3, 4])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("session_filter_delivers_only_that_session_and_progress_moves_the_cursor", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      const publishFor = (session: string, count: number) =>
        feed.publishAll(Array.from({ length: count }, () => ({ sessionId: session, event: complete })))

      yield* publishFor("s2", 2) // 1, 2
      yield* publishFor("s1", 1) // 3
      yield* publishFor("s2", 2) // 4, 5
      const reader = yield* follow(feed.changes({ sessionId: "s1" }))
      yield* seen(reader, 5)
      yield* delivered(reader, 3)
      assert.deepStrictEqual(reader.items, [
        { _tag: "Change", change: (yield* journaled(feed, 2))[0]! },
        { _tag: "Progress", seq: 5 },
        { _tag: "CaughtUp", seq: 5 }
      ])

      // Live: nothing matches for a while, yet the cursor moves.
      yield* publishFor("s2", 3) // 6..8
      yield* seen(reader, 8)
      assert.isTrue(
        reader.items.slice(3).every((item) => item._tag === "Progress"),
        "only progress while nothing matches"
      )
      yield* publishFor("s1", 1) // 9
      yield* seen(reader, 9)
      const changes = reader.changes()
      assert.deepStrictEqual(
        changes.map((c) => c.seq),
        [3, 9]
      )
      assert.isTrue(changes.every((c) => c.session_id === "s1"))
      // Progress only ever moves forward, and never past an event the reader still has to see.
      const cursors = reader.items.map((item) =>
        item._tag === "Change" ? item.change.seq : (item as { readonly seq: number }).seq
      )
      for (let i = 1; i < cursors.length; i++) assert.isTrue(cursors[i - 1]! <= cursors[i]!)
    }).pipe(Effect.provide(Env))
  )
})

describe("journal lines", () => {
  it.scopedLive("change_lines_deliver_each_event_as_its_journal_line_replayed_and_live", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      const publishFor = (session: string, count: number) =>
        feed.publishAll(Array.from({ length: count }, () => ({ sessionId: session, event: complete })))
      const text = (line: Uint8Array) => new TextDecoder().decode(line)
      const shape = (items: ReadonlyArray<LineItem>) =>
        items.map((item) =>
          item._tag === "Change"
            ? [item.seq, item.sessionId, text(wireJson(item))]
            : item._tag === "Reset"
              ? item._tag
              : `${item._tag}:${item.seq}`
        )

      yield* publishFor("s2", 2) // 1, 2
      yield* publishFor("s1", 1) // 3
      yield* publishFor("s2", 2) // 4, 5
      // Unfiltered from 1: replay 2..5, then 6 and 7 live; filtered: 3, progress, then 7 live.
      const all = yield* feed.changeLines({ since: 1 }).pipe(Stream.take(7), Stream.runCollect, Effect.fork)
      const s1 = yield* feed.changeLines({ sessionId: "s1" }).pipe(
        Stream.takeUntil((item) => item._tag === "Change" && item.seq === 7),
        Stream.runCollect,
        Effect.fork
      )
      yield* Effect.sleep("50 millis")
      yield* publishFor("s2", 1) // 6
      yield* publishFor("s1", 1) // 7
      // The journal's lines as written, byte for byte, up to the fields only the journal keeps (key, checksum).
      const lines = NFs.readdirSync(directory)
        .filter((name) => name.startsWith("events-"))
        .sort()
        .flatMap((name) => NFs.readFileSync(`${directory}/${name}`, "utf8").split("\n").slice(0, -1))
        .map((line) => line.replace(/(,"key":"[^"]*")?,"crc":"[0-9a-f]{8}"\}$/, "}"))
      const line = (seq: number, session: string) => [seq, session, lines[seq - 1]!]
      assert.deepStrictEqual(shape([...(yield* joinWithin(all, "the unfiltered reader"))]), [
        line(2, "s2"),
        line(3, "s1"),
        line(4, "s2"),
        line(5, "s2"),
        "CaughtUp:5",
        line(6, "s2"),
        line(7, "s1")
      ])
      const filtered = shape([...(yield* joinWithin(s1, "the filtered reader"))])
      assert.deepStrictEqual(filtered.slice(0, 3), [line(3, "s1"), "Progress:5", "CaughtUp:5"])
      assert.deepStrictEqual(filtered[filtered.length - 1], line(7, "s1"))
      assert.isTrue(
        filtered.slice(3, -1).every((item) => item === "Progress:6"),
        "only progress while nothing matches"
      )
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Epochs: an unclean stop in a mode that can lose broadcast events starts a new one
// ---------------------------------------------------------------------------------------------------------------

describe("epochs", () => {
  const markOpen = (directory: string, mode: string) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      yield* fs.writeFileString(path.join(directory, "OPEN"), `${mode}\n`)
    })

  it.scopedLive("unclean_restart_in_interval_mode_starts_a_new_epoch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* openFeed(directory, { fsync: "interval" })
      yield* first.feed.publishAll(numbered(1, 3).map((event) => ({ event })))
      const epoch = first.feed.epoch
      yield* first.close

      // A clean stop keeps the epoch: cursors stay valid.
      const clean = yield* openFeed(directory, { fsync: "interval" })
      assert.strictEqual(clean.feed.epoch, epoch)
      yield* clean.close

      // The process died: the OPEN marker says so, and that it was in interval mode.
      yield* markOpen(directory, "interval")
      const after = yield* openFeed(directory, { fsync: "interval" })
      assert.notStrictEqual(after.feed.epoch, epoch)
      assert.strictEqual(yield* after.feed.headSeq, 3)
      const status = yield* after.feed.status
      const stale = yield* follow(after.feed.changes({ since: { epoch, seq: 1 } }))
      yield* delivered(stale, 2)
      assert.deepStrictEqual(stale.items.slice(0, 2), [
        reset("epoch_mismatch", 1, status),
        { _tag: "CaughtUp", seq: 3 }
      ])
      const current = yield* follow(after.feed.changes({ since: { epoch: after.feed.epoch, seq: 1 } }), 1)
      yield* seen(current, 3)
      assert.deepStrictEqual(current.seqs(), [2, 3])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("unclean_restart_in_always_mode_keeps_the_epoch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* openFeed(directory, { fsync: "always" })
      yield* first.feed.publish(undefined, deleted("e1"))
      const epoch = first.feed.epoch
      yield* first.close
      yield* markOpen(directory, "always")
      const after = yield* openFeed(directory)
      assert.strictEqual(after.feed.epoch, epoch, "nothing acknowledged in 'always' mode can have been lost")
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The clock: ts is stamped from Effect's Clock; interval syncs follow it
// ---------------------------------------------------------------------------------------------------------------

describe("clock", () => {
  it.scoped("ts_is_stamped_from_the_effect_clock", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const instant = "2031-02-03T04:05:06.789Z"
      yield* TestClock.setTime(Date.parse(instant))
      const { feed } = yield* openFeed(directory)
      const live = yield* follow(feed.changes())
      yield* delivered(live, 1)
      yield* feed.record("s1", deleted("s1"))
      yield* seen(live, 1)
      assert.strictEqual(live.changes()[0]!.ts, instant)
      assert.strictEqual((yield* journaled(feed))[0]!.ts, instant)
    }).pipe(Effect.provide(Env))
  )

  it.scoped("interval_mode_syncs_on_the_clock_not_per_append", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { fsync: "interval", syncInterval: 1_000 })
      // Opening syncs the journal's markers (OPEN, EPOCH) once; what is counted is the syncs of appends.
      const atOpen = faults.syncs
      const syncs = () => faults.syncs - atOpen
      const seq = yield* feed.publish(undefined, deleted("e1"))
      assert.deepStrictEqual(seq, Option.some(1))
      yield* settle()
      assert.strictEqual(syncs(), 0, "no sync per append")

      yield* TestClock.adjust(999)
      yield* settle()
      assert.strictEqual(syncs(), 0, "no sync before the period")
      yield* TestClock.adjust(1)
      yield* eventually("the period's sync", () => syncs() >= 1)
      yield* settle()
      assert.strictEqual(syncs(), 1, "exactly one sync per period")

      // Nothing new: the next period has nothing to sync.
      yield* TestClock.adjust(1_000)
      yield* settle()
      assert.strictEqual(syncs(), 1)
      yield* feed.publish(undefined, deleted("e2"))
      yield* TestClock.adjust(1_000)
      yield* eventually("the next period's sync", () => syncs() >= 2)
      yield* settle()
      assert.strictEqual(syncs(), 2)
    }).pipe(Effect.provide(FaultyEnv))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The in-memory layer, for tests of code that uses the feed
// ---------------------------------------------------------------------------------------------------------------

describe("layerMemory", () => {
  it.scopedLive("memory_feed_records_publishes_and_reads_back", () =>
    Effect.gen(function* () {
      const feed = yield* ChangeFeed.ChangeFeed
      const live = yield* follow(feed.changes())
      yield* delivered(live, 1)
      yield* feed.record("s1", deleted("s1"))
      yield* feed.record("s1", token("ephemeral"))
      assert.deepStrictEqual(yield* feed.publish(undefined, complete), Option.some(2))
      yield* seen(live, 2)
      const onDisk = yield* journaled(feed)
      assert.deepStrictEqual(
        onDisk.map((e) => [e.seq, e.session_id, e.event.type]),
        [
          [1, "s1", "session_deleted"],
          [2, undefined, "complete"]
        ]
      )
      assert.deepStrictEqual([...live.changes()], onDisk)
      const replay = yield* follow(feed.changes({ since: 1 }), 1)
      yield* delivered(replay, 2)
      assert.deepStrictEqual(replay.items, [
        { _tag: "Change", change: onDisk[1]! },
        { _tag: "CaughtUp", seq: 2 }
      ])
    }).pipe(Effect.provide(ChangeFeed.layerMemory()))
  )

  it.scopedLive("memory_feed_resets_below_its_retained_window", () =>
    Effect.gen(function* () {
      const feed = yield* ChangeFeed.ChangeFeed
      yield* feed.publishAll(numbered(1, 5).map((event) => ({ event })))
      const reader = yield* follow(feed.changes())
      yield* delivered(reader, 2)
      assert.deepStrictEqual(reader.items.slice(0, 2), [
        reset("below_retention", 0, { oldestSeq: 4, headSeq: 5 }),
        { _tag: "CaughtUp", seq: 5 }
      ])
    }).pipe(Effect.provide(ChangeFeed.layerMemory({ retainEvents: 2 })))
  )
})

describe("entries still only JSON", () => {
  /** Entries whose events are their JSON, with a count of the parses each kind of reader causes. */
  const jsonEntries = () => {
    let parses = 0
    const parse = (json: Uint8Array): AgentEvent => {
      parses++
      return JSON.parse(new TextDecoder().decode(json))
    }
    const entry = (sessionId: string | undefined, event: AgentEvent) =>
      new JsonEntry(
        sessionId,
        new EventJson(new TextEncoder().encode(JSON.stringify(event)), parse),
        event.type !== "token"
      )
    return {
      entries: [entry("s1", deleted("s1")), entry("s1", token("hi")), entry("s2", complete)],
      parses: () => parses
    }
  }

  it.scopedLive("are_journaled_and_streamed_as_their_bytes_and_decoded_only_for_a_reader_of_events_once_for_all", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      // A reader of lines at the live tail, as the SSE stream is.
      const subscribed = yield* Deferred.make<void>()
      const lines = yield* Effect.fork(
        feed.changeLines().pipe(
          Stream.tap((item) => (item._tag === "CaughtUp" ? Deferred.succeed(subscribed, undefined) : Effect.void)),
          Stream.filter((item): item is LineChange => item._tag === "Change"),
          Stream.take(2),
          Stream.runCollect
        )
      )
      yield* Deferred.await(subscribed)
      const { entries, parses } = jsonEntries()
      assert.deepStrictEqual(yield* feed.publishAll(entries), [1, null, 2])
      assert.deepStrictEqual(
        Chunk.toArray(yield* Fiber.join(lines)).map((line) => new TextDecoder().decode(wireJson(line))),
        (yield* linesOnDisk(directory)).map((change) => JSON.stringify(change))
      )
      assert.strictEqual(parses(), 0, "no reader of events yet: nothing parsed")

      // Readers of events at the live tail get plain objects, the event an own field, decoded once
      // for all from the line the live buffer holds (the producer's JSON is not kept to parse).
      const readers = [yield* follow(feed.changes({ since: 2 }), 2), yield* follow(feed.changes({ since: 2 }), 2)]
      for (const reader of readers) yield* delivered(reader, 1)
      const more = jsonEntries()
      assert.deepStrictEqual(yield* feed.publishAll(more.entries), [3, null, 4])
      for (const reader of readers) yield* seen(reader, 4)
      const expected = (yield* linesOnDisk(directory)).slice(2).map((change) => JSON.parse(JSON.stringify(change)))
      for (const reader of readers) {
        assert.deepStrictEqual(reader.changes(), expected)
        assert.deepStrictEqual(
          reader.changes().map((change) => JSON.parse(JSON.stringify({ ...change }))),
          expected
        )
        assert.deepStrictEqual(Object.keys(reader.changes()[0]!), ["seq", "ts", "session_id", "event"])
      }
      const [first, second] = readers.map((reader) => reader.changes())
      for (let i = 0; i < first!.length; i++) {
        assert.strictEqual(first![i]!.event, second![i]!.event, "every reader gets the event decoded once")
      }
      assert.deepStrictEqual([parses(), more.parses()], [0, 0], "the producer's JSON is never parsed")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive(
    "a_batch_mixing_json_and_values_reaches_readers_of_events_as_the_journal_holds_it_the_values_as_given",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const { feed } = yield* openFeed(directory)
        const reader = yield* follow(feed.changes(), 0)
        yield* delivered(reader, 0)
        const { entries, parses } = jsonEntries()
        const given = deleted("s3")
        // One call, so one batch: a value between events that are only JSON.
        assert.deepStrictEqual(
          yield* feed.publishAll([entries[0]!, { sessionId: "s3", event: given }, entries[2]!]),
          [1, 2, 3]
        )
        yield* seen(reader, 3)
        assert.deepStrictEqual(
          JSON.parse(JSON.stringify(reader.changes())),
          (yield* linesOnDisk(directory)).map((change) => JSON.parse(JSON.stringify(change)))
        )
        assert.strictEqual(reader.changes()[1]!.event, given, "a value is handed on as it was given")
        assert.strictEqual(parses(), 2, "the JSON kept with the values is parsed when read")
      }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_memory_journal_reads_them_back_as_plain_changes", () =>
    Effect.gen(function* () {
      const feed = yield* ChangeFeed.ChangeFeed
      const { entries } = jsonEntries()
      assert.deepStrictEqual(yield* feed.publishAll(entries), [1, null, 2])
      const read = yield* journaled(feed)
      assert.deepStrictEqual(JSON.parse(JSON.stringify(read)), [
        { seq: 1, ts: read[0]!.ts, session_id: "s1", event: deleted("s1") },
        { seq: 2, ts: read[1]!.ts, session_id: "s2", event: complete }
      ])
    }).pipe(Effect.provide(ChangeFeed.layerMemory()))
  )
})
