/**
 * The readers: from a cursor to the live tail, exactly the events after it, in order, once
 * each, or a reset first.
 *
 * A reader decides its reset (`Reset.ts`), replays the journal up to its head, says it caught
 * up, then follows the broadcast's live buffer; whenever the buffer has slid past it, it replays
 * the journal again from its cursor. With a session filter it passes other sessions' events over
 * and says how far it got (`Progress`). Two kinds of reader share this: decoded changes
 * (`changes`) and journal lines passed on as they are (`changeLines`, the SSE stream). A reader
 * of lines without a filter (`pullLines`) replays them in runs where the journal reads runs, and
 * takes the live buffer by whole batches: what it is handed costs per run, not per event. Given
 * a `LiveTail`, a reader at the live tail parks: no fiber waits, and what comes is handed to the
 * tail (a stream connection's socket) until the tail has no room for it.
 */
import { Chunk, Effect, Either, ExecutionStrategy, Exit, FiberRef, Option, Scope, Stream } from "effect"
import type { Cursor } from "../Domain/Cursor.js"
import type { CaughtUp, Change, FeedItem, LineChange, LineItem, Progress, Reset } from "../Domain/FeedItem.js"
import { type Journal, type JournalLineRun, runLength } from "../Journal.js"
import type { JournalReadError } from "../Journal/Errors.js"
import { asItem, type Broadcast, type LiveBatch, type LiveChange, type LiveRun } from "./Broadcast.js"
import type { Instrument } from "./Instrument.js"
import { decideReset, resetTo } from "./Reset.js"
import * as Finalizer from "../Finalizer.js"

export interface ChangesOptions {
  /** Exclusive cursor: events with seq greater than this (default 0, everything retained). */
  readonly since?: number | Cursor | undefined
  /** Only this session's events; `Progress` items keep the cursor moving meanwhile. */
  readonly sessionId?: string | undefined
}

/** Options of `pullLines`. */
export interface PullLinesOptions extends ChangesOptions {
  /**
   * Replay reads the journal into the same few buffers over and over (`LineReadOptions`): the
   * bytes of the runs and lines a pull answers are valid only until the next pull. For a consumer
   * that copies them out before it pulls again (the SSE stream, into its frames). Off by default.
   */
  readonly reuseChunks?: boolean | undefined
}

/** Most bytes a reader takes from the live buffer at once (past its first event): what it copies in one go. */
const LIVE_READ_BYTES = 1024 * 1024
/** Most events a reader takes from the live buffer at once. */
const LIVE_READ_EVENTS = 1024
/** Most batches a reader of whole batches takes from the live buffer at once. */
const LIVE_READ_BATCHES = 64

/**
 * One kind of reader, for either kind of change item `C`: how to replay the journal as `C`s, how
 * to take a broadcast event as a `C`, and how to read a `C`'s seq and session.
 */
interface ReaderFormat<A, C> {
  readonly replay: (journal: Journal<A>, from: number, upTo: number) => Stream.Stream<C, JournalReadError>
  /** `replay` in runs, for a reader that takes every event as it is; `undefined` where it has none. */
  readonly replayRuns?: (
    journal: Journal<A>,
    from: number,
    upTo: number,
    reuseChunks: boolean
  ) => Stream.Stream<C | JournalLineRun, JournalReadError> | undefined
  readonly live: (change: LiveChange<A>) => C
  readonly seqOf: (change: C) => number
  readonly sessionOf: (change: C) => string | undefined
}

const decodedFormat = <A>(): ReaderFormat<A, Change<A>> => ({
  replay: (journal, from, upTo) => Stream.map(journal.read(from, upTo), asItem),
  live: (change) => change.decoded,
  seqOf: (item) => item.change.seq,
  sessionOf: (item) => item.change.session_id
})

const lineFormat = <A>(): ReaderFormat<A, LineChange> => ({
  replay: (journal, from, upTo) => journal.readLines(from, upTo),
  replayRuns: (journal, from, upTo, reuseChunks) => journal.readLineRuns?.(from, upTo, { reuseChunks }),
  live: (change) => change.line,
  seqOf: (item) => item.seq,
  sessionOf: (item) => item.sessionId
})

/** The events of `run` after seq `after` (one of its own), as a run of the same bytes. */
const runAfter = (run: JournalLineRun, after: number): JournalLineRun => {
  const skip = after - run.first + 1
  const offset = run.lines.ends[skip - 1]! + 1
  return {
    _tag: "LineRun",
    first: after + 1,
    lines: {
      bytes: run.lines.bytes.subarray(offset),
      ends: run.lines.ends.slice(skip).map((end) => end - offset),
      bodyEnds: run.lines.bodyEnds.slice(skip).map((end) => end - offset)
    }
  }
}

/** What a reader's pull answers: the next items, or `None` once it ends. */
export type Pull<Item> = Effect.Effect<Chunk.Chunk<Item>, Option.Option<JournalReadError>>

