/**
 * What a feed tells about its work: its metrics (see `Metrics`) and, when a tracer is
 * installed, its spans: `ChangeFeed.publish` / `ChangeFeed.publishAll` per call,
 * `ChangeFeed.commit` per batch the writer appends, `ChangeFeed.replay` per journal replay a
 * reader runs. Made once per feed. With no tracer the span wrappers are the identity, and
 * nothing here runs per event: per call, per batch, per reset, or when metrics are collected.
 */
import { Cause, Clock, Effect, Exit, FiberId, Option, Stream } from "effect"
import type { Reset } from "../Domain/FeedItem.js"
import type { Appended } from "../Journal.js"
import type { JournalReadError } from "../Journal/Errors.js"
import * as Metrics from "../Metrics.js"
import * as Finalizer from "../Finalizer.js"
import * as Tracing from "../Tracing.js"
import type { PublishAllError, PublishError } from "./Errors.js"
import type { ObservePublish } from "./Receipts.js"

/** The journal's part of the state the gauges are read from. */
export interface JournalState {
  readonly headSeq: number
  readonly oldestSeq: number
  readonly segments: number
  readonly bytes: number
}

/** The state the gauges are read from. */
export interface Observed extends JournalState {
  readonly queued: number
  readonly subscribers: number
  readonly degraded: boolean
}

export type Instrument = Effect.Effect.Success<ReturnType<typeof make>>

