/**
 * Publish receipts: each published batch waits for one answer (its first seq from the writer,
 * `NotYetDurable` at its deadline, `FeedClosed` at shutdown), and one sweeper answers every
 * batch whose deadline passes, instead of a timer per call.
 */
import { Effect, Exit } from "effect"
import type { EventJson } from "../Journal.js"
import type { FeedClosed, PublishAllError } from "./Errors.js"
import { NotYetDurable } from "./Errors.js"
import type { Pending } from "./Idempotency.js"

type AckError = FeedClosed | NotYetDurable
type AckExit = Exit.Exit<number, AckError>

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
 * An entry whose event its producer has only as JSON it vouches for (as `eventJson`), with
 * whether the event is durable and, when `routed`, the session the routing rule gives it (the
 * producer's, or the one the event names, read from its JSON): the feed then reads neither to
 * queue, journal and broadcast it, and the event is parsed only if a reader of decoded events
 * asks for it (`EventJson`).
 */
export class JsonEntry<A> implements Entry<A> {
  constructor(
    readonly sessionId: string | undefined,
    readonly json: EventJson<A>,
    readonly durable: boolean,
    /** `sessionId` is the routed session (`routeSession`), even when undefined; else the event routes it. */
    readonly routed: boolean = sessionId !== undefined
  ) {}

  get event(): A {
    return this.json.value
  }

  get eventJson(): Uint8Array {
    return this.json.bytes
  }
}

/**
 * A publisher's resume, declared as a method so that a batch of any reply is a `BatchItem<A, unknown>`
 * to the writer and the receipts (which only answer it).
 */
interface Resume<R> {
  resume(answer: Effect.Effect<R, AckError>): void
}

/**
 * Told how a publish call ended, in the publisher's fiber: the time from `started`
 * (`performance.now()`) to a durable ack, or why it was refused (`Instrument`).
 */
export type ObservePublish = (started: number, exit: Exit.Exit<unknown, PublishAllError>) => void

/**
 * A published batch and its receipt, answered once (by the writer with the first seq, by the
 * deadline sweep, or at shutdown). What the publish call returns is made of the answer (`reply`)
 * and recorded (`observe`) in the publisher's fiber as it resumes: one step there, where a
 * mapping and an exit hook of its own cost the publisher several, and the resumption never runs
 * for a publisher that was interrupted first (Effect drops a resume after an interruption).
 *
 * The wait has no canceler: an interrupted publisher's resume stays here, unused, until the batch
 * is answered (by its deadline at the latest), where a canceler cost every publisher an
 * interruptible region and an exit hook of its own.
 */
export class BatchItem<A, R> {
  /** Its neighbours in the list of batches the receipts wait for, and whether it is in it (`Receipts`' own). */
  previousAwaiting: BatchItem<A, unknown> | undefined = undefined
  nextAwaiting: BatchItem<A, unknown> | undefined = undefined
  isAwaited = false
  private exit: AckExit | undefined = undefined
  private resume: Resume<R>["resume"] | undefined = undefined
  /** The batch's entries until it is journaled, none after (`journaled`). */
  entries: ReadonlyArray<Entry<A>>
  constructor(
    entries: ReadonlyArray<Entry<A>>,
    /** What the entries hold in memory, by `estimateBytes`. */
    readonly bytes: number,
    /** When the publisher stops waiting for room and durability (Clock millis), and its timeout. */
    readonly deadline: number,
    readonly timeoutMs: number,
    /** The idempotency key the batch is published under, if any. */
    readonly keyed: Pending | undefined,
    /** What the publish call answers for the batch's first seq. */
    private readonly reply: (first: number) => R,
    /** Told the call's outcome when the publisher takes the answer; `undefined` when its caller observes the call. */
    private readonly observe: ObservePublish | undefined = undefined,
    private readonly started = 0
  ) {
    this.entries = entries
  }

  /** Answers the publisher; later answers are ignored. */
  done(exit: AckExit): void {
    if (this.exit !== undefined) return
    this.exit = exit
    const resume = this.resume
    this.resume = undefined
    resume?.(this.answer(exit))
  }

  /**
   * Once the writer has journaled the batch, it lets go of its entries: whatever still points at
   * the batch then (its publisher's finished steps) must not keep its events, and the body they
   * lie in, from the collector (see `Writer`'s `letGo`). A batch answered before (at its deadline)
   * keeps them until then: it is still to be journaled.
   */
  journaled(): void {
    this.entries = []
  }

  private answer(exit: AckExit): Effect.Effect<R, AckError> {
    if (Exit.isSuccess(exit))
      return Effect.sync(() => {
        this.observe?.(this.started, exit)
        return this.reply(exit.value)
      })
    return Effect.suspend(() => {
      this.observe?.(this.started, exit)
      return Effect.failCause(exit.cause)
    })
  }

  /** The call's answer once the batch is answered (an interrupted wait leaves the batch accepted). */
  readonly await: Effect.Effect<R, AckError> = Effect.async((resume) => {
    if (this.exit !== undefined) resume(this.answer(this.exit))
    else this.resume = resume
  })
}

/**
 * The batches whose publishers still wait, and the sweeper that answers them at their deadline.
 * They are a list threaded through the batches themselves: a batch joins and leaves it once per
 * publish, where a `Set` cost a hash insert and delete each time.
 */
export class Receipts<A> {
  private firstAwaiting: BatchItem<A, unknown> | undefined = undefined
  private awaiting = 0
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
  track(item: BatchItem<A, unknown>): void {
    if (item.isAwaited) return
    item.isAwaited = true
    item.nextAwaiting = this.firstAwaiting
    if (this.firstAwaiting !== undefined) this.firstAwaiting.previousAwaiting = item
    this.firstAwaiting = item
    this.awaiting++
    if (item.deadline < this.sweepAt) this.sweepNeeded.unsafeOpen()
  }

  /** Stops waiting for `item` without answering it (its publisher has gone). */
  forget(item: BatchItem<A, unknown>): void {
    if (!item.isAwaited) return
    item.isAwaited = false
    const { nextAwaiting: next, previousAwaiting: previous } = item
    if (previous === undefined) this.firstAwaiting = next
    else previous.nextAwaiting = next
    if (next !== undefined) next.previousAwaiting = previous
    item.previousAwaiting = item.nextAwaiting = undefined
    this.awaiting--
  }

  /** Answers `item` and stops waiting for it. */
  settle(item: BatchItem<A, unknown>, exit: AckExit): void {
    this.forget(item)
    item.done(exit)
  }

  /** How many batches are waited for. */
  get size(): number {
    return this.awaiting
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
        if (this.awaiting === 0) {
          this.sweepAt = Number.POSITIVE_INFINITY
          return this.sweepNeeded.await
        }
        return Effect.flatMap(
          Effect.clockWith((clock) => Effect.succeed(clock.unsafeCurrentTimeMillis())),
          (now) => {
            let next = Number.POSITIVE_INFINITY
            for (let item = this.firstAwaiting; item !== undefined;) {
              const after = item.nextAwaiting
              if (now >= item.deadline) this.settle(item, Exit.fail(new NotYetDurable({ timeoutMs: item.timeoutMs })))
              else if (item.deadline < next) next = item.deadline
              item = after
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
