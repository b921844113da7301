/**
 * Reads of a file journal's segments: from a cursor to a target seq, segment after segment, in
 * bounded chunks with the next chunk read ahead, each line either decoded (`read`), taken as
 * its wire bytes (`readLines`), or taken with the lines around it as one run of a chunk's bytes
 * (`readLineRuns`). A read checks what it passes over: UTF-8, checksums, contiguous seqs, missing
 * segments (pruned under the reader: `JournalPruned`; otherwise corruption). A sealed segment
 * that a read of lines or runs went through whole and found sound gets a line index
 * (`SegmentIndex`): later reads start at their cursor's line, and reads of runs take the lines
 * from the index with no scan and no checksum.
 *
 * Each chunk is read into a buffer of its own, since what a read hands over is views of it, kept
 * as long as the caller likes; a read of lines or runs asked to (`reuseChunks`) reads into two
 * buffers in turn instead (`ReusedMemory`), for a caller that is done with a pull's bytes by the
 * next pull.
 */
import * as Fs from "node:fs"
import { crc32 } from "node:zlib"
import type * as FileSystem from "@effect/platform/FileSystem"
import { Chunk, Effect, Option, type Scope, Stream } from "effect"
import type { JournalEvent, JournalLine, JournalLineRun, LineReadOptions } from "../Journal.js"
import { textOf, viewOf } from "../Scratch.js"
import { crcBytes, crcOfRest } from "./Crc.js"
import { JournalCorrupt, JournalIoError, JournalPruned, type JournalReadError } from "./Errors.js"
import * as Finalizer from "../Finalizer.js"
import {
  ByteBlockSplitter,
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
  type Splitter,
  verifyChecksum
} from "./Lines.js"
import {
  BlockLines,
  BODY_END,
  blockLines,
  HOLDS_CONTROL,
  IN_PLACE,
  KEY_FROM,
  LINE_END,
  LINE_FLAGS,
  LINE_START,
  RECORD_INTS,
  SEQ_HIGH,
  SEQ_LOW,
  SESSION_FROM,
  SESSION_TO,
  SPAN_CRC,
  SPAN_START
} from "./LineScan.js"
import { type Segment, segmentIndexFor } from "./Segment.js"
import { IndexBuilder, type SegmentIndex, type SegmentIndexes, stampOf } from "./SegmentIndex.js"

const NEWLINE = 0x0a

/** What a read of a segment makes of each line's seq (`admit`). */
type Admitted = "skip" | "take" | "last" | JournalCorrupt

/** The state of one segment's read, as a format taking a chunk's lines sees it. */
interface SegmentRead {
  /** The read's cursor: lines at or below it are skipped. */
  readonly since: number
  /** Whether no line has been taken yet (lines below the cursor can only come then). */
  readonly skipping: () => boolean
  /** Checks a line's seq and moves the read past it: skip it, take it, take it as the last, or corruption. */
  readonly admit: (seq: number, offset: number) => Admitted
  readonly corrupt: (offset: number, reason: string) => JournalCorrupt
  /** The segment's index in the making, when this read may index it (it reads a sealed segment whole). */
  readonly building: IndexBuilder | undefined
}

/**
 * How one kind of read takes what a chunk's splitter answers (a line, or a block of lines): its
 * items go into `out`; answers "done" once the read's target is taken, a corruption, or nothing.
 */
interface ReadFormat<L, T> {
  /** A splitter of the segment's bytes from `offset` (a line's start) on. */
  readonly splitter: (offset: number) => Splitter<L>
  readonly take: (piece: L, read: SegmentRead, out: Array<T>, memory: ReadMemory) => "done" | JournalCorrupt | undefined
}

/** How a read that makes one item per line turns a line into its item. */
interface LineFormat<L extends { readonly offset: number }, T> {
  readonly splitter: (offset: number) => Splitter<L>
  /** The seq of a line without parsing it, to skip lines below the cursor; `undefined` to parse. */
  readonly peek: (line: L) => number | undefined
  /** The item of a line, or why the line is invalid. */
  readonly parse: (line: L) => T | string
  readonly seqOf: (item: T) => number
}

