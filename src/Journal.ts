/**
 * The journal: the durable, ordered record of change events on disk.
 *
 * A directory of segment files (`events-<20-digit start seq>.jsonl`, one `ChangeEvent`
 * JSON per line, with the appending request's idempotency key and a checksum), written by
 * one process at a time (`LOCK`), tagged with an epoch (`EPOCH`). Batches are appended with
 * one write and at most one sync; reads stream the files in bounded chunks. `make` is the
 * file-backed journal for any event schema, `makeMemory` an in-memory one with the same
 * contract, for tests of what sits on top.
 */
import { FileSystem, Path } from "@effect/platform"
import { Chunk, Clock, Effect, Exit, Fiber, Option, Runtime, Schedule, type Schema, Scope, Stream } from "effect"
import {
  JournalCorrupt,
  JournalIoError,
  type JournalOpenError,
  JournalPruned,
  type JournalReadError
} from "./Journal/Errors.js"
import {
  currentBootId,
  mayHaveLostEvents,
  newEpochId,
  OPEN_FILE,
  readEpoch,
  readOpenMarker,
  startEpoch,
  writeOpenMarker
} from "./Journal/Epoch.js"
import {
  bodyAt,
  type ByteLine,
  ByteLineSplitter,
  type EncodedBatch,
  hasControlByte,
  type Line,
  type LineCodec,
  LineSplitter,
  makeLineCodec,
  peekSeq,
  peekSeqBytes,
  readInPlace,
  readParsed,
  type Splitter,
  type StoredEvent,
  type StoredLine
} from "./Journal/Lines.js"
import { acquireLock } from "./Journal/Lock.js"
import { recoverTail } from "./Journal/Recovery.js"
import { defaultRetention, type RetentionPolicy, segmentsToPrune } from "./Journal/Retention.js"
import { parseSegmentName, type Segment, segmentIndexFor, segmentName } from "./Journal/Segment.js"
import * as Metrics from "./Metrics.js"

export * from "./Journal/Errors.js"
export type { EncodedBatch } from "./Journal/Lines.js"
export { bodyAt, lineAt } from "./Journal/Lines.js"
export type { RetentionPolicy } from "./Journal/Retention.js"

/** When appends reach the disk: every batch (default), on a timer, or when the OS decides. */
export type FsyncMode = "always" | "interval" | "never"

export interface JournalOptions {
  readonly directory: string
  /** The `account` label of the journal's metrics (default "default"). */
  readonly account?: string | undefined
  readonly fsync?: FsyncMode | undefined
  /** Sync period in `interval` mode (default 100 ms). */
  readonly syncIntervalMs?: number | undefined
  /** Rotate the active segment once it reaches this size (default 8 MiB). */
  readonly segmentBytes?: number | undefined
  readonly retention?: Partial<RetentionPolicy> | undefined
  /** Read chunk size (default 256 KiB). */
  readonly readChunkBytes?: number | undefined
}

