/**
 * Resets: a reader whose cursor the journal cannot serve is told so, with the exact window,
 * and continues live after the head — for each reason, at the boundary of the retained window,
 * and when retention removes what a reader was about to replay.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { AgentEvent } from "../../src/Domain/AgentEvent.js"
import type { FeedItem } from "../../src/Domain/FeedItem.js"
import {
  delivered,
  Env,
  type Feed,
  follow,
  numbered,
  openFeed,
  range,
  reset,
  seen,
  tempDir
} from "../support/FeedTesting.js"

/** Rotates every 3 events or so (a line is ~110 bytes); keeps `segments` segments. */
const small = (segments: number) => ({ segmentBytes: 300, retention: { segments } })

/** Publishes one event per batch (one batch per write, so rotation happens between them). */
const publishEach = (feed: Feed, from: number, count: number) =>
  Effect.forEach(numbered(from, count), (event) => feed.publish(undefined, event), { discard: true })

const changeAt = (feed: Feed, seq: number) =>
  Effect.map(Stream.runCollect(feed.read(seq - 1, seq)), (events): FeedItem<AgentEvent> => {
    const [change] = events
    assert.isDefined(change)
    return { _tag: "Change", change: change! }
  })

/** A feed whose oldest events were pruned: 20 events, 2 segments kept. */
const pruned = Effect.gen(function* () {
  const directory = yield* tempDir
  const { feed } = yield* openFeed(directory, small(2))
  yield* publishEach(feed, 1, 20)
  const status = yield* feed.status
  assert.strictEqual(status.headSeq, 20)
  assert.isAbove(status.oldestSeq, 4, "retention pruned the first segments")
  assert.strictEqual(status.segments, 2)
  return { feed, status }
})

/** Reads from `since` until the first event after the current head, which it publishes. */
const readPastHead = (feed: Feed, since: Parameters<Feed["changes"]>[0], head: number, expected: number) =>
  Effect.gen(function* () {
    const reader = yield* follow(feed.changes(since))
    yield* delivered(reader, expected - 1)
    yield* feed.publish(undefined, numbered(head + 1, 1)[0]!)
    yield* seen(reader, head + 1)
    yield* delivered(reader, expected)
    return reader.items
  })

describe("resets", () => {
  it.scopedLive("since_zero_after_pruning_resets_below_retention_then_continues_live", () =>
    Effect.gen(function* () {
      const { feed, status } = yield* pruned
      const items = yield* readPastHead(feed, { since: 0 }, 20, 3)
      assert.deepStrictEqual(items, [
        reset("below_retention", 0, status),
        { _tag: "CaughtUp", seq: 20 },
        yield* changeAt(feed, 21)
      ])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("cursor_just_below_the_oldest_retained_event_needs_no_reset", () =>
    Effect.gen(function* () {
      const { feed, status } = yield* pruned
      const oldest = status.oldestSeq
      const servable = yield* follow(feed.changes({ since: oldest - 1 }), oldest - 1)
      yield* seen(servable, 20)
      assert.deepStrictEqual(servable.seqs(), range(oldest, 20))
      assert.strictEqual(servable.items[0]!._tag, "Change")

      const [first] = yield* readPastHead(feed, { since: oldest - 2 }, 20, 3)
      assert.deepStrictEqual(first, reset("below_retention", oldest - 2, status), "one more is a reset")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("cursor_ahead_of_the_head_resets_ahead_of_head", () =>
    Effect.gen(function* () {
      const { feed, status } = yield* pruned
      const items = yield* readPastHead(feed, { since: 25 }, 20, 3)
      assert.deepStrictEqual(items, [
        reset("ahead_of_head", 25, status),
        { _tag: "CaughtUp", seq: 20 },
        yield* changeAt(feed, 21)
      ])
      // The head itself is servable: nothing to replay, no reset.
      const atHead = yield* follow(feed.changes({ since: 21 }), 21)
      yield* delivered(atHead, 1)
      assert.deepStrictEqual(atHead.items, [{ _tag: "CaughtUp", seq: 21 }])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("cursor_ahead_of_an_empty_journal_resets_to_zero", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory)
      const items = yield* readPastHead(feed, { since: 5 }, 0, 3)
      assert.deepStrictEqual(items, [
        reset("ahead_of_head", 5, { oldestSeq: 1, headSeq: 0 }),
        { _tag: "CaughtUp", seq: 0 },
        yield* changeAt(feed, 1)
      ])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("cursor_from_another_epoch_resets_epoch_mismatch", () =>
    Effect.gen(function* () {
      const { feed, status } = yield* pruned
      const items = yield* readPastHead(feed, { since: { epoch: "ffff", seq: 1 } }, 20, 3)
      assert.deepStrictEqual(items, [
        reset("epoch_mismatch", 1, status),
        { _tag: "CaughtUp", seq: 20 },
        yield* changeAt(feed, 21)
      ])
      // The feed's own epoch is checked, not merely present: the same cursor in this epoch is served.
      const same = yield* follow(feed.changes({ since: { epoch: feed.epoch, seq: 20 } }), 20)
      yield* delivered(same, 2)
      assert.deepStrictEqual(same.items, [yield* changeAt(feed, 21), { _tag: "CaughtUp", seq: 21 }])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("reader_whose_next_segment_is_pruned_under_it_gets_a_reset", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const { feed } = yield* openFeed(directory, small(3))
      yield* publishEach(feed, 1, 9)
      const before = yield* feed.status
      assert.strictEqual(before.oldestSeq, 1, "nothing pruned yet")
      assert.strictEqual(before.segments, 3)

      // The reader replays the first segment, then stalls.
      const pull = yield* Stream.toPull(feed.changes())
      const first = Array.from(yield* pull)
      const replayed = first.flatMap((item) => (item._tag === "Change" ? [item.change.seq] : []))
      assert.deepStrictEqual(replayed, [1, 2, 3], "the first pull replays the first segment only")

      // Meanwhile retention removes the segments it has not read yet.
      yield* publishEach(feed, 10, 9)
      const after = yield* feed.status
      assert.isAbove(after.oldestSeq, 4, "the reader's next event was pruned")

      const rest: Array<FeedItem<AgentEvent>> = []
      while (rest.length < 2) rest.push(...(yield* pull))
      assert.deepStrictEqual(rest, [reset("below_retention", 3, after), { _tag: "CaughtUp", seq: 18 }])
      yield* feed.publish(undefined, numbered(19, 1)[0]!)
      assert.deepStrictEqual(Array.from(yield* pull), [yield* changeAt(feed, 19)])
    }).pipe(Effect.provide(Env))
  )
})
