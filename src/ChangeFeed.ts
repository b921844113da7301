/**
 * The change feed: the sink every producer hands events to, and the streams every reader
 * follows. This module holds the service's interface, its tag, `make` and the layers; each role
 * has a module of its own under `ChangeFeed/`:
 *
 * - `Publish.ts`: `record`, `publish`, `publishAll`, idempotent batches (`Idempotency.ts`);
 * - `Writer.ts`: the intake queue, batching, the append (the journal gives the seqs), retry with
 *   backoff, the drain at shutdown;
 * - `Receipts.ts`: publishers' acks and their deadlines;
 * - `Broadcast.ts`: the live buffer (`LiveBuffer.ts`) fed in seq order, also with what other
 *   writers of a shared journal appended;
 * - `Reader.ts`: replay, then the live tail; resets (`Reset.ts`), caught-up and progress.
 *
 * Nothing is broadcast or acknowledged that is not in the journal, and a failed append consumes
 * no seq.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Context, Duration, Effect, Layer, Option, Scope, Stream } from "effect"
import * as Broadcast from "./ChangeFeed/Broadcast.js"
import type { PublishAllError, PublishError } from "./ChangeFeed/Errors.js"
import { IdempotencyWindow, restoreKeys } from "./ChangeFeed/Idempotency.js"
import * as Instrument from "./ChangeFeed/Instrument.js"
import * as Publish from "./ChangeFeed/Publish.js"
import * as Reader from "./ChangeFeed/Reader.js"
import { Receipts } from "./ChangeFeed/Receipts.js"
import * as Writer from "./ChangeFeed/Writer.js"
import { AgentDomain, type AgentEvent } from "./Domain/AgentEvent.js"
import type { ChangeEvent } from "./Domain/ChangeEvent.js"
import type { FeedItem, LineItem } from "./Domain/FeedItem.js"
import type { FeedDomain } from "./Domain/FeedDomain.js"
import type * as Journal from "./Journal.js"
import * as FileJournal from "./Journal/File.js"
import { makeLineCodec } from "./Journal/Lines.js"
import * as MemoryJournal from "./Journal/Memory.js"

export * from "./ChangeFeed/Errors.js"
export type { PublishAllOptions, PublishOptions } from "./ChangeFeed/Publish.js"
export type { LiveBatch, LiveRun } from "./ChangeFeed/Broadcast.js"
export { lastOf } from "./ChangeFeed/Broadcast.js"
export type { ChangesOptions, Pull } from "./ChangeFeed/Reader.js"
import type { Entry } from "./ChangeFeed/Receipts.js"
export { type Entry, JsonEntry } from "./ChangeFeed/Receipts.js"

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
  /**
   * Live buffer shared by all readers, at most this many events (unbounded by default: its bytes
   * govern); a reader further behind catches up from the journal.
   */
  readonly liveBuffer?: number | undefined
  /**
   * Live buffer in bytes (default 32 MiB): its events' journal lines, an estimate of their decoded
   * form, and of what readers make of each batch once for all (its SSE frames). Past it the oldest
   * batches leave the buffer (the newest is always held), and readers that needed them catch up
   * from the journal.
   */
  readonly liveBufferBytes?: number | undefined
  /** Most queue items the writer takes into one batch (default 512). */
  readonly maxBatch?: number | undefined
  /** Most bytes, by the intake's estimate, in one batch (default 4 MiB); a larger item is a batch of its own. */
  readonly maxBatchBytes?: number | undefined
  /** Default `publish` timeout (10 s): room in the queue and durability must both come within it. */
  readonly publishTimeout?: Duration.DurationInput | undefined
  /** At most one drop warning per this period (default 10 s). */
  readonly dropWarningInterval?: Duration.DurationInput | undefined
  /** Backoff between append retries while the journal fails: doubling from `retryBase` (10 ms) up to `retryMax` (5 s). */
  readonly retryBase?: Duration.DurationInput | undefined
  readonly retryMax?: Duration.DurationInput | undefined
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
    options?: Publish.PublishOptions
  ) => Effect.Effect<Option.Option<number>, PublishError>
  /**
   * `publish` for a batch, accepted as a whole: one seq per entry in order, `null` for ephemeral
   * ones. With an `idempotencyKey`, a retry of the batch answers the original seqs.
   */
  readonly publishAll: (
    entries: ReadonlyArray<Entry<A>>,
    options?: Publish.PublishAllOptions
  ) => Effect.Effect<Array<number | null>, PublishAllError>
  /** Replay from a cursor, then the live tail: exactly the events after it, in order, once each, or a reset. */
  readonly changes: (options?: Reader.ChangesOptions) => Stream.Stream<FeedItem<A>, Journal.JournalReadError>
  /**
   * `changes` as a pull, for the scope, with no Stream between the reader and its consumer: for
   * one that reads a few chunks and stops (a page).
   */
  readonly pullChanges: (options?: Reader.ChangesOptions) => Effect.Effect<Reader.Pull<FeedItem<A>>, never, Scope.Scope>
  /**
   * `changes` with each event as its journal line, never decoded: for passing events on as
   * JSON (the SSE stream). Replay reads lines as written (`Journal.readLines`).
   */
  readonly changeLines: (options?: Reader.ChangesOptions) => Stream.Stream<LineItem, Journal.JournalReadError>
  /**
   * `changeLines` as a pull, for the scope, with no Stream between the reader and its consumer.
   * Without a session filter, replayed events come in runs of lines as the journal read them
   * (`JournalLineRun`, where the journal reads runs) and live events by whole broadcast batches
   * (`LiveRun`), so that what is made of a batch once (its SSE frames) is shared by every such
   * reader, and no reader's cost grows with the events in a run. With `reuseChunks`, the bytes
   * of what a pull answers are valid only until the next pull. With a `tail`, the reader parks at
   * the live tail (its pull answers an empty chunk) and hands what comes to the tail, with no
   * fiber waiting, until the tail does not take it (`Reader.LiveTail`).
   */
  readonly pullLines: (
    options?: Reader.PullLinesOptions,
    tail?: Reader.LiveTail
  ) => Effect.Effect<Reader.Pull<LineItem | Broadcast.LiveRun | Journal.JournalLineRun>, never, Scope.Scope>
  /** Journaled events with `since < seq <= upTo`, straight from the journal. */
  readonly read: (since: number, upTo?: number) => Stream.Stream<ChangeEvent<A>, Journal.JournalReadError>
  readonly headSeq: Effect.Effect<number>
  readonly droppedCount: Effect.Effect<number>
  readonly status: Effect.Effect<FeedStatus>
}