/**
 * Where a reader at the live tail hands what comes, with no fiber waiting for it: a stream
 * connection whose socket has room sends it at once. Once the reader has nothing to answer but
 * the live buffer's next batch, its pull answers an empty chunk: the reader is parked, and its
 * consumer stops pulling. `offer` is then called with what each batch brings (as the pull would
 * answer it: whole runs without a filter; a filtered reader's events and its `Progress`), on the
 * scheduler of the fiber that pulled (never from the writer's commit); it answers whether it took
 * them. Once it does not (no room), or the live buffer slid past the reader, or the feed ended,
 * the reader calls `wake`, once: its consumer pulls again, and gets what was not taken first.
 */
export interface LiveTail {
  readonly offer: (items: ReadonlyArray<LineItem | LiveRun | JournalLineRun>) => boolean
  readonly wake: () => void
}

/** What a reader of change items `C` answers. */
type ReaderItem<C> = C | Reset | CaughtUp | Progress | LiveRun | JournalLineRun

/** A `LiveTail` as a reader of either kind of change item `C` hands it what comes. */
interface Tail<C> {
  readonly offer: (items: ReadonlyArray<ReaderItem<C>>) => boolean
  readonly wake: () => void
}

export interface Readers<A> {
  readonly changes: (options?: ChangesOptions) => Stream.Stream<FeedItem<A>, JournalReadError>
  /** `changes` as a pull, for the scope, with no Stream between the reader and its consumer. */
  readonly pullChanges: (options?: ChangesOptions) => Effect.Effect<Pull<FeedItem<A>>, never, Scope.Scope>
  readonly changeLines: (options?: ChangesOptions) => Stream.Stream<LineItem, JournalReadError>
  /**
   * `changeLines` as a pull, for the scope: without a session filter, each run of live events is
   * one `LiveRun` (the rest of a broadcast batch), so that what is made of a batch once (its SSE
   * frames) is shared, and a reader's cost per batch does not grow with the events in it.
   */
  readonly pullLines: (
    options?: PullLinesOptions,
    tail?: LiveTail
  ) => Effect.Effect<Pull<LineItem | LiveRun | JournalLineRun>, never, Scope.Scope>
  /** Readers following the feed now. */
  readonly subscribers: () => number
}