export interface JournalInfo {
  readonly headSeq: number
  /** Seq of the oldest retained event; `headSeq + 1` when the journal holds none. */
  readonly oldestSeq: number
  readonly epoch: string
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

export interface Journal<A> {
  readonly directory: string
  readonly epoch: string
  readonly fsync: FsyncMode
  readonly recovery: JournalRecovery
  /** Seq of the last durable event (0 when none). */
  readonly headSeq: Effect.Effect<number>
  readonly info: Effect.Effect<JournalInfo>
  /**
   * Appends a batch whose seqs continue the head: one write, and a sync in `always` mode.
   * On failure nothing of the batch stays in the file and the head does not move.
   */
  readonly append: (batch: ReadonlyArray<JournalEvent<A>>) => Effect.Effect<EncodedBatch, JournalIoError>
  /**
   * Events with `since < seq <= upTo` (`upTo` defaults to the head when the read starts), in
   * order, read in bounded chunks. Fails with `JournalPruned` when `since + 1` is no longer retained.
   */
  readonly read: (since: number, upTo?: number) => Stream.Stream<JournalEvent<A>, JournalReadError>
  /**
   * `read` without decoding: each event's wire JSON as a view of its line, with its seq, session
   * and key read from the line. Refuses what `read` refuses (UTF-8, checksum, JSON, envelope,
   * contiguous seqs, missing and pruned segments) except an event the schema does not know; a
   * line whose checksum holds is not parsed, since the checksum vouches for what was written.
   */
  readonly readLines: (since: number, upTo?: number) => Stream.Stream<JournalLine, JournalReadError>
}

/**
 * An event as the journal stores it: the change, plus the idempotency key of the request that
 * appended it, if any (kept so that a retried request can be answered with its original seqs;
 * never part of the change on the wire).
 */
export type JournalEvent<A> = StoredEvent<A>

/**
 * One journaled event as a reader of lines gets it: its wire JSON as a view of its line (`body`,
 * less the closing brace), its seq and session, and the key its line holds (journal-side only).
 */
export type JournalLine = StoredLine

/** How one kind of read turns a segment's lines into items. */
interface LineFormat<L extends { readonly offset: number }, T> {
  readonly splitter: () => Splitter<L>
  /** The seq of a line without parsing it, to skip lines below the cursor; `undefined` to parse. */
  readonly peek: (line: L) => number | undefined
  /** The item of a line, or why the line is invalid. */
  readonly parse: (line: L) => T | string
  readonly seqOf: (item: T) => number
}

const decodedFormat = <A>(codec: LineCodec<A>): LineFormat<Line, JournalEvent<A>> => ({
  splitter: () => new LineSplitter(),
  peek: (line) => peekSeq(line.text),
  parse: (line) => codec.decodeLine(line.text, line.bytes),
  seqOf: (event) => event.seq
})

const rawFormat: LineFormat<ByteLine, JournalLine> = {
  splitter: () => new ByteLineSplitter(),
  peek: (line) => peekSeqBytes(line.bytes),
  parse: (line) => {
    const controlFree = line.controlFree || !hasControlByte(line.bytes)
    // What the checksum vouches for is read in place; anything else is parsed, as `read` does.
    return readInPlace(line.bytes, controlFree) ?? readParsed(line.bytes, controlFree)
  },
  seqOf: (line) => line.seq
}

const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
const DEFAULT_SYNC_INTERVAL_MS = 100
const DEFAULT_READ_CHUNK = 256 * 1024
/** A torn tail is at most one batch write; more garbage than this at the end is corruption. */
const MAX_TORN_BYTES = 64 * 1024 * 1024

const LOCK_FILE = "LOCK"

const emptyBatch: EncodedBatch = { bytes: new Uint8Array(0), ends: [], bodyEnds: [] }

interface Active {
  readonly segment: Segment
  readonly file: FileSystem.File
  readonly scope: Scope.CloseableScope
}

/**
 * Opens (creating if needed) the journal in `options.directory` for events of `schema`. A failed
 * open releases what it took (the lock above all) at once, not when the caller's scope closes.
 */
export const make = <A, I>(
  schema: Schema.Schema<A, I>,
  options: JournalOptions
): Effect.Effect<Journal<A>, JournalOpenError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.fork(yield* Effect.scope, { _tag: "Sequential" })
    return yield* open(schema, options).pipe(
      Scope.extend(scope),
      Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void))
    )
  })

