/**
 * The producers' side of a feed: `record`, `publish` and `publishAll` (with or without an
 * idempotency key). Each keeps the durable events (routed to their session), hands them to the
 * writer's intake, and waits for the receipt; a keyed batch is answered from the idempotency
 * window when its key is known (`Idempotency.ts`).
 */
import { Duration, Effect, Exit, Option, Schema } from "effect"
import { estimateBytes } from "../BufferBudget.js"
import { type FeedDomain, routeSession } from "../Domain/FeedDomain.js"
import type { Journal } from "../Journal.js"
import {
  FeedBusy,
  FeedClosed,
  IdempotencyKeyConflict,
  InvalidIdempotencyKey,
  NotYetDurable,
  type PublishAllError,
  type PublishError
} from "./Errors.js"
import {
  chainFingerprint,
  chainFingerprintOfJson,
  emptyFingerprint,
  entryText,
  type IdempotencyWindow,
  isValidKey,
  type Pending,
  recallFingerprint,
  type Runs,
  seqsAt
} from "./Idempotency.js"
import { BatchItem, type Entry, JsonEntry, type ObservePublish, type Receipts } from "./Receipts.js"
import type { Writer } from "./Writer.js"

export interface PublishOptions {
  /** How long to wait for room and durability (the feed's `publishTimeout` by default). */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * What an entry still only JSON holds besides its bytes (a view of its producer's buffer): the
 * entry, its `EventJson`, and what the writer and the journal make of it before it is written.
 */
const JSON_ENTRY_BYTES = 160

const timeoutOf = (options: PublishOptions | undefined, otherwise: number): number =>
  options?.timeout === undefined ? otherwise : Duration.toMillis(Duration.decode(options.timeout))

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

export interface Publisher<A> {
  readonly unsafeRecord: (sessionId: string | undefined, event: A) => void
  readonly publish: (
    sessionId: string | undefined,
    event: A,
    options?: PublishOptions
  ) => Effect.Effect<Option.Option<number>, PublishError>
  readonly publishAll: (
    entries: ReadonlyArray<Entry<A>>,
    options?: PublishAllOptions
  ) => Effect.Effect<Array<number | null>, PublishAllError>
}

/** A keyed batch as the window sees it: its durable entries and the fingerprint after each. */
interface KeyedRequest<A> {
  readonly key: string
  readonly length: number
  readonly durable: ReadonlyArray<Entry<A>>
  readonly positions: ReadonlyArray<number>
  readonly chain: ReadonlyArray<string>
  readonly timeoutMs: number
  /** The shared journal was asked for the key already. */
  readonly lookedUp?: boolean
}

export const make = <A, I>(deps: {
  readonly domain: FeedDomain<A, I>
  readonly journal: Journal<A>
  readonly writer: Writer<A>
  readonly receipts: Receipts<A>
  readonly keys: IdempotencyWindow
  /** Past this an event is over every budget: its size need not be known more exactly (nor a cycle walked). */
  readonly estimateLimit: number
  readonly publishTimeoutMs: number
  /** Records how each call ended (`Instrument.observePublish`). */
  readonly observe: ObservePublish
}): Effect.Effect<Publisher<A>> =>
  Effect.map(Effect.clock, (clock) => {
    const { domain, estimateLimit, journal, keys, observe, receipts, writer } = deps
    /** `publish` recorded when it ends, for a call whose receipt (if any) does not record it. */
    const observed = <R, E extends PublishAllError>(started: number, publish: Effect.Effect<R, E>) =>
      Effect.onExit(publish, (exit) => Effect.sync(() => observe(started, exit)))
    const encodeEvent = Schema.encodeSync(domain.schema)

    // An entry still only JSON says itself whether it is durable, and what it holds: its event is not read (nor parsed).
    const isDurable = (entry: Entry<A>): boolean =>
      entry instanceof JsonEntry ? entry.durable : domain.isDurable(entry.event)
    /** Whether the entry's session is the one routing gives it: it names one, or says it is routed. */
    const isRouted = (entry: Entry<A>): boolean =>
      entry.sessionId !== undefined || (entry instanceof JsonEntry && entry.routed)
    /** The entry with the session its event names, for an entry that names none itself. */
    const routed = (entry: Entry<A>): Entry<A> => {
      const { event, eventJson } = entry
      return { sessionId: routeSession(domain, undefined, event), event, eventJson }
    }
    const entryBytes = (entry: Entry<A>, limit: number): number =>
      entry instanceof JsonEntry ? JSON_ENTRY_BYTES + entry.json.length : estimateBytes(entry.event, limit)

    const unsafeRecord = (sessionId: string | undefined, event: A): void => {
      if (!domain.isDurable(event)) return
      writer.record({
        sessionId: routeSession(domain, sessionId, event),
        event,
        bytes: estimateBytes(event, estimateLimit)
      })
    }

    /**
     * Queues durable entries as one batch and answers `reply` of its first seq once journaled. A
     * keyed batch that is not accepted lets go of its key, so that a retry can append it. With
     * `observe`, the call is recorded here however it ends (its caller records it otherwise).
     */
    const submit = <R>(
      durable: ReadonlyArray<Entry<A>>,
      timeoutMs: number,
      keyed: Pending | undefined,
      reply: (first: number) => R,
      observe: ObservePublish | undefined,
      started: number
    ): Effect.Effect<R, PublishError> => {
      if (writer.closing()) {
        if (keyed !== undefined) keys.abandon(keyed)
        const closed = Exit.fail(new FeedClosed())
        observe?.(started, closed)
        return closed
      }
      let bytes = 0
      for (const entry of durable) bytes += entryBytes(entry, estimateLimit)
      const deadline = clock.unsafeCurrentTimeMillis() + timeoutMs
      const item = new BatchItem(durable, bytes, deadline, timeoutMs, keyed, reply, observe, started)
      // No timer on the common path: an intake with room takes the item at once, and the wait
      // for durability is bounded by the receipts' deadline sweep, not a timer per call.
      receipts.track(item)
      if (writer.offer(item)) return item.await
      return writer.admit(item).pipe(
        // Not queued (busy, closing, or the caller was interrupted first): nothing of it will be journaled.
        Effect.onExit((exit) =>
          Exit.isSuccess(exit)
            ? Effect.void
            : Effect.sync(() => {
                receipts.forget(item)
                if (keyed !== undefined) keys.abandon(keyed)
                observe?.(started, exit)
              })
        ),
        Effect.zipRight(item.await)
      )
    }

    // Plain functions around `submit`, not generators: these are on every publisher's path. An
    // unkeyed call is one `suspend` and, once queued, one wait whose resumption answers and
    // records it (`BatchItem`).
    const publishAll = (
      entries: ReadonlyArray<Entry<A>>,
      options?: PublishAllOptions
    ): Effect.Effect<Array<number | null>, PublishAllError> =>
      Effect.suspend(() => {
        const started = performance.now()
        const timeoutMs = timeoutOf(options, deps.publishTimeoutMs)
        const key = options?.idempotencyKey
        if (key !== undefined) return observed(started, publishKeyed(key, entries, timeoutMs))
        const seqs: Array<number | null> = new Array(entries.length).fill(null)
        const durable: Array<Entry<A>> = []
        const positions: Array<number> = []
        for (let i = 0; i < entries.length; i++) {
          const entry = entries[i]!
          if (!isDurable(entry)) continue
          // An entry that names its session is queued as it is, not copied (nor its event read).
          durable.push(isRouted(entry) ? entry : routed(entry))
          positions.push(i)
        }
        if (durable.length === 0) return answeredNow(started, seqs)
        const reply = (first: number) => {
          for (let k = 0; k < positions.length; k++) seqs[positions[k]!] = first + k
          return seqs
        }
        return submit(durable, timeoutMs, undefined, reply, observe, started)
      })

    const publish = (
      sessionId: string | undefined,
      event: A,
      options?: PublishOptions
    ): Effect.Effect<Option.Option<number>, PublishError> =>
      Effect.suspend(() => {
        const started = performance.now()
        if (!domain.isDurable(event)) return answeredNow(started, Option.none())
        const entry = { sessionId: routeSession(domain, sessionId, event), event }
        return submit([entry], timeoutOf(options, deps.publishTimeoutMs), undefined, Option.some, observe, started)
      })

    /** A call answered at once (nothing durable to wait for), recorded as one acked now. */
    const answeredNow = <R>(started: number, answer: R): Effect.Effect<R> => {
      const exit = Exit.succeed(answer)
      observe(started, exit)
      return exit
    }

    // ---- idempotent batches ---------------------------------------------------------------

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
        const given = entries[i]!
        if (!isDurable(given)) continue
        const entry = isRouted(given) ? given : routed(given)
        const { eventJson, sessionId } = entry
        durable.push(entry)
        positions.push(i)
        fingerprint =
          eventJson === undefined
            ? chainFingerprint(fingerprint, entryText(sessionId, encodeEvent(entry.event)))
            : chainFingerprintOfJson(fingerprint, sessionId, eventJson)
        chain.push(fingerprint)
      }
      return attemptKeyed({ key, length: entries.length, durable, positions, chain, timeoutMs })
    }

    /** Answers from the window if the key is known, else publishes under it; again if a request it waited on is dropped. */
    const attemptKeyed = (request: KeyedRequest<A>): Effect.Effect<Array<number | null>, PublishAllError> =>
      Effect.suspend(() => {
        const { chain, durable, key } = request
        const answer = (runs: Runs) => seqsAt(request.length, request.positions, runs)
        const fingerprint = chain.length === 0 ? emptyFingerprint : chain[chain.length - 1]!
        const known = keys.find(key, writer.head())
        if (known === undefined && journal.seqsOfKey !== undefined && !request.lookedUp) {
          // Another writer of a shared journal may have journaled it (the first attempt went to
          // another replica): look, and go on with what the journal holds. Unable to look, take nothing.
          return journal.seqsOfKey(key).pipe(
            Effect.mapError(() => new FeedBusy({ timeoutMs: request.timeoutMs })),
            Effect.flatMap((seqs) => {
              keys.learn(key, seqs, writer.head())
              return attemptKeyed({ ...request, lookedUp: true })
            })
          )
        }
        if (known === undefined) {
          if (durable.length === 0) return Effect.succeed(answer([]))
          const keyed = keys.begin(key, fingerprint, durable.length, undefined)
          const reply = (first: number) => answer([first, durable.length])
          return submit(durable, request.timeoutMs, keyed, reply, undefined, 0)
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
          const reply = (first: number) => answer([...prior, first, rest.length])
          return submit(rest, request.timeoutMs, keyed, reply, undefined, 0)
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

    return { unsafeRecord, publish, publishAll } satisfies Publisher<A>
  })
