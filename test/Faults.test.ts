/**
 * Hostile conditions, in-process: a disk that fills up mid-batch, a segment deleted or
 * corrupted under a reader, a clock that jumps, a client that stops reading, and a thousand
 * subscribers of which some stall. In each: nothing accepted is lost, nothing is skipped
 * silently, and the writer keeps its pace with memory bounded.
 */
import { FileSystem, Path } from "@effect/platform"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Chunk, Effect, Either, Fiber, Metric, Option, Stream, TestClock } from "effect"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import type * as ChangeFeed from "../src/ChangeFeed.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import type { FeedItem } from "../src/Domain/FeedItem.js"
import { streamBufferedBytes } from "../src/Http.js"
import { makeSseParser } from "../src/Sse.js"
import { JournalCorrupt } from "../src/Journal.js"
import { startLoopback } from "../harness/Loopback.js"
import { FaultInjector } from "./support/FailingFileSystem.js"
import { deleted, Env, FaultyEnv, follow, journaled, linesOnDisk, openFeed, seen } from "./support/FeedTesting.js"
import { range } from "./support/Expected.js"
import { socketBufferBytes, stalledStream } from "./support/Server.js"
import { tempDir } from "./support/TempDir.js"
import { eventually, joinWithin } from "./support/Wait.js"

type Feed = ChangeFeed.ChangeFeedService<AgentEvent>

/** `count` durable events whose session ids say which publisher sent them and in what order. */
const tagged = (publisher: number, count: number) =>
  Array.from({ length: count }, (_, i) => ({ event: deleted(`w${publisher}-${i}`) }))

const sessionOf = (event: AgentEvent) => ("session_id" in event ? event.session_id : undefined)

/** Pulls a reader's stream until it fails or is caught up; answers what it delivered and how it ended. */
const pullUntilEnd = (pull: Effect.Effect<Chunk.Chunk<FeedItem<AgentEvent>>, Option.Option<unknown>>) =>
  Effect.gen(function* () {
    const items: Array<FeedItem<AgentEvent>> = []
    while (true) {
      const next = yield* Effect.either(pull)
      if (Either.isLeft(next)) return { items, failure: Option.getOrUndefined(next.left) }
      items.push(...next.right)
      if (items.some((item) => item._tag === "CaughtUp")) return { items, failure: undefined }
    }
  })

const changeSeqs = (items: ReadonlyArray<FeedItem<AgentEvent>>) =>
  items.flatMap((item) => (item._tag === "Change" ? [item.change.seq] : []))

/** Segment files of a journal directory, oldest first. */
const segmentFiles = (directory: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = (yield* fs.readDirectory(directory)).filter((name) => /^events-\d{20}\.jsonl$/.test(name)).sort()
    return names.map((name) => ({ name, path: path.join(directory, name), start: Number(name.slice(7, 27)) }))
  })

/** `publishAll` in batches of `size`, one after the other. */
const publishInBatches = (feed: Feed, events: ReadonlyArray<AgentEvent>, size: number) =>
  Effect.forEach(
    range(0, Math.ceil(events.length / size) - 1),
    (i) => feed.publishAll(events.slice(i * size, (i + 1) * size).map((event) => ({ event }))),
    { discard: true }
  )

/** A full garbage collection, so heap figures compare live memory rather than garbage. */
const collectGarbage: () => void = (() => {
  V8.setFlagsFromString("--expose-gc")
  return Vm.runInNewContext("gc") as () => void
})()

const liveMemory = () => {
  collectGarbage()
  const usage = process.memoryUsage()
  return usage.heapUsed + usage.external
}

const MiB = 1024 * 1024

// ---------------------------------------------------------------------------------------------------------------
// The disk fails
// ---------------------------------------------------------------------------------------------------------------