const decodedFormat = <A>(codec: LineCodec<A>): LineFormat<Line, JournalEvent<A>> => ({
  splitter: (offset) => new LineSplitter(offset),
  peek: (line) => peekSeq(line.text),
  parse: (line) => codec.decodeLine(line.text, line.bytes),
  seqOf: (event) => event.seq
})

/** A format of one item per line, as a `ReadFormat`. */
const perLine = <L extends { readonly offset: number }, T>(format: LineFormat<L, T>): ReadFormat<L, T> => ({
  splitter: format.splitter,
  take: (line, read, out) => {
    if (read.skipping()) {
      const peeked = format.peek(line)
      if (peeked !== undefined && peeked <= read.since) return undefined
    }
    const item = format.parse(line)
    if (typeof item === "string") return read.corrupt(line.offset, item)
    const admitted = read.admit(format.seqOf(item), line.offset)
    if (typeof admitted === "object") return admitted
    if (admitted === "skip") return undefined
    out.push(item)
    return admitted === "last" ? "done" : undefined
  }
})

const rawFormat: LineFormat<ByteLine, JournalLine> = {
  splitter: (offset) => new ByteLineSplitter(offset),
  peek: (line) => peekSeqBytes(line.bytes),
  parse: (line) => {
    const controlFree = line.controlFree || !hasControlByte(line.bytes)
    // What the checksum vouches for is read in place; anything else is parsed, as `read` does.
    return readInPlace(line.bytes, controlFree) ?? readParsed(line.bytes, controlFree)
  },
  seqOf: (line) => line.seq
}

/**
 * The first `count` lines of a run found in a block from `runStart` on, their ends and body ends
 * counted from there (the arrays, of the read's memory, are cut to `count`), as one `JournalLineRun`.
 */
const lineRun = (
  bytes: Uint8Array,
  runStart: number,
  first: number,
  ends: Array<number>,
  bodyEnds: Array<number>,
  count: number
): JournalLineRun => {
  ends.length = count
  bodyEnds.length = count
  return {
    _tag: "LineRun",
    first,
    lines: { bytes: bytes.subarray(runStart, runStart + ends[count - 1]!), ends, bodyEnds }
  }
}

/**
 * A block's lines as WebAssembly finds them (`BlockLines`, the twin of `scanInPlace` but for
 * computing checksums): where each line ends, where a line's fields lie, and the checksum its
 * span of lines read in place must have, folded from the checksums they hold (`Crc`). Lines read
 * in place one after the other are checked together, in one native pass over their bytes as they
 * are handed on; if they do not hold, the line that fails is found, the lines before it are
 * handed on and the read fails there, as a check line by line would have it. They are handed on
 * as one `JournalLineRun` over the block's bytes, with no object per line (`runs`), or as a
 * `JournalLine` each (as `rawFormat` reads them, but for the checksums). Any other line is read
 * as `rawFormat` reads it, between them.
 */
