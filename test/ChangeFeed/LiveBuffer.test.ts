/**
 * The shared live buffer: what a reader at a cursor finds (events after it, nothing yet, a gap
 * once the buffer slid past it, the end once closed), its bounds in events and in bytes, and
 * waking waiting readers.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { LiveBuffer } from "../../src/ChangeFeed/LiveBuffer.js"
import { range } from "../support/Expected.js"

/** The slots that still reference an event: what the buffer keeps in memory. */
const referenced = <T>(buffer: LiveBuffer<T>) =>
  (buffer as unknown as { items: Array<T | undefined> }).items.filter((item) => item !== undefined).length

describe("LiveBuffer", () => {
  it("its_slots_grow_with_what_it_holds_and_every_event_stays_in_order_across_each_growth", () => {
    const buffer = new LiveBuffer<number>(1000)
    buffer.push(1, [1, 2, 3])
    assert.isAtMost(buffer.slots, 16, "a quiet feed holds a few slots, not its capacity")
    // Random batch sizes across every growth, up to the capacity and past it.
    let seed = 7
    let next = 4
    while (next <= 2500) {
      seed = (seed * 1103515245 + 12345) % 2147483648
      const size = 1 + (seed % 97)
      buffer.push(next, range(next, next + size - 1))
      next += size
      const last = next - 1
      const held = Math.min(last, 1000)
      assert.strictEqual(buffer.size, held)
      assert.isAtMost(buffer.slots, 1000)
      assert.deepStrictEqual(buffer.after(last - held, 5000), range(last - held + 1, last), `after pushing to ${last}`)
      if (last > 1000) assert.strictEqual(buffer.after(last - held - 1, 10), "gap")
    }
    assert.strictEqual(buffer.slots, 1000)
  })

  it("hands_out_the_events_after_a_cursor_in_order", () => {
    const buffer = new LiveBuffer<number>(8)
    assert.deepStrictEqual(buffer.after(0, 100), [], "nothing held yet")
    buffer.push(11, range(11, 13)) // a feed whose journal already held 1..10
    buffer.push(14, range(14, 15))
    assert.deepStrictEqual(buffer.after(10, 100), range(11, 15))
    assert.deepStrictEqual(buffer.after(12, 100), [13, 14, 15])
    assert.deepStrictEqual(buffer.after(12, 2), [13, 14], "at most max")
    assert.deepStrictEqual(buffer.after(15, 100), [], "nothing after the newest")
    assert.deepStrictEqual(buffer.after(20, 100), [], "a cursor ahead of the buffer waits")
  })

  it("says_gap_once_it_no_longer_holds_the_event_after_the_cursor", () => {
    const buffer = new LiveBuffer<number>(4)
    buffer.push(1, range(1, 3))
    assert.deepStrictEqual(buffer.after(0, 100), [1, 2, 3])
    buffer.push(4, range(4, 6)) // holds 3..6 now
    assert.strictEqual(buffer.after(0, 100), "gap")
    assert.strictEqual(buffer.after(1, 100), "gap")
    assert.deepStrictEqual(buffer.after(2, 100), [3, 4, 5, 6])
    buffer.push(7, range(7, 20)) // a batch larger than the buffer: only its last 4 are held
    assert.strictEqual(buffer.after(15, 100), "gap")
    assert.deepStrictEqual(buffer.after(16, 100), [17, 18, 19, 20])
  })

  it("lets_go_of_its_oldest_batches_past_its_byte_budget_and_always_keeps_the_newest", () => {
    const buffer = new LiveBuffer<number>(100, 3_000_000)
    buffer.push(1, [1], 1_000_000)
    buffer.push(2, [2, 3], 1_500_000)
    assert.deepStrictEqual([buffer.size, buffer.bytes], [3, 2_500_000])
    buffer.push(4, [4], 1_000_000) // 3.5 MB: the oldest batch goes
    assert.deepStrictEqual([buffer.size, buffer.bytes], [3, 2_500_000])
    assert.strictEqual(buffer.after(0, 100), "gap")
    assert.deepStrictEqual(buffer.after(1, 100), [2, 3, 4])
    buffer.push(5, [5], 5_000_000) // larger than the whole budget: held alone
    assert.deepStrictEqual([buffer.size, buffer.bytes], [1, 5_000_000])
    assert.strictEqual(buffer.after(3, 100), "gap")
    assert.deepStrictEqual(buffer.after(4, 100), [5])
    assert.strictEqual(referenced(buffer), 1, "the events it let go of are no longer referenced")
  })

  it("never_holds_more_than_its_byte_budget_or_one_batch_whatever_the_batches", () => {
    const budget = 10_000
    const buffer = new LiveBuffer<number>(64, budget)
    let seq = 1
    for (let i = 0; i < 500; i++) {
      const size = 1 + ((i * 7919) % 9) // 1..9 events
      const bytes = ((i * 104729) % 4000) + (i % 50 === 0 ? 20_000 : 0) // now and then one over budget
      buffer.push(seq, range(seq, seq + size - 1), bytes)
      seq += size
      assert.isAtMost(buffer.bytes, Math.max(budget, bytes))
      assert.isAtMost(buffer.size, 64)
      assert.strictEqual(referenced(buffer), buffer.size)
      assert.deepStrictEqual(buffer.after(seq - 2, 100), [seq - 1], "the newest event is always held")
    }
  })

  it("hands_out_at_most_max_bytes_at_once_but_always_one_event", () => {
    const buffer = new LiveBuffer<number>(100, Number.POSITIVE_INFINITY, (n) => n * 100)
    buffer.push(1, range(1, 10))
    assert.deepStrictEqual(buffer.after(0, 100, 600), [1, 2, 3], "100 + 200 + 300 bytes")
    assert.deepStrictEqual(buffer.after(3, 100, 600), [4], "the first even when alone it is over")
    assert.deepStrictEqual(buffer.after(0, 2, 600), [1, 2], "and at most max")
  })

  it("a_batch_held_as_one_item_answers_it_for_each_of_its_events_weighed_by_seq_and_slides_as_a_batch", () => {
    interface Held {
      readonly first: number
      readonly sizes: ReadonlyArray<number>
    }
    const weigh = (held: Held, seq: number) => held.sizes[seq - held.first]!
    const buffer = new LiveBuffer<Held>(6, Number.POSITIVE_INFINITY, weigh)
    const a: Held = { first: 1, sizes: [100, 200, 300] }
    const b: Held = { first: 4, sizes: [400, 500] }
    buffer.pushShared(1, 3, a)
    buffer.pushShared(4, 2, b)
    assert.strictEqual(buffer.size, 5)
    assert.deepStrictEqual(buffer.after(0, 100), [a, a, a, b, b], "each event's slot holds its batch")
    assert.strictEqual(buffer.next(2), a)
    assert.strictEqual(buffer.next(3), b)
    assert.deepStrictEqual(buffer.after(1, 100, 600), [a, a], "weighed by each event's seq: 200 + 300")
    assert.deepStrictEqual(buffer.after(3, 100, 100), [b], "the first even when alone it is over")
    buffer.pushShared(6, 4, { first: 6, sizes: [1, 1, 1, 1] }) // 9 events past 6 slots: the oldest go
    assert.strictEqual(buffer.after(2, 100), "gap")
    assert.deepStrictEqual(
      (buffer.after(3, 100) as Array<Held>).map((held) => held.first),
      [4, 4, 6, 6, 6, 6]
    )
    assert.strictEqual(referenced(buffer), 6, "no slot holds a batch let go of")
  })

  it("says_end_once_closed_and_nothing_is_left_after_the_cursor", () => {
    const buffer = new LiveBuffer<number>(4)
    buffer.push(1, [1, 2])
    buffer.close()
    assert.deepStrictEqual(buffer.after(0, 100), [1, 2], "what is held is still handed out")
    assert.strictEqual(buffer.after(2, 100), "end")
  })

  it.effect("wakes_waiting_readers_on_the_next_batch_or_the_close", () =>
    Effect.gen(function* () {
      const buffer = new LiveBuffer<number>(4)
      buffer.push(1, [1])
      const early = yield* Effect.fork(buffer.awaitAfter(1))
      const late = yield* Effect.fork(buffer.awaitAfter(2))
      yield* Effect.yieldNow()
      assert.isNull(early.unsafePoll(), "nothing after 1 yet")
      buffer.push(2, [2])
      yield* Fiber.join(early)
      assert.isNull(late.unsafePoll(), "nothing after 2 yet")
      yield* buffer.awaitAfter(0) // already there: no wait
      buffer.close()
      yield* Fiber.join(late)
    })
  )

  it.effect("an_interrupted_wait_leaves_no_waiter_behind", () =>
    Effect.gen(function* () {
      const buffer = new LiveBuffer<number>(4)
      const waiting = yield* Effect.fork(buffer.awaitAfter(0))
      yield* Effect.yieldNow()
      assert.strictEqual((buffer as unknown as { waiters: Map<unknown, number> }).waiters.size, 1)
      yield* Fiber.interrupt(waiting)
      assert.strictEqual((buffer as unknown as { waiters: Map<unknown, number> }).waiters.size, 0)
    })
  )

  it("watchers_are_told_of_every_push_past_their_cursor_and_of_the_close_until_they_stop_watching", () => {
    const buffer = new LiveBuffer<number>(8)
    buffer.push(1, [1, 2])
    let cursor = 2
    const told: Array<number> = []
    const stop = buffer.watch({ cursor: () => cursor, wake: () => told.push(cursor) })
    assert.deepStrictEqual(told, [], "nothing after 2 yet")
    buffer.push(3, [3])
    assert.deepStrictEqual(told, [2], "the push past its cursor")
    buffer.push(4, [4])
    assert.deepStrictEqual(told, [2, 2], "still watching: told again, its cursor not moved")
    cursor = 4
    const early = new Array<number>()
    const stopEarly = buffer.watch({ cursor: () => 0, wake: () => early.push(0) })
    assert.deepStrictEqual(early, [0], "one already behind is told at once")
    stopEarly()
    stop()
    buffer.push(5, [5])
    buffer.close()
    assert.deepStrictEqual(told, [2, 2], "not told once it stopped")
    assert.deepStrictEqual(early, [0])
    const closing = new Array<number>()
    buffer.watch({ cursor: () => 5, wake: () => closing.push(5) })
    assert.deepStrictEqual(closing, [5], "a closed buffer tells at once")
  })
})
