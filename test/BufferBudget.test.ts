/**
 * A buffer's budget in items and bytes: what it lets in, who waits, what an oversized entry
 * does, and the size estimate of decoded values it is fed with.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { BufferBudget, estimateBytes } from "../src/BufferBudget.js"
import { eventually, yieldToIo } from "./support/Wait.js"

const waiting = (budget: BufferBudget) => (budget as unknown as { waiters: Set<unknown> }).waiters.size

describe("BufferBudget", () => {
  it("lets_in_what_fits_in_items_and_in_bytes_and_refuses_the_rest", () => {
    const budget = new BufferBudget(3, 1000)
    assert.isTrue(budget.tryTake(400))
    assert.isTrue(budget.tryTake(600))
    assert.isFalse(budget.tryTake(1), "the bytes are used up")
    budget.release(600)
    assert.isTrue(budget.tryTake(100))
    assert.isTrue(budget.tryTake(100))
    assert.isFalse(budget.tryTake(0), "the items are used up")
    assert.deepStrictEqual([budget.items, budget.bytes, budget.peakBytes], [3, 600, 1000])
  })

  it("lets_one_entry_larger_than_the_budget_in_alone_once_nothing_is_held", () => {
    const budget = new BufferBudget(10, 1000)
    assert.isTrue(budget.tryTake(10))
    assert.isFalse(budget.tryTake(5000), "not while anything else is held")
    budget.release(10)
    assert.isTrue(budget.tryTake(5000))
    assert.isFalse(budget.tryTake(1), "nothing joins it")
    budget.release(5000)
    assert.strictEqual(budget.bytes, 0)
  })

  it.effect("a_waiting_taker_gets_its_room_once_enough_is_given_back", () =>
    Effect.gen(function* () {
      const budget = new BufferBudget(10, 1000)
      assert.isTrue(budget.tryTake(900))
      const taker = yield* Effect.fork(budget.take(500))
      yield* Effect.yieldNow()
      assert.isNull(taker.unsafePoll(), "no room yet")
      budget.release(300) // 600 held: 500 more do not fit
      yield* Effect.yieldNow()
      assert.isNull(taker.unsafePoll(), "still no room")
      budget.release(600)
      yield* Fiber.join(taker)
      assert.strictEqual(budget.bytes, 500)
    })
  )

  it.effect("an_interrupted_wait_takes_nothing_and_leaves_no_waiter", () =>
    Effect.gen(function* () {
      const budget = new BufferBudget(10, 1000)
      assert.isTrue(budget.tryTake(1000))
      const taker = yield* Effect.fork(budget.take(500))
      yield* Effect.yieldNow()
      assert.strictEqual(waiting(budget), 1)
      yield* Fiber.interrupt(taker)
      assert.strictEqual(waiting(budget), 0)
      budget.release(1000)
      assert.strictEqual(budget.bytes, 0)
    })
  )

  it.live("once_closed_it_reports_everything_given_back_and_takes_nothing_more", () =>
    Effect.gen(function* () {
      let reported = 0
      const budget = new BufferBudget(10, 1000, (delta) => (reported += delta))
      assert.isTrue(budget.tryTake(700))
      assert.strictEqual(reported, 700)
      const taker = yield* Effect.fork(budget.take(500))
      yield* eventually("the taker waits for room", () => waiting(budget) === 1)
      budget.close()
      assert.strictEqual(reported, 0, "what a dropped buffer held is no longer counted")
      assert.isFalse(budget.tryTake(1))
      yield* yieldToIo
      assert.isNull(taker.unsafePoll(), "a waiting taker is not let in (it goes with its buffer)")
      yield* Fiber.interrupt(taker)
      budget.release(700) // given back late, by whoever still had it: already counted out
      assert.strictEqual(reported, 0)
      assert.strictEqual(budget.bytes, 0)
    })
  )
})

describe("estimateBytes", () => {
  it("counts_two_bytes_per_string_unit_and_a_fixed_size_per_value_and_key", () => {
    assert.strictEqual(estimateBytes("abcd"), 16 + 8)
    assert.strictEqual(estimateBytes(42), 16)
    assert.strictEqual(estimateBytes(null), 16)
    // object (16) + 2 keys (2 × 16) + "hi" (16 + 4) + [1, 2] (16 + 2 × 16)
    assert.strictEqual(estimateBytes({ a: "hi", b: [1, 2] }), 16 + 32 + 20 + 48)
  })

  it("grows_with_the_strings_an_event_holds", () => {
    const content = "x".repeat(1_000_000)
    const event = { type: "message_appended", session_id: "s1", message_id: "m1", role: "user", content }
    const estimate = estimateBytes(event)
    assert.isAtLeast(estimate, 2_000_000)
    assert.isBelow(estimate, 2_001_000)
  })

  it("stops_counting_past_its_limit_so_a_cyclic_value_cannot_hang_it", () => {
    const cyclic: { self?: unknown; text: string } = { text: "x".repeat(100) }
    cyclic.self = cyclic
    const estimate = estimateBytes(cyclic, 10_000)
    assert.isAbove(estimate, 10_000)
    assert.isBelow(estimate, 11_000)
  })
})
