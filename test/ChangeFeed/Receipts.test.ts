/**
 * Publish receipts: a batch not answered by its deadline is answered `NotYetDurable` then, by one
 * sweeper, whether its deadline comes before or after the one the sweeper sleeps until, and
 * whether that one's batch is still waiting or has been answered meanwhile.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { BatchItem, Receipts } from "../../src/ChangeFeed/Receipts.js"

/** A batch published now (the test clock's millis) with `timeoutMs`. */
const published = (now: number, timeoutMs: number) => new BatchItem<never>([], 0, now + timeoutMs, timeoutMs, undefined)

/** The error a batch's publisher was answered with, if it was answered with one. */
const failureOf = (exit: Exit.Exit<number, { readonly _tag: string }>) =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause))?._tag : undefined

describe("Receipts", () => {
  it.scoped("a_batch_with_a_later_deadline_than_an_answered_one_is_answered_at_its_own", () =>
    Effect.gen(function* () {
      const receipts = yield* Receipts.make<never>()
      const first = published(0, 100)
      receipts.track(first)
      yield* TestClock.adjust(10)
      receipts.settle(first, Exit.succeed(1))
      const second = published(10, 300)
      receipts.track(second)
      const waiting = yield* Effect.fork(second.await)
      // The sweeper wakes for the first batch's deadline, finds the second waiting, sleeps on.
      yield* TestClock.adjust(100)
      assert.isNull(waiting.unsafePoll())
      yield* TestClock.adjust(200)
      assert.strictEqual(failureOf(yield* Fiber.await(waiting)), "NotYetDurable")
    })
  )

  it.scoped("a_batch_with_an_earlier_deadline_than_a_waiting_one_is_answered_at_its_own", () =>
    Effect.gen(function* () {
      const receipts = yield* Receipts.make<never>()
      const first = published(0, 10_000)
      receipts.track(first)
      const slow = yield* Effect.fork(first.await)
      yield* TestClock.adjust(10)
      const second = published(10, 50)
      receipts.track(second)
      const fast = yield* Effect.fork(second.await)
      yield* TestClock.adjust(50)
      assert.strictEqual(failureOf(yield* Fiber.await(fast)), "NotYetDurable")
      assert.isNull(slow.unsafePoll())
      receipts.settle(first, Exit.succeed(7))
      assert.deepStrictEqual(yield* Fiber.join(slow), 7)
    })
  )
})
