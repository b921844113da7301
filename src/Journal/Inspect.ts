/**
 * Offline verification of a journal directory, for `change-feed inspect`: every segment, its
 * seq range, every line decoded, its checksum verified and its seq checked for contiguity;
 * corruption reported by file and byte offset.
 *
 * `repair` is the explicit way past damage at the end of the journal, which the journal refuses
 * to open on: it cuts the newest segment from its first damaged line (or its incomplete last
 * line) and starts a new epoch, since the seqs cut may have been acknowledged and will be handed
 * to other events: readers resync instead of taking them for the ones they saw.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import { Effect, Option, type Schema } from "effect"
import { readEpoch, readOpenMarker, startEpoch } from "./Epoch.js"
import { type JournalCorrupt, JournalIoError, type JournalLocked } from "./Errors.js"
import { envelopeSeq, hasChecksum, LineSplitter, makeLineCodec } from "./Lines.js"
import { acquireLock } from "./Lock.js"
import { parseSegmentName } from "./Segment.js"

export interface Problem {
  readonly file: string
  readonly offset: number
  readonly reason: string
}

export interface SegmentReport {
  readonly name: string
  readonly start: number
  readonly bytes: number
  readonly lines: number
  readonly firstSeq: number | undefined
  readonly lastSeq: number | undefined
}

/** A cut of the newest segment from `offset` to its end (`bytes` long). */
export interface Cut {
  readonly file: string
  readonly offset: number
  readonly bytes: number
}

export interface InspectReport {
  readonly directory: string
  readonly epoch: string | undefined
  /** The journal was not closed cleanly (a process has it open, or crashed). */
  readonly unclean: boolean
  readonly segments: ReadonlyArray<SegmentReport>
  readonly events: number
  /** Lines written without a checksum (by the original or an earlier version): readable, but damage inside them can go unseen. */
  readonly linesWithoutChecksum: number
  /** Corruption: lines that are not valid events or fail their checksum, or seqs that are not contiguous. */
  readonly problems: ReadonlyArray<Problem>
  /** An incomplete last line in the newest segment: a torn write after an unclean stop, damage after a clean one. */
  readonly tornTail: Cut | undefined
  /**
   * What `repair` cuts: the newest segment from its first damaged line, or its incomplete last
   * line. Damage elsewhere, and intact lines whose event this version does not know, it leaves.
   */
  readonly repairable: Cut | undefined
}

const MAX_PROBLEMS = 100
const CHUNK = 1024 * 1024