describe("disk full and write errors mid-batch", () => {
  it.scopedLive(
    "concurrent_publishers_through_a_full_disk_lose_nothing_acked_and_leave_no_partial_line",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const faults = yield* FaultInjector
        const { feed } = yield* openFeed(directory, { retryBase: 1, retryMax: 10, segmentBytes: 2048 })
        yield* feed.publishAll(tagged(0, 10))

        // Every write from now on writes half its buffer (a short write), then fails with "disk full".
        faults.failWrites(Number.POSITIVE_INFINITY, "ENOSPC: no space left on device")
        const publishers = yield* Effect.forEach(range(1, 8), (p) =>
          Effect.fork(feed.publishAll(tagged(p, 25), { timeout: 120_000 }))
        )
        yield* eventually("appends have failed repeatedly", () => faults.writeFailures >= 5)
        yield* eventually(
          "the feed reports degraded",
          Effect.map(feed.status, (s) => s.degraded)
        )
        const during = yield* feed.status
        assert.strictEqual(during.headSeq, 10, "a failed append does not move the head")
        assert.include(during.lastError ?? "", "no space left")
        for (const publisher of publishers)
          assert.isNull(publisher.unsafePoll(), "nothing is acknowledged while failing")
        // The fault really is mid-batch: half a batch sits on disk past the committed bytes...
        const fs = yield* FileSystem.FileSystem
        const bytesOnDisk = Effect.flatMap(segmentFiles(directory), (files) =>
          Effect.reduce(files, 0, (sum, file) => Effect.map(fs.stat(file.path), (info) => sum + Number(info.size)))
        )
        yield* eventually(
          "a half-written batch is on disk",
          Effect.map(bytesOnDisk, (bytes) => bytes > during.bytes)
        )

        faults.heal()
        const acked = yield* Effect.forEach(publishers, (fiber, i) =>
          joinWithin(fiber, `publisher ${i + 1} is acknowledged`)
        )
        // ...and once healed it was cut back and rewritten: every line whole, each event exactly once.
        const onDisk = yield* linesOnDisk(directory)
        assert.deepStrictEqual(
          onDisk.map((change) => change.seq),
          range(1, 10 + 8 * 25),
          "seqs contiguous, nothing duplicated"
        )
        for (const [i, seqs] of acked.entries()) {
          assert.strictEqual(seqs.length, 25)
          for (const [k, seq] of seqs.entries()) {
            assert.strictEqual(
              sessionOf(onDisk[seq! - 1]!.event),
              `w${i + 1}-${k}`,
              `acked seq ${seq} holds what was sent`
            )
          }
        }
        assert.deepStrictEqual(yield* journaled(feed), onDisk, "the reader returns exactly what is on disk")
        assert.isFalse((yield* feed.status).degraded, "recovered")
      }).pipe(Effect.provide(FaultyEnv)),
    120_000
  )

  it.scopedLive("closing_while_the_disk_is_full_fails_pending_publishes_and_cuts_the_partial_batch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const first = yield* openFeed(directory, { retryBase: 1, retryMax: 10, drainAttempts: 2 })
      yield* first.feed.publishAll(tagged(0, 10))
      faults.failWrites(Number.POSITIVE_INFINITY)
      const pending = yield* Effect.fork(first.feed.publishAll(tagged(1, 20), { timeout: 120_000 }))
      yield* eventually("an append has failed", () => faults.writeFailures >= 2)

      yield* first.close
      const exit = yield* Fiber.await(pending)
      assert.isTrue(
        exit._tag === "Failure" && Cause.failureOption(exit.cause).pipe(Option.exists((e) => e._tag === "FeedClosed")),
        "the caller is told its events were not journaled"
      )
      // The half batch the last failed write left is gone: the file ends on the last committed line.
      assert.deepStrictEqual(
        (yield* linesOnDisk(directory)).map((change) => change.seq),
        range(1, 10)
      )

      faults.heal()
      const second = yield* openFeed(directory)
      assert.strictEqual(yield* second.feed.headSeq, 10, "no seq was consumed by what failed")
      assert.deepStrictEqual(yield* second.feed.publish(undefined, deleted("after")), Option.some(11))
    }).pipe(Effect.provide(FaultyEnv))
  )

  it.scopedLive("sync_failures_mid_stream_are_retried_without_duplicating_a_line", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { retryBase: 1, retryMax: 10, segmentBytes: 2048 })
      const publishers = yield* Effect.forEach(range(1, 6), (p) =>
        Effect.fork(Effect.forEach(range(0, 4), (k) => feed.publishAll(tagged(p * 10 + k, 4), { timeout: 120_000 })))
      )
      faults.failSyncs(7, "EIO: i/o error")
      yield* Effect.forEach(publishers, (fiber) => joinWithin(fiber, "a publisher is acknowledged"))
      assert.strictEqual(faults.syncFailures, 7)
      assert.deepStrictEqual(
        (yield* linesOnDisk(directory)).map((change) => change.seq),
        range(1, 6 * 5 * 4)
      )
    }).pipe(Effect.provide(FaultyEnv))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Events the journal cannot encode