const scannedFormat = (scanner: BlockLines, runs: boolean): ReadFormat<ByteLine, JournalLineRun | JournalLine> => ({
  // Control bytes are looked for line by line, as the lines are scanned.
  splitter: (offset) => new ByteBlockSplitter(offset, false),
  take: (block, read, out, memory) => {
    const bytes = block.bytes
    let runStart = -1
    let first = 0
    // The run's line ends: arrays of the read's memory, filled from 0 (`count` of them), cut to length at the end.
    let ends: Array<number> = []
    let bodyEnds: Array<number> = []
    let count = 0
    // The run's lines as items, when lines are handed on one by one.
    const items: Array<JournalLine> = []
    // The checksum of the span before the run's first line (with its newline), when the run starts inside a span.
    let prefix: number | undefined
    // The checksum of the span up to the run's last line, and up to the line scanned last.
    let runCrc = 0
    let spanCrc = 0
    /** Hands on the run so far, or as much of it as its checksums vouch for and the corruption after it. */
    const flush = (): JournalCorrupt | undefined => {
      if (runStart < 0) return undefined
      let corrupt: JournalCorrupt | undefined
      const end = runStart + ends[count - 1]!
      const expected = prefix === undefined ? runCrc : crcOfRest(runCrc, prefix, end - runStart)
      if (crc32(viewOf(bytes, runStart, end)) !== expected) {
        for (let i = 0, start = runStart; i < count; start = runStart + ends[i]! + 1, i++) {
          const checked = verifyChecksum(bytes, start, runStart + ends[i]!)
          if (typeof checked === "string") {
            corrupt = read.corrupt(block.offset + start, checked)
            count = i
            break
          }
        }
      }
      const building = read.building
      if (building !== undefined) {
        const base = block.offset + runStart
        for (let i = 0; i < count; i++) building.add(first + i, base + ends[i]!, base + bodyEnds[i]!)
      }
      if (count > 0 && runs) {
        out.push(lineRun(bytes, runStart, first, ends, bodyEnds, count))
      } else {
        for (let i = 0; i < count; i++) out.push(items[i]!)
        items.length = 0
      }
      runStart = -1
      return corrupt
    }
    scanner.load(bytes)
    for (let from = 0, scanned = BlockLines.batch; scanned === BlockLines.batch && from <= bytes.length;) {
      scanned = scanner.scan(from)
      const records = scanner.records
      for (let r = 0; r < scanned * RECORD_INTS; r += RECORD_INTS) {
        const start = records[r + LINE_START]!
        const end = records[r + LINE_END]!
        const flags = records[r + LINE_FLAGS]!
        const inPlace = (flags & IN_PLACE) !== 0
        const spanBefore = (flags & SPAN_START) === 0 ? spanCrc : undefined
        if (inPlace) spanCrc = records[r + SPAN_CRC]! >>> 0
        const seq = inPlace ? records[r + SEQ_HIGH]! * 2 ** 32 + (records[r + SEQ_LOW]! >>> 0) : 0
        const offset = block.offset + start
        from = end + 1
        if (read.skipping()) {
          const peeked = inPlace ? seq : peekSeqBytes(bytes, start, end)
          if (peeked !== undefined && peeked <= read.since) {
            read.building?.spoil()
            continue
          }
        }
        const admitted = inPlace ? read.admit(seq, offset) : undefined
        if (inPlace && (admitted === "take" || admitted === "last")) {
          if (runStart < 0) {
            runStart = start
            first = seq
            ends = memory.array()
            bodyEnds = memory.array()
            count = 0
            prefix = spanBefore === undefined ? undefined : crcBytes(spanBefore, bytes, start - 1, start)
          }
          runCrc = spanCrc
          ends[count] = end - runStart
          bodyEnds[count] = records[r + BODY_END]! - runStart
          if (!runs) items.push(lineItemAt(bytes, records, r, seq))
          count++
          if (admitted === "last") return flush() ?? "done"
          continue
        }
        // Any other line: the run before it first, then its own checksum, then what it is.
        read.building?.spoil()
        const before = flush()
        if (before !== undefined) return before
        const checked = verifyChecksum(bytes, start, end)
        if (typeof checked === "string") return read.corrupt(offset, checked)
        if (admitted === undefined) {
          const item = readParsed(bytes.subarray(start, end), (flags & HOLDS_CONTROL) === 0)
          if (typeof item === "string") return read.corrupt(offset, item)
          const parsed = read.admit(item.seq, offset)
          if (typeof parsed === "object") return parsed
          if (parsed === "take" || parsed === "last") out.push(item)
          if (parsed === "last") return "done"
        } else if (typeof admitted === "object") {
          return admitted
        }
      }
    }
    return flush()
  }
})

