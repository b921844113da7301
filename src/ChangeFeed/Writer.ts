/**
 * The writer: the feed's intake queue and the one fiber that journals it.
 *
 * Producers put items on a queue bounded in items and bytes (`record` drops when it is full,
 * `publish` waits for room). The writer takes them in batches, stamps `ts`, appends each batch
 * to the journal (which gives the seqs), retries a failing append on a backoff `Schedule`
 * (nothing is lost while the journal fails, the feed is only degraded), then hands the batch to
 * the broadcast and answers its publishers. At shutdown it stops the intake and journals
 * everything accepted before the journal closes.
 */
import { Cause, Clock, Duration, Effect, Exit, Fiber, Metric, Option, Queue, Schedule } from "effect"
import { BufferBudget } from "../BufferBudget.js"
import { type Appended, type Journal, type JournalEntry, PendingEntry } from "../Journal.js"
import type { JournalIoError } from "../Journal/Errors.js"
import type { Broadcast } from "./Broadcast.js"
import { FeedBusy, FeedClosed } from "./Errors.js"
import type { IdempotencyWindow } from "./Idempotency.js"
import type { Instrument } from "./Instrument.js"
import { BatchItem, type Entry, JsonEntry, type Receipts } from "./Receipts.js"

/** A recorded event in the intake, with what it holds in memory. */
export interface Queued<A> extends Entry<A> {
  readonly bytes: number
}
type Item<A> = Queued<A> | BatchItem<A, unknown>
const isBatch = <A>(item: Item<A>): item is BatchItem<A, unknown> => item instanceof BatchItem

type Restore = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>

export interface WriterOptions {
  readonly queueCapacity: number
  readonly queueBytes: number
  readonly maxBatch: number
  readonly maxBatchBytes: number
  readonly dropWarningIntervalMs: number
  readonly retryBaseMs: number
  readonly retryMaxMs: number
  readonly drainAttempts: number
}

export interface Writer<A> {
  /** Queues a recorded event, or drops it (counted, warned about) when the intake is full or closing. */
  readonly record: (entry: Queued<A>) => void
  /**
   * Queues a published batch if the intake has room for it now and the feed is not closing.
   * One synchronous step, so an item is either queued (and the shutdown drain finds it) or not taken.
   */
  readonly offer: (item: BatchItem<A, unknown>) => boolean
  /** Waits for room in the intake until the item's deadline, then queues it. */
  readonly admit: (item: BatchItem<A, unknown>) => Effect.Effect<void, FeedBusy | FeedClosed>
  readonly closing: () => boolean
  /** The last seq this writer's journal holds, as of its last append. */
  readonly head: () => number
  readonly dropped: () => number
  readonly degraded: () => boolean
  readonly lastError: () => string | undefined
  readonly queued: Effect.Effect<number>
  readonly intake: BufferBudget
}

