/**
 * Publish receipts: a batch not answered by its deadline is answered `NotYetDurable` then, by one
 * sweeper, whether its deadline comes before or after the one the sweeper sleeps until, and
 * whether that one's batch is still waiting or has been answered meanwhile. The publisher's
 * answer is made of the batch's and recorded as it takes it, also when the batch was answered
 * before it waited, and never for a publisher interrupted first. A batch keeps its entries until it
 * is journaled, then holds none.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Option, TestClock } from "effect"
import { NotYetDurable } from "../../src/ChangeFeed/Errors.js"
import { BatchItem, Receipts } from "../../src/ChangeFeed/Receipts.js"

/** A batch published now (the test clock's millis) with `timeoutMs`. */
const published = (now: number, timeoutMs: number) =>
  new BatchItem<never, number>([], 0, now + timeoutMs, timeoutMs, undefined, (first) => first)

/** The error a batch's publisher was answered with, if it was answered with one. */
const failureOf = (exit: Exit.Exit<unknown, { readonly _tag: string }>) =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause))?._tag : undefined

/** A batch whose publisher's answer is its first seq as a string, and the outcomes it recorded. */
const observed = () => {
  const outcomes: Array<Exit.Exit<unknown, unknown>> = []
  const item = new BatchItem<never, string>(
    [],
    0,
    1_000,
    1_000,
    undefined,
    (first) => `seq ${first}`,
    (_, exit) => outcomes.push(exit)
  )
  return { item, outcomes }
}

describe("Receipts", () => {
  it.effect("a_batch_answered_before_its_publisher_waits_answers_it_at_once_and_is_recorded_once", () =>
    Effect.gen(function* () {
      const { item, outcomes } = observed()
      item.done(Exit.succeed(3))
      item.done(Exit.succeed(4))
      assert.strictEqual(outcomes.length, 0, "recorded as the publisher takes the answer, not before")
      assert.strictEqual(yield* item.await, "seq 3")
      assert.deepStrictEqual(outcomes, [Exit.succeed(3)])
    })
  )

  it.effect("a_batch_keeps_its_entries_until_journaled_even_once_answered_then_lets_go_of_them", () =>
    Effect.gen(function* () {
      const entries = [{ sessionId: "s", event: "e" }]
      const item = new BatchItem<string, number>(entries, 0, 1_000, 1_000, undefined, (first) => first)
      // Answered at its deadline: still accepted, and still to be journaled.
      item.done(Exit.fail(new NotYetDurable({ timeoutMs: 1_000 })))
      assert.strictEqual(item.entries, entries)
      item.journaled()
      assert.deepStrictEqual(item.entries, [])
      assert.deepStrictEqual(entries, [{ sessionId: "s", event: "e" }], "the publisher's own array untouched")
      assert.strictEqual(failureOf(yield* Effect.exit(item.await)), "NotYetDurable")
    })
  )

  it.effect("a_waiting_publisher_is_answered_with_its_reply_and_a_failure_as_it_is", () =>
    Effect.gen(function* () {
      const { item, outcomes } = observed()
      const waiting = yield* Effect.fork(item.await)
      yield* Effect.yieldNow()
      item.done(Exit.fail(new NotYetDurable({ timeoutMs: 1_000 })))
      assert.strictEqual(failureOf(yield* Fiber.await(waiting)), "NotYetDurable")
      assert.strictEqual(outcomes.length, 1)
      assert.strictEqual(failureOf(outcomes[0]! as Exit.Exit<unknown, NotYetDurable>), "NotYetDurable")
    })
  )

  it.effect("an_interrupted_publisher_is_not_answered_nor_recorded_when_its_batch_is", () =>
    Effect.gen(function* () {
      const { item, outcomes } = observed()
      const waiting = yield* Effect.fork(item.await)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiting)
      item.done(Exit.succeed(5))
      yield* Effect.yieldNow()
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(waiting)))
      assert.deepStrictEqual(outcomes, [])
    })
  )

  it.scoped("batches_leave_the_receipts_however_they_are_answered_or_forgotten_and_the_rest_are_swept", () =>
    Effect.gen(function* () {
      const receipts = yield* Receipts.make<never>()
      const batches = [published(0, 100), published(0, 100), published(0, 100), published(0, 200)]
      for (const batch of batches) receipts.track(batch)
      const waiting = yield* Effect.forEach(batches, (batch) => Effect.fork(batch.await))
      receipts.settle(batches[1]!, Exit.succeed(1))
      receipts.forget(batches[3]!)
      receipts.forget(batches[3]!)
      assert.strictEqual(receipts.size, 2)
      yield* TestClock.adjust(100)
      assert.strictEqual(yield* Fiber.join(waiting[1]!), 1)
      assert.strictEqual(failureOf(yield* Fiber.await(waiting[0]!)), "NotYetDurable")
      assert.strictEqual(failureOf(yield* Fiber.await(waiting[2]!)), "NotYetDurable")
      assert.strictEqual(receipts.size, 0)
      // The forgotten one is no longer swept: its publisher has gone.
      yield* TestClock.adjust(200)
      assert.isNull(waiting[3]!.unsafePoll())
    })
  )

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
