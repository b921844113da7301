/**
 * Publishers' answers as a property: over random schedules of publishers (one event or a batch,
 * with their own timeouts) on a small intake, interruptions of waiting publishers, a journal that
 * holds its appends for a while, and the clock running past deadlines, every publisher is
 * answered once and truly: the seqs it is given hold its events; `NotYetDurable` means its
 * events are journaled all the same; `FeedBusy` and `FeedClosed` mean nothing of them is; an
 * interrupted publisher's batch is journaled whole or not at all. And each call is recorded once
 * as it ended: a publish that answered seqs is timed, one answered `NotYetDurable` counted as an
 * ack timeout, a refusal counted by its reason, an interrupted one not at all.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck as fc, Fiber, Metric, Option, Scope, TestClock } from "effect"
import * as ChangeFeed from "../../src/ChangeFeed.js"
import { AgentDomain, type AgentEvent } from "../../src/Domain/AgentEvent.js"
import * as MemoryJournal from "../../src/Journal/Memory.js"
import * as Metrics from "../../src/Metrics.js"
import { deleted, journaled } from "../support/FeedTesting.js"

type Command =
  /**
   * `publishers` publishers of `events` events each (`publish` for one, `publishAll` for more),
   * with a timeout of their own or the feed's.
   */
  | {
      readonly _tag: "Publish"
      readonly publishers: number
      readonly events: number
      readonly timeoutMs: number | undefined
    }
  /** Interrupts one of the publishers still waiting (picked modulo their number). */
  | { readonly _tag: "Interrupt"; readonly which: number }
  /** Lets appends through, or holds them. */
  | { readonly _tag: "Appends"; readonly pass: boolean }
  /** Lets the other fibers run. */
  | { readonly _tag: "Yield" }
  | { readonly _tag: "Tick"; readonly ms: number }

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      _tag: fc.constant("Publish" as const),
      publishers: fc.integer({ min: 1, max: 4 }),
      events: fc.integer({ min: 1, max: 3 }),
      timeoutMs: fc.constantFrom(undefined, 20, 80)
    })
  },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Interrupt" as const), which: fc.nat({ max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ _tag: fc.constant("Appends" as const), pass: fc.boolean() }) },
  { weight: 2, arbitrary: fc.constant({ _tag: "Yield" as const }) },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Tick" as const), ms: fc.integer({ min: 1, max: 120 }) }) }
)

interface Publisher {
  readonly ids: ReadonlyArray<string>
  readonly fiber: Fiber.RuntimeFiber<ReadonlyArray<number>, ChangeFeed.PublishAllError>
}

let runs = 0

const tagOf = (exit: Exit.Exit<unknown, { readonly _tag: string }>): string =>
  Exit.isSuccess(exit)
    ? "Success"
    : Cause.isInterruptedOnly(exit.cause)
      ? "Interrupted"
      : Option.match(Cause.failureOption(exit.cause), { onNone: () => "Defect", onSome: (error) => error._tag })

