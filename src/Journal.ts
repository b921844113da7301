/**
 * The journal seam: what the feed needs of the durable, ordered record of its events, and
 * nothing of how a backend keeps it.
 *
 * A journal gives each appended event the next seq of its account (gapless, never reused),
 * makes the batch durable before it answers, and reads events back from any retained cursor,
 * decoded or as their wire lines. Backends: the file journal (`Journal/File.ts`, a directory of
 * segment files, the embedded default), the in-memory one (`Journal/Memory.ts`, for tests of
 * what sits on top), and PostgreSQL (`Journal/Postgres.ts`, shared by replicas). A
 * `JournalStore` opens the journals of a service's accounts on one backend.
 */
import type { Duration, Effect, Schema, Scope, Stream } from "effect"
import type { AccountId } from "./Domain/Account.js"
import type { JournalIoError, JournalOpenError, JournalReadError } from "./Journal/Errors.js"
import type { EncodedBatch, StoredEvent, StoredLine } from "./Journal/Lines.js"
import type { RetentionPolicy } from "./Journal/Retention.js"
import type { SegmentIndexes } from "./Journal/SegmentIndex.js"
import { viewOf } from "./Scratch.js"

export * from "./Journal/Errors.js"
export type { EncodedBatch } from "./Journal/Lines.js"
export { bodyAt, bodyLengthAt, lineAt } from "./Journal/Lines.js"
export type { RetentionPolicy } from "./Journal/Retention.js"
export { defaultRetention } from "./Journal/Retention.js"

/** When appends reach the disk: every batch (default), on a timer, or when the OS decides. */
export type FsyncMode = "always" | "interval" | "never"

export const fsyncModes = ["always", "interval", "never"] as const satisfies ReadonlyArray<FsyncMode>

/** A file journal's segment is rotated once it reaches this size. */
export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
/** The sync period in `interval` mode. */
export const DEFAULT_SYNC_INTERVAL: Duration.DurationInput = "100 millis"

/** Options of a file journal. */
export interface JournalOptions {
  readonly directory: string
  /** The `account` label of the journal's metrics (default "default"). */
  readonly account?: string | undefined
  readonly fsync?: FsyncMode | undefined
  /** Sync period in `interval` mode (default 100 ms). */
  readonly syncInterval?: Duration.DurationInput | undefined
  /** Rotate the active segment once it reaches this size (default 8 MiB). */
  readonly segmentBytes?: number | undefined
  readonly retention?: Partial<RetentionPolicy> | undefined
  /** Read chunk size (default 256 KiB; 1 MiB for a read that reuses its chunks, `reuseChunks`). */
  readonly readChunkBytes?: number | undefined
  /**
   * Whether reads scan the lines of a chunk with WebAssembly SIMD and check their checksums a
   * span at a time (the default, where the runtime has WebAssembly SIMD), or read and check them
   * line by line in JavaScript, as where it has not. Both give the same lines and report the same
   * damage.
   */
  readonly scanWithSimd?: boolean | undefined
  /**
   * Where the line indexes of sealed segments are kept once a read has checked them whole, so
   * that replays of runs (an unfiltered SSE stream) take their lines from there rather than scan
   * and checksum them again, and reads from a cursor start at its line (`Journal/SegmentIndex.ts`);
   * by default one budget for the process (`SegmentIndexes.shared`, 32 MiB), `false` for none.
   */
  readonly segmentIndexes?: SegmentIndexes | false | undefined
}

export interface JournalInfo {
  readonly headSeq: number
  /** Seq of the oldest retained event; `headSeq + 1` when the journal holds none. */
  readonly oldestSeq: number
  readonly epoch: string
  /** Segment files (partitions on a database). */
  readonly segments: number
  readonly bytes: number
  readonly fsync: FsyncMode
}

/** What opening the journal found. */
export interface JournalRecovery {
  /** The previous process did not close the journal (crash, kill, OS restart). */
  readonly unclean: boolean
  /**
   * A new epoch replaced the journal's: the OS restarted while the journal was open in
   * `interval`/`never` mode, so events readers saw may be gone.
   */
  readonly newEpoch: boolean
  /** The incomplete last line a crash left, cut. */
  readonly tornBytes: number
  /** Complete lines at the end that did not check, cut after an OS restart in `interval`/`never` mode. */
  readonly discardedBytes: number
  readonly prunedSegments: number
  /** The holder named in `LOCK` that ended without releasing it. */
  readonly tookOverLockFrom: string | undefined
}

/** What a journal that kept nothing across a stop found at open. */
export const cleanRecovery: JournalRecovery = {
  unclean: false,
  newEpoch: false,
  tornBytes: 0,
  discardedBytes: 0,
  prunedSegments: 0,
  tookOverLockFrom: undefined
}

/**
 * An event as the journal stores it: the change, plus the idempotency key of the request that
 * appended it, if any (kept so that a retried request can be answered with its original seqs;
 * never part of the change on the wire).
 */
export type JournalEvent<A> = StoredEvent<A>

