/**
 * The change feed: the sink every producer hands events to, and the streams every reader
 * follows.
 *
 * Producers put events on a bounded queue (`record` never blocks, `publish` waits for
 * room and then for durability). One writer fiber takes batches from the queue, allocates
 * seqs, stamps `ts`, appends the batch to the journal and only then puts it in the live
 * buffer all readers share and acknowledges it: nothing is broadcast or acknowledged that is
 * not in the journal, and a failed append consumes no seq. Readers replay the journal from their
 * cursor and continue with the live tail, catching up from the journal whenever they fall
 * behind the live buffer.
 */
import { FileSystem, Path } from "@effect/platform"
import {
  Cause,
  Chunk,
  Clock,
  Context,
  Duration,
  Effect,
  Either,
  ExecutionStrategy,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Queue,
  Scope,
  Stream
} from "effect"
import { FeedBusy, FeedClosed, NotYetDurable, type PublishError } from "./ChangeFeed/Errors.js"
import * as Instrument from "./ChangeFeed/Instrument.js"
import { LiveBuffer } from "./ChangeFeed/LiveBuffer.js"
import { decideReset, resetTo } from "./ChangeFeed/Reset.js"
import { AgentDomain, type AgentEvent } from "./Domain/AgentEvent.js"
import type { ChangeEvent } from "./Domain/ChangeEvent.js"
import type { Cursor } from "./Domain/Cursor.js"
import type { CaughtUp, Change, FeedItem, LineChange, LineItem, Progress, Reset } from "./Domain/FeedItem.js"
import { type FeedDomain, routeSession } from "./Domain/FeedDomain.js"
import * as Journal from "./Journal.js"

export * from "./ChangeFeed/Errors.js"

export interface ChangeFeedOptions {
  /** The `account` label of the feed's metrics and spans (default "default"). */
  readonly account?: string | undefined
  /** Capacity of the intake queue (default 1024). */
  readonly queueCapacity?: number | undefined
  /** Live buffer shared by all readers, in events (default 4096); a reader further behind catches up from the journal. */
  readonly liveBuffer?: number | undefined
  /** Most queue items the writer takes into one batch (default 512). */
  readonly maxBatch?: number | undefined
  /** Default `publish` timeout (10 s): room in the queue and durability must both come within it. */
  readonly publishTimeoutMs?: number | undefined
  /** At most one drop warning per this period (default 10 s). */
  readonly dropWarningIntervalMs?: number | undefined
  /** Backoff between append retries while the journal fails: doubling from `retryBaseMs` up to `retryMaxMs`. */
  readonly retryBaseMs?: number | undefined
  readonly retryMaxMs?: number | undefined
  /** Append attempts for what is still queued at shutdown before giving up (default 5). */
  readonly drainAttempts?: number | undefined
}

export interface Entry<A> {
  readonly sessionId?: string | undefined
  readonly event: A
}

export interface PublishOptions {
  readonly timeoutMs?: number | undefined
}

export interface ChangesOptions {
  /** Exclusive cursor: events with seq greater than this (default 0, everything retained). */
  readonly since?: number | Cursor | undefined
  /** Only this session's events; `Progress` items keep the cursor moving meanwhile. */
  readonly sessionId?: string | undefined
}

export interface FeedStatus extends Journal.JournalInfo {
  readonly dropped: number
  readonly subscribers: number
  readonly degraded: boolean
  readonly lastError: string | undefined
  readonly queued: number
}