export const make = <A>(deps: {
  readonly journal: Journal<A>
  readonly broadcast: Broadcast<A>
  readonly receipts: Receipts<A>
  readonly keys: IdempotencyWindow
  readonly instrument: Instrument
  readonly options: WriterOptions
}) =>
  Effect.gen(function* () {
    const { broadcast, instrument, journal, keys, options, receipts } = deps
    const { appendFailures, dropped: droppedTotal, journaled } = instrument.metrics
    // Bounded by `intake`: room is taken before an item is queued; its item is given back when the
    // writer takes it, its bytes once the writer has journaled it (what the writer holds counts too).
    // A plain array: every offer and take is synchronous (the writer waits on `hasWork`, never
    // in a take), and an Effect `Queue` cost each item a node in and a `Chunk` out.
    let queue: Array<Item<A>> = []
    const intake = new BufferBudget(options.queueCapacity, options.queueBytes)
    const warnSignal = yield* Queue.sliding<void>(1)
    // Opened by producers once an item is in the queue, closed by the writer before it looks. The
    // writer waits on this, never in a queue take: a take interrupted at shutdown can lose the item
    // it was just handed, where an interrupted wait on the latch loses nothing.
    const hasWork = yield* Effect.makeLatch(false)
    const clock = yield* Effect.clock
    // Doubling from the base up to the max, for as long as the journal fails.
    const retrySchedule = Schedule.exponential(Duration.millis(options.retryBaseMs)).pipe(
      Schedule.union(Schedule.spaced(Duration.millis(options.retryMaxMs)))
    )

    let closing = false
    let dropped = 0
    let warnPending = false
    let degraded = false
    let lastError: string | undefined = undefined
    let head = yield* journal.headSeq
    /** A batch the writer was retrying when shutdown interrupted it: the drain journals it first. */
    let stranded: ReadonlyArray<Item<A>> = []

    // ---- intake ----------------------------------------------------------------------

    const signalWarning = () => {
      if (!warnPending) {
        warnPending = true
        Queue.unsafeOffer(warnSignal, undefined)
      }
    }

    const drop = () => {
      dropped++
      droppedTotal.unsafeUpdate(1, [])
      signalWarning()
    }

    const enqueue = (item: Item<A>): boolean => {
      if (closing || !intake.tryTake(item.bytes)) return false
      queue.push(item)
      hasWork.unsafeOpen()
      return true
    }

    const admit = (item: BatchItem<A, unknown>): Effect.Effect<void, FeedBusy | FeedClosed> =>
      Effect.suspend(() => {
        if (closing) return Effect.fail(new FeedClosed())
        if (enqueue(item)) return Effect.void
        const left = item.deadline - clock.unsafeCurrentTimeMillis()
        if (left <= 0) return Effect.fail(new FeedBusy({ timeoutMs: item.timeoutMs }))
        // Only waits: the room is taken by `enqueue`, so an interrupted or timed-out wait takes nothing.
        return intake.room(item.bytes).pipe(
          Effect.timeoutFail({
            duration: Duration.millis(left),
            onTimeout: () => new FeedBusy({ timeoutMs: item.timeoutMs })
          }),
          Effect.zipRight(admit(item))
        )
      })

    // ---- journaling ------------------------------------------------------------------

    // One shape for every entry; the key goes into the same write as the events, so the journal
    // never holds one without the other. An entry still only JSON stays so: the journal writes
    // its bytes without parsing them.
    const toEntry = (ts: string, entry: Entry<A>, key: string | undefined): JournalEntry<A> =>
      entry instanceof JsonEntry
        ? new PendingEntry(ts, entry.sessionId, entry.json, key)
        : { ts, session_id: entry.sessionId, event: entry.event, key, eventJson: entry.eventJson }

    const failAcks = (items: Iterable<Item<A>>) => {
      let lost = 0
      for (const item of items) {
        if (isBatch(item)) {
          lost += item.entries.length
          if (item.keyed !== undefined) keys.abandon(item.keyed)
          receipts.settle(item, Exit.fail(new FeedClosed()))
        } else lost++
      }
      return lost
    }

    /**
     * Journals one batch, retrying on the backoff schedule while the journal fails (the same
     * entries, so the journal can tell a retry from a new batch), then broadcasts and answers it.
     * `attempts` bounds the retries (at shutdown); `restore` makes the backoff sleeps
     * interruptible, and a batch whose backoff is interrupted (by shutdown) is left to the drain.
     * The append itself is never interrupted: its outcome is always known here.
     */
    const writeBatch = (items: ReadonlyArray<Item<A>>, restore: Restore, attempts: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        const ts = new Date(yield* Clock.currentTimeMillis).toISOString()
        const entries: Array<JournalEntry<A>> = []
        /** Each published batch, and where its entries start in the journal batch (side by side, not paired per item). */
        const acks: Array<BatchItem<A, unknown>> = []
        const starts: Array<number> = []
        for (const item of items) {
          if (isBatch(item)) {
            acks.push(item)
            starts.push(entries.length)
            const key = item.keyed?.key
            for (const entry of item.entries) entries.push(toEntry(ts, entry, key))
          } else {
            entries.push(toEntry(ts, item, undefined))
          }
        }
        /** Made at the first failure: most batches never need it. */
        let backoff: Schedule.ScheduleDriver<unknown, JournalIoError, never> | undefined
        let failures = 0
        let appended: Appended<A>
        while (true) {
          const attempt = yield* Effect.exit(instrument.commit(journal.append(entries), entries.length))
          if (Exit.isSuccess(attempt)) {
            appended = attempt.value
            break
          }
          const failure = Cause.failureOption(attempt.cause)
          if (Option.isNone(failure)) return yield* refuseUnwritable(items, attempt.cause, restore, attempts)
          failures++
          yield* degrade(failure.value, entries.length, failures)
          if (failures >= attempts) {
            const lost = failAcks(items)
            yield* Effect.logError(`change feed: ${lost} accepted event(s) could not be journaled before shutdown`)
            return
          }
          backoff ??= yield* Schedule.driver(retrySchedule)
          if (Exit.isFailure(yield* Effect.exit(restore(backoff.next(failure.value))))) {
            // Shutdown: the batch is still accepted, and the drain retries it before the rest.
            stranded = items
            return
          }
        }
        if (degraded) {
          degraded = false
          yield* Effect.logInfo(
            `change feed recovered: journal appends succeed again (head ${appended.events.at(-1)!.seq})`
          )
        }
        head = Math.max(head, appended.events.at(-1)!.seq)
        // What the live buffer holds for the batch besides its lines: the events as queued.
        let held = 0
        for (const item of items) held += item.bytes
        broadcast.committed(appended, held)
        for (let i = 0; i < acks.length; i++) {
          const item = acks[i]!
          const first = appended.events[starts[i]!]!.seq
          if (item.keyed !== undefined) keys.journaledAt(item.keyed, first, item.entries.length, head)
          receipts.settle(item, Exit.succeed(first))
          item.journaled()
        }
        yield* Metric.incrementBy(journaled, entries.length)
        letGo(entries)
      })

    /**
     * Empties an array of a batch journaled and answered. A young-generation collection keeps
     * whatever an object in the old generation points to, garbage or not, until the next full
     * collection, and what still points at a batch once it is answered (the steps its request and
     * this writer took for it) often is there by then: each batch was copied into the old
     * generation with its events and the body they lie in. Emptied here, in `BatchItem.journaled`
     * and in the HTTP append, under 500-event POSTs: ~0.45 MB promoted a young collection against
     * ~2.7 MB, and ~12 % less CPU an event.
     */
    const letGo = (array: Array<unknown>): void => {
      array.length = 0
    }

    const degrade = (failure: JournalIoError, events: number, failures: number) =>
      Effect.gen(function* () {
        degraded = true
        lastError = failure.message
        yield* Metric.increment(appendFailures)
        if (failures === 1 || failures % 20 === 0) {
          yield* Effect.logError(
            `change feed degraded: append of ${events} event(s) after seq ${head} failed ` +
              `(attempt ${failures}); retrying, nothing is lost`,
            failure
          )
        }
      })

    /**
     * An append that dies rather than fails (an event the codec cannot encode: nested too deep
     * for the stack, a BigInt) would die again on every retry, and took the writer down with it.
     * The items are journaled one by one instead: the one that cannot be written is refused (its
     * publisher gets the defect, a recorded event counts as dropped), the rest go through with
     * contiguous seqs.
     */
    const refuseUnwritable = (
      items: ReadonlyArray<Item<A>>,
      cause: Cause.Cause<unknown>,
      restore: Restore,
      attempts: number
    ): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (items.length > 1) {
          for (let i = 0; i < items.length; i++) {
            yield* writeBatch([items[i]!], restore, attempts)
            if (stranded.length > 0) {
              stranded = stranded.concat(items.slice(i + 1))
              return
            }
          }
          return
        }
        const item = items[0]!
        if (isBatch(item)) {
          if (item.keyed !== undefined) keys.abandon(item.keyed)
          receipts.settle(item, Exit.die(Cause.squash(cause)))
        } else drop()
        yield* Effect.logError("change feed: refused an event that cannot be journaled", cause)
      })

    /**
     * Journals items taken from the queue in batches of at most `maxBatch` items and
     * `maxBatchBytes` (an item larger than that is a batch of its own), giving each batch's bytes
     * in the intake back once it is journaled (or given up), and emptying `items` once all of
     * them are (`letGo`). A batch stranded by shutdown keeps its bytes, and so does the rest.
     */
    const writeInBatches = (items: Array<Item<A>>, restore: Restore, attempts: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        let start = 0
        while (start < items.length) {
          let end = start
          let bytes = 0
          while (end < items.length && end - start < options.maxBatch) {
            const next = items[end]!.bytes
            if (end > start && bytes + next > options.maxBatchBytes) break
            bytes += next
            end++
          }
          yield* writeBatch(start === 0 && end === items.length ? items : items.slice(start, end), restore, attempts)
          if (stranded.length > 0) {
            stranded = stranded.concat(items.slice(end))
            return
          }
          intake.release(bytes, 0)
          start = end
        }
        letGo(items)
      })

    /** Takes every queued item (at most `limit`), oldest first. */
    const takeQueued = (limit: number): Array<Item<A>> => {
      if (queue.length <= limit) {
        const items = queue
        queue = []
        return items
      }
      return queue.splice(0, limit)
    }

    const writer = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        hasWork.unsafeClose()
        const items = takeQueued(options.maxBatch)
        if (items.length === 0) return restore(hasWork.await)
        intake.release(0, items.length)
        return writeInBatches(items, restore, Number.POSITIVE_INFINITY)
      })
    ).pipe(Effect.forever)

    const writerFiber = yield* Effect.forkScoped(writer)

    // At most one drop warning per period: the first drop warns at once, later ones are summed.
    let reported = 0
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.gen(function* () {
          yield* Queue.take(warnSignal)
          const total = dropped
          yield* Effect.logWarning(
            `change feed queue full${closing ? " or closed" : ""}: dropped ${total - reported} event(s) ` +
              `(${total} since start); use publish() where an event must land`
          )
          reported = total
          yield* Effect.sleep(options.dropWarningIntervalMs)
          warnPending = false
          if (dropped > reported) signalWarning() // report what came in during the quiet period
        })
      )
    )

    // Shutdown: stop intake, journal everything accepted, end readers. Runs before the writer is
    // interrupted by its scope, and before the journal is released.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closing = true
        yield* Fiber.interrupt(writerFiber)
        let drained = 0
        while (true) {
          const taken = takeQueued(Number.POSITIVE_INFINITY)
          intake.release(0, taken.length)
          const items = stranded.concat(taken)
          stranded = []
          if (items.length === 0) break
          // Counted first: `writeInBatches` empties `items` once it has journaled them.
          drained += items.length
          yield* writeInBatches(items, (effect) => effect, options.drainAttempts)
        }
        broadcast.close()
        yield* Effect.logDebug(`change feed closed: drained ${drained} queued item(s), head ${head}`)
      })
    )

    return {
      record: (entry) => {
        if (!enqueue(entry)) drop()
      },
      offer: enqueue,
      admit,
      closing: () => closing,
      head: () => head,
      dropped: () => dropped,
      degraded: () => degraded,
      lastError: () => lastError,
      queued: Effect.sync(() => queue.length),
      intake
    } satisfies Writer<A>
  })