/** An event to append: the journal gives it the next seq. */
export interface JournalEntry<A> {
  readonly ts: string
  readonly session_id?: string | undefined
  readonly event: A
  /** The idempotency key of the request that appended it (stored with it, never on the wire). */
  readonly key?: string | undefined
  /**
   * `event` already encoded, when the producer has it: the UTF-8 of exactly `JSON.stringify` of
   * the schema's encoding of `event` (line separators as they are). A backend writes it instead
   * of encoding the event again; without it, the event is encoded as usual.
   */
  readonly eventJson?: Uint8Array | undefined
}

/** A batch once durable: its events with their seqs (contiguous), and their lines. */
export interface Appended<A> {
  readonly events: ReadonlyArray<JournalEvent<A>>
  /** Each event's line; `bodyAt(lines, i)` is event `i`'s wire JSON less its closing brace. */
  readonly lines: EncodedBatch
}

/** An empty batch appended: nothing written, no seq taken. */
export const emptyAppended: Appended<never> = {
  events: [],
  lines: { bytes: new Uint8Array(0), ends: [], bodyEnds: [] }
}

/**
 * An event its producer holds only as its JSON (the UTF-8 of exactly what `JSON.stringify` writes
 * for its encoding, which is also its decoded form): parsed the first time it is read, then kept.
 * The feed carries such an event from an HTTP body to the journal and the streams, which take its
 * bytes; unless a reader of decoded events asks for it, it is never parsed at all, and a batch
 * waiting for its fsync and then held in the live window holds no object tree for it.
 */
export class EventJson<A> {
  private parsed: A | undefined = undefined
  private done = false

  constructor(
    /** Where the JSON lies: bytes `start` to `end` of `source` (a body several events share). */
    private readonly source: Uint8Array,
    private readonly parse: (json: Uint8Array) => A,
    private readonly start = 0,
    private readonly end = source.length
  ) {}

  /** Its bytes' length. */
  get length(): number {
    return this.end - this.start
  }

  /**
   * Its bytes, as a view made when asked (the journal's encoder asks once) and not kept: held by
   * the live window for as long as the event is, a view per event would be one more object for
   * the collector to move and mark.
   */
  get bytes(): Uint8Array {
    return viewOf(this.source, this.start, this.end)
  }

  get value(): A {
    if (!this.done) {
      this.parsed = this.parse(this.bytes)
      this.done = true
    }
    return this.parsed as A
  }
}

/** An entry whose event is still only its JSON (`EventJson`), for the journal to write as it is. */
export class PendingEntry<A> implements JournalEntry<A> {
  constructor(
    readonly ts: string,
    readonly session_id: string | undefined,
    readonly json: EventJson<A>,
    readonly key: string | undefined
  ) {}

  get event(): A {
    return this.json.value
  }

  get eventJson(): Uint8Array {
    return this.json.bytes
  }
}

/**
 * A `PendingEntry` with its seq: what the feed's own parts read of an appended event (its seq,
 * session and key) without parsing it. It holds the entry's fields, not the entry, which is let
 * go of once written: the live window holds this for as long as the event is in it. Never handed
 * to a caller as it is: `plainEvent` makes the plain object a reader gets (its `event` an own
 * field like any other).
 */
class PendingEvent<A> {
  readonly ts: string
  readonly session_id: string | undefined
  readonly key: string | undefined
  private readonly json: EventJson<A>

  constructor(
    readonly seq: number,
    entry: PendingEntry<A>
  ) {
    this.ts = entry.ts
    this.session_id = entry.session_id
    this.key = entry.key
    this.json = entry.json
  }

  get event(): A {
    return this.json.value
  }
}

const numberedEvent = <A>(
  seq: number,
  ts: string,
  session_id: string | undefined,
  event: A,
  key: string | undefined
) => {
  const change = session_id === undefined ? { seq, ts, event } : { seq, ts, session_id, event }
  return key === undefined ? change : { ...change, key }
}

/** Entries as journal events, numbered from `first` (an entry still only JSON stays so). */
export const numbered = <A>(entries: ReadonlyArray<JournalEntry<A>>, first: number): Array<JournalEvent<A>> => {
  const events: Array<JournalEvent<A>> = new Array(entries.length)
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!
    if (entry instanceof PendingEntry) {
      // Read as a `JournalEvent`: its `session_id` is undefined when it has none, as an absent field reads.
      events[i] = new PendingEvent(first + i, entry) as unknown as JournalEvent<A>
      continue
    }
    const { event, key, session_id, ts } = entry
    events[i] = numberedEvent(first + i, ts, session_id, event, key)
  }
  return events
}

/**
 * Whether an appended event is still only its JSON (its entry was a `PendingEntry`): its line says
 * all it holds, and its event is parsed only when asked for.
 */
export const isOnlyJson = (event: JournalEvent<unknown>): boolean => event instanceof PendingEvent