// ---------------------------------------------------------------------------------------------------------------

/** Content nested `depth` arrays deep: valid JSON to parse, but `JSON.stringify` overflows the stack on it. */
const nested = (depth: number): unknown => {
  let value: unknown = []
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

const message = (id: string, content: unknown): AgentEvent => ({
  type: "message_appended",
  session_id: "s",
  message_id: id,
  role: "user",
  content
})

describe("events the journal cannot encode", () => {
  it.scopedLive("an_unencodable_event_is_refused_alone_and_the_writer_goes_on_with_contiguous_seqs", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      yield* feed.publish(undefined, deleted("before"))
      // Queued together, so the writer likely takes them as one batch with the poisoned ones in the
      // middle; however it batches them, only those two may be refused.
      const fibers = yield* Effect.forEach(
        [
          message("a", "ok"),
          message("deep", nested(100_000)),
          message("b", "ok"),
          message("big", 10n),
          message("c", "ok")
        ],
        (event) => Effect.fork(Effect.exit(feed.publish(undefined, event))),
        { concurrency: "unbounded" }
      )
      feed.unsafeRecord(undefined, message("recorded-deep", nested(100_000)))
      const exits = yield* Effect.forEach(fibers, (fiber) => joinWithin(fiber, "the publish is answered"))
      const answered = exits.map((exit) => (exit._tag === "Success" ? Option.getOrNull(exit.value) : "refused"))
      assert.deepStrictEqual([answered[1], answered[3]], ["refused", "refused"], "the unencodable ones are refused")
      const seqs = [answered[0], answered[2], answered[4]] as Array<number>
      assert.deepStrictEqual(
        [...seqs].sort((a, b) => a - b),
        [2, 3, 4],
        "the others are journaled, no seq skipped"
      )
      yield* eventually(
        "the recorded one is counted as dropped",
        Effect.map(feed.droppedCount, (n) => n === 1)
      )
      assert.deepStrictEqual(yield* feed.publish(undefined, deleted("after")), Option.some(5), "the writer is alive")
      const onDisk = yield* linesOnDisk(directory)
      assert.deepStrictEqual(
        onDisk.map((change) => change.seq),
        range(1, 5)
      )
      for (const [i, id] of ["a", "b", "c"].entries()) {
        assert.strictEqual((onDisk[seqs[i]! - 1]!.event as { message_id?: string }).message_id, id)
      }
      assert.isFalse((yield* feed.status).degraded)
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The journal changes under a reader
// ---------------------------------------------------------------------------------------------------------------

describe("a segment deleted or corrupted under a reader", () => {
  it.scopedLive("a_segment_deleted_by_hand_mid_replay_fails_the_reader_with_JournalCorrupt_never_a_skip", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory, { segmentBytes: 1024 })
      yield* publishInBatches(
        feed,
        range(1, 80).map((i) => deleted(`e${i}`)),
        4
      )
      const files = yield* segmentFiles(directory)
      assert.isAtLeast(files.length, 5)

      const pull = yield* Stream.toPull(feed.changes({ since: 0 }))
      const firstChunk = yield* pull
      assert.deepStrictEqual(
        changeSeqs(Chunk.toArray(firstChunk)),
        range(1, files[1]!.start - 1),
        "mid-replay: the first segment"
      )
      const fs = yield* FileSystem.FileSystem
      yield* fs.remove(files[2]!.path)

      const { failure, items } = yield* pullUntilEnd(pull)
      assert.deepStrictEqual(changeSeqs(items), range(files[1]!.start, files[2]!.start - 1), "nothing past the hole")
      assert.instanceOf(failure, JournalCorrupt)
      const corrupt = failure as JournalCorrupt
      assert.strictEqual(corrupt.file, files[2]!.path)
      assert.include(corrupt.reason, "missing")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("segments_pruned_by_retention_under_a_paused_reader_give_it_a_reset_then_the_live_tail", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory, { segmentBytes: 1024, retention: { segments: 3 } })
      yield* publishInBatches(
        feed,
        range(1, 20).map((i) => deleted(`e${i}`)),
        4
      )
      const oldest = (yield* feed.status).oldestSeq
      const pull = yield* Stream.toPull(feed.changes({ since: oldest - 1 }))
      const firstChunk = Chunk.toArray(yield* pull)
      const delivered = changeSeqs(firstChunk)
      assert.isAbove(delivered.length, 0)
      assert.deepStrictEqual(delivered, range(oldest, oldest + delivered.length - 1))

      // The reader pauses; the writer rotates on and retention removes what the reader still needs.
      yield* publishInBatches(
        feed,
        range(21, 80).map((i) => deleted(`e${i}`)),
        4
      )
      const window = yield* feed.status
      assert.isAbove(window.oldestSeq, delivered[delivered.length - 1]! + 1, "the reader's next event was pruned")

      const { failure, items } = yield* pullUntilEnd(pull)
      assert.isUndefined(failure)
      const all = [...firstChunk, ...items]
      const resetAt = all.findIndex((item) => item._tag === "Reset")
      assert.isAtLeast(resetAt, 0, "the reader is told it must resync")
      const before = changeSeqs(all.slice(0, resetAt))
      assert.deepStrictEqual(before, range(oldest, oldest + before.length - 1), "contiguous up to the reset")
      const reset = all[resetAt]!
      assert.deepInclude(reset, {
        _tag: "Reset",
        reason: "below_retention",
        fromSeq: before[before.length - 1] ?? oldest - 1
      })
      assert.deepStrictEqual(all.slice(resetAt + 1), [{ _tag: "CaughtUp", seq: 80 }], "then straight to the head")

      yield* feed.publish(undefined, deleted("e81"))
      assert.deepStrictEqual(changeSeqs(Chunk.toArray(yield* pull)), [81], "and the live tail")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_segment_corrupted_under_a_reader_fails_it_with_JournalCorrupt_naming_file_and_offset", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory, { segmentBytes: 1024 })
      yield* publishInBatches(
        feed,
        range(1, 40).map((i) => deleted(`e${i}`)),
        4
      )
      const files = yield* segmentFiles(directory)
      const pull = yield* Stream.toPull(feed.changes({ since: 0 }))
      yield* pull

      // Bit rot in the second segment: its fourth line overwritten in place, same length.
      const fs = yield* FileSystem.FileSystem
      const target = files[1]!
      const lines = (yield* fs.readFileString(target.path)).split("\n")
      const offset = Buffer.byteLength(lines.slice(0, 3).join("\n") + "\n")
      lines[3] = "#".repeat(lines[3]!.length)
      yield* fs.writeFileString(target.path, lines.join("\n"))

      const { failure, items } = yield* pullUntilEnd(pull)
      assert.deepStrictEqual(changeSeqs(items), range(target.start, target.start + 2), "the good lines before it first")
      assert.instanceOf(failure, JournalCorrupt)
      const corrupt = failure as JournalCorrupt
      assert.strictEqual(corrupt.file, target.path)
      assert.strictEqual(corrupt.offset, offset)
      assert.include(corrupt.message, `${target.path} at byte ${offset}`)
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("over_sse_a_corrupt_segment_ends_the_stream_with_an_error_frame_naming_file_and_offset", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* startLoopback({ directory, feed: { segmentBytes: 1024 } })
      yield* publishInBatches(
        server.feed,
        range(1, 30).map((i) => deleted(`e${i}`)),
        3
      )
      const files = yield* segmentFiles(directory)
      const fs = yield* FileSystem.FileSystem
      const text = yield* fs.readFileString(files[1]!.path)
      yield* fs.writeFileString(files[1]!.path, "garbage" + text.slice(7))

      const body = yield* Effect.promise(() =>
        fetch(`${server.url}/api/v1/stream?since=0`, { signal: AbortSignal.timeout(30_000) }).then((r) => r.text())
      )
      const frames: Array<{ event: string; data: string }> = []
      makeSseParser((frame) => frames.push(frame))(body)
      const last = frames[frames.length - 1]!
      assert.strictEqual(last.event, "feed_error", "the stream ends on an error frame, not silently")
      assert.include(JSON.parse(last.data).message, `${files[1]!.path} at byte 0`)
      const seqs = frames.filter((f) => f.event === "message").map((f) => JSON.parse(f.data).seq)
      assert.deepStrictEqual(seqs, range(1, files[1]!.start - 1), "everything before the corruption, nothing after")
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The clock jumps
// ---------------------------------------------------------------------------------------------------------------

describe("a clock that jumps", () => {
  it.scoped("seqs_stay_contiguous_and_ordered_while_ts_follows_the_clock_backwards_and_forwards", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const times = [
        "2026-11-27T10:00:00.000Z",
        "2026-11-27T09:00:00.000Z", // an hour back (NTP step)
        "2026-11-27T09:00:00.000Z", // stuck
        "2031-01-01T00:00:00.001Z", // years ahead
        "1999-12-31T23:59:59.999Z", // far behind
        "2026-11-27T10:00:00.500Z"
      ]
      const first = yield* openFeed(directory)
      const reader = yield* follow(first.feed.changes({ since: 0 }))
      for (const [i, time] of times.entries()) {
        yield* TestClock.setTime(Date.parse(time))
        assert.deepStrictEqual(yield* first.feed.publish(undefined, deleted(`t${i}`)), Option.some(i + 1))
      }
      yield* seen(reader, times.length)
      const expected = times.map((ts, i) => ({ seq: i + 1, ts, session_id: `t${i}`, event: deleted(`t${i}`) }))
      assert.deepStrictEqual(reader.changes(), expected, "live: in seq order, ts as the clock said")
      assert.deepStrictEqual(yield* journaled(first.feed), expected, "journal: the same")
      yield* first.close

      // Reopened with the clock far behind what the journal holds: seqs continue from the head.
      yield* TestClock.setTime(Date.parse("1970-01-02T00:00:00.000Z"))
      const second = yield* openFeed(directory)
      assert.deepStrictEqual(yield* second.feed.publish(undefined, deleted("late")), Option.some(times.length + 1))
      const all = yield* journaled(second.feed)
      assert.deepStrictEqual(
        all.map((change) => change.seq),
        range(1, times.length + 1)
      )
      assert.strictEqual(all[all.length - 1]!.ts, "1970-01-02T00:00:00.000Z")
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Events of about 1 MB
// ---------------------------------------------------------------------------------------------------------------

const megabyte = "x".repeat(1_000_000)
/** An event of about 1 MB (its content), each under the HTTP body limit. */
const large = (i: number): AgentEvent => ({
  type: "message_appended",
  session_id: "s",
  message_id: `m${i}`,
  role: "user",
  content: megabyte
})
const messageIds = (events: ReadonlyArray<{ readonly event: AgentEvent }>) =>
  events.map(({ event }) => (event.type === "message_appended" ? event.message_id : event.type))

describe("events of about 1 MB", () => {
  it.scopedLive(
    "the_live_buffer_never_holds_more_than_its_byte_budget_and_a_reader_it_slid_past_catches_up_from_the_journal",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const budget = 16 * MiB
        const { feed } = yield* openFeed(directory, { fsync: "never", liveBufferBytes: budget })
        // One reader that stops reading once attached, one that keeps up.
        const stalled = yield* Stream.toPull(feed.changes({ since: 0 }))
        assert.deepStrictEqual(Chunk.toArray(yield* stalled), [{ _tag: "CaughtUp", seq: 0 }])
        const following = yield* follow(feed.changes({ since: 0 }))

        const count = 40
        let most = 0
        for (let i = 1; i <= count; i++) {
          yield* feed.publish(undefined, large(i))
          most = Math.max(most, (yield* feed.status).liveBytes)
        }
        const status = yield* feed.status
        assert.isAtMost(most, budget, "the live buffer's bytes stayed within its budget")
        assert.isAbove(most, budget / 2, "and it was used")
        assert.isBelow(status.liveEvents, count, "it let go of its oldest events")

        // Resumed, the stalled reader finds the buffer slid past it and reads the journal.
        const items: Array<FeedItem<AgentEvent>> = []
        while (changeSeqs(items).length < count) items.push(...(yield* stalled))
        assert.deepStrictEqual(changeSeqs(items), range(1, count))
        assert.isFalse(
          items.some((item) => item._tag === "Reset"),
          "caught up from the journal, no reset"
        )
        yield* eventually("the following reader has everything", () => following.seqs().length === count)
        assert.deepStrictEqual(following.seqs(), range(1, count))
      }).pipe(Effect.provide(Env)),
    120_000
  )

  it.scopedLive(
    "the_intake_never_holds_more_than_its_byte_budget_record_drops_past_it_and_publish_is_refused_as_busy",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const faults = yield* FaultInjector
        const budget = 16 * MiB
        const { feed } = yield* openFeed(directory, { queueBytes: budget, retryBase: 20, retryMax: 20 })
        faults.failWrites(Number.POSITIVE_INFINITY)
        yield* feed.record(undefined, large(1))
        // The writer holds its batch in retry (its bytes still count); the queue behind it fills up.
        yield* eventually("the writer is stuck", () => faults.writeFailures >= 1)
        let most = 0
        for (let i = 2; i <= 60; i++) {
          yield* feed.record(undefined, large(i))
          most = Math.max(most, (yield* feed.status).queuedBytes)
        }
        assert.isAtMost(most, budget, "the intake's bytes stayed within its budget")
        const accepted = 60 - (yield* feed.droppedCount)
        assert.isAtLeast(accepted, 4, "as many as fit were taken")
        assert.isAtMost(accepted, 8, "each counts at least 2 MB (its content as UTF-16)")

        const error = yield* Effect.flip(feed.publish(undefined, large(0), { timeout: 50 }))
        assert.strictEqual(error._tag, "FeedBusy")

        faults.heal()
        yield* eventually(
          "everything accepted is journaled",
          Effect.map(feed.headSeq, (head) => head === accepted)
        )
        yield* eventually(
          "the intake is empty",
          Effect.map(feed.status, (s) => s.queuedBytes === 0)
        )
        assert.deepStrictEqual(
          messageIds(yield* journaled(feed)),
          range(1, accepted).map((i) => `m${i}`)
        )
      }).pipe(Effect.provide(FaultyEnv)),
    120_000
  )

  it.scopedLive("the_writer_caps_a_batch_by_bytes_and_journals_a_backlog_of_large_events_in_several_writes", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const faults = yield* FaultInjector
      const { feed } = yield* openFeed(directory, { maxBatchBytes: 4 * MiB, retryBase: 20, retryMax: 20 })
      faults.failWrites(Number.POSITIVE_INFINITY)
      yield* feed.record(undefined, large(1))
      yield* eventually("the writer is stuck", () => faults.writeFailures >= 1)
      for (let i = 2; i <= 13; i++) yield* feed.record(undefined, large(i))
      assert.strictEqual(yield* feed.droppedCount, 0)
      const writesBefore = faults.writes
      faults.heal()
      yield* eventually(
        "the backlog is journaled",
        Effect.map(feed.headSeq, (head) => head === 13)
      )
      // The stuck event, then 12 queued ones of about 2 MB each by the estimate: two per batch.
      assert.strictEqual(faults.writes - writesBefore, 1 + 6)
      assert.deepStrictEqual(
        messageIds(yield* journaled(feed)),
        range(1, 13).map((i) => `m${i}`)
      )
    }).pipe(Effect.provide(FaultyEnv))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Readers that stop reading
// ---------------------------------------------------------------------------------------------------------------

/** An SSE client that reads everything, checking the seqs go up by one. */
const countingStream = (url: string) =>
  Effect.gen(function* () {
    const state = { last: 0, holes: 0 }
    const abort = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => abort.abort()))
    const response = yield* Effect.promise(() => fetch(url, { signal: abort.signal }))
    const reader = response.body!.getReader()
    const decoder = new TextDecoder()
    const parse = makeSseParser((frame) => {
      if (frame.event !== "message") return
      const seq = JSON.parse(frame.data).seq as number
      if (seq !== state.last + 1) state.holes++
      state.last = seq
    })
    void (async () => {
      try {
        while (true) {
          const { done, value } = await reader.read()
          if (done) return
          parse(decoder.decode(value, { stream: true }))
        }
      } catch {
        // aborted at the end of the test
      }
    })()
    return state
  })

const bufferedByStreams = Effect.map(Metric.value(streamBufferedBytes), (state) => state.value)

describe("a client that stops reading", () => {
  it.scopedLive(
    "an_sse_client_that_never_reads_slows_neither_the_writer_nor_other_readers_and_its_connection_holds_at_most_its_budget",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const budget = 1 * MiB
        const server = yield* startLoopback({
          directory,
          feed: { fsync: "never" },
          http: { streamBufferBytes: budget }
        })
        const content = "x".repeat(1000)
        const events = (from: number, count: number): Array<AgentEvent> =>
          Array.from({ length: count }, (_, i) => ({
            type: "message_appended",
            session_id: "s",
            message_id: `m${from + i}`,
            role: "user",
            content
          }))
        const stream = `${server.url}/api/v1/stream?since=0`

        // Baseline pace of the writer, before anyone stalls.
        const warmup = 5_000
        let started = Date.now()
        yield* publishInBatches(server.feed, events(1, warmup), 500)
        const baselineMs = Date.now() - started

        const bufferedBefore = yield* bufferedByStreams
        const reader = yield* countingStream(stream)
        const stalled = yield* stalledStream(stream)
        assert.strictEqual(stalled.statusCode, 200)
        yield* eventually(
          "both clients are subscribed",
          Effect.map(server.feed.status, (s) => s.subscribers === 2)
        )

        // Far more than the socket's buffers can take (32 MB more than this machine's kernel
        // allows for one connection), so a server that buffered for the stalled client would
        // hold tens of MB for it, whatever the machine's socket buffer sizes.
        const total = Math.ceil((socketBufferBytes() + 32 * MiB) / content.length)
        let mostBuffered = 0
        const watching = yield* Effect.fork(
          Effect.forever(
            Effect.zipRight(
              Effect.map(bufferedByStreams, (bytes) => (mostBuffered = Math.max(mostBuffered, bytes - bufferedBefore))),
              Effect.sleep("5 millis")
            )
          )
        )
        started = Date.now()
        yield* publishInBatches(server.feed, events(warmup + 1, total), 500)
        const stalledMs = Date.now() - started
        yield* eventually("the reading client has everything", () => reader.last === warmup + total, 120_000)
        yield* Fiber.interrupt(watching)
        // The reading client's connection is empty now: what is left is the stalled one's.
        const heldForStalled = (yield* bufferedByStreams) - bufferedBefore

        assert.strictEqual(reader.holes, 0, "the reading client saw every seq in order")
        assert.isAbove(heldForStalled, 0, "the stalled client's connection holds frames it could not send")
        assert.isAtMost(heldForStalled, budget, "the stalled client's connection holds at most its budget")
        assert.isAtMost(mostBuffered, 2 * budget, "neither connection ever held more than its budget")
        const status = yield* server.feed.status
        assert.isAtMost(status.liveBytes, 32 * MiB, "the live buffer holds at most its budget")
        const perEventBaseline = baselineMs / warmup
        const perEventStalled = stalledMs / total
        assert.isBelow(
          perEventStalled,
          perEventBaseline * 5 + 0.5,
          `the writer's pace: ${perEventStalled.toFixed(3)} ms/event with a stalled client, ${perEventBaseline.toFixed(3)} before`
        )
        assert.isFalse(stalled.destroyed, "the stalled client is still connected")
      }).pipe(Effect.provide(Env)),
    180_000
  )

  it.scopedLive("an_sse_client_that_never_reads_does_not_hold_up_the_servers_shutdown", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const server = yield* startLoopback({ directory, feed: { fsync: "never" } })
      const bufferedBefore = yield* bufferedByStreams
      yield* stalledStream(`${server.url}/api/v1/stream`)
      yield* eventually(
        "the client is subscribed",
        Effect.map(server.feed.status, (s) => s.subscribers === 1)
      )
      // More than the socket's buffers take: the server is left with frames it cannot send.
      const content = "x".repeat(100_000)
      const count = Math.ceil((socketBufferBytes() + 8 * MiB) / content.length)
      const events = Array.from({ length: count }, (_, i): AgentEvent => ({
        type: "message_appended",
        session_id: "s",
        message_id: `m${i}`,
        role: "user",
        content
      }))
      yield* publishInBatches(server.feed, events, 50)
      yield* eventually(
        "the connection holds frames it cannot send",
        Effect.map(bufferedByStreams, (bytes) => bytes > bufferedBefore)
      )

      const closed = yield* server.close.pipe(Effect.disconnect, Effect.timeout("30 seconds"), Effect.option)
      assert.isTrue(Option.isSome(closed), "the server closed with the stalled client connected")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive(
    "a_thousand_subscribers_some_stalled_do_not_hold_up_publishing_and_all_receive_everything_in_order",
    () =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        // A small live buffer: the stalled subscribers fall far behind it and must catch up from the journal.
        const { feed } = yield* openFeed(directory, { fsync: "never", liveBuffer: 128 })
        const subscribers = 1000
        const total = 1000
        const readers = yield* Effect.forEach(range(0, subscribers - 1), (i) =>
          Effect.gen(function* () {
            const pull = yield* Stream.toPull(feed.changes({ since: 0 }))
            const state = { last: 0, disorder: 0, resets: 0, stalled: i % 5 === 0 }
            // Every subscriber is attached (its first item, caught up at 0) before publishing starts.
            const first = Chunk.toArray(yield* pull)
            assert.deepStrictEqual(first, [{ _tag: "CaughtUp", seq: 0 }])
            const readOn = Effect.gen(function* () {
              while (state.last < total) {
                for (const item of yield* pull) {
                  if (item._tag === "Reset") state.resets++
                  if (item._tag !== "Change") continue
                  if (item.change.seq !== state.last + 1) state.disorder++
                  state.last = item.change.seq
                }
              }
            })
            return { state, readOn }
          })
        )
        assert.strictEqual((yield* feed.status).subscribers, subscribers)
        const memoryBefore = liveMemory()

        const active = yield* Effect.forEach(
          readers.filter((r) => !r.state.stalled),
          (r) => Effect.fork(r.readOn)
        )
        const publishing = yield* Effect.fork(
          publishInBatches(
            feed,
            range(1, total).map((i) => deleted(`e${i}`)),
            20
          )
        )
        yield* joinWithin(publishing, "every publish completes", 120_000)
        yield* Effect.forEach(active, (fiber) => joinWithin(fiber, "an active reader has everything", 120_000))
        const growth = liveMemory() - memoryBefore

        for (const { state } of readers.filter((r) => !r.state.stalled)) {
          assert.deepStrictEqual(state, { last: total, disorder: 0, resets: 0, stalled: false })
        }
        const stalled = readers.filter((r) => r.state.stalled)
        assert.isTrue(
          stalled.every((r) => r.state.last === 0),
          "the stalled ones had not read anything"
        )

        // Resumed, the stalled subscribers catch up from the journal: everything, in order, no reset.
        yield* Effect.forEach(stalled, (r) => r.readOn, { concurrency: 50 })
        for (const { state } of stalled)
          assert.deepStrictEqual(state, { last: total, disorder: 0, resets: 0, stalled: true })
        assert.isBelow(
          growth,
          64 * MiB,
          `memory grew by ${(growth / MiB).toFixed(1)} MiB with ${subscribers} subscribers`
        )
      }).pipe(Effect.provide(Env)),
    180_000
  )
})
