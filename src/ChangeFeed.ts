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
 * behind the live buffer. A batch published with an idempotency key is journaled with it, and a
 * retry under the same key is answered with the batch's seqs (`ChangeFeed/Idempotency.ts`).
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
  Schema,
  Scope,
  Stream
} from "effect"
import { BufferBudget, estimateBytes } from "./BufferBudget.js"
import {
  FeedBusy,
  FeedClosed,
  IdempotencyKeyConflict,
  InvalidIdempotencyKey,
  NotYetDurable,
  type PublishAllError,
  type PublishError
} from "./ChangeFeed/Errors.js"
import {
  chainFingerprint,
  emptyFingerprint,
  entryText,
  IdempotencyWindow,
  isValidKey,
  type Pending,
  recallFingerprint,
  restoreKeys,
  type Runs,
  seqsAt
} from "./ChangeFeed/Idempotency.js"
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
  /** Capacity of the intake queue in items (default 1024): a `record`, or a `publish`/`publishAll` call. */
  readonly queueCapacity?: number | undefined
  /**
   * Capacity of the intake in bytes (default 32 MiB), by an estimate of what the events hold in
   * memory (see `estimateBytes`), counted from the queue until the writer has journaled them.
   * Past it, `record` drops and `publish` waits, as for a full queue. One item larger than this
   * is let in alone, once the intake is empty.
   */
  readonly queueBytes?: number | undefined
  /** Live buffer shared by all readers, in events (default 4096); a reader further behind catches up from the journal. */
  readonly liveBuffer?: number | undefined
  /**
   * Live buffer in bytes (default 32 MiB): its events' journal lines plus an estimate of their
   * decoded form. Past it the oldest batches leave the buffer (the newest is always held), and
   * readers that needed them catch up from the journal.
   */
  readonly liveBufferBytes?: number | undefined
  /** Most queue items the writer takes into one batch (default 512). */
  readonly maxBatch?: number | undefined
  /** Most bytes, by the intake's estimate, in one batch (default 4 MiB); a larger item is a batch of its own. */
  readonly maxBatchBytes?: number | undefined
  /** Default `publish` timeout (10 s): room in the queue and durability must both come within it. */
  readonly publishTimeoutMs?: number | undefined
  /** At most one drop warning per this period (default 10 s). */
  readonly dropWarningIntervalMs?: number | undefined
  /** Backoff between append retries while the journal fails: doubling from `retryBaseMs` up to `retryMaxMs`. */
  readonly retryBaseMs?: number | undefined
  readonly retryMaxMs?: number | undefined
  /** Append attempts for what is still queued at shutdown before giving up (default 5). */
  readonly drainAttempts?: number | undefined
  /**
   * Idempotency keys are remembered while their request's first event is among the last this
   * many journaled (default 100,000). At open the feed reads that many events from the journal's
   * tail to learn them again. A retry after that is appended again.
   */
  readonly idempotencyWindowEvents?: number | undefined
  /** Most memory the remembered keys may take, by estimate (default 32 MiB); the oldest are forgotten first. */
  readonly idempotencyWindowBytes?: number | undefined
}

export interface Entry<A> {
  readonly sessionId?: string | undefined
  readonly event: A
}

export interface PublishOptions {
  readonly timeoutMs?: number | undefined
}