const MiB = 1024 * 1024

const millis = (duration: Duration.DurationInput | undefined, otherwise: number): number =>
  duration === undefined ? otherwise : Duration.toMillis(Duration.decode(duration))

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
    const instrument = yield* Instrument.make(options.account)
    const windowEvents = options.idempotencyWindowEvents ?? 100_000
    const keys = new IdempotencyWindow({ events: windowEvents, bytes: options.idempotencyWindowBytes ?? 32 * MiB })
    yield* restoreKeys(journal, keys, windowEvents)
    // Sliding: a slow reader loses its oldest live events (and catches up from the journal),
    // never stalls the writer. Events are held as reader items, made once rather than once per reader.
    const broadcast = yield* Broadcast.Broadcast.make(journal, makeLineCodec(domain.schema), {
      events: options.liveBuffer,
      bytes: options.liveBufferBytes ?? 32 * MiB
    })
    const receipts = yield* Receipts.make<A>()
    const writer = yield* Writer.make({
      journal,
      broadcast,
      receipts,
      keys,
      instrument,
      options: {
        queueCapacity: options.queueCapacity ?? 1024,
        queueBytes: options.queueBytes ?? 32 * MiB,
        maxBatch: options.maxBatch ?? 512,
        maxBatchBytes: options.maxBatchBytes ?? 4 * MiB,
        dropWarningIntervalMs: millis(options.dropWarningInterval, 10_000),
        retryBaseMs: millis(options.retryBase, 10),
        retryMaxMs: millis(options.retryMax, 5_000),
        drainAttempts: options.drainAttempts ?? 5
      }
    })
    const publisher = yield* Publish.make({
      domain,
      journal,
      writer,
      receipts,
      keys,
      estimateLimit: Math.max(writer.intake.maxBytes, broadcast.live.maxBytes),
      publishTimeoutMs: millis(options.publishTimeout, 10_000),
      observe: instrument.observePublish
    })
    const readers = Reader.make(journal, broadcast, instrument)

    const status = Effect.gen(function* () {
      const info = yield* journal.info
      // Field by field rather than spread: V8 made a new hidden class for nearly every spread
      // status, and the young objects those classes point to were moved to the old generation
      // (~3 KB a call, at every young collection, under a status poll).
      return {
        headSeq: info.headSeq,
        oldestSeq: info.oldestSeq,
        epoch: info.epoch,
        segments: info.segments,
        bytes: info.bytes,
        fsync: info.fsync,
        dropped: writer.dropped(),
        subscribers: readers.subscribers(),
        degraded: writer.degraded(),
        lastError: writer.lastError(),
        queued: yield* writer.queued,
        idempotencyKeys: keys.size,
        idempotencyBytes: keys.memoryBytes,
        queuedBytes: writer.intake.bytes,
        liveEvents: broadcast.live.size,
        liveBytes: broadcast.live.bytes
      } satisfies FeedStatus
    })
    yield* instrument.observe(status, journal.info)

    return {
      epoch: journal.epoch,
      record: (sessionId, event) => Effect.sync(() => publisher.unsafeRecord(sessionId, event)),
      unsafeRecord: publisher.unsafeRecord,
      publish: instrument.publish(publisher.publish),
      publishAll: instrument.publishAll(publisher.publishAll),
      changes: readers.changes,
      pullChanges: readers.pullChanges,
      changeLines: readers.changeLines,
      pullLines: readers.pullLines,
      read: journal.read,
      headSeq: journal.headSeq,
      droppedCount: Effect.sync(writer.dropped),
      status
    } satisfies ChangeFeedService<A>
  }).pipe(Effect.withSpan("ChangeFeed.make", { attributes: { "feed.account": options.account ?? "default" } }))

