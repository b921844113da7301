/**
 * Offline verification of a journal directory, for `change-feed inspect`: every segment,
 * its seq range, every line decoded and checked for contiguity, corruption reported by file
 * and byte offset. `repair` cuts a torn tail and nothing else.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Option, type Schema } from "effect"
import { type JournalCorrupt, JournalIoError, type JournalLocked } from "./Errors.js"
import { LineSplitter, makeLineCodec } from "./Lines.js"
import { acquireLock } from "./Lock.js"
import { recoverTail } from "./Recovery.js"
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

export interface InspectReport {
  readonly directory: string
  readonly epoch: string | undefined
  readonly segments: ReadonlyArray<SegmentReport>
  readonly events: number
  /** Corruption: lines that are not valid events, or seqs that are not contiguous. */
  readonly problems: ReadonlyArray<Problem>
  /** A torn tail at the end of the newest segment, which `repair` (or the next open) cuts. */
  readonly tornTail: { readonly file: string; readonly offset: number; readonly bytes: number } | undefined
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
    const epoch = yield* fs.readFileString(path.join(directory, "EPOCH")).pipe(
      Effect.map((text) => text.trim()),
      Effect.option,
      Effect.map(Option.getOrUndefined)
    )
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

    // Where the valid part of the newest segment ends; beyond it is a torn tail, not corruption.
    let tornTail: InspectReport["tornTail"] = undefined
    let validEnd = Number.POSITIVE_INFINITY
    if (files.length > 0) {
      const newest = path.join(directory, files[files.length - 1]!.name)
      const tail = yield* recoverTail(fs, newest, 64 * 1024 * 1024)
      validEnd = tail.validBytes
      if (tail.tornBytes > 0) tornTail = { file: newest, offset: tail.validBytes, bytes: tail.tornBytes }
    }

    const problems: Array<Problem> = []
    const report = (problem: Problem) => {
      if (problems.length < MAX_PROBLEMS) problems.push(problem)
    }
    const segments: Array<SegmentReport> = []
    let expected: number | undefined = undefined
    let events = 0
    let read = 0
    for (let i = 0; i < files.length; i++) {
      const { name, start } = files[i]!
      const file = path.join(directory, name)
      const isNewest = i === files.length - 1
      const limit = isNewest ? validEnd : Number.POSITIVE_INFINITY
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
              if (line.offset >= limit) break
              const event = codec.decodeLine(line.text)
              lines++
              if (typeof event === "string") {
                report({ file, offset: line.offset, reason: event })
                // The bad line's seq is unknown: pick up contiguity again from the next good line.
                expected = undefined
                continue
              }
              if (expected !== undefined && event.seq !== expected) {
                report({ file, offset: line.offset, reason: `seq ${event.seq} where ${expected} was expected` })
              }
              firstSeq ??= event.seq
              lastSeq = event.seq
              expected = event.seq + 1
              events++
            }
            if (!Array.isArray(result) && result.invalidUtf8At < limit) {
              report({ file, offset: result.invalidUtf8At, reason: "line is not valid UTF-8" })
              break
            }
          }
          if (!isNewest && splitter.pending > 0) {
            report({ file, offset: splitter.offset, reason: "the last line has no line break" })
          }
        })
      )
      segments.push({ name, start, bytes: sizes[i]!, lines, firstSeq, lastSeq })
    }
    return { directory, epoch, segments, events, problems, tornTail } satisfies InspectReport
  })

/** Cuts the torn tail `inspect` found, holding the journal's lock meanwhile; touches nothing else. */
export const repair = (
  directory: string,
  tornTail: NonNullable<InspectReport["tornTail"]>
): Effect.Effect<void, JournalIoError | JournalLocked, FileSystem.FileSystem | Path.Path> =>
  Effect.scoped(
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      yield* acquireLock(fs, directory, path.join(directory, "LOCK"))
      yield* fs
        .truncate(tornTail.file, tornTail.offset)
        .pipe(
          Effect.mapError((cause) => new JournalIoError({ operation: "cut torn tail", path: tornTail.file, cause }))
        )
    })
  )
