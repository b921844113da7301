/**
 * The file journal, the embedded default backend: a directory of segment files
 * (`events-<20-digit start seq>.jsonl`, one `ChangeEvent` JSON per line, with the appending
 * request's idempotency key and a checksum), written by one process at a time (`LOCK`,
 * `Lock.ts`), tagged with an epoch (`EPOCH`, `Epoch.ts`). Opening recovers the tail a crash left
 * (`Recovery.ts`) and prunes old segments (`Retention.ts`); a batch is appended with one write
 * and at most one sync, rotating to a new segment past the segment size; reads are
 * `SegmentReads.ts`. `store` keeps many accounts' journals under one root directory.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Clock, Effect, Either, Exit, Option, Schedule, type Schema, Scope } from "effect"
import { type AccountId, DEFAULT_ACCOUNT, parseAccountId } from "../Domain/Account.js"
import {
  type Appended,
  DEFAULT_SEGMENT_BYTES,
  DEFAULT_SYNC_INTERVAL,
  type FsyncMode,
  type Journal,
  emptyAppended,
  type JournalEntry,
  type JournalInfo,
  type JournalOptions,
  type JournalStore,
  numbered
} from "../Journal.js"
import * as Metrics from "../Metrics.js"
import {
  currentBootId,
  EPOCH_FILE,
  mayHaveLostEvents,
  OPEN_FILE,
  readEpoch,
  readOpenMarker,
  startEpoch,
  writeOpenMarker
} from "./Epoch.js"
import { JournalCorrupt, JournalIoError, type JournalOpenError } from "./Errors.js"
import { type LineCodec, makeLineCodec } from "./Lines.js"
import { acquireLock } from "./Lock.js"
import { recoverTail } from "./Recovery.js"
import { defaultRetention, type RetentionPolicy, segmentsToPrune } from "./Retention.js"
import { parseSegmentName, type Segment, segmentName } from "./Segment.js"
import { makeSegmentReads } from "./SegmentReads.js"
import { SegmentIndexes } from "./SegmentIndex.js"

const DEFAULT_READ_CHUNK = 256 * 1024
/**
 * The chunk of a read that reuses its buffers (`reuseChunks`, the SSE replay): larger, since its
 * two buffers are all it ever holds, and each chunk costs a pull, a read and a write of frames
 * whatever its size (a replay's server CPU fell by a fifth from 256 KiB; at 4 MiB it rose again).
 */
const DEFAULT_REUSED_READ_CHUNK = 1024 * 1024
/** A torn tail is at most one batch write; more garbage than this at the end is corruption. */
const MAX_TORN_BYTES = 64 * 1024 * 1024

const LOCK_FILE = "LOCK"

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
  }).pipe(Effect.withSpan("FileJournal.open", { attributes: { "journal.directory": options.directory } }))

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
    const reusedChunkBytes = options.readChunkBytes ?? DEFAULT_REUSED_READ_CHUNK
    const codec: LineCodec<A> = makeLineCodec(schema)
    const indexes = options.segmentIndexes === false ? undefined : (options.segmentIndexes ?? SegmentIndexes.shared)
    const at = (name: string) => path.join(directory, name)
    const timedSync = Metrics.timed(
      (yield* Metrics.holdAccount(options.account ?? Metrics.defaultAccount)).fsyncSeconds
    )
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
      if (retention.maxAge !== undefined) ages = yield* Effect.forEach(segments, lastWriteMs)
      const now = yield* Clock.currentTimeMillis
      const count = segmentsToPrune(segments, retention, now, (i) => ages[i] ?? now)
      for (let i = 0; i < count; i++) {
        // Out of the list before the file goes: a reader that then finds it missing sees the
        // oldest seq past it and answers a reset, not corruption. A file that cannot be removed
        // is no longer served and is pruned again at the next open.
        const segment = segments.shift()!
        indexes?.delete(at(segment.name))
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
          // Another process may write this folder next: what this one indexed of it goes.
          indexes?.deleteUnder(directory)
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

    const append = (entries: ReadonlyArray<JournalEntry<A>>): Effect.Effect<Appended<A>, JournalIoError> =>
      fileLock
        .withPermits(1)(
          Effect.gen(function* () {
            if (entries.length === 0) return emptyAppended
            const first = head + 1
            const events = numbered(entries, first)
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
            const lines = codec.encodeBatch(events, entries)
            const bytes = lines.bytes
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
            head += events.length
            return { events, lines }
          })
        )
        .pipe(Effect.uninterruptible)

    if (fsync === "interval") {
      const period = options.syncInterval ?? DEFAULT_SYNC_INTERVAL
      yield* fileLock
        .withPermits(1)(syncActive)
        .pipe(
          Effect.catchAll((error) => Effect.logWarning("journal: interval sync failed", error)),
          Effect.repeat(Schedule.spaced(period)),
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

    const reads = makeSegmentReads(
      {
        fs,
        at,
        chunkBytes,
        reusedChunkBytes,
        simd: options.scanWithSimd ?? true,
        segments: () => segments,
        head: () => head,
        indexes
      },
      codec
    )
    const journal: Journal<A> = {
      location: directory,
      epoch,
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
      read: reads.read,
      readLines: reads.readLines,
      readLineRuns: reads.readLineRuns
    }
    return journal
  })

// ---- many accounts under one root ---------------------------------------------------------------

const ACCOUNTS_FOLDER = "accounts"

/** The journal directory of an account under `root`: the root itself for the default account. */
export const accountDirectory = (path: Path.Path, root: string, account: AccountId): string =>
  account === DEFAULT_ACCOUNT ? root : path.join(root, ACCOUNTS_FOLDER, account)

/**
 * The file journals of many accounts under one root: the `default` account is the root itself,
 * so a directory written by a single-account service keeps working, unchanged, as the default
 * account; every other account is `<root>/accounts/<id>`.
 */
export const store = (options: JournalOptions): Effect.Effect<JournalStore, never, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const root = path.resolve(options.directory)
    const accounts = Effect.gen(function* () {
      const found: Array<AccountId> = []
      const rootNames = yield* fs.readDirectory(root).pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
      if (rootNames.includes(EPOCH_FILE)) found.push(DEFAULT_ACCOUNT as AccountId)
      const names = yield* fs
        .readDirectory(path.join(root, ACCOUNTS_FOLDER))
        .pipe(Effect.orElseSucceed((): ReadonlyArray<string> => []))
      for (const name of names) {
        const account = parseAccountId(name)
        if (Either.isRight(account)) found.push(account.right)
      }
      return found.sort()
    })
    return {
      location: root,
      open: <A, I>(schema: Schema.Schema<A, I>, account: AccountId) =>
        make(schema, { ...options, account, directory: accountDirectory(path, root, account) }).pipe(
          Effect.provideService(FileSystem.FileSystem, fs),
          Effect.provideService(Path.Path, path)
        ),
      accounts
    } satisfies JournalStore
  })