export const make = (account: string = Metrics.defaultAccount) =>
  Effect.gen(function* () {
    const tracing = yield* Tracing.active
    // Held first, so let go last: after the gauges below are set from the closed feed.
    const metrics = yield* Metrics.holdAccount(account)
    const accountAttribute = { "feed.account": account }
    /** Where each open reader is: its cursor. */
    const readers = new Set<() => number>()

    const setGauges = (s: Observed) => {
      metrics.headSeq.unsafeUpdate(s.headSeq, [])
      metrics.oldestSeq.unsafeUpdate(s.oldestSeq, [])
      metrics.segments.unsafeUpdate(s.segments, [])
      metrics.journalBytes.unsafeUpdate(s.bytes, [])
      metrics.queueDepth.unsafeUpdate(s.queued, [])
      metrics.subscribers.unsafeUpdate(s.subscribers, [])
      metrics.degraded.unsafeUpdate(s.degraded ? 1 : 0, [])
      let lag = 0
      for (const position of readers) lag = Math.max(lag, s.headSeq - position())
      metrics.readerLag.unsafeUpdate(lag, [])
    }
    /** The journal's state, once `observe` is given it. */
    let journalState: Effect.Effect<JournalState> | undefined
    // Added first, so run last, after the feed's own shutdown (its drain): the gauges of a closed
    // feed say so (no queue, no reader, not degraded) and keep its final head, for the collection
    // that exports them one last time (`Metrics.holdAccount`).
    yield* Effect.addFinalizer(() =>
      journalState === undefined
        ? Effect.void
        : Effect.map(journalState, (journal) => {
            readers.clear()
            setGauges({ ...journal, queued: 0, subscribers: 0, degraded: false })
          })
    )

    /** Times a publish call that ended with a durable ack, or counts why it was refused. */
    const observePublish: ObservePublish = (started, exit) => {
      if (Exit.isSuccess(exit)) return metrics.publishSeconds.unsafeUpdate((performance.now() - started) / 1000, [])
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        const tag = failure.value._tag
        if (tag === "NotYetDurable") metrics.ackTimeouts.unsafeUpdate(1, [])
        else if (tag === "FeedBusy" || tag === "FeedClosed")
          metrics.refused[tag === "FeedBusy" ? "busy" : "closed"].unsafeUpdate(1, [])
        // A bad or reused idempotency key is the caller's mistake, not the feed refusing: not counted.
      } else if (Cause.isDie(exit.cause)) {
        // The one defect a publisher is answered with: an event the journal cannot encode.
        metrics.refused.unwritable.unsafeUpdate(1, [])
      }
    }

    /** A publish call's span, when traced (its timing and refusals are recorded by the call itself). */
    const tracePublish = <A, Err extends PublishAllError>(
      name: string,
      attributes: Record<string, unknown>,
      publish: Effect.Effect<A, Err>,
      seqs: (result: A) => Record<string, unknown>
    ): Effect.Effect<A, Err> =>
      publish.pipe(
        Effect.tap((result) => Effect.annotateCurrentSpan(seqs(result))),
        Effect.withSpan(name, { attributes: { ...accountAttribute, ...attributes }, captureStackTrace: false })
      )

    return {
      metrics,

      observePublish,

      /** `publish` with a span per call when traced; as it is otherwise. */
      publish: <A, O>(
        publish: (
          sessionId: string | undefined,
          event: A,
          options?: O
        ) => Effect.Effect<Option.Option<number>, PublishError>
      ) =>
        tracing
          ? (sessionId: string | undefined, event: A, options?: O) =>
              tracePublish(
                "ChangeFeed.publish",
                sessionId === undefined ? {} : { "feed.session_id": sessionId },
                publish(sessionId, event, options),
                (seq) => (Option.isSome(seq) ? { "feed.seq": seq.value } : { "feed.ephemeral": true })
              )
          : publish,

      /** `publishAll` with a span per call when traced; as it is otherwise. */
      publishAll: <E, O>(
        publishAll: (entries: ReadonlyArray<E>, options?: O) => Effect.Effect<Array<number | null>, PublishAllError>
      ) =>
        tracing
          ? (entries: ReadonlyArray<E>, options?: O) =>
              tracePublish(
                "ChangeFeed.publishAll",
                { "feed.events": entries.length },
                publishAll(entries, options),
                (seqs) => {
                  const durable = seqs.filter((seq): seq is number => seq !== null)
                  return durable.length === 0
                    ? { "feed.durable": 0 }
                    : { "feed.durable": durable.length, "feed.seq.first": durable[0], "feed.seq.last": durable.at(-1) }
                }
              )
          : publishAll,

      /** One journal append of the writer: its latency and size, and the seqs it got, in a span when traced. */
      commit: <A, E>(append: Effect.Effect<Appended<A>, E>, events: number): Effect.Effect<Appended<A>, E> => {
        const measured = Metrics.timed(metrics.appendSeconds)(append).pipe(
          Effect.tap(() => metrics.batchEvents.unsafeUpdate(events, []))
        )
        if (!tracing) return measured
        return measured.pipe(
          Effect.tap((appended) =>
            Effect.annotateCurrentSpan({
              "feed.seq.first": appended.events[0]?.seq,
              "feed.seq.last": appended.events.at(-1)?.seq
            })
          ),
          // A trace of its own: the writer outlives whatever it was forked in (the feed's opening,
          // and the request that asked for it), and a batch holds the events of many publishers.
          Effect.withSpan("ChangeFeed.commit", {
            attributes: { ...accountAttribute, "feed.batch.events": events },
            captureStackTrace: false,
            root: true
          })
        )
      },

      /**
       * A reader's replay of the journal from `from` (exclusive) to `upTo`, in a span when traced.
       * The span ends when the replay does (or fails, or its reader goes), not with the reader.
       */
      replay: <A, E>(stream: Stream.Stream<A, E>, from: number, upTo: number): Stream.Stream<A, E> => {
        if (!tracing) return stream
        return Stream.unwrap(
          Effect.map(
            Effect.makeSpan("ChangeFeed.replay", {
              attributes: { ...accountAttribute, "feed.replay.from": from, "feed.replay.to": upTo },
              captureStackTrace: false
            }),
            (span) => {
              let ended = false
              const end = (exit: Exit.Exit<unknown, unknown>) =>
                Effect.flatMap(Clock.currentTimeNanos, (now) =>
                  Effect.sync(() => {
                    if (!ended) span.end(now, exit)
                    ended = true
                  })
                )
              return stream.pipe(
                Stream.onEnd(end(Exit.void)),
                Stream.tapErrorCause((cause) => end(Exit.failCause(cause))),
                Stream.ensuring(end(Exit.interrupt(FiberId.none)))
              )
            }
          )
        )
      },

      /** Counts a reset by its reason, and answers it. */
      reset: <R extends Reset>(reset: R): R => {
        metrics.resets[reset.reason].unsafeUpdate(1, [])
        return reset
      },

      /** Counts a corrupt journal line a reader met, and answers the error. */
      readFailure: <E extends JournalReadError>(error: E): E => {
        if (error._tag === "JournalCorrupt") metrics.corrupt.unsafeUpdate(1, [])
        return error
      },

      /** Keeps a reader's position (its cursor) for the lag gauge while the reader's scope is open. */
      trackReader: (position: () => number) =>
        Finalizer.acquireSync(
          () => readers.add(position),
          () => Effect.sync(() => readers.delete(position))
        ),

      /**
       * Reads the feed's gauges from `state` whenever metrics are collected while the scope is
       * open, and from `journal` once the feed has closed.
       */
      observe: (state: Effect.Effect<Observed>, journal: Effect.Effect<JournalState>) => {
        journalState = journal
        return Metrics.sampleWhileOpen(Effect.map(state, setGauges))
      }
    }
  })

/** Counts a journal that refused to open because it is corrupt. */
export const openFailure =
  (account: string = Metrics.defaultAccount) =>
  <E extends { readonly _tag: string }>(error: E): Effect.Effect<void> =>
    error._tag === "JournalCorrupt"
      ? Effect.sync(() => Metrics.forAccount(account).corrupt.unsafeUpdate(1, []))
      : Effect.void