describe("publishers' answers", () => {
  it.scoped.prop(
    "every_publisher_is_answered_once_and_truly_and_recorded_as_it_ended_whatever_interrupts_it",
    { commands: fc.array(command, { minLength: 1, maxLength: 40 }) },
    ({ commands }) =>
      Effect.gen(function* () {
        const account = `publish-property-${++runs}`
        const memory = yield* MemoryJournal.make(AgentDomain.schema)
        const appends = yield* Effect.makeLatch(false)
        const journal = {
          ...memory,
          append: (batch: Parameters<typeof memory.append>[0]) => Effect.zipRight(appends.await, memory.append(batch))
        }
        const scope = yield* Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void))
        const feed = yield* ChangeFeed.make(AgentDomain, journal, {
          account,
          queueCapacity: 3,
          publishTimeout: 50
        }).pipe(Scope.extend(scope), Effect.orDie)

        const publishers: Array<Publisher> = []
        for (const cmd of commands) {
          switch (cmd._tag) {
            case "Publish":
              for (let n = 0; n < cmd.publishers; n++) {
                const ids = Array.from({ length: cmd.events }, (_, k) => `p${publishers.length}-${k}`)
                const options = { timeout: cmd.timeoutMs }
                const call: Effect.Effect<ReadonlyArray<number>, ChangeFeed.PublishAllError> = ids.length === 1
                  ? Effect.map(feed.publish(undefined, deleted(ids[0]!), options), Option.toArray)
                  : Effect.map(
                      feed.publishAll(
                        ids.map((id) => ({ event: deleted(id) as AgentEvent })),
                        options
                      ),
                      (seqs) => seqs.flatMap((seq) => (seq === null ? [] : [seq]))
                    )
                publishers.push({ ids, fiber: yield* Effect.fork(call) })
              }
              break
            case "Interrupt": {
              const waiting = publishers.filter(({ fiber }) => fiber.unsafePoll() === null)
              if (waiting.length > 0) yield* Fiber.interrupt(waiting[cmd.which % waiting.length]!.fiber)
              break
            }
            case "Appends":
              yield* cmd.pass ? appends.open : appends.close
              break
            case "Yield":
              yield* Effect.yieldNow()
              break
            case "Tick":
              yield* TestClock.adjust(cmd.ms)
              break
          }
        }

        // Shutdown journals everything accepted and answers everyone still waiting.
        yield* appends.open
        yield* Scope.close(scope, Exit.void)
        const exits = yield* Effect.forEach(publishers, ({ fiber }) => Fiber.await(fiber))
        const seqOf = new Map<string, Array<number>>()
        for (const change of yield* journaled(feed)) {
          const id = change.session_id!
          seqOf.set(id, [...(seqOf.get(id) ?? []), change.seq])
        }

        const outcomes = new Map<string, number>()
        publishers.forEach(({ ids }, p) => {
          const exit = exits[p]!
          const tag = tagOf(exit)
          outcomes.set(tag, (outcomes.get(tag) ?? 0) + 1)
          const found = ids.map((id) => seqOf.get(id) ?? [])
          for (const [k, seqs] of found.entries())
            assert.isAtMost(seqs.length, 1, `${ids[k]} is journaled at most once`)
          const journaledSeqs = found.flatMap((seqs) => seqs)
          switch (tag) {
            case "Success":
              assert.deepStrictEqual(
                journaledSeqs,
                Exit.isSuccess(exit) ? exit.value : [],
                `publisher ${p}'s seqs hold its events`
              )
              break
            case "NotYetDurable":
              assert.strictEqual(
                journaledSeqs.length,
                ids.length,
                `publisher ${p}'s events were accepted and journaled`
              )
              break
            case "FeedBusy":
            case "FeedClosed":
              assert.strictEqual(journaledSeqs.length, 0, `nothing of publisher ${p} (${tag}) is journaled`)
              break
            case "Interrupted":
              assert.include(
                [0, ids.length],
                journaledSeqs.length,
                `publisher ${p}'s batch is journaled whole or not at all`
              )
              break
            default:
              assert.fail(`publisher ${p} ended with ${tag}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
          }
        })

        const metrics = Metrics.forAccount(account)
        const count = (tag: string) => outcomes.get(tag) ?? 0
        assert.strictEqual(
          (yield* Metric.value(metrics.publishSeconds)).count,
          count("Success"),
          "answered calls are timed"
        )
        assert.strictEqual((yield* Metric.value(metrics.ackTimeouts)).count, count("NotYetDurable"))
        assert.strictEqual((yield* Metric.value(metrics.refused.busy)).count, count("FeedBusy"))
        assert.strictEqual((yield* Metric.value(metrics.refused.closed)).count, count("FeedClosed"))
      }),
    { timeout: 120_000, fastCheck: { numRuns: 150 } }
  )
})