export interface ChangeFeedService<A> {
  readonly epoch: string
  /** Records an event if it is durable. Never blocks, never fails: a full queue drops, counts and warns. */
  readonly record: (sessionId: string | undefined, event: A) => Effect.Effect<void>
  /** `record` for code outside Effect (the seed's `inbox`): same filtering, routing and dropping. */
  readonly unsafeRecord: (sessionId: string | undefined, event: A) => void
  /**
   * Waits for room, then for the event to be in the journal (per the fsync mode), and answers
   * its seq; `None` for an ephemeral event, which is not journaled.
   */
  readonly publish: (
    sessionId: string | undefined,
    event: A,
    options?: PublishOptions
  ) => Effect.Effect<Option.Option<number>, PublishError>
  /** `publish` for a batch, accepted as a whole: one seq per entry in order, `null` for ephemeral ones. */
  readonly publishAll: (
    entries: ReadonlyArray<Entry<A>>,
    options?: PublishOptions
  ) => Effect.Effect<Array<number | null>, PublishError>
  /** Replay from a cursor, then the live tail: exactly the events after it, in order, once each, or a reset. */
  readonly changes: (options?: ChangesOptions) => Stream.Stream<FeedItem<A>, Journal.JournalReadError>
  /**
   * `changes` with each event as its journal line, never decoded: for passing events on as
   * JSON (the SSE stream). Replay reads lines as written (`Journal.readLines`).
   */
  readonly changeLines: (options?: ChangesOptions) => Stream.Stream<LineItem, Journal.JournalReadError>
  /** Journaled events with `since < seq <= upTo`, straight from the journal. */
  readonly read: (since: number, upTo?: number) => Stream.Stream<ChangeEvent<A>, Journal.JournalReadError>
  readonly headSeq: Effect.Effect<number>
  readonly droppedCount: Effect.Effect<number>
  readonly status: Effect.Effect<FeedStatus>
}

type AckExit = Exit.Exit<number, FeedClosed | NotYetDurable>

/**
 * A published batch and its receipt, answered once (by the writer with the first seq, by the
 * deadline sweep, or at shutdown). A one-shot callback rather than a `Deferred` per call: the
 * receipt is on every `publish`'s path, and a `Deferred` costs several times more to make.
 */
