/**
 * The shared live buffer: what a reader at a cursor finds (events after it, nothing yet, a gap
 * once the buffer slid past it, the end once closed), and waking waiting readers.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { LiveBuffer } from "../../src/ChangeFeed/LiveBuffer.js"

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe("LiveBuffer", () => {
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
})