/** What a read does with the indexes of the sealed segments it reads. */
interface Indexing<L, T> {
  /** The format that takes a segment's lines from its index, from line `line` at `offset` (none: the read's own). */
  readonly fromIndex: ((index: SegmentIndex, line: number, offset: number) => ReadFormat<L, T>) | undefined
  /** Whether the read's format checks lines as an index is made of (a segment read whole is then indexed). */
  readonly builds: boolean
}

/** Where line `line` of an indexed segment starts in its file (its end, for the line past the last). */
const offsetOf = (index: SegmentIndex, line: number): number => {
  let offset = 0
  for (let k = 0; k < line; k++) offset += index.lengths[k]! + 1
  return offset
}

/**
 * A sealed segment's lines as its index gives them (`SegmentIndex`): each block's lines are
 * handed on as one `JournalLineRun`, taken from the index without a look at their bytes (no
 * scan, no checksum, no UTF-8 check: the read that built the index did all three, and the file
 * has not changed since), but for each line's newline being where the index says, which a
 * changed file would miss. The seqs are admitted as any read admits them, so the read still
 * checks they follow on from the segment before.
 */
const indexedFormat = (index: SegmentIndex, line: number, offset: number): ReadFormat<ByteLine, JournalLineRun> => {
  // The next line of the index to take, and where it starts in the file: blocks come in file order, each starting there.
  let k = line
  let start = offset
  return {
    splitter: (from) => new ByteBlockSplitter(from, false, false),
    take: (block, read, out, memory) => {
      const bytes = block.bytes
      const base = block.offset
      const blockEnd = base + bytes.length
      const { lengths, tails } = index
      let runStart = 0
      let first = 0
      let ends: Array<number> = []
      let bodyEnds: Array<number> = []
      let count = 0
      const flush = () => {
        if (count === 0) return
        out.push(lineRun(bytes, runStart, first, ends, bodyEnds, count))
        count = 0
      }
      const mismatch = (at: number) => {
        flush()
        return read.corrupt(at, "the segment no longer matches its line index")
      }
      if (start !== base) return mismatch(base)
      while (k < index.count) {
        const end = start + lengths[k]!
        if (end > blockEnd) break
        if (end < blockEnd && bytes[end - base] !== NEWLINE) return mismatch(start)
        const seq = index.first + k
        const admitted = read.admit(seq, start)
        if (typeof admitted === "object") {
          flush()
          return admitted
        }
        if (admitted !== "skip") {
          if (count === 0) {
            runStart = start - base
            first = seq
            ends = memory.array()
            bodyEnds = memory.array()
          }
          ends[count] = end - base - runStart
          bodyEnds[count] = end - tails[k]! - base - runStart
          count++
        }
        k++
        start = end + 1
        if (admitted === "last") {
          flush()
          return "done"
        }
      }
      flush()
      // A block ends with a line's end: one the index does not hold means the file changed.
      return start === blockEnd + 1 ? undefined : mismatch(start)
    }
  }
}

/** How far before a line's end its key's text ends: the key's closing quote and `,"crc":"…"}` are 19 bytes. */
const KEY_TO_LINE_END = 19

/** The item of a line read in place, from its record: its body a view of the block, its session and key as text. */
const lineItemAt = (bytes: Uint8Array, records: Int32Array, r: number, seq: number): JournalLine => {
  const start = records[r + LINE_START]!
  const sessionFrom = records[r + SESSION_FROM]!
  const keyFrom = records[r + KEY_FROM]!
  return {
    _tag: "Change",
    seq,
    sessionId: sessionFrom < 0 ? undefined : textOf(bytes, sessionFrom, records[r + SESSION_TO]!),
    body: viewOf(bytes, start, records[r + BODY_END]!),
    key: keyFrom < 0 ? undefined : textOf(bytes, keyFrom, records[r + LINE_END]! - KEY_TO_LINE_END)
  }
}