class BatchItem<A> {
  private exit: AckExit | undefined = undefined
  private waiter: ((exit: AckExit) => void) | undefined = undefined
  constructor(
    readonly entries: ReadonlyArray<Entry<A>>,
    /** When the publisher stops waiting for durability (Clock millis), and its timeout. */
    readonly deadline: number,
    readonly timeoutMs: number
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
type Item<A> = Entry<A> | BatchItem<A>
const isBatch = <A>(item: Item<A>): item is BatchItem<A> => item instanceof BatchItem

/** A broadcast event as both kinds of reader item, each made once for every reader. */
interface LiveChange<A> {
  readonly decoded: Change<A>
  readonly line: LineChange
}

const asItem = <A>(change: ChangeEvent<A>): Change<A> => ({ _tag: "Change", change })

/** Builds a feed for any event domain on top of an open journal. The journal must outlive the scope. */
export const make = <A, I>(
  domain: FeedDomain<A, I>,
  journal: Journal.Journal<A>,
  options: ChangeFeedOptions = {}
): Effect.Effect<ChangeFeedService<A>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const maxBatch = options.maxBatch ?? 512
    const publishTimeoutMs = options.publishTimeoutMs ?? 10_000
    const warnEveryMs = options.dropWarningIntervalMs ?? 10_000
    const retryBaseMs = options.retryBaseMs ?? 10
    const retryMaxMs = options.retryMaxMs ?? 5_000
    const drainAttempts = options.drainAttempts ?? 5
    const instrument = yield* Instrument.make(options.account)
    const { journaled: journaledTotal, appendFailures: appendFailuresTotal, dropped: droppedTotal } = instrument.metrics

    const queue = yield* Queue.bounded<Item<A>>(options.queueCapacity ?? 1024)
    // Sliding: a slow reader loses its oldest live events (and catches up from the journal),
    // never stalls the writer. Events are held as reader items, made once here rather than once per reader.
    const live = new LiveBuffer<LiveChange<A>>(options.liveBuffer ?? 4096)
    const warnSignal = yield* Queue.sliding<void>(1)
    // Opened by producers once an item is in the queue, closed by the writer before it looks. The
    // writer waits on this, never in a queue take: a take interrupted at shutdown can lose the item
    // it was just handed, where an interrupted wait on the latch loses nothing.
    const hasWork = yield* Effect.makeLatch(false)
    const clock = yield* Effect.clock
    /** Published batches whose publishers still wait for their ack. */
    const awaiting = new Set<BatchItem<A>>()
    /** Wakes the deadline sweeper: a first waiter, or one whose deadline comes before `sweepAt`. */
    const sweepNeeded = yield* Effect.makeLatch(false)
    let sweepAt = Number.POSITIVE_INFINITY

    let closing = false
    let closed = false
    let dropped = 0
    let warnPending = false
    let degraded = false
    let lastError: string | undefined = undefined
    let subscribers = 0
    let nextSeq = (yield* journal.headSeq) + 1
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

    const unsafeRecord = (sessionId: string | undefined, event: A): void => {
      if (!domain.isDurable(event)) return
      const entry: Entry<A> = { sessionId: routeSession(domain, sessionId, event), event }
      if (closing || !Queue.unsafeOffer(queue, entry)) drop()
      else hasWork.unsafeOpen()
    }

    /** Queues durable entries as one batch and answers its first seq once journaled. */
    const submit = (durable: ReadonlyArray<Entry<A>>, timeoutMs: number): Effect.Effect<number, PublishError> => {
      if (closing) return Effect.fail(new FeedClosed())
      const item = new BatchItem(durable, clock.unsafeCurrentTimeMillis() + timeoutMs, timeoutMs)
      // No timer on the common path: a queue with room takes the item at once, and the wait
      // for durability is bounded by the shared deadline sweep below, not a timer per call.
      awaiting.add(item)
      if (awaiting.size === 1 || item.deadline < sweepAt) sweepNeeded.unsafeOpen()
      if (Queue.unsafeOffer(queue, item)) {
        hasWork.unsafeOpen()
        return item.await
      }
      // Once offered, the writer must hear of it even if this caller is interrupted right then.
      return Effect.uninterruptibleMask((restore) =>
        restore(
          Queue.offer(queue, item).pipe(
            Effect.timeoutFail({
              duration: Duration.millis(timeoutMs),
              onTimeout: () => new FeedBusy({ timeoutMs })
            })
          )
        ).pipe(Effect.zipRight(hasWork.open))
      ).pipe(
        Effect.tapError(() => Effect.sync(() => awaiting.delete(item))),
        Effect.zipRight(item.await)
      )
    }

    // Plain functions around `submit`, not generators: these are on every publisher's path.
    const publishAll = (
      entries: ReadonlyArray<Entry<A>>,
      publishOptions?: PublishOptions
    ): Effect.Effect<Array<number | null>, PublishError> =>
      Effect.suspend(() => {
        const seqs: Array<number | null> = new Array(entries.length).fill(null)
        const durable: Array<Entry<A>> = []
        const positions: Array<number> = []
        for (let i = 0; i < entries.length; i++) {
          const { event, sessionId } = entries[i]!
          if (!domain.isDurable(event)) continue
          durable.push({ sessionId: routeSession(domain, sessionId, event), event })
          positions.push(i)
        }
        if (durable.length === 0) return Effect.succeed(seqs)
        return Effect.map(submit(durable, publishOptions?.timeoutMs ?? publishTimeoutMs), (first) => {
          for (let k = 0; k < positions.length; k++) seqs[positions[k]!] = first + k
          return seqs
        })
      })

    const publish = (
      sessionId: string | undefined,
      event: A,
      publishOptions?: PublishOptions
    ): Effect.Effect<Option.Option<number>, PublishError> =>
      Effect.suspend(() =>
        domain.isDurable(event)
          ? Effect.map(
              submit(
                [{ sessionId: routeSession(domain, sessionId, event), event }],
                publishOptions?.timeoutMs ?? publishTimeoutMs
              ),
              Option.some
            )
          : Effect.succeed(Option.none())
      )

    // ---- the writer: seq allocation, append, broadcast, ack --------------------------

    const toChange = (seq: number, ts: string, entry: Entry<A>): ChangeEvent<A> =>
      entry.sessionId === undefined
        ? { seq, ts, event: entry.event }
        : { seq, ts, session_id: entry.sessionId, event: entry.event }

    const failAcks = (items: Iterable<Item<A>>) => {
      let lost = 0
      for (const item of items) {
        if (isBatch(item)) {
          lost += item.entries.length
          awaiting.delete(item)
          item.done(Exit.fail(new FeedClosed()))
        } else lost++
      }
      return lost
    }

    /**
     * Journals one batch, retrying with backoff while the journal fails (the seqs are reused
     * on retry, since none was consumed), then broadcasts and acknowledges it. `attempts`
     * bounds the retries (at shutdown); `restore` makes the backoff sleeps interruptible, and a
     * batch whose backoff is interrupted (by shutdown) is left to the drain.
     */
    const writeBatch = (
      items: ReadonlyArray<Item<A>>,
      restore: <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>,
      attempts: number
    ): Effect.Effect<void> =>
      Effect.gen(function* () {
        const ts = new Date(yield* Clock.currentTimeMillis).toISOString()
        const batch: Array<ChangeEvent<A>> = []
        const acks: Array<readonly [BatchItem<A>, number]> = []
        let seq = nextSeq
        for (const item of items) {
          if (isBatch(item)) {
            acks.push([item, seq])
            for (const entry of item.entries) batch.push(toChange(seq++, ts, entry))
          } else {
            batch.push(toChange(seq++, ts, item))
          }
        }
        let failures = 0
        let encoded: Journal.EncodedBatch
        while (true) {
          const attempt = yield* Effect.exit(instrument.commit(journal.append(batch), batch))
          if (Exit.isSuccess(attempt)) {
            encoded = attempt.value
            break
          }
          const failure = Cause.failureOption(attempt.cause)
          if (Option.isNone(failure)) return yield* refuseUnwritable(items, attempt.cause, restore, attempts)
          failures++
          degraded = true
          lastError = failure.value.message
          yield* Metric.increment(appendFailuresTotal)
          if (failures === 1 || failures % 20 === 0) {
            yield* Effect.logError(
              `change feed degraded: append of seqs ${batch[0]!.seq}..${batch[batch.length - 1]!.seq} failed ` +
                `(attempt ${failures}); retrying, nothing is lost`,
              failure.value
            )
          }
          const delay = Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(failures - 1, 20))
          const slept = failures >= attempts ? Exit.void : yield* Effect.exit(restore(Effect.sleep(delay)))
          if (Exit.isFailure(slept)) {
            // Shutdown: the batch is still accepted, and the drain retries it before the rest.
            stranded = items
            return
          }
          if (failures >= attempts) {
            const lost = failAcks(items)
            yield* Effect.logError(`change feed: ${lost} accepted event(s) could not be journaled before shutdown`)
            return
          }
        }
        if (degraded) {
          degraded = false
          yield* Effect.logInfo(`change feed recovered: journal appends succeed again (head ${seq - 1})`)
        }
        nextSeq = seq
        const broadcast: Array<LiveChange<A>> = new Array(batch.length)
        for (let i = 0; i < batch.length; i++) {
          const change = batch[i]!
          broadcast[i] = {
            decoded: { _tag: "Change", change },
            line: {
              _tag: "Change",
              seq: change.seq,
              sessionId: change.session_id,
              line: Journal.lineAt(encoded, i),
              live: true
            }
          }
        }
        live.push(batch[0]!.seq, broadcast)
        for (const [item, first] of acks) {
          awaiting.delete(item)
          item.done(Exit.succeed(first))
        }
        yield* Metric.incrementBy(journaledTotal, batch.length)
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
      restore: <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>,
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
          awaiting.delete(item)
          item.done(Exit.die(Cause.squash(cause)))
        } else drop()
        yield* Effect.logError("change feed: refused an event that cannot be journaled", cause)
      })

    const writer = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        hasWork.unsafeClose()
        return Effect.flatMap(Queue.takeUpTo(queue, maxBatch), (items) =>
          Chunk.isEmpty(items)
            ? restore(hasWork.await)
            : writeBatch(Chunk.toReadonlyArray(items), restore, Number.POSITIVE_INFINITY)
        )
      })
    ).pipe(Effect.forever)

    const writerFiber = yield* Effect.forkScoped(writer)

    // Publishers past their deadline are answered `NotYetDurable` (their events stay accepted
    // and are journaled when the journal recovers). One sweeper serves all of them, instead of a
    // timer per call: it idles while nobody waits, and sleeps until the earliest deadline.
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.suspend(() => {
          sweepNeeded.unsafeClose()
          if (awaiting.size === 0) {
            sweepAt = Number.POSITIVE_INFINITY
            return sweepNeeded.await
          }
          const now = clock.unsafeCurrentTimeMillis()
          let next = Number.POSITIVE_INFINITY
          for (const item of awaiting) {
            if (now >= item.deadline) {
              awaiting.delete(item)
              item.done(Exit.fail(new NotYetDurable({ timeoutMs: item.timeoutMs })))
            } else if (item.deadline < next) next = item.deadline
          }
          if (next === Number.POSITIVE_INFINITY) return Effect.void
          sweepAt = next
          // A publisher with an earlier deadline opens the latch and the sweep starts over.
          return Effect.raceFirst(Effect.sleep(next - now), sweepNeeded.await)
        })
      )
    )

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
          yield* Effect.sleep(warnEveryMs)
          warnPending = false
          if (dropped > reported) signalWarning() // report what came in during the quiet period
        })
      )
    )

    // Shutdown: stop intake, journal everything accepted, end readers. Runs before the
    // writer is interrupted by its scope, and before the journal is released.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        closing = true
        yield* Fiber.interrupt(writerFiber)
        let drained = 0
        while (true) {
          const items = stranded.concat(Chunk.toReadonlyArray(yield* Queue.takeAll(queue)))
          stranded = []
          if (items.length === 0) break
          for (let i = 0; i < items.length; i += maxBatch) {
            yield* writeBatch(items.slice(i, i + maxBatch), (effect) => effect, drainAttempts)
          }
          drained += items.length
        }
        yield* Queue.shutdown(queue)
        closed = true
        live.close()
        yield* Effect.logDebug(`change feed closed: drained ${drained} queued item(s), head ${nextSeq - 1}`)
      })
    )

    // ---- readers -----------------------------------------------------------------------

    /**
     * One reader, for either kind of change item `C`: how to replay the journal as `C`s, how to
     * take a broadcast event as a `C`, and how to read a `C`'s seq and session.
     */
    interface ReaderFormat<C> {
      readonly replay: (from: number, upTo: number) => Stream.Stream<C, Journal.JournalReadError>
      readonly live: (change: LiveChange<A>) => C
      readonly seqOf: (change: C) => number
      readonly sessionOf: (change: C) => string | undefined
    }

    const follow = <C>(
      format: ReaderFormat<C>,
      changesOptions: ChangesOptions
    ): Stream.Stream<C | Reset | CaughtUp | Progress, Journal.JournalReadError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const since = changesOptions.since ?? 0
          const cursorIn: Cursor = typeof since === "number" ? { seq: since } : since
          const sessionId = changesOptions.sessionId
          yield* Effect.acquireRelease(
            Effect.sync(() => subscribers++),
            () => Effect.sync(() => subscribers--)
          )
          const outer = yield* Effect.scope
          type Item = C | Reset | CaughtUp | Progress
          const pending: Array<Item> = []
          let phase: Scope.CloseableScope | undefined
          let replay: Effect.Effect<Chunk.Chunk<C>, Option.Option<Journal.JournalReadError>> | undefined
          let cursor = 0
          let caughtUp = false
          let ended = false
          yield* instrument.trackReader(() => cursor)

          // Replay the journal up to its head, then follow the live buffer: every later event is
          // put in the buffer after it is journaled, so the reader either finds it there or
          // finds that the buffer slid past it, and replays again.
          const startFrom = (from: number) =>
            Effect.gen(function* () {
              if (phase !== undefined) yield* Scope.close(phase, Exit.void)
              phase = yield* Scope.fork(outer, ExecutionStrategy.sequential)
              const head = yield* journal.headSeq
              cursor = from
              replay =
                from < head
                  ? yield* Scope.extend(Stream.toPull(instrument.replay(format.replay(from, head), from, head)), phase)
                  : undefined
            })

          const window = yield* journal.info
          const reset = decideReset(cursorIn, window)
          if (reset !== undefined) pending.push(instrument.reset(reset))
          yield* startFrom(reset === undefined ? cursorIn.seq : reset.continueFrom)

          const deliver = (items: Iterable<C>, out: Array<Item>): "ok" | "gap" => {
            let passedOver = false
            let outcome: "ok" | "gap" = "ok"
            for (const item of items) {
              const seq = format.seqOf(item)
              if (seq <= cursor) continue
              if (seq !== cursor + 1) {
                outcome = "gap"
                break
              }
              cursor = seq
              if (sessionId === undefined || format.sessionOf(item) === sessionId) {
                out.push(item)
                passedOver = false
              } else {
                passedOver = true
              }
            }
            if (passedOver) out.push({ _tag: "Progress", seq: cursor })
            return outcome
          }

          const pull: Effect.Effect<Chunk.Chunk<Item>, Option.Option<Journal.JournalReadError>> = Effect.gen(
            function* () {
              while (true) {
                if (pending.length > 0) return Chunk.unsafeFromArray(pending.splice(0))
                if (ended || closed) return yield* Effect.fail(Option.none())
                const out: Array<Item> = []
                if (replay !== undefined) {
                  const next = yield* Effect.either(replay)
                  if (Either.isRight(next)) {
                    deliver(next.right, out)
                  } else if (Option.isNone(next.left)) {
                    replay = undefined
                  } else if (next.left.value._tag === "JournalPruned") {
                    // Retention removed what this reader still needed: say so, go on from the head.
                    const now = yield* journal.info
                    out.push(instrument.reset(resetTo("below_retention", cursor, now)))
                    yield* startFrom(now.headSeq)
                  } else {
                    return yield* Effect.fail(Option.map(next.left, instrument.readFailure))
                  }
                } else {
                  if (!caughtUp) {
                    caughtUp = true
                    out.push({ _tag: "CaughtUp", seq: cursor })
                  } else {
                    const events = live.after(cursor, 1024)
                    // The live buffer slid past this reader: catch up from the journal.
                    if (events === "gap") yield* startFrom(cursor)
                    else if (events === "end") ended = true
                    else if (events.length === 0) yield* live.awaitAfter(cursor)
                    else deliver(events.map(format.live), out)
                  }
                }
                if (out.length > 0) return Chunk.unsafeFromArray(out)
              }
            }
          )
          return Stream.repeatEffectChunkOption(pull)
        })
      )

    const decodedReader: ReaderFormat<Change<A>> = {
      replay: (from, upTo) => Stream.map(journal.read(from, upTo), asItem),
      live: (change) => change.decoded,
      seqOf: (item) => item.change.seq,
      sessionOf: (item) => item.change.session_id
    }
    const lineReader: ReaderFormat<LineChange> = {
      replay: journal.readLines,
      live: (change) => change.line,
      seqOf: (item) => item.seq,
      sessionOf: (item) => item.sessionId
    }
    const changes = (changesOptions: ChangesOptions = {}): Stream.Stream<FeedItem<A>, Journal.JournalReadError> =>
      follow(decodedReader, changesOptions)
    const changeLines = (changesOptions: ChangesOptions = {}): Stream.Stream<LineItem, Journal.JournalReadError> =>
      follow(lineReader, changesOptions)

    const status = Effect.gen(function* () {
      const info = yield* journal.info
      const queued = yield* Queue.size(queue)
      return { ...info, dropped, subscribers, degraded, lastError, queued: Math.max(0, queued) } satisfies FeedStatus
    })
    yield* instrument.observe(status, journal.info)

    return {
      epoch: journal.epoch,
      record: (sessionId, event) => Effect.sync(() => unsafeRecord(sessionId, event)),
      unsafeRecord,
      publish: instrument.publish(publish),
      publishAll: instrument.publishAll(publishAll),
      changes,
      changeLines,
      read: journal.read,
      headSeq: journal.headSeq,
      droppedCount: Effect.sync(() => dropped),
      status
    } satisfies ChangeFeedService<A>
  })