/** An appended event as a reader gets it: a plain object, its event parsed if it was still JSON. */
export const plainEvent = <A>(event: JournalEvent<A>): JournalEvent<A> => {
  if (!(event instanceof PendingEvent)) return event
  const pending: PendingEvent<A> = event
  return numberedEvent(pending.seq, pending.ts, pending.session_id, pending.event, pending.key)
}

/**
 * One journaled event as a reader of lines gets it: its wire JSON as a view of its line (`body`,
 * less the closing brace), its seq and session, and the key its line holds (journal-side only).
 */
export type JournalLine = StoredLine

/**
 * Journaled events one after the other as their lines, read in one piece: event `i` has seq
 * `first + i`, and its line and body lie in `lines` (views of what was read, no copy per line;
 * the last line's newline may lie past the run's bytes).
 * What a reader that passes every event on as it is (the SSE stream) replays, at a cost per run
 * rather than per event.
 */
export interface JournalLineRun {
  readonly _tag: "LineRun"
  readonly first: number
  readonly lines: EncodedBatch
}

/** How `readLines` and `readLineRuns` hand their bytes over. */
export interface LineReadOptions {
  /**
   * Reads every chunk into one of the same few buffers rather than a buffer of its own, so a
   * long read makes no garbage per chunk. The bytes of the runs and lines a pull hands over
   * (every element of the chunk it answers) are then valid only until the stream is pulled again,
   * which reads into them, and so are a run's arrays of line ends: for a consumer that copies out
   * what it keeps before it pulls again (the SSE stream renders them into its frames), never for
   * one that keeps them or puts the stream through anything that pulls ahead (`Stream.buffer`,
   * `Stream.rechunk`). A backend may ignore it (only the file journal reuses its chunks). Off by
   * default.
   */
  readonly reuseChunks?: boolean | undefined
}

/** The number of events in a run. */
export const runLength = (run: JournalLineRun): number => run.lines.ends.length

export interface Journal<A> {
  /** Where the journal lives, for messages: a directory, or the database and account. */
  readonly location: string
  readonly epoch: string
  readonly recovery: JournalRecovery
  /** Seq of the last durable event this process knows of (0 when none). */
  readonly headSeq: Effect.Effect<number>
  readonly info: Effect.Effect<JournalInfo>
  /**
   * Appends a batch after the head and answers it with its seqs, once durable (per the fsync
   * mode). Fails only when nothing of the batch is durable, so a failure may be retried: the
   * retry passes the same array, and a backend that cannot tell whether a failed attempt
   * committed (a connection lost after sending) finds out before it appends it again.
   */
  readonly append: (entries: ReadonlyArray<JournalEntry<A>>) => Effect.Effect<Appended<A>, JournalIoError>
  /**
   * Events with `since < seq <= upTo` (`upTo` defaults to the head when the read starts), in
   * order, read in bounded chunks. Fails with `JournalPruned` when `since + 1` is no longer retained.
   */
  readonly read: (since: number, upTo?: number) => Stream.Stream<JournalEvent<A>, JournalReadError>
  /**
   * `read` without decoding: each event's wire JSON as a view of its line, with its seq, session
   * and key read from the line. Refuses what `read` refuses except an event the schema does not
   * know.
   */
  readonly readLines: (
    since: number,
    upTo?: number,
    options?: LineReadOptions
  ) => Stream.Stream<JournalLine, JournalReadError>
  /**
   * `readLines` in runs: the events of each stretch of lines it vouches for without parsing come
   * as one `JournalLineRun`, any other line as a `JournalLine`. Same events, same checks. Absent
   * where the backend has nothing better than `readLines`.
   */
  readonly readLineRuns?:
    | ((
        since: number,
        upTo?: number,
        options?: LineReadOptions
      ) => Stream.Stream<JournalLineRun | JournalLine, JournalReadError>)
    | undefined
  /**
   * Heads other writers of the same journal reached (replicas sharing a database), as hints:
   * the feed reads what it has not seen with `readLines`, once for all its readers. Absent when
   * this process is the journal's only writer.
   */
  readonly foreignHeads?: Stream.Stream<number> | undefined
  /**
   * The seqs of the events journaled under an idempotency key, by any writer of the journal, once
   * every append that may still commit has committed: so that a retry that reaches another
   * replica than the first attempt is answered, not appended again. Absent when this process is
   * the journal's only writer (the feed's own window knows every key it journaled).
   */
  readonly seqsOfKey?: ((key: string) => Effect.Effect<ReadonlyArray<number>, JournalIoError>) | undefined
}

/** Opens the journals of a service's accounts: directories under a root, or one database. */
export interface JournalStore {
  /** Where the store lives, for messages. */
  readonly location: string
  /** Opens the account's journal for events of `schema`; it is closed with the scope. */
  readonly open: <A, I>(
    schema: Schema.Schema<A, I>,
    account: AccountId
  ) => Effect.Effect<Journal<A>, JournalOpenError, Scope.Scope>
  /** The accounts that have a journal, in id order, without opening any. */
  readonly accounts: Effect.Effect<ReadonlyArray<AccountId>>
}