/** What the reads need of the open journal: its files, and its segments and head as they are now. */
export interface SegmentFiles {
  readonly fs: FileSystem.FileSystem
  /** The path of a file in the journal's directory. */
  readonly at: (name: string) => string
  readonly chunkBytes: number
  /** The chunk of a read that reuses its buffers (`reuseChunks`). */
  readonly reusedChunkBytes: number
  /** Whether lines are looked at with WebAssembly SIMD where the runtime has it (`LineScan`). */
  readonly simd: boolean
  readonly segments: () => ReadonlyArray<Segment>
  readonly head: () => number
  /** Where the line indexes of sealed segments are kept (`SegmentIndex`); none: never indexed. */
  readonly indexes: SegmentIndexes | undefined
}

export interface SegmentReads<A> {
  readonly read: (since: number, upTo?: number) => Stream.Stream<JournalEvent<A>, JournalReadError>
  readonly readLines: (
    since: number,
    upTo?: number,
    options?: LineReadOptions
  ) => Stream.Stream<JournalLine, JournalReadError>
  readonly readLineRuns: (
    since: number,
    upTo?: number,
    options?: LineReadOptions
  ) => Stream.Stream<JournalLineRun | JournalLine, JournalReadError>
}

/**
 * The memory a read's chunks go into, and its runs' arrays of line ends: new for every chunk and
 * run (`fresh`), or, for a read that reuses its chunks (`reuseChunks`), the same from pull to pull
 * (`ReusedMemory`).
 */
interface ReadMemory {
  /** A buffer to read the next chunk into, or `undefined` to have one made for it. */
  readonly chunk: () => Uint8Array | undefined
  /** An array for a run's line ends, filled from index 0 (whatever it holds past that is overwritten or cut). */
  readonly array: () => Array<number>
  /** A pull of the read starts. */
  readonly pulled: () => void
  /** The read ended with a chunk read ahead, still under way maybe. */
  readonly abandon: () => void
}

const fresh: ReadMemory = {
  chunk: () => undefined,
  array: () => [],
  pulled: () => {},
  abandon: () => {}
}

/**
 * The memory of a read that reuses its chunks: two buffers it reads chunks into in turn, and the
 * arrays of its runs, used again at every pull. Why that is safe: the caller is done with what a
 * pull answered once it pulls again (`reuseChunks`). A segment's read holds one chunk while the
 * next is read ahead, and it reads chunk k + 1 only as chunk k is pulled: the buffer read into is
 * the other one, whose bytes the previous pull answered, or none. The splitter keeps nothing of a
 * chunk across pulls (the part of a line it carries is a copy). A read that ends (done, failed or
 * interrupted) with a chunk still being read ahead waits for that read before its file closes,
 * and drops both buffers for new ones, in case the memory serves again. The arrays of the runs a
 * pull answered are let go at the next pull, so the same few serve every run: a run made at every
 * pull from a new array would outlive its pull often enough for V8 to allocate all of them in
 * the old generation, which only a full collection frees.
 */
class ReusedMemory implements ReadMemory {
  private buffers: Array<Uint8Array> = []
  private next = 0
  private readonly arrays: Array<Array<number>> = []
  private arraysUsed = 0

  constructor(private readonly chunkBytes: number) {}

  readonly chunk = (): Uint8Array => {
    if (this.buffers.length === 0) this.buffers = [new Uint8Array(this.chunkBytes), new Uint8Array(this.chunkBytes)]
    this.next ^= 1
    return this.buffers[this.next]!
  }

  readonly array = (): Array<number> => {
    if (this.arraysUsed === this.arrays.length) this.arrays.push([])
    return this.arrays[this.arraysUsed++]!
  }

  readonly pulled = (): void => {
    this.arraysUsed = 0
  }

  readonly abandon = (): void => {
    this.buffers = []
  }
}

/** What a read of a chunk answers: its bytes, or `None` at the end of the file. */
type ChunkResult = Effect.Effect<Option.Option<Uint8Array>, Option.Option<JournalReadError>>