export const inspect = <A, I>(
  schema: Schema.Schema<A, I>,
  directory: string,
  onProgress: (bytesRead: number, bytesTotal: number) => Effect.Effect<void> = () => Effect.void
): Effect.Effect<InspectReport, JournalIoError | JournalCorrupt, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const io = (operation: string, file: string) => (cause: unknown) =>
      new JournalIoError({ operation, path: file, cause })
    const codec = makeLineCodec(schema)
    const names = yield* fs.readDirectory(directory).pipe(Effect.mapError(io("list", directory)))
    const epoch = yield* readEpoch(fs, directory)
    const unclean = Option.isSome(yield* readOpenMarker(fs, directory))
    const files = names
      .flatMap((name) => {
        const start = parseSegmentName(name)
        return start === undefined ? [] : [{ name, start }]
      })
      .sort((a, b) => a.start - b.start)
    const sizes: Array<number> = []
    for (const f of files) {
      sizes.push(Number((yield* fs.stat(path.join(directory, f.name)).pipe(Effect.mapError(io("stat", f.name)))).size))
    }
    const total = sizes.reduce((a, b) => a + b, 0)

    const problems: Array<Problem> = []
    const report = (problem: Problem) => {
      if (problems.length < MAX_PROBLEMS) problems.push(problem)
    }
    const segments: Array<SegmentReport> = []
    let expected: number | undefined = undefined
    let events = 0
    let linesWithoutChecksum = 0
    let read = 0
    let tornTail: Cut | undefined = undefined
    let firstDamage: number | undefined = undefined
    for (let i = 0; i < files.length; i++) {
      const { name, start } = files[i]!
      const file = path.join(directory, name)
      const isNewest = i === files.length - 1
      // Damage in the newest segment is where `repair` cuts; elsewhere it stays a problem.
      const damaged = (offset: number) => {
        if (isNewest) firstDamage ??= offset
      }
      if (expected !== undefined && start !== expected) {
        report({
          file,
          offset: 0,
          reason: `segment starts at seq ${start}, but the previous one ends at ${expected - 1}`
        })
      }
      expected = start
      let lines = 0
      let firstSeq: number | undefined
      let lastSeq: number | undefined
      yield* Effect.scoped(
        Effect.gen(function* () {
          const handle = yield* fs.open(file, { flag: "r" }).pipe(Effect.mapError(io("open", file)))
          const splitter = new LineSplitter()
          while (true) {
            const chunk = yield* handle.readAlloc(CHUNK).pipe(Effect.mapError(io("read", file)))
            if (Option.isNone(chunk)) break
            read += chunk.value.length
            yield* onProgress(read, total)
            const result = splitter.push(chunk.value)
            const batch = Array.isArray(result) ? result : result.lines
            for (const line of batch) {
              lines++
              if (!hasChecksum(line.bytes)) linesWithoutChecksum++
              const event = codec.decodeLine(line.text, line.bytes)
              if (typeof event === "string") {
                report({ file, offset: line.offset, reason: event })
                // An intact line (its checksum and envelope hold) whose event this version does not
                // know is not damage: a newer version wrote it, and no repair may cut it.
                if (typeof envelopeSeq(line.bytes) === "string") damaged(line.offset)
                // The bad line's seq is unknown: pick up contiguity again from the next good line.
                expected = undefined
                continue
              }
              if (expected !== undefined && event.seq !== expected) {
                report({ file, offset: line.offset, reason: `seq ${event.seq} where ${expected} was expected` })
                damaged(line.offset)
              }
              firstSeq ??= event.seq
              lastSeq = event.seq
              expected = event.seq + 1
              events++
            }
            if (!Array.isArray(result)) {
              report({ file, offset: result.invalidUtf8At, reason: "line is not valid UTF-8" })
              damaged(result.invalidUtf8At)
              break
            }
          }
          if (splitter.pending > 0) {
            if (isNewest) tornTail = { file, offset: splitter.offset, bytes: splitter.pending }
            else report({ file, offset: splitter.offset, reason: "the last line has no line break" })
          }
        })
      )
      segments.push({ name, start, bytes: sizes[i]!, lines, firstSeq, lastSeq })
    }
    const newestSize = sizes[sizes.length - 1] ?? 0
    const newestFile = files.length > 0 ? path.join(directory, files[files.length - 1]!.name) : ""
    const repairable: Cut | undefined =
      firstDamage !== undefined ? { file: newestFile, offset: firstDamage, bytes: newestSize - firstDamage } : tornTail
    return {
      directory,
      epoch,
      unclean,
      segments,
      events,
      linesWithoutChecksum,
      problems,
      tornTail,
      repairable
    } satisfies InspectReport
  })

/**
 * Cuts what `inspect` found repairable, holding the journal's lock meanwhile, and starts a new
 * epoch (before cutting, so that a crash in between cannot leave the cut in the old epoch).
 * Answers the new epoch.
 */
export const repair = (
  directory: string,
  cut: Cut
): Effect.Effect<string, JournalIoError | JournalLocked, FileSystem.FileSystem | Path.Path> =>
  Effect.scoped(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      yield* acquireLock(fs, directory, path.join(directory, "LOCK"))
      const epoch = yield* startEpoch(fs, directory)
      yield* fs
        .truncate(cut.file, cut.offset)
        .pipe(Effect.mapError((cause) => new JournalIoError({ operation: "cut the journal", path: cut.file, cause })))
      return epoch
    })
  )