const open = <A, I>(
  schema: Schema.Schema<A, I>,
  options: JournalOptions
): Effect.Effect<Journal<A>, JournalOpenError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const directory = path.resolve(options.directory)
    const fsync: FsyncMode = options.fsync ?? "always"
    const segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES
    const retention: RetentionPolicy = { ...defaultRetention, ...options.retention }
    const chunkBytes = options.readChunkBytes ?? DEFAULT_READ_CHUNK
    const codec: LineCodec<A> = makeLineCodec(schema)
    const at = (name: string) => path.join(directory, name)
    const timedSync = Metrics.timed(Metrics.forAccount(options.account ?? Metrics.defaultAccount).fsyncSeconds)
    const io = (operation: string, file: string) => (cause: unknown) =>
      new JournalIoError({ operation, path: file, cause })

    yield* fs.makeDirectory(directory, { recursive: true }).pipe(Effect.mapError(io("create directory", directory)))
    const lock = yield* acquireLock(fs, directory, at(LOCK_FILE))
    if (lock.tookOverFrom !== undefined) {
      yield* Effect.logWarning(`journal lock in ${directory} taken over from ${lock.tookOverFrom}, which is gone`)
    }

    // Whether the previous run ended cleanly, and if not, whether events readers saw may be gone.
    const marker = yield* readOpenMarker(fs, directory)
    const unclean = Option.isSome(marker)
    const bootId = yield* currentBootId(fs)
    const mayHaveLost = unclean && mayHaveLostEvents(marker.value, bootId)
    const previousEpoch = yield* readEpoch(fs, directory)
    if (previousEpoch !== undefined && mayHaveLost) {
      yield* Effect.logWarning(
        `journal ${directory} was open in fsync mode '${Option.getOrThrow(marker).fsync ?? "unknown"}' when the OS ` +
          `restarted: events broadcast before that may be lost, starting a new epoch so clients resync`
      )
    }
    // Before anything is cut: a crash in between leaves the marker, and the next open decides the same.
    const epoch = previousEpoch === undefined || mayHaveLost ? yield* startEpoch(fs, directory) : previousEpoch

    // Segments, and the head from the newest one's tail.
    const names = yield* fs.readDirectory(directory).pipe(Effect.mapError(io("list", directory)))
    const segments: Array<Segment> = []
    for (const name of names) {
      const start = parseSegmentName(name)
      if (start === undefined) continue
      const info = yield* fs.stat(at(name)).pipe(Effect.mapError(io("stat", at(name))))
      segments.push({ start, name, bytes: Number(info.size) })
    }
    segments.sort((a, b) => a.start - b.start)

    let head = 0
    let tornBytes = 0
    let discardedBytes = 0
    if (segments.length > 0) {
      const newest = segments[segments.length - 1]!
      const file = at(newest.name)
      const tail = yield* recoverTail(fs, file, {
        unclean,
        cutCompleteLines: mayHaveLost,
        maxTornBytes: MAX_TORN_BYTES
      })
      if (tail.lastSeq !== undefined && tail.lastSeq < newest.start) {
        return yield* new JournalCorrupt({
          file,
          offset: tail.validBytes,
          reason: `last seq ${tail.lastSeq} is below the segment's start ${newest.start}`,
          atOpen: true
        })
      }
      if (tail.tornBytes + tail.discardedBytes > 0) {
        yield* fs.truncate(file, tail.validBytes).pipe(Effect.mapError(io("cut torn tail", file)))
        tornBytes = tail.tornBytes
        discardedBytes = tail.discardedBytes
        // "cut a torn tail" is what operators (and the crash harness) look for in the log.
        if (tornBytes > 0) yield* Effect.logWarning(`journal: cut a torn tail of ${tornBytes} bytes from ${file}`)
        if (discardedBytes > 0) {
          yield* Effect.logWarning(
            `journal: cut ${discardedBytes} bytes of complete lines that do not check from the end of ${file}, ` +
              `left by the OS restart (in the new epoch ${epoch})`
          )
        }
      }
      newest.bytes = tail.validBytes
      head = tail.lastSeq ?? newest.start - 1
    }

    // Writer state. Only `append` (one writer) and the sync timer touch the file, under `fileLock`.
    const fileLock = yield* Effect.makeSemaphore(1)
    // Segment files live in a scope of their own, made before the finalizer below is added, so it
    // closes after it: the final truncate and sync must reach a file that is still open.
    const journalScope = yield* Scope.fork(yield* Effect.scope, { _tag: "Sequential" })
    let active: Active | undefined
    let unsynced = false
    let needsTruncate = false

    const openActive = (segment: Segment) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(journalScope, { _tag: "Sequential" })
        const file = yield* fs.open(at(segment.name), { flag: "a" }).pipe(
          Scope.extend(scope),
          Effect.mapError(io("open", at(segment.name))),
          Effect.tapError(() => Scope.close(scope, Exit.void))
        )
        return { segment, file, scope } satisfies Active
      })

    const closeActive = Effect.suspend(() => {
      const current = active
      if (current === undefined) return Effect.void
      active = undefined
      return Scope.close(current.scope, Exit.void)
    })

    const lastWriteMs = (segment: Segment) =>
      fs.stat(at(segment.name)).pipe(
        Effect.map((info) =>
          Option.getOrElse(
            Option.map(info.mtime, (d) => d.getTime()),
            () => 0
          )
        ),
        Effect.orElseSucceed(() => 0)
      )

    const prune = Effect.gen(function* () {
      let ages: Array<number> = []
      if (retention.maxAgeMs !== undefined) ages = yield* Effect.forEach(segments, lastWriteMs)
      const now = yield* Clock.currentTimeMillis
      const count = segmentsToPrune(segments, retention, now, (i) => ages[i] ?? now)
      for (let i = 0; i < count; i++) {
        // Out of the list before the file goes: a reader that then finds it missing sees the
        // oldest seq past it and answers a reset, not corruption. A file that cannot be removed
        // is no longer served and is pruned again at the next open.
        const segment = segments.shift()!
        const error = yield* fs.remove(at(segment.name)).pipe(Effect.flip, Effect.option)
        if (Option.isSome(error) && !(error.value._tag === "SystemError" && error.value.reason === "NotFound")) {
          yield* Effect.logWarning(`journal: could not remove ${at(segment.name)}`, error.value)
        }
      }
      if (count > 0)
        yield* Effect.logInfo(`journal: pruned ${count} segment(s); oldest seq is now ${segments[0]?.start}`)
      return count
    })

    const prunedSegments = yield* prune
    // Marked open only once opening succeeded, so a failed open is not mistaken for a crash.
    yield* writeOpenMarker(fs, directory, fsync, bootId)
    if (segments.length > 0) active = yield* openActive(segments[segments.length - 1]!)
    yield* Effect.addFinalizer(() =>
      fileLock.withPermits(1)(
        Effect.gen(function* () {
          // A failed append left bytes no one was told about: cut them so the next open does not count them.
          if (active !== undefined && needsTruncate)
            yield* active.file.truncate(active.segment.bytes).pipe(Effect.ignore)
          if (active !== undefined && unsynced) yield* active.file.sync.pipe(Effect.ignore)
          yield* closeActive
          // Closed cleanly: the next open need not suspect lost events.
          yield* fs.remove(at(OPEN_FILE)).pipe(Effect.ignore)
        })
      )
    )

    const syncActive = Effect.suspend(() => {
      if (active === undefined || !unsynced) return Effect.void
      const file = active.segment.name
      return timedSync(active.file.sync).pipe(
        Effect.mapError(io("sync", at(file))),
        Effect.tap(() => Effect.sync(() => (unsynced = false)))
      )
    })

    const rotate = (start: number) =>
      Effect.gen(function* () {
        yield* syncActive
        const segment: Segment = { start, name: segmentName(start), bytes: 0 }
        const next = yield* openActive(segment)
        yield* closeActive
        active = next
        segments.push(segment)
        yield* prune
      })

    const append = (batch: ReadonlyArray<JournalEvent<A>>): Effect.Effect<EncodedBatch, JournalIoError> =>
      fileLock
        .withPermits(1)(
          Effect.gen(function* () {
            if (batch.length === 0) return emptyBatch
            const first = batch[0]!.seq
            for (let i = 0; i < batch.length; i++) {
              if (batch[i]!.seq !== head + 1 + i) {
                return yield* Effect.dieMessage(
                  `journal append out of order: head ${head}, batch ${first}.. has seq ${batch[i]!.seq} at ${i}`
                )
              }
            }
            if (active !== undefined && needsTruncate) {
              // A failed write may have left part of the batch behind: cut back to the last commit.
              yield* active.file
                .truncate(active.segment.bytes)
                .pipe(Effect.mapError(io("truncate", at(active.segment.name))))
              needsTruncate = false
            }
            if (active === undefined) {
              const segment: Segment = { start: first, name: segmentName(first), bytes: 0 }
              active = yield* openActive(segment)
              segments.push(segment)
            } else if (active.segment.bytes >= segmentBytes) {
              yield* rotate(first)
            }
            const current = active!
            const encoded = codec.encodeBatch(batch)
            const bytes = encoded.bytes
            const written = Effect.gen(function* () {
              yield* current.file.writeAll(bytes)
              if (fsync === "always") yield* timedSync(current.file.sync)
            })
            yield* written.pipe(
              Effect.mapError(io("append", at(current.segment.name))),
              Effect.tapError(() => Effect.sync(() => (needsTruncate = true)))
            )
            current.segment.bytes += bytes.length
            unsynced = fsync !== "always"
            head += batch.length
            return encoded
          })
        )
        .pipe(Effect.uninterruptible)

    if (fsync === "interval") {
      const period = options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS
      yield* fileLock
        .withPermits(1)(syncActive)
        .pipe(
          Effect.catchAll((error) => Effect.logWarning("journal: interval sync failed", error)),
          Effect.repeat(Schedule.spaced(`${period} millis`)),
          Effect.forkScoped
        )
    }

    const info = Effect.sync((): JournalInfo => {
      let bytes = 0
      for (const s of segments) bytes += s.bytes
      return {
        headSeq: head,
        oldestSeq: segments.length > 0 ? Math.min(segments[0]!.start, head + 1) : head + 1,
        epoch,
        segments: segments.length,
        bytes,
        fsync
      }
    })

    const readAs = <L extends { readonly offset: number }, T>(
      format: LineFormat<L, T>,
      since: number,
      upTo?: number
    ): Stream.Stream<T, JournalReadError> =>
      Stream.suspend(() => {
        const target = Math.min(upTo ?? head, head)
        if (since >= target) return Stream.empty
        const snapshot = segments.slice()
        const first = segmentIndexFor(snapshot, since + 1)
        if (first < 0) {
          return Stream.fail(new JournalPruned({ requested: since + 1, oldest: snapshot[0]?.start ?? head + 1 }))
        }
        let expected = since + 1
        const last = segmentIndexFor(snapshot, target)
        return Stream.fromIterable(snapshot.slice(first, last + 1)).pipe(
          Stream.flatMap((segment) =>
            Stream.suspend(() => {
              const file = at(segment.name)
              if (segment.start > expected) {
                return Stream.fail(
                  new JournalCorrupt({
                    file,
                    offset: 0,
                    reason: `segment starts at seq ${segment.start}, expected ${expected}`
                  })
                )
              }
              return readSegment(
                format,
                file,
                () => expected,
                (seq) => (expected = seq + 1),
                since,
                target
              )
            })
          ),
          Stream.concat(
            Stream.suspend(() =>
              expected <= target
                ? Stream.fail(
                    new JournalCorrupt({
                      file: at(snapshot[last]!.name),
                      offset: snapshot[last]!.bytes,
                      reason: `the journal ends at seq ${expected - 1} but its head is ${target}`
                    })
                  )
                : Stream.empty
            )
          )
        )
      })

    const openForRead = (
      file: string,
      expected: number
    ): Effect.Effect<FileSystem.File, JournalReadError, Scope.Scope> =>
      fs.open(file, { flag: "r" }).pipe(
        Effect.catchAll((cause): Effect.Effect<never, JournalReadError> => {
          if (cause._tag !== "SystemError" || cause.reason !== "NotFound") {
            return Effect.fail(new JournalIoError({ operation: "open", path: file, cause }))
          }
          // Gone under the reader: pruned by retention (a reset), or removed by hand (corruption).
          const oldest = segments[0]?.start ?? head + 1
          return oldest > expected
            ? Effect.fail(new JournalPruned({ requested: expected, oldest }))
            : Effect.fail(new JournalCorrupt({ file, offset: 0, reason: "segment file is missing" }))
        })
      )

    const readSegment = <L extends { readonly offset: number }, T>(
      format: LineFormat<L, T>,
      file: string,
      expected: () => number,
      advance: (seq: number) => void,
      since: number,
      target: number
    ): Stream.Stream<T, JournalReadError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const handle = yield* openForRead(file, expected())
          const splitter = format.splitter()
          const readChunk = handle
            .readAlloc(chunkBytes)
            .pipe(Effect.mapError((cause) => Option.some(new JournalIoError({ operation: "read", path: file, cause }))))
          // The next chunk is read while this one's lines are worked through, so the wait for the
          // read (a trip through the I/O threads) overlaps the work. `runFork` issues the read at
          // once; a forked fiber would only start once this one is done with the chunk.
          const startRead = Runtime.runFork(yield* Effect.runtime<never>())
          let ahead: Fiber.RuntimeFiber<Option.Option<Uint8Array>, Option.Option<JournalReadError>> | undefined
          yield* Effect.addFinalizer(() => (ahead === undefined ? Effect.void : Fiber.interrupt(ahead)))
          let done = false
          // A bad line found after good ones in the same chunk: the good ones are delivered first, then this.
          let failure: JournalReadError | undefined
          const pull: Effect.Effect<Array<T>, Option.Option<JournalReadError>> = Effect.gen(function* () {
            if (failure !== undefined) return yield* Effect.fail(Option.some(failure))
            if (done) return yield* Effect.fail(Option.none())
            const chunk = ahead === undefined ? yield* readChunk : yield* Fiber.join(ahead)
            ahead = Option.isSome(chunk) ? startRead(readChunk) : undefined
            if (Option.isNone(chunk)) {
              done = true
              if (expected() <= target && splitter.pending > 0) {
                return yield* Effect.fail(
                  Option.some(
                    new JournalCorrupt({ file, offset: splitter.offset, reason: "the last line has no line break" })
                  )
                )
              }
              return yield* Effect.fail(Option.none())
            }
            const split = splitter.push(chunk.value)
            const lines = Array.isArray(split) ? split : split.lines
            let bad: JournalCorrupt | undefined = Array.isArray(split)
              ? undefined
              : new JournalCorrupt({ file, offset: split.invalidUtf8At, reason: "line is not valid UTF-8" })
            const out: Array<T> = []
            for (const line of lines) {
              // Lines at or below the cursor only come before the first one delivered.
              if (expected() === since + 1) {
                const peeked = format.peek(line)
                if (peeked !== undefined && peeked <= since) continue
              }
              const item = format.parse(line)
              if (typeof item === "string") {
                bad = new JournalCorrupt({ file, offset: line.offset, reason: item })
                break
              }
              const seq = format.seqOf(item)
              if (seq <= since) continue
              if (seq !== expected()) {
                bad = new JournalCorrupt({
                  file,
                  offset: line.offset,
                  reason: `seq ${seq} where ${expected()} was expected`
                })
                break
              }
              out.push(item)
              advance(seq)
              if (seq >= target) {
                // Whatever follows the target (even a bad line) is not part of this read.
                done = true
                bad = undefined
                break
              }
            }
            if (bad !== undefined) {
              done = true
              if (out.length === 0) return yield* Effect.fail(Option.some<JournalReadError>(bad))
              failure = bad
            }
            return out
          })
          return Stream.repeatEffectChunkOption(Effect.map(pull, (events) => Chunk.unsafeFromArray(events)))
        })
      )

    const decoded = decodedFormat(codec)
    const journal: Journal<A> = {
      directory,
      epoch,
      fsync,
      recovery: {
        unclean,
        newEpoch: mayHaveLost,
        tornBytes,
        discardedBytes,
        prunedSegments,
        tookOverLockFrom: lock.tookOverFrom
      },
      headSeq: Effect.sync(() => head),
      info,
      append,
      read: (since, upTo) => readAs(decoded, since, upTo),
      readLines: (since, upTo) => readAs(rawFormat, since, upTo)
    }
    return journal
  })