/**
 * A segment's chunks, read one after the other with the next one read ahead: the read of chunk
 * k + 1 is issued as chunk k is answered, so the wait for it (a trip through the I/O threads)
 * overlaps the work on chunk k. The reads are Node's own on the file's descriptor, with one
 * callback each: no fiber per chunk (a fiber forked for each read ahead, and joined, cost more
 * than the read, and what it kept of its state outlived it into the old generation).
 */
class ChunkReads {
  /** The read under way or done and not yet answered, if any. */
  private ahead: ChunkResult | undefined
  /** Whoever waits for the read under way (`next`, or `settled`): called with its result once it completes. */
  private complete: ((result: ChunkResult) => void) | undefined
  private inFlight = false

  constructor(
    private readonly fd: number,
    private readonly file: string,
    private readonly memory: ReadMemory,
    private readonly chunkBytes: number,
    /** Where in the file the first chunk starts. */
    private position: number
  ) {}

  /** The next chunk; the one after it is then read ahead, unless this one is the end. */
  readonly next: ChunkResult = Effect.suspend(() => {
    const answer = this.ahead ?? this.start()
    this.ahead = undefined
    return Effect.tap(answer, (chunk) => {
      if (Option.isSome(chunk)) this.ahead = this.start()
    })
  })

  /** Completes once no read is under way (with the memory it reads into given up, if one was). */
  readonly settled: Effect.Effect<void> = Effect.suspend(() => {
    if (!this.inFlight) return Effect.void
    this.memory.abandon()
    return Effect.asVoid(Effect.either(this.wait()))
  })

  private start(): ChunkResult {
    const buffer = this.memory.chunk() ?? Buffer.allocUnsafeSlow(this.chunkBytes)
    let result: ChunkResult | undefined
    this.inFlight = true
    Fs.read(this.fd, buffer, 0, buffer.length, this.position, (error, bytesRead) => {
      this.inFlight = false
      if (error !== null) {
        result = Effect.fail(Option.some(new JournalIoError({ operation: "read", path: this.file, cause: error })))
      } else {
        this.position += bytesRead
        result = Effect.succeed(bytesRead === 0 ? Option.none() : Option.some(buffer.subarray(0, bytesRead)))
      }
      const complete = this.complete
      this.complete = undefined
      complete?.(result)
    })
    return Effect.suspend(() => result ?? this.wait())
  }

  private wait(): ChunkResult {
    return Effect.async<Option.Option<Uint8Array>, Option.Option<JournalReadError>>((resume) => {
      this.complete = resume
    })
  }
}

