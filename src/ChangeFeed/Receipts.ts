/**
 * Publish receipts: each published batch waits for one answer (its first seq from the writer,
 * `NotYetDurable` at its deadline, `FeedClosed` at shutdown), and one sweeper answers every
 * batch whose deadline passes, instead of a timer per call.
 */
import { Effect, Exit } from "effect"
import type { FeedClosed } from "./Errors.js"
import { NotYetDurable } from "./Errors.js"
import type { Pending } from "./Idempotency.js"

type AckExit = Exit.Exit<number, FeedClosed | NotYetDurable>

/** A durable entry as a producer hands it over. */
export interface Entry<A> {
  readonly sessionId?: string | undefined
  readonly event: A
  /**
   * `event` already encoded: the UTF-8 of exactly `JSON.stringify` of the schema's encoding of it.
   * Set only by a producer that knows it to be so (the HTTP body, for events it finds canonical);
   * the journal then writes it instead of encoding the event again. Bytes rather than a string:
   * a batch waits for the journal long enough for the collector to copy what it holds, and the
   * collector never copies bytes.
   */
  readonly eventJson?: Uint8Array | undefined
}

/**
 * A published batch and its receipt, answered once (by the writer with the first seq, by the
 * deadline sweep, or at shutdown). A one-shot callback rather than a `Deferred` per call: the
 * receipt is on every `publish`'s path, and a `Deferred` costs several times more to make.
 */
export class BatchItem<A> {
  private exit: AckExit | undefined = undefined
  private waiter: ((exit: AckExit) => void) | undefined = undefined
  constructor(
    readonly entries: ReadonlyArray<Entry<A>>,
    /** What the entries hold in memory, by `estimateBytes`. */
    readonly bytes: number,
    /** When the publisher stops waiting for room and durability (Clock millis), and its timeout. */
    readonly deadline: number,
    readonly timeoutMs: number,
    /** The idempotency key the batch is published under, if any. */
    readonly keyed: Pending | undefined
  ) {}

  /** Answers the publisher; later answers are ignored. */
  done(exit: AckExit): void {
    if (this.exit !== undefined) return
    this.exit = exit
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.(exit)
  }

  /** The first seq of the batch once answered (an interrupted wait leaves the batch accepted). */
  readonly await: Effect.Effect<number, FeedClosed | NotYetDurable> = Effect.async((resume) => {
    if (this.exit !== undefined) return resume(this.exit)
    this.waiter = resume
    return Effect.sync(() => (this.waiter = undefined))
  })
}

/** The batches whose publishers still wait, and the sweeper that answers them at their deadline. */
export class Receipts<A> {
  private readonly awaiting = new Set<BatchItem<A>>()
  private sweepAt = Number.POSITIVE_INFINITY

  private constructor(
    /** Wakes the sweeper: a waiter whose deadline comes before `sweepAt` (infinite while it idles). */
    private readonly sweepNeeded: Effect.Latch
  ) {}

  /** The receipts, with their sweeper running in the scope. */
  static make = <A>() =>
    Effect.gen(function* () {
      const receipts = new Receipts<A>(yield* Effect.makeLatch(false))
      yield* Effect.forkScoped(receipts.sweeper)
      return receipts
    })

  /**
   * Waits for an answer for `item` from now on. The sweeper is woken only for a deadline before
   * the one it sleeps until (never, when it idles): one it sleeps until though that batch has been
   * answered costs a wake-up then, where waking it for every batch cost one per publish.
   */
  track(item: BatchItem<A>): void {
    this.awaiting.add(item)
    if (item.deadline < this.sweepAt) this.sweepNeeded.unsafeOpen()
  }

  /** Stops waiting for `item` without answering it (its publisher has gone). */
  forget(item: BatchItem<A>): void {
    this.awaiting.delete(item)
  }

  /** Answers `item` and stops waiting for it. */
  settle(item: BatchItem<A>, exit: AckExit): void {
    this.awaiting.delete(item)
    item.done(exit)
  }

  /**
   * Publishers past their deadline are answered `NotYetDurable` (their events stay accepted and
   * are journaled when the journal recovers). Idles while nobody waits, and sleeps until the
   * earliest deadline.
   */
  private get sweeper(): Effect.Effect<never> {
    return Effect.forever(
      Effect.suspend(() => {
        this.sweepNeeded.unsafeClose()
        if (this.awaiting.size === 0) {
          this.sweepAt = Number.POSITIVE_INFINITY
          return this.sweepNeeded.await
        }
        return Effect.flatMap(
          Effect.clockWith((clock) => Effect.succeed(clock.unsafeCurrentTimeMillis())),
          (now) => {
            let next = Number.POSITIVE_INFINITY
            for (const item of this.awaiting) {
              if (now >= item.deadline) this.settle(item, Exit.fail(new NotYetDurable({ timeoutMs: item.timeoutMs })))
              else if (item.deadline < next) next = item.deadline
            }
            if (next === Number.POSITIVE_INFINITY) return Effect.void
            this.sweepAt = next
            // A publisher with an earlier deadline opens the latch and the sweep starts over.
            return Effect.raceFirst(Effect.sleep(next - now), this.sweepNeeded.await)
          }
        )
      })
    )
  }
}