export interface MemoryJournalOptions {
  /** Keep at most this many events (oldest dropped first); unbounded when unset. */
  readonly retainEvents?: number | undefined
  readonly epoch?: string | undefined
}

/**
 * An in-memory journal with the file journal's contract (contiguous seqs, exclusive reads,
 * `JournalPruned` below the retained window), for tests of the layers above it.
 */
export const makeMemory = <A, I>(
  schema: Schema.Schema<A, I>,
  options: MemoryJournalOptions = {}
): Effect.Effect<Journal<A>> =>
  Effect.sync(() => {
    const codec = makeLineCodec(schema)
    const events: Array<JournalEvent<A>> = []
    const epoch = options.epoch ?? newEpochId()
    const bodies: Array<Uint8Array> = []
    let head = 0
    const oldest = () => (events.length > 0 ? events[0]!.seq : head + 1)
    const slice = <T>(since: number, upTo: number | undefined, item: (index: number) => T) =>
      Stream.suspend(() => {
        const target = Math.min(upTo ?? head, head)
        if (since >= target) return Stream.empty
        if (since + 1 < oldest()) return Stream.fail(new JournalPruned({ requested: since + 1, oldest: oldest() }))
        const from = since + 1 - oldest()
        return Stream.fromIterable(Array.from({ length: target - since }, (_, k) => item(from + k)))
      })
    const info = Effect.sync((): JournalInfo => ({
      headSeq: head,
      oldestSeq: oldest(),
      epoch,
      segments: events.length > 0 ? 1 : 0,
      bytes: 0,
      fsync: "never"
    }))
    return {
      directory: ":memory:",
      epoch,
      fsync: "never",
      recovery: {
        unclean: false,
        newEpoch: false,
        tornBytes: 0,
        discardedBytes: 0,
        prunedSegments: 0,
        tookOverLockFrom: undefined
      },
      headSeq: Effect.sync(() => head),
      info,
      append: (batch) =>
        Effect.suspend(() => {
          if (batch.length === 0) return Effect.succeed(emptyBatch)
          if (batch[0]!.seq !== head + 1) return Effect.dieMessage(`journal append out of order: head ${head}`)
          const encoded = codec.encodeBatch(batch)
          for (let i = 0; i < batch.length; i++) {
            events.push(batch[i]!)
            bodies.push(bodyAt(encoded, i))
          }
          head += batch.length
          if (options.retainEvents !== undefined && events.length > options.retainEvents) {
            events.splice(0, events.length - options.retainEvents)
            bodies.splice(0, bodies.length - options.retainEvents)
          }
          return Effect.succeed(encoded)
        }),
      read: (since, upTo) => slice(since, upTo, (i) => events[i]!),
      readLines: (since, upTo) =>
        slice(since, upTo, (i) => ({
          _tag: "Change" as const,
          seq: events[i]!.seq,
          sessionId: events[i]!.session_id,
          body: bodies[i]!,
          key: events[i]!.key
        }))
    } satisfies Journal<A>
  })
