/**
 * Reads of a file journal's segments: from a cursor to a target seq, segment after segment, in
 * bounded chunks with the next chunk read ahead, each line either decoded (`read`) or taken as
 * its wire bytes (`readLines`). A read checks what it passes over: UTF-8, checksums, contiguous
 * seqs, missing segments (pruned under the reader: `JournalPruned`; otherwise corruption).
 */
import type { FileSystem } from "@effect/platform"
import { Chunk, Effect, Fiber, Option, Runtime, type Scope, Stream } from "effect"
import type { JournalEvent, JournalLine } from "../Journal.js"
import { JournalCorrupt, JournalIoError, JournalPruned, type JournalReadError } from "./Errors.js"
import {
  type ByteLine,
  ByteLineSplitter,
  hasControlByte,
  type Line,
  type LineCodec,
  LineSplitter,
  peekSeq,
  peekSeqBytes,
  readInPlace,
  readParsed,
  type Splitter
} from "./Lines.js"
import { type Segment, segmentIndexFor } from "./Segment.js"

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

/** What the reads need of the open journal: its files, and its segments and head as they are now. */
export interface SegmentFiles {
  readonly fs: FileSystem.FileSystem
  /** The path of a file in the journal's directory. */
  readonly at: (name: string) => string
  readonly chunkBytes: number
  readonly segments: () => ReadonlyArray<Segment>
  readonly head: () => number
}

export interface SegmentReads<A> {
  readonly read: (since: number, upTo?: number) => Stream.Stream<JournalEvent<A>, JournalReadError>
  readonly readLines: (since: number, upTo?: number) => Stream.Stream<JournalLine, JournalReadError>
}

export const makeSegmentReads = <A>(files: SegmentFiles, codec: LineCodec<A>): SegmentReads<A> => {
  const { at, chunkBytes, fs } = files
  const readAs = <L extends { readonly offset: number }, T>(
    format: LineFormat<L, T>,
    since: number,
    upTo?: number
  ): Stream.Stream<T, JournalReadError> =>
    Stream.suspend(() => {
      const head = files.head()
      const target = Math.min(upTo ?? head, head)
      if (since >= target) return Stream.empty
      const snapshot = files.segments().slice()
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

  const openForRead = (file: string, expected: number): Effect.Effect<FileSystem.File, JournalReadError, Scope.Scope> =>
    fs.open(file, { flag: "r" }).pipe(
      Effect.catchAll((cause): Effect.Effect<never, JournalReadError> => {
        if (cause._tag !== "SystemError" || cause.reason !== "NotFound") {
          return Effect.fail(new JournalIoError({ operation: "open", path: file, cause }))
        }
        // Gone under the reader: pruned by retention (a reset), or removed by hand (corruption).
        const oldest = files.segments()[0]?.start ?? files.head() + 1
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
  return {
    read: (since, upTo) => readAs(decoded, since, upTo),
    readLines: (since, upTo) => readAs(rawFormat, since, upTo)
  }
}