/** Options of a feed on a journal directory. */
export interface FeedOptions extends ChangeFeedOptions, Journal.JournalOptions {}

/**
 * A feed for any domain on the journal `open` opens; both are released with the scope. Opened
 * before the feed, the journal is released after the feed's drain, whatever it opened meanwhile.
 */
export const makeOn = <A, I, R>(
  domain: FeedDomain<A, I>,
  open: Effect.Effect<Journal.Journal<A>, Journal.JournalOpenError, R>,
  options: ChangeFeedOptions = {}
): Effect.Effect<ChangeFeedService<A>, Journal.JournalOpenError, R | Scope.Scope> =>
  open.pipe(
    Effect.tapError(Instrument.openFailure(options.account)),
    Effect.flatMap((journal) => make(domain, journal, options))
  )

/** A feed for any domain with its file journal; both are released with the scope. */
export const makeFiles = <A, I>(
  domain: FeedDomain<A, I>,
  options: FeedOptions
): Effect.Effect<ChangeFeedService<A>, Journal.JournalOpenError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  makeOn(domain, FileJournal.make(domain.schema, options), options)

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
export const layerMemory = (
  options: ChangeFeedOptions & MemoryJournal.MemoryJournalOptions = {}
): Layer.Layer<ChangeFeed> =>
  Layer.scoped(
    ChangeFeed,
    Effect.flatMap(MemoryJournal.make(AgentDomain.schema, options), (journal) =>
      // An in-memory journal cannot fail to be read.
      Effect.orDie(make(AgentDomain, journal, options))
    )
  )