export const makeSegmentReads = <A>(files: SegmentFiles, codec: LineCodec<A>): SegmentReads<A> => {
  const { at, fs } = files
  const readAs = <L, T>(
    format: ReadFormat<L, T>,
    since: number,
    upTo?: number,
    reuseChunks = false,
    indexing?: Indexing<L, T>
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
      // One for the whole read: segments are read one after the other.
      const memory = reuseChunks ? new ReusedMemory(files.reusedChunkBytes) : fresh
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
            // Only a sealed segment is indexed: the last one may still grow.
            const sealed = segment !== snapshot[snapshot.length - 1]
            return readSegment(
              format,
              file,
              () => expected,
              (seq) => (expected = seq + 1),
              since,
              target,
              memory,
              sealed && files.indexes !== undefined ? indexing : undefined,
              since < segment.start
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

  const readSegment = <L, T>(
    format: ReadFormat<L, T>,
    file: string,
    expected: () => number,
    advance: (seq: number) => void,
    since: number,
    target: number,
    memory: ReadMemory,
    indexing: Indexing<L, T> | undefined,
    fromStart: boolean
  ): Stream.Stream<T, JournalReadError> =>
    Stream.unwrapScoped(
      Effect.gen(function* () {
        const handle = yield* openForRead(file, expected())
        // A sealed segment with an index is read from the cursor's line on (and in runs, from the index); one
        // without, read whole and settled, gets an index made of its lines as they are checked.
        const indexes = files.indexes!
        const stamped = indexing === undefined ? undefined : stampOf(handle.fd, Date.now(), indexes.settledMs)
        const index = stamped === undefined ? undefined : indexes.get(file, stamped.stamp)
        const line = index === undefined ? 0 : Math.min(Math.max(since + 1 - index.first, 0), index.count)
        const offset = index === undefined ? 0 : offsetOf(index, line)
        const chosen =
          index === undefined || indexing?.fromIndex === undefined ? format : indexing.fromIndex(index, line, offset)
        const building =
          stamped !== undefined && index === undefined && stamped.settled && fromStart && indexing!.builds
            ? new IndexBuilder()
            : undefined
        const splitter = chosen.splitter(offset)
        const chunks = new ChunkReads(handle.fd, file, memory, files.chunkBytes, offset)
        // A read still under way when the read ends must not outlive the file it reads.
        yield* Finalizer.onClose(chunks.settled)
        const read: SegmentRead = {
          since,
          // Lines at or below the cursor only come before the first one delivered.
          skipping: () => expected() === since + 1,
          admit: (seq, offset) => {
            if (seq <= since) return "skip"
            if (seq !== expected()) {
              return new JournalCorrupt({ file, offset, reason: `seq ${seq} where ${expected()} was expected` })
            }
            advance(seq)
            return seq >= target ? "last" : "take"
          },
          corrupt: (offset, reason) => new JournalCorrupt({ file, offset, reason }),
          building
        }
        let done = false
        // A bad line found after good ones in the same chunk: the good ones are delivered first, then this.
        let failure: JournalReadError | undefined
        const pull: Effect.Effect<Array<T>, Option.Option<JournalReadError>> = Effect.gen(function* () {
          if (failure !== undefined) return yield* Effect.fail(Option.some(failure))
          if (done) return yield* Effect.fail(Option.none())
          memory.pulled()
          const chunk = yield* chunks.next
          if (Option.isNone(chunk)) {
            done = true
            if (building !== undefined && splitter.pending === 0) {
              const made = building.finish()
              // Kept only if the file is as it was when the read began.
              if (made !== undefined && stampOf(handle.fd, Date.now(), indexes.settledMs)?.stamp === stamped!.stamp) {
                indexes.put(file, stamped!.stamp, made)
              }
            }
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
          for (const piece of lines) {
            const taken = chosen.take(piece, read, out, memory)
            if (taken === "done") {
              // Whatever follows the target (even a bad line) is not part of this read.
              done = true
              bad = undefined
              break
            }
            if (taken !== undefined) {
              bad = taken
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

  const decoded = perLine(decodedFormat(codec))
  const raw = perLine(rawFormat)
  const scanner = files.simd ? blockLines() : undefined
  // Without WebAssembly SIMD (`blockLines`), every line is read on its own (`rawFormat`), and there are no runs.
  // Without runs, every item is a `JournalLine`.
  const lines = scanner === undefined ? raw : (scannedFormat(scanner, false) as ReadFormat<ByteLine, JournalLine>)
  const runs = scanner === undefined ? undefined : scannedFormat(scanner, true)
  // Every read seeks to its cursor's line in an indexed segment; those that check lines as the scan does build indexes.
  const seeks = { fromIndex: undefined, builds: false }
  const scanned = { fromIndex: undefined, builds: scanner !== undefined }
  return {
    read: (since, upTo) => readAs(decoded, since, upTo, false, seeks),
    readLines: (since, upTo, options) => readAs(lines, since, upTo, options?.reuseChunks === true, scanned),
    readLineRuns: (since, upTo, options) =>
      runs === undefined
        ? readAs(raw, since, upTo, options?.reuseChunks === true, seeks)
        : readAs(runs, since, upTo, options?.reuseChunks === true, { fromIndex: indexedFormat, builds: true })
  }
}