/** Options of a feed on a journal directory. */
export interface FeedOptions extends ChangeFeedOptions, Journal.JournalOptions {}

/** A feed for any domain with its file journal; both are released with the scope. */
export const makeFiles = <A, I>(
  domain: FeedDomain<A, I>,
  options: FeedOptions
): Effect.Effect<ChangeFeedService<A>, Journal.JournalOpenError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  // The journal keeps its segment files in a scope of its own, so opened before the feed it
  // is released after the feed's drain, whatever it opened while running.
  Journal.make(domain.schema, options).pipe(
    Effect.tapError(Instrument.openFailure(options.account)),
    Effect.flatMap((journal) => make(domain, journal, options))
  )

/** The agent platform's change feed. */
export class ChangeFeed extends Context.Tag("effect-change-feed/ChangeFeed")<
  ChangeFeed,
  ChangeFeedService<AgentEvent>
>() {}

/** The agent feed on a journal directory. */
export const layer = (
  options: FeedOptions
): Layer.Layer<ChangeFeed, Journal.JournalOpenError, FileSystem.FileSystem | Path.Path> =>
  Layer.scoped(ChangeFeed, makeFiles(AgentDomain, options))

/** The agent feed on an in-memory journal, for tests of code that uses the feed. */
export const layerMemory = (options: ChangeFeedOptions & Journal.MemoryJournalOptions = {}): Layer.Layer<ChangeFeed> =>
  Layer.scoped(
    ChangeFeed,
    Effect.flatMap(Journal.makeMemory(AgentDomain.schema, options), (journal) => make(AgentDomain, journal, options))
  )