export interface PublishAllOptions extends PublishOptions {
  /**
   * Makes the batch idempotent. A batch whose key the feed has already accepted is answered with
   * the seqs it got then, and nothing is appended again; one sent while the first is still in
   * flight waits for it and gets the same answer. The same key with other durable events fails
   * with `IdempotencyKeyConflict`. 1 to 128 characters of `A-Z a-z 0-9 . _ : -` (a UUID fits).
   * Keys are remembered across restarts, within the window (`idempotencyWindowEvents`).
   */
  readonly idempotencyKey?: string | undefined
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
  /** Idempotency keys remembered, and the memory they take (an estimate). */
  readonly idempotencyKeys: number
  readonly idempotencyBytes: number
  /** Bytes the intake holds (queued and being journaled), by its estimate. */
  readonly queuedBytes: number
  /** Events in the live buffer, and the bytes they hold. */
  readonly liveEvents: number
  readonly liveBytes: number
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
  /**
   * `publish` for a batch, accepted as a whole: one seq per entry in order, `null` for ephemeral
   * ones. With an `idempotencyKey`, a retry of the batch answers the original seqs.
   */
  readonly publishAll: (
    entries: ReadonlyArray<Entry<A>>,
    options?: PublishAllOptions
  ) => Effect.Effect<Array<number | null>, PublishAllError>
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
/** A recorded event in the intake, with what it holds in memory. */
interface Queued<A> extends Entry<A> {
  readonly bytes: number
}
type Item<A> = Queued<A> | BatchItem<A>
const isBatch = <A>(item: Item<A>): item is BatchItem<A> => item instanceof BatchItem

/** A broadcast event as both kinds of reader item, each made once for every reader. */
interface LiveChange<A> {
  readonly decoded: Change<A>
  readonly line: LineChange
}

/** A change as readers get it: the idempotency key it was journaled with is the journal's alone. */
const asItem = <A>(stored: Journal.JournalEvent<A>): Change<A> => {
  if (stored.key === undefined) return { _tag: "Change", change: stored }
  const { key: _key, ...change } = stored
  return { _tag: "Change", change }
}

const MiB = 1024 * 1024
/**
 * What an event in the live buffer holds besides its line and its decoded event: the change
 * around the event, the two reader items, and the line's view of the batch's bytes.
 */
const LIVE_EVENT_BYTES = 384
/** Most bytes a reader takes from the live buffer at once (past its first event): what it copies in one go. */
const LIVE_READ_BYTES = MiB

/**
 * Builds a feed for any event domain on top of an open journal. The journal must outlive the
 * scope. Fails if the journal's tail, read to learn the recent idempotency keys, cannot be read.
 */
export const make = <A, I>(
  domain: FeedDomain<A, I>,
  journal: Journal.Journal<A>,
  options: ChangeFeedOptions = {}
): Effect.Effect<ChangeFeedService<A>, Journal.JournalCorrupt | Journal.JournalIoError, Scope.Scope> =>
  Effect.gen(function* () {
    const maxBatch = options.maxBatch ?? 512
    const maxBatchBytes = options.maxBatchBytes ?? 4 * MiB
    const publishTimeoutMs = options.publishTimeoutMs ?? 10_000
    const warnEveryMs = options.dropWarningIntervalMs ?? 10_000
    const retryBaseMs = options.retryBaseMs ?? 10
    const retryMaxMs = options.retryMaxMs ?? 5_000
    const drainAttempts = options.drainAttempts ?? 5
    const instrument = yield* Instrument.make(options.account)
    const { journaled: journaledTotal, appendFailures: appendFailuresTotal, dropped: droppedTotal } = instrument.metrics

    // Bounded by `intake`: room is taken before an item is queued; its item is given back when the
    // writer takes it, its bytes once the writer has journaled it (what the writer holds counts too).
    const queue = yield* Queue.unbounded<Item<A>>()
    const intake = new BufferBudget(options.queueCapacity ?? 1024, options.queueBytes ?? 32 * MiB)
    // Sliding: a slow reader loses its oldest live events (and catches up from the journal),
    // never stalls the writer. Events are held as reader items, made once here rather than once per reader.
    const live = new LiveBuffer<LiveChange<A>>(
      options.liveBuffer ?? 4096,
      options.liveBufferBytes ?? 32 * MiB,
      (change) => change.line.body.length
    )
    /** Past this an event is over every budget: its size need not be known more exactly (nor a cycle walked). */
    const estimateLimit = Math.max(intake.maxBytes, live.maxBytes)
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

    const encodeEvent = Schema.encodeSync(domain.schema)
    const keys = new IdempotencyWindow({
      events: options.idempotencyWindowEvents ?? 100_000,
      bytes: options.idempotencyWindowBytes ?? 32 * 1024 * 1024
    })
    yield* restoreKeys(journal, keys, options.idempotencyWindowEvents ?? 100_000)

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

    /**
     * Queues an item if the intake has room for it and the feed is not closing. One synchronous
     * step, so an item is either queued (and the shutdown drain finds it) or not taken at all.
     */
    const enqueue = (item: Item<A>): boolean => {
      if (closing || !intake.tryTake(item.bytes)) return false
      Queue.unsafeOffer(queue, item)
      hasWork.unsafeOpen()
      return true
    }

    const unsafeRecord = (sessionId: string | undefined, event: A): void => {
      if (!domain.isDurable(event)) return
      const entry: Queued<A> = {
        sessionId: routeSession(domain, sessionId, event),
        event,
        bytes: estimateBytes(event, estimateLimit)
      }
      if (!enqueue(entry)) drop()
    }

    /** Waits for room in the intake until the item's deadline, then queues it. */
    const admit = (item: BatchItem<A>): Effect.Effect<void, FeedBusy | FeedClosed> =>
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

    /**
     * Queues durable entries as one batch and answers its first seq once journaled. A keyed batch
     * that is not accepted lets go of its key, so that a retry can append it.
     */
    const submit = (
      durable: ReadonlyArray<Entry<A>>,
      timeoutMs: number,
      keyed: Pending | undefined
    ): Effect.Effect<number, PublishError> => {
      if (closing) {
        if (keyed !== undefined) keys.abandon(keyed)
        return Effect.fail(new FeedClosed())
      }
      let bytes = 0
      for (const entry of durable) bytes += estimateBytes(entry.event, estimateLimit)
      const item = new BatchItem(durable, bytes, clock.unsafeCurrentTimeMillis() + timeoutMs, timeoutMs, keyed)
      // No timer on the common path: an intake with room takes the item at once, and the wait
      // for durability is bounded by the shared deadline sweep below, not a timer per call.
      awaiting.add(item)
      if (awaiting.size === 1 || item.deadline < sweepAt) sweepNeeded.unsafeOpen()
      if (enqueue(item)) return item.await
      return admit(item).pipe(
        // Not queued (busy, closing, or the caller was interrupted first): nothing of it will be journaled.
        Effect.onExit((exit) =>
          Exit.isSuccess(exit)
            ? Effect.void
            : Effect.sync(() => {
                awaiting.delete(item)
                if (keyed !== undefined) keys.abandon(keyed)
              })
        ),
        Effect.zipRight(item.await)
      )
    }

    // Plain functions around `submit`, not generators: these are on every publisher's path.
    const publishAll = (
      entries: ReadonlyArray<Entry<A>>,
      publishOptions?: PublishAllOptions
    ): Effect.Effect<Array<number | null>, PublishAllError> =>
      Effect.suspend(() => {
        const key = publishOptions?.idempotencyKey
        if (key !== undefined) return publishKeyed(key, entries, publishOptions?.timeoutMs ?? publishTimeoutMs)
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
        return Effect.map(submit(durable, publishOptions?.timeoutMs ?? publishTimeoutMs, undefined), (first) => {
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
                publishOptions?.timeoutMs ?? publishTimeoutMs,
                undefined
              ),
              Option.some
            )
          : Effect.succeed(Option.none())
      )

    // ---- idempotent batches ---------------------------------------------------------------

    /** A keyed batch as the window sees it: its durable entries and the fingerprint after each. */
    interface KeyedRequest {
      readonly key: string
      readonly length: number
      readonly durable: ReadonlyArray<Entry<A>>
      readonly positions: ReadonlyArray<number>
      readonly chain: ReadonlyArray<string>
      readonly timeoutMs: number
    }

    const publishKeyed = (
      key: string,
      entries: ReadonlyArray<Entry<A>>,
      timeoutMs: number
    ): Effect.Effect<Array<number | null>, PublishAllError> => {
      if (!isValidKey(key)) return Effect.fail(new InvalidIdempotencyKey({ key }))
      const durable: Array<Entry<A>> = []
      const positions: Array<number> = []
      const chain: Array<string> = []
      let fingerprint = emptyFingerprint
      for (let i = 0; i < entries.length; i++) {
        const { event, sessionId } = entries[i]!
        if (!domain.isDurable(event)) continue
        const routed = routeSession(domain, sessionId, event)
        durable.push({ sessionId: routed, event })
        positions.push(i)
        fingerprint = chainFingerprint(fingerprint, entryText(routed, encodeEvent(event)))
        chain.push(fingerprint)
      }
      return attemptKeyed({ key, length: entries.length, durable, positions, chain, timeoutMs })
    }

    /** Answers from the window if the key is known, else publishes under it; again if a request it waited on is dropped. */
    const attemptKeyed = (request: KeyedRequest): Effect.Effect<Array<number | null>, PublishAllError> =>
      Effect.suspend(() => {
        const { chain, durable, key } = request
        const answer = (runs: Runs) => seqsAt(request.length, request.positions, runs)
        const fingerprint = chain.length === 0 ? emptyFingerprint : chain[chain.length - 1]!
        const known = keys.find(key, nextSeq - 1)
        if (known === undefined) {
          if (durable.length === 0) return Effect.succeed(answer([]))
          const keyed = keys.begin(key, fingerprint, durable.length, undefined)
          return Effect.map(submit(durable, request.timeoutMs, keyed), (first) => answer([first, durable.length]))
        }
        if (known._tag === "Journaled" && known.fingerprint === undefined) {
          // Learnt at open: its fingerprint is read back from the journal the first time it is needed.
          return Effect.flatMap(Effect.orDie(recallFingerprint(journal, known)), (recalled) => {
            keys.recalled(known, recalled)
            return attemptKeyed(request)
          })
        }
        if (known.fingerprint === fingerprint) {
          if (known._tag === "Journaled") return Effect.succeed(answer(known.runs))
          return Effect.flatMap(awaitKeyed(known, request.timeoutMs), (runs) =>
            runs === undefined ? attemptKeyed(request) : Effect.succeed(answer(runs))
          )
        }
        // A crash cut this request short: the journal holds its first events, the retry adds the rest.
        if (
          known._tag === "Journaled" &&
          known.torn &&
          known.count < durable.length &&
          chain[known.count - 1] === known.fingerprint
        ) {
          const prior = known.runs
          const rest = durable.slice(known.count)
          const keyed = keys.begin(key, fingerprint, durable.length, known)
          return Effect.map(submit(rest, request.timeoutMs, keyed), (first) => answer([...prior, first, rest.length]))
        }
        return Effect.fail(
          new IdempotencyKeyConflict({ key, acceptedEvents: known.count, requestEvents: durable.length })
        )
      })

    /** The seqs of a request in flight under the same key once journaled (`undefined` if it never will be). */
    const awaitKeyed = (pending: Pending, timeoutMs: number): Effect.Effect<Runs | undefined, NotYetDurable> =>
      Effect.async<Runs | undefined>((resume) => {
        const waiter = (runs: Runs | undefined) => resume(Effect.succeed(runs))
        pending.waiters.add(waiter)
        return Effect.sync(() => pending.waiters.delete(waiter))
      }).pipe(
        Effect.timeoutFail({
          duration: Duration.millis(timeoutMs),
          onTimeout: () => new NotYetDurable({ timeoutMs })
        })
      )

    // ---- the writer: seq allocation, append, broadcast, ack --------------------------

    const toChange = (seq: number, ts: string, entry: Entry<A>, key: string | undefined): Journal.JournalEvent<A> => {
      const change: ChangeEvent<A> =
        entry.sessionId === undefined
          ? { seq, ts, event: entry.event }
          : { seq, ts, session_id: entry.sessionId, event: entry.event }
      // The key goes into the same write as the events: the journal never holds one without the other.
      return key === undefined ? change : { ...change, key }
    }

    const failAcks = (items: Iterable<Item<A>>) => {
      let lost = 0
      for (const item of items) {
        if (isBatch(item)) {
          lost += item.entries.length
          awaiting.delete(item)
          if (item.keyed !== undefined) keys.abandon(item.keyed)
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
        const batch: Array<Journal.JournalEvent<A>> = []
        const acks: Array<readonly [BatchItem<A>, number]> = []
        let seq = nextSeq
        for (const item of items) {
          if (isBatch(item)) {
            acks.push([item, seq])
            const key = item.keyed?.key
            for (const entry of item.entries) batch.push(toChange(seq++, ts, entry, key))
          } else {
            batch.push(toChange(seq++, ts, item, undefined))
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
        // What the live buffer holds for the batch: the lines' bytes, the events as queued, and the items around them.
        let held = encoded.bytes.length + batch.length * LIVE_EVENT_BYTES
        for (const item of items) held += item.bytes
        const broadcast: Array<LiveChange<A>> = new Array(batch.length)
        for (let i = 0; i < batch.length; i++) {
          const change = batch[i]!
          broadcast[i] = {
            decoded: asItem(change),
            line: {
              _tag: "Change",
              seq: change.seq,
              sessionId: change.session_id,
              body: Journal.bodyAt(encoded, i),
              live: true
            }
          }
        }
        live.push(batch[0]!.seq, broadcast, held)
        for (const [item, first] of acks) {
          awaiting.delete(item)
          if (item.keyed !== undefined) keys.journaledAt(item.keyed, first, item.entries.length, seq - 1)
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
          if (item.keyed !== undefined) keys.abandon(item.keyed)
          item.done(Exit.die(Cause.squash(cause)))
        } else drop()
        yield* Effect.logError("change feed: refused an event that cannot be journaled", cause)
      })

    /**
     * Journals items taken from the queue in batches of at most `maxBatch` items and
     * `maxBatchBytes` (an item larger than that is a batch of its own), giving each batch's bytes
     * in the intake back once it is journaled (or given up). A batch stranded by shutdown keeps
     * its bytes, and so does the rest.
     */
    const writeInBatches = (
      items: ReadonlyArray<Item<A>>,
      restore: <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>,
      attempts: number
    ): Effect.Effect<void> =>
      Effect.gen(function* () {
        let start = 0
        while (start < items.length) {
          let end = start
          let bytes = 0
          while (end < items.length && end - start < maxBatch) {
            const next = items[end]!.bytes
            if (end > start && bytes + next > maxBatchBytes) break
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
      })

    const writer = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        hasWork.unsafeClose()
        return Effect.flatMap(Queue.takeUpTo(queue, maxBatch), (items) => {
          if (Chunk.isEmpty(items)) return restore(hasWork.await)
          intake.release(0, items.length)
          return writeInBatches(Chunk.toReadonlyArray(items), restore, Number.POSITIVE_INFINITY)
        })
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
          const taken = Chunk.toReadonlyArray(yield* Queue.takeAll(queue))
          intake.release(0, taken.length)
          const items = stranded.concat(taken)
          stranded = []
          if (items.length === 0) break
          yield* writeInBatches(items, (effect) => effect, drainAttempts)
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
                    const events = live.after(cursor, 1024, LIVE_READ_BYTES)
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
      return {
        ...info,
        dropped,
        subscribers,
        degraded,
        lastError,
        queued: Math.max(0, queued),
        idempotencyKeys: keys.size,
        idempotencyBytes: keys.memoryBytes,
        queuedBytes: intake.bytes,
        liveEvents: live.size,
        liveBytes: live.bytes
      } satisfies FeedStatus
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
    Effect.flatMap(Journal.makeMemory(AgentDomain.schema, options), (journal) =>
      // An in-memory journal cannot fail to be read.
      Effect.orDie(make(AgentDomain, journal, options))
    )
  )