export const make = <A>(journal: Journal<A>, broadcast: Broadcast<A>, instrument: Instrument): Readers<A> => {
  let subscribers = 0
  const live = broadcast.live
  const decoded = decodedFormat<A>()
  const lines = lineFormat<A>()

  /**
   * A reader's pull; with `runs`, an unfiltered reader takes the live buffer by whole batches; with
   * `tail`, the reader parks at the live tail and hands what comes to it.
   */
  const open = <C>(
    format: ReaderFormat<A, C>,
    options: PullLinesOptions,
    runs: boolean,
    tail?: Tail<C>
  ): Effect.Effect<Pull<ReaderItem<C>>, never, Scope.Scope> =>
    Effect.gen(function* () {
      const since = options.since ?? 0
      const cursorIn: Cursor = typeof since === "number" ? { seq: since } : since
      const sessionId = options.sessionId
      yield* Finalizer.acquireSync(
        () => subscribers++,
        () => Effect.sync(() => subscribers--)
      )
      const outer = yield* Effect.scope
      type Item = ReaderItem<C>
      const byBatch = runs && sessionId === undefined
      const pending: Array<Item> = []
      let phase: Scope.CloseableScope | undefined
      let replay: Effect.Effect<Chunk.Chunk<C | JournalLineRun>, Option.Option<JournalReadError>> | undefined
      let cursor = 0
      let caughtUp = false
      let ended = false
      yield* instrument.trackReader(() => cursor)
      const scheduler = yield* FiberRef.get(FiberRef.currentScheduler)

      // Replay the journal up to its head, then follow the live buffer: every later event is
      // put in the buffer after it is journaled, so the reader either finds it there or
      // finds that the buffer slid past it, and replays again.
      const startFrom = (from: number) =>
        Effect.gen(function* () {
          if (phase !== undefined) yield* Scope.close(phase, Exit.void)
          phase = yield* Scope.fork(outer, ExecutionStrategy.sequential)
          const head = yield* journal.headSeq
          cursor = from
          if (from >= head) {
            replay = undefined
            return
          }
          const read =
            (byBatch ? format.replayRuns?.(journal, from, head, options.reuseChunks === true) : undefined) ??
            format.replay(journal, from, head)
          replay = yield* Scope.extend(Stream.toPull(instrument.replay(read, from, head)), phase)
        })

      const window = yield* journal.info
      const reset = decideReset(cursorIn, window)
      if (reset !== undefined) pending.push(instrument.reset(reset))
      yield* startFrom(reset === undefined ? cursorIn.seq : reset.continueFrom)

      const deliver = (items: Iterable<C | JournalLineRun>, out: Array<Item>): void => {
        let passedOver = false
        for (const item of items) {
          if (isRun(item)) {
            // Only an unfiltered reader replays runs: every event of it is delivered.
            const last = item.first + runLength(item) - 1
            if (last <= cursor) continue
            if (item.first > cursor + 1) break
            out.push(item.first === cursor + 1 ? item : runAfter(item, cursor))
            cursor = last
            continue
          }
          const seq = format.seqOf(item)
          if (seq <= cursor) continue
          // A hole: the rest comes again, from the journal or the buffer, on the next pull.
          if (seq !== cursor + 1) break
          cursor = seq
          if (sessionId === undefined || format.sessionOf(item) === sessionId) {
            out.push(item)
            passedOver = false
          } else {
            passedOver = true
          }
        }
        if (passedOver) out.push({ _tag: "Progress", seq: cursor })
      }

      /** Stops a parked reader's watch of the live buffer (nothing while it is not parked). */
      let unpark = (): void => {}
      yield* Finalizer.onClose(Effect.sync(() => unpark()))

      /**
       * What the live buffer holds after the cursor, into `out` as the reader answers it (moving
       * the cursor past it): "taken", "none" yet, a "gap" (the buffer slid past), or the "end".
       */
      const takeLive = (out: Array<Item>): "taken" | "none" | "gap" | "end" => {
        if (byBatch) {
          const next = live.next(cursor)
          if (next === undefined) return "none"
          if (typeof next !== "object") return next
          cursor = takeRuns(next, cursor, out)
          return "taken"
        }
        const events = broadcast.after(cursor, LIVE_READ_EVENTS, LIVE_READ_BYTES)
        if (typeof events === "string") return events
        if (events.length === 0) return "none"
        deliver(events.map(format.live), out)
        return "taken"
      }

      /**
       * Parks the reader at the live tail: what every batch brings goes to `tail` for as long as
       * it takes it; once it does not, or on a gap or the end, the reader stops watching and
       * wakes its consumer to pull again, from where the tail left off.
       */
      const park = (tail: Tail<C>): void => {
        let parked = true
        let scheduled = false
        const handOver = () => {
          scheduled = false
          while (parked) {
            const before = cursor
            const out: Array<Item> = []
            const taken = takeLive(out)
            if (taken === "none") return
            if (taken === "taken" && tail.offer(out)) continue
            cursor = before
            unpark()
            return tail.wake()
          }
        }
        const unwatch = live.watch({
          cursor: () => cursor,
          // Delivered on the reader's own scheduler: never inside the writer's commit that woke it.
          wake: () => {
            if (scheduled || !parked) return
            scheduled = true
            scheduler.scheduleTask(handOver, 0)
          }
        })
        unpark = () => {
          parked = false
          unwatch()
          unpark = () => {}
        }
      }

      const pull: Effect.Effect<Chunk.Chunk<Item>, Option.Option<JournalReadError>> = Effect.gen(function* () {
        // A pull while parked takes over from the tail.
        unpark()
        while (true) {
          if (pending.length > 0) return Chunk.unsafeFromArray(pending.splice(0))
          if (ended || broadcast.closed) return yield* Effect.fail(Option.none())
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
          } else if (!caughtUp) {
            caughtUp = true
            out.push({ _tag: "CaughtUp", seq: cursor })
          } else {
            const taken = takeLive(out)
            // The live buffer slid past this reader: catch up from the journal.
            if (taken === "gap") yield* startFrom(cursor)
            else if (taken === "end") ended = true
            else if (taken === "none") {
              if (tail === undefined) yield* live.awaitAfter(cursor)
              else {
                park(tail)
                return Chunk.empty()
              }
            }
          }
          if (out.length > 0) return Chunk.unsafeFromArray(out)
        }
      })
      return pull
    })

  /**
   * The rest of the batch holding `next` (the event after `cursor`), then the following batches
   * whole, as runs into `out`; answers the cursor after them.
   */
  const takeRuns = (next: LiveBatch<A>, cursor: number, out: { readonly push: (run: LiveRun) => unknown }): number => {
    let batch: LiveBatch<A> | undefined | "gap" | "end" = next
    for (let taken = 0; taken < LIVE_READ_BATCHES && typeof batch === "object"; taken++) {
      out.push({ _tag: "LiveRun", batch, from: cursor + 1 })
      cursor = batch.last
      batch = live.next(cursor)
    }
    return cursor
  }

  const isRun = (item: unknown): item is JournalLineRun => (item as { _tag?: unknown })._tag === "LineRun"

  const follow = <C>(
    format: ReaderFormat<A, C>,
    options: ChangesOptions
  ): Stream.Stream<C | Reset | CaughtUp | Progress, JournalReadError> =>
    Stream.unwrapScoped(
      Effect.map(
        open(format, options, false),
        (pull) =>
          Stream.repeatEffectChunkOption(pull) as Stream.Stream<C | Reset | CaughtUp | Progress, JournalReadError>
      )
    )

  return {
    changes: (options = {}) => follow(decoded, options),
    // Without runs, a reader only ever answers the decoded format's items.
    pullChanges: (options = {}) =>
      open(decoded, options, false) as Effect.Effect<Pull<FeedItem<A>>, never, Scope.Scope>,
    changeLines: (options = {}) => follow(lines, options),
    pullLines: (options = {}, tail) => open(lines, options, true, tail),
    subscribers: () => subscribers
  }
}
