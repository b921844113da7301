/**
 * The file journal against real files in temp directories: exclusive reads, head recovery,
 * rotation, retention, torn tails, corruption reports, the writer lock, epochs, the
 * original's on-disk format, and bounded memory on a long replay.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, it, assert } from "@effect/vitest"
import { Chunk, Effect, Either, FastCheck as fc, Schema, Stream } from "effect"
import * as ChildProcess from "node:child_process"
import * as NFs from "node:fs"
import * as Os from "node:os"
import * as Zlib from "node:zlib"
import { AgentEvent } from "../src/Domain/AgentEvent.js"
import type { ChangeEvent } from "../src/Domain/ChangeEvent.js"
import { wireJson } from "../src/Domain/FeedItem.js"
import * as Journal from "../src/Journal.js"
import * as MemoryJournal from "../src/Journal/Memory.js"
import * as FileJournal from "../src/Journal/File.js"
import { acquireLock, findFlock } from "../src/Journal/Lock.js"
import { SegmentIndexes, stampOf } from "../src/Journal/SegmentIndex.js"
import * as FailingFileSystem from "./support/FailingFileSystem.js"
import { type Note as NoteType, Note, note, notes } from "./support/Notes.js"
import { range } from "./support/Expected.js"
import { tempDir } from "./support/TempDir.js"
import { yieldToIo } from "./support/Wait.js"

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

type Options = Omit<Journal.JournalOptions, "directory">

const open = (directory: string, options: Options = {}) => FileJournal.make(Note, { directory, ...options })

/** Opens the journal, runs `use` on it and closes it (cleanly) again. */
const withJournal = <X, E>(
  directory: string,
  options: Options,
  use: (journal: Journal.Journal<NoteType>) => Effect.Effect<X, E>
) => Effect.scoped(Effect.flatMap(open(directory, options), use))

const seqsOf = <A, E>(stream: Stream.Stream<ChangeEvent<A>, E>) =>
  Stream.runCollect(stream).pipe(Effect.map((events) => Chunk.toArray(events).map((e) => e.seq)))

/** Every event a stream delivers before it fails, and its error (the stream must fail). */
const untilFailure = <A, E>(stream: Stream.Stream<A, E>) =>
  Effect.gen(function* () {
    const seen: Array<A> = []
    const result = yield* stream.pipe(
      Stream.runForEach((a) => Effect.sync(() => seen.push(a))),
      Effect.either
    )
    if (Either.isRight(result)) return assert.fail(`the stream ended after ${seen.length} items without failing`)
    return { seen, error: result.left }
  })

const segmentFile = (start: number) => `events-${String(start).padStart(20, "0")}.jsonl`

const segmentFiles = (directory: string) =>
  Effect.sync(() =>
    NFs.readdirSync(directory)
      .filter((name) => name.startsWith("events-"))
      .sort()
  )

/** The lines of a file, without their newlines. */
const linesOf = (file: string): Array<string> => {
  const text = NFs.readFileSync(file, "utf8")
  assert.isTrue(text.endsWith("\n"), `${file} ends with a newline`)
  return text.slice(0, -1).split("\n")
}

const sizeOf = (file: string) => NFs.statSync(file).size

const readText = (file: string) => NFs.readFileSync(file, "utf8")

/** A line as written here: the original's line with `,"crc":"<CRC-32 of the bytes before it>"` before its closing brace. */
const withChecksum = (line: string) =>
  `${line.slice(0, -1)},"crc":"${Zlib.crc32(line.slice(0, -1)).toString(16).padStart(8, "0")}"}`

/** This machine's boot id, which the journal records while it is open. */
const thisBoot = NFs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()

/** What a process that had the journal open in `mode` leaves behind when it dies: its open marker. */
const crashed = (dir: string, mode: Journal.FsyncMode, bootId = thisBoot) =>
  NFs.writeFileSync(`${dir}/OPEN`, JSON.stringify({ fsync: mode, boot_id: bootId }) + "\n")

/** What `readLineRuns` delivers, event by event: each one's seq and body (its wire JSON less the closing brace). */
const eventsOfRuns = (item: Journal.JournalLineRun | Journal.JournalLine): Array<{ seq: number; body: string }> => {
  const decoder = new TextDecoder()
  if (item._tag !== "LineRun") return [{ seq: item.seq, body: decoder.decode(item.body) }]
  const { bodyEnds, bytes, ends } = item.lines
  return ends.map((_, i) => ({
    seq: item.first + i,
    body: decoder.decode(bytes.subarray(i === 0 ? 0 : ends[i - 1]! + 1, bodyEnds[i]!))
  }))
}

/** Appends `batches` (sizes) of consecutive notes after the head; answers the seq ranges written. */
const appendBatches = (journal: Journal.Journal<NoteType>, sizes: ReadonlyArray<number>, pad = 0) =>
  Effect.gen(function* () {
    const ranges: Array<[number, number]> = []
    for (const size of sizes) {
      const from = (yield* journal.headSeq) + 1
      yield* journal.append(notes(from, size, pad))
      ranges.push([from, from + size - 1])
    }
    return ranges
  })

// ---------------------------------------------------------------------------------------------------------------
// Reads, appends, head
// ---------------------------------------------------------------------------------------------------------------

describe("Journal", () => {
  /**
   * 1..40 in segments of a few lines, some keyed, some in sessions, and lines `readLineRuns`
   * cannot vouch for among them: the original's (no checksum), one with a raw line separator, and
   * one with an escaped session id.
   */
  const mixedJournal = Effect.gen(function* () {
    const dir = yield* tempDir
    const events = notes(1, 40, 30).map((e) => ({
      ...e,
      ...(e.seq % 3 === 0 ? { session_id: `s${e.seq % 2}` } : {}),
      ...(e.seq % 5 === 0 ? { key: `key-${e.seq}` } : {})
    }))
    // Appends of 3: a segment is rotated between appends only.
    yield* withJournal(dir, { segmentBytes: 600 }, (journal) =>
      Effect.forEach(range(0, 13), (i) => journal.append(events.slice(3 * i, 3 * i + 3)), { discard: true })
    )
    const ts = events[0]!.ts
    const replaced: Record<number, string> = {
      7: `{"seq":7,"ts":"${ts}","event":{"type":"note","text":"of the original"}}`,
      12: `{"seq":12,"ts":"${ts}","event":{"type":"note","text":"a\u2028b"}}`,
      20: withChecksum(`{"seq":20,"ts":"${ts}","session_id":"a\\"b","event":{"type":"note","text":"x"}}`)
    }
    for (const file of yield* segmentFiles(dir)) {
      const lines = linesOf(`${dir}/${file}`)
      lines.forEach((line, index) => {
        const text = replaced[JSON.parse(line).seq as number]
        if (text !== undefined) replaceLine(`${dir}/${file}`, index, Buffer.from(text))
      })
    }
    return dir
  })

  /** A read of `mixedJournal`: its chunk size, cursor and target. */
  const readsOfMixed = {
    chunk: fc.integer({ min: 1, max: 4096 }),
    since: fc.nat({ max: 42 }),
    upTo: fc.nat({ max: 42 })
  }

  /** A line with its body as text. */
  const asRead = (line: Journal.JournalLine) => ({ ...line, body: new TextDecoder().decode(line.body) })

  it.scopedLive.prop(
    "reads_with_simd_in_lines_and_in_runs_give_exactly_what_reading_line_by_line_gives_for_any_cursor_and_chunk_size",
    readsOfMixed,
    ({ chunk, since, upTo }) =>
      Effect.gen(function* () {
        const dir = yield* mixedJournal
        const options = { segmentBytes: 600, readChunkBytes: chunk }
        // Line by line in JavaScript, as where the runtime has no WebAssembly SIMD: the lines every read must give.
        const lines = yield* withJournal(dir, { ...options, scanWithSimd: false }, (journal) =>
          Stream.runCollect(journal.readLines(since, upTo)).pipe(Effect.map((lines) => Chunk.toArray(lines)))
        )
        const journal = yield* open(dir, options)
        const scanned = Chunk.toArray(yield* Stream.runCollect(journal.readLines(since, upTo)))
        assert.deepStrictEqual(scanned.map(asRead), lines.map(asRead), "lines read with SIMD")
        const items = Chunk.toArray(yield* Stream.runCollect(journal.readLineRuns!(since, upTo)))
        assert.deepStrictEqual(
          items.flatMap(eventsOfRuns),
          lines.map((line) => ({ seq: line.seq, body: asRead(line).body }))
        )
        // Runs only where the lines are vouched for; each of the others alone, between runs.
        const alone = items.flatMap((item) => (item._tag === "LineRun" ? [] : [item.seq]))
        assert.deepStrictEqual(
          alone,
          [7, 12, 20].filter((seq) => seq > since && seq <= Math.min(upTo, 40))
        )
        if (chunk >= 1024 && upTo - since > 8) {
          assert.isTrue(
            items.some((item) => item._tag === "LineRun" && item.lines.ends.length > 1),
            "lines read together come as one run"
          )
        }
      }).pipe(Effect.provide(NodeContext.layer)),
    { fastCheck: { numRuns: 40 } }
  )

  /**
   * What a read of lines or runs delivers, event by event (a line with its session and key), and
   * how it ends (a corruption named as the read names it).
   */
  const outcomeOf = (stream: Stream.Stream<Journal.JournalLine | Journal.JournalLineRun, Journal.JournalReadError>) =>
    Effect.gen(function* () {
      const seen: Array<{ seq: number; body: string; sessionId?: string | undefined; key?: string | undefined }> = []
      const result = yield* stream.pipe(
        Stream.runForEach((item) =>
          Effect.sync(() =>
            item._tag === "LineRun"
              ? seen.push(...eventsOfRuns(item))
              : seen.push({ ...eventsOfRuns(item)[0]!, sessionId: item.sessionId, key: item.key })
          )
        ),
        Effect.either
      )
      const end = Either.isRight(result)
        ? "ended"
        : result.left._tag === "JournalCorrupt"
          ? `${result.left.file} at ${result.left.offset}: ${result.left.reason}`
          : result.left.message
      return { seen, end }
    })

  /** An outcome's events as runs give them: seq and body. */
  const bodiesOf = ({ end, seen }: Effect.Effect.Success<ReturnType<typeof outcomeOf>>) => ({
    seen: seen.map(({ body, seq }) => ({ seq, body })),
    end
  })

  it.scopedLive.prop(
    "reads_with_simd_report_any_damage_to_the_files_where_and_as_reads_line_by_line_in_javascript_report_it",
    {
      chunk: fc.integer({ min: 1, max: 4096 }),
      since: fc.nat({ max: 42 }),
      // Unbiased: fast-check's bias toward small numbers would put most damage in the first bytes.
      damage: fc.array(fc.record({ at: fc.noBias(fc.nat(1_000_000)), byte: fc.noBias(fc.nat(255)) }), {
        minLength: 1,
        maxLength: 3
      })
    },
    ({ chunk, damage, since }) =>
      Effect.gen(function* () {
        const dir = yield* mixedJournal
        // The damage lands anywhere in the files, taken one after the other.
        const files = (yield* segmentFiles(dir)).map((name) => `${dir}/${name}`)
        const contents = files.map((file) => NFs.readFileSync(file))
        const total = contents.reduce((sum, bytes) => sum + bytes.length, 0)
        for (const { at, byte } of damage) {
          let position = at % total
          const index = contents.findIndex((bytes) =>
            position < bytes.length ? true : ((position -= bytes.length), false)
          )
          contents[index]![position] = byte
        }
        files.forEach((file, i) => NFs.writeFileSync(file, contents[i]!))
        // Damage to the newest segment's last line may keep the journal from opening: nothing to read then.
        const options = { segmentBytes: 600, readChunkBytes: chunk }
        const lineByLine = yield* Effect.either(
          withJournal(dir, { ...options, scanWithSimd: false }, (journal) => outcomeOf(journal.readLines(since)))
        )
        if (Either.isLeft(lineByLine)) return
        const expected = lineByLine.right
        const expectedRuns = bodiesOf(expected)
        const journal = yield* open(dir, options)
        assert.deepStrictEqual(yield* outcomeOf(journal.readLines(since)), expected, "lines")
        assert.deepStrictEqual(
          yield* outcomeOf(journal.readLines(since, undefined, { reuseChunks: true })),
          expected,
          "lines reusing chunks"
        )
        assert.deepStrictEqual(bodiesOf(yield* outcomeOf(journal.readLineRuns!(since))), expectedRuns, "runs")
        assert.deepStrictEqual(
          bodiesOf(yield* outcomeOf(journal.readLineRuns!(since, undefined, { reuseChunks: true }))),
          expectedRuns,
          "runs reusing chunks"
        )
      }).pipe(Effect.provide(NodeContext.layer)),
    { fastCheck: { numRuns: 100 } }
  )

  /**
   * Each line's seq and body, copied out as each pull answers it (what a read that reuses its
   * chunks allows), by a consumer that takes its time: it lets the event loop run first, so that a
   * chunk read ahead has landed before it copies.
   */
  const copiedLines = (stream: Stream.Stream<Journal.JournalLine | Journal.JournalLineRun, Journal.JournalReadError>) =>
    stream.pipe(
      Stream.mapChunksEffect((items) =>
        Effect.zipRight(
          yieldToIo,
          Effect.sync(() => Chunk.unsafeFromArray(Chunk.toArray(items).flatMap(eventsOfRuns)))
        )
      ),
      Stream.runCollect,
      Effect.map(Chunk.toArray)
    )

  it.scopedLive.prop(
    "reads_that_reuse_their_chunks_give_exactly_what_reads_into_fresh_chunks_give_for_any_cursor_and_chunk_size",
    readsOfMixed,
    ({ chunk, since, upTo }) =>
      Effect.gen(function* () {
        const dir = yield* mixedJournal
        const journal = yield* open(dir, { segmentBytes: 600, readChunkBytes: chunk })
        const expected = yield* copiedLines(journal.readLines(since, upTo))
        const reuse = { reuseChunks: true }
        assert.deepStrictEqual(yield* copiedLines(journal.readLines(since, upTo, reuse)), expected, "readLines")
        assert.deepStrictEqual(yield* copiedLines(journal.readLineRuns!(since, upTo, reuse)), expected, "readLineRuns")
      }).pipe(Effect.provide(NodeContext.layer)),
    { fastCheck: { numRuns: 40 } }
  )

  /** The start seqs of a journal's segments, in order. */
  const segmentStarts = (dir: string) =>
    Effect.map(segmentFiles(dir), (names) => names.map((name) => Number(name.slice(7, 27))))

  it.scopedLive.prop(
    "reads_through_the_indexes_of_sealed_segments_give_exactly_what_a_scan_gives_for_any_cursor_and_chunk_size",
    readsOfMixed,
    ({ chunk, since, upTo }) =>
      Effect.gen(function* () {
        const dir = yield* mixedJournal
        const options = { segmentBytes: 600, readChunkBytes: chunk }
        const readsOf = (journal: Journal.Journal<NoteType>) =>
          Effect.all({
            runs: copiedLines(journal.readLineRuns!(since, upTo)),
            lines: Effect.map(Stream.runCollect(journal.readLines(since, upTo)), (lines) =>
              Chunk.toArray(lines).map(asRead)
            ),
            decoded: Effect.map(Stream.runCollect(journal.read(since, upTo)), Chunk.toArray)
          })
        const expected = yield* withJournal(dir, { ...options, segmentIndexes: false }, readsOf)
        // Indexed as soon as read: nothing writes these files while the test reads them.
        const indexes = new SegmentIndexes(1024 * 1024, 0)
        const journal = yield* open(dir, { ...options, segmentIndexes: indexes })
        yield* copiedLines(journal.readLineRuns!(0))
        // Every sealed segment but those holding a line that is not read in place (7, 12, 20); never the last.
        const starts = yield* segmentStarts(dir)
        const indexed = starts
          .map((start, i) => ({ start, end: (starts[i + 1] ?? 41) - 1 }))
          .slice(0, -1)
          .filter(({ end, start }) => ![7, 12, 20].some((seq) => seq >= start && seq <= end))
        assert.isAtLeast(indexed.length, 3)
        assert.strictEqual(indexes.size, indexed.length)
        const hits = indexes.hits
        // Runs from the index; lines and decoded events from the cursor's line, which the index locates.
        assert.deepStrictEqual(yield* readsOf(journal), expected)
        assert.deepStrictEqual(
          yield* copiedLines(journal.readLineRuns!(since, upTo, { reuseChunks: true })),
          expected.runs,
          "runs reusing chunks"
        )
        const read = indexed.filter(({ end, start }) => end > since && start <= upTo && since < upTo)
        assert.strictEqual(indexes.hits - hits, 4 * read.length, "reads of indexed segments take their index")
      }).pipe(Effect.provide(NodeContext.layer)),
    { fastCheck: { numRuns: 60 } }
  )

  it.scoped("only_a_sealed_segment_read_from_its_first_line_to_its_end_is_indexed", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const indexes = new SegmentIndexes(1024 * 1024, 0)
      const journal = yield* open(dir, { segmentBytes: 600, segmentIndexes: indexes })
      yield* appendBatches(
        journal,
        Array.from({ length: 12 }, () => 5),
        30
      )
      const starts = yield* segmentStarts(dir)
      assert.isAtLeast(starts.length, 5)
      // From inside the 2nd segment to inside the 4th: only the 3rd is read whole.
      yield* copiedLines(journal.readLineRuns!(starts[1]!, starts[3]! + 1))
      assert.strictEqual(indexes.size, 1)
      // A decoded read uses the index it finds, and makes none: it does not check lines as the scan does.
      yield* seqsOf(journal.read(0))
      assert.strictEqual(indexes.size, 1)
      assert.strictEqual(indexes.hits, 1)
      // A whole read of lines indexes every sealed segment, and the last, still written to, never.
      yield* copiedLines(journal.readLines(0))
      assert.strictEqual(indexes.size, starts.length - 1)
      assert.strictEqual(indexes.hits, 2)
      yield* copiedLines(journal.readLineRuns!(0))
      assert.strictEqual(indexes.hits, 2 + starts.length - 1)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive("damage_to_an_indexed_segment_is_reported_as_a_scan_reports_it_even_with_its_times_put_back", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withJournal(dir, { segmentBytes: 600 }, (journal) => appendBatches(journal, [5, 5, 5, 5, 5, 5], 30))
      // Segments written less than a while ago are not indexed: a write in the same tick of the file clock would go unseen.
      const unsettled = new SegmentIndexes(1024 * 1024, 60_000)
      yield* withJournal(dir, { segmentBytes: 600, segmentIndexes: unsettled }, (journal) =>
        Effect.map(copiedLines(journal.readLineRuns!(0)), () => assert.strictEqual(unsettled.size, 0))
      )
      // Times of whole seconds, which `utimes` can put back exactly (the change time, which it sets, has fractions).
      const names = yield* segmentFiles(dir)
      const past = Math.floor(Date.now() / 1000) - 60
      for (const name of names) NFs.utimesSync(`${dir}/${name}`, past, past)
      yield* Effect.sleep(200)
      const indexes = new SegmentIndexes(1024 * 1024)
      const journal = yield* open(dir, { segmentBytes: 600, segmentIndexes: indexes })
      const clean = yield* copiedLines(journal.readLineRuns!(0))
      assert.strictEqual(indexes.size, names.length - 1)
      // One letter of the 2nd sealed segment's 2nd line, changed in place: same size, times put back as they were.
      const file = `${dir}/${names[1]}`
      const before = NFs.statSync(file, { bigint: true })
      const bytes = NFs.readFileSync(file)
      const at = bytes.indexOf("note", bytes.indexOf(0x0a) + 1) + 1
      bytes[at] = bytes[at] === 0x61 ? 0x62 : 0x61
      NFs.writeFileSync(file, bytes)
      NFs.utimesSync(file, past, past)
      const after = NFs.statSync(file, { bigint: true })
      assert.strictEqual(after.mtimeNs, before.mtimeNs)
      assert.strictEqual(after.size, before.size)
      const scanned = bodiesOf(yield* outcomeOf(journal.readLines(0)))
      assert.match(scanned.end, /checksum/)
      assert.include(scanned.end, file)
      assert.deepStrictEqual(bodiesOf(yield* outcomeOf(journal.readLineRuns!(0))), scanned)
      assert.deepStrictEqual(scanned.seen, clean.slice(0, scanned.seen.length))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  /** The stamp of a file as the indexes take it. */
  const stampOfFile = (file: string) => {
    const fd = NFs.openSync(file, "r")
    try {
      return stampOf(fd, Date.now())!.stamp
    } finally {
      NFs.closeSync(fd)
    }
  }

  /** A journal of 20 events in segments of a few, its sealed segments indexed, and its first segment's file. */
  const indexedJournal = Effect.gen(function* () {
    const dir = yield* tempDir
    const indexes = new SegmentIndexes(1024 * 1024, 0)
    const journal = yield* open(dir, { segmentBytes: 600, segmentIndexes: indexes })
    yield* appendBatches(journal, [5, 5, 5, 5], 30)
    yield* copiedLines(journal.readLineRuns!(0))
    const file = `${dir}/${(yield* segmentFiles(dir))[0]}`
    return { dir, file, indexes, journal }
  })

  it.scoped("an_index_that_does_not_match_its_file_is_reported_as_corruption_never_served", () =>
    Effect.gen(function* () {
      const { file, indexes, journal } = yield* indexedJournal
      const stamp = stampOfFile(file)
      const index = indexes.get(file, stamp)!
      const lengths = index.lengths.slice()
      // The 3rd line said to end a byte early; then the segment said to end a line early.
      lengths[2]! -= 1
      indexes.put(file, stamp, { ...index, lengths })
      const early = yield* outcomeOf(journal.readLineRuns!(0))
      const third = lengths[0]! + lengths[1]! + 2
      assert.strictEqual(early.end, `${file} at ${third}: the segment no longer matches its line index`)
      assert.deepStrictEqual(
        early.seen.map((e) => e.seq),
        [1, 2]
      )
      indexes.put(file, stamp, { ...index, count: index.count - 1 })
      const short = yield* outcomeOf(journal.readLineRuns!(0))
      assert.match(short.end, /no longer matches its line index/)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_read_from_a_cursor_inside_an_indexed_segment_starts_at_its_line_and_reads_none_before_it", () =>
    Effect.gen(function* () {
      const { dir, file, indexes, journal } = yield* indexedJournal
      const starts = yield* segmentStarts(dir)
      // The 2nd line of the 1st segment made unreadable (its seq a letter), and the index kept for the file as it now is.
      const index = indexes.get(file, stampOfFile(file))!
      const bytes = NFs.readFileSync(file)
      const second = bytes.indexOf(0x0a) + 1
      assert.strictEqual(bytes.subarray(second, second + 8).toString(), '{"seq":2')
      bytes[second + 7] = 0x78
      NFs.writeFileSync(file, bytes)
      indexes.put(file, stampOfFile(file), index)
      // From seq 3 on, the line before is never looked at, in any read; from seq 1 on, it is, and reported.
      const after = range(4, starts[1]! - 1)
      assert.deepStrictEqual(yield* seqsOf(journal.read(3, starts[1]! - 1)), after)
      assert.deepStrictEqual(
        (yield* copiedLines(journal.readLines(3, starts[1]! - 1))).map((e) => e.seq),
        after
      )
      assert.deepStrictEqual(
        (yield* copiedLines(journal.readLineRuns!(3, starts[1]! - 1))).map((e) => e.seq),
        after
      )
      const { error } = yield* untilFailure(journal.read(1))
      assert.instanceOf(error, Journal.JournalCorrupt)
      assert.strictEqual((error as Journal.JournalCorrupt).offset, second)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("pruned_segments_and_a_closed_journal_leave_nothing_indexed", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const indexes = new SegmentIndexes(1024 * 1024, 0)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* open(dir, { segmentBytes: 600, retention: { segments: 4 }, segmentIndexes: indexes })
          yield* appendBatches(journal, [5, 5, 5, 5], 30)
          yield* copiedLines(journal.readLineRuns!(0))
          assert.strictEqual(indexes.size, 3)
          // Rotations prune the oldest segments, and their indexes with them.
          yield* appendBatches(journal, [5, 5, 5, 5, 5, 5], 30)
          assert.isAtMost(indexes.size, 3)
          const oldest = (yield* segmentStarts(dir))[0]!
          yield* copiedLines(journal.readLineRuns!(oldest - 1))
          assert.strictEqual(indexes.size, 3)
        })
      )
      assert.strictEqual(indexes.size, 0)
      assert.strictEqual(indexes.bytes, 0)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped(
    "a_read_that_reuses_its_chunks_at_the_default_size_gives_every_event_across_chunks_and_names_a_bad_line_past_them",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        // One segment of ~2.5 MiB: more than two chunks of the default size of such a read.
        const segmentBytes = 64 * 1024 * 1024
        yield* withJournal(dir, { segmentBytes }, (journal) =>
          appendBatches(journal, [1000, 1000, 1000, 1000, 1000], 500)
        )
        yield* withJournal(dir, { segmentBytes }, (journal) =>
          Effect.gen(function* () {
            const expected = yield* copiedLines(journal.readLines(0))
            assert.deepStrictEqual(
              expected.map((e) => e.seq),
              range(1, 5000)
            )
            assert.deepStrictEqual(yield* copiedLines(journal.readLineRuns!(0, undefined, reuse)), expected)
            assert.deepStrictEqual(yield* copiedLines(journal.readLines(0, undefined, reuse)), expected)
          })
        )
        const file = `${dir}/${segmentFile(1)}`
        const lines = linesOf(file)
        // The first line starting past 2.2 MiB: in the third chunk.
        let bad = 0
        for (let at = 0; at <= 2.2 * 1024 * 1024; bad++) at += Buffer.byteLength(lines[bad]!) + 1
        const offset = replaceLine(file, bad, Buffer.from(lines[bad]!.replace('"n', '"N')))
        const reopened = yield* open(dir, { segmentBytes })
        yield* expectCorrupt(reopened, 0, range(1, bad), file, offset, "checksum mismatch")
      }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_long_read_that_reuses_its_chunks_reads_them_into_two_buffers_and_its_runs_share_a_few_arrays", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withJournal(dir, { segmentBytes: 16 * 1024 }, (journal) => appendBatches(journal, [400, 400, 400], 40))
      const chunk = 1024
      const journal = yield* open(dir, { segmentBytes: 16 * 1024, readChunkBytes: chunk })
      const buffers = new Set<ArrayBufferLike>()
      const arrays = new Set<ReadonlyArray<number>>()
      let runs = 0
      const events = yield* copiedLines(
        Stream.mapConcat(journal.readLineRuns!(0, undefined, { reuseChunks: true }), (item) => {
          if (item._tag === "LineRun") {
            runs++
            // Chunks are read into buffers of the chunk's size; a line the splitter joined across two has its own.
            if (item.lines.bytes.buffer.byteLength === chunk) buffers.add(item.lines.bytes.buffer)
            arrays.add(item.lines.ends).add(item.lines.bodyEnds)
          }
          return [item]
        })
      )
      assert.deepStrictEqual(yield* copiedLines(journal.readLines(0)), events)
      assert.deepStrictEqual(
        events.map((e) => e.seq),
        range(1, 1200)
      )
      assert.isAbove(runs, 100)
      assert.strictEqual(buffers.size, 2, "every chunk is read into one of two buffers")
      // A pull answers at most two runs (the line joined across chunks, then the chunk's own lines).
      assert.isAtMost(arrays.size, 4, "the runs' arrays of line ends are used again from pull to pull")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("empty_journal_reports_head_0_and_oldest_1", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const journal = yield* open(dir)
      assert.strictEqual(yield* journal.headSeq, 0)
      const info = yield* journal.info
      assert.deepStrictEqual(info, {
        headSeq: 0,
        oldestSeq: 1,
        epoch: journal.epoch,
        segments: 0,
        bytes: 0,
        fsync: "always"
      })
      assert.deepStrictEqual(yield* seqsOf(journal.read(0)), [])
      assert.deepStrictEqual(yield* seqsOf(journal.read(0, 10)), [])
      assert.deepStrictEqual(yield* segmentFiles(dir), [])
      assert.deepStrictEqual(journal.recovery, {
        unclean: false,
        newEpoch: false,
        tornBytes: 0,
        discardedBytes: 0,
        prunedSegments: 0,
        tookOverLockFrom: undefined
      })

      yield* journal.append(notes(1, 2))
      assert.deepStrictEqual(yield* segmentFiles(dir), ["events-00000000000000000001.jsonl"])
      assert.deepStrictEqual(yield* journal.info, {
        headSeq: 2,
        oldestSeq: 1,
        epoch: journal.epoch,
        segments: 1,
        bytes: sizeOf(`${dir}/events-00000000000000000001.jsonl`),
        fsync: "always"
      })
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("round_trip_with_exclusive_since", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const journal = yield* open(dir)
      const withSession: ChangeEvent<NoteType> = {
        seq: 11,
        ts: "2026-11-27T10:00:01.500Z",
        session_id: "s1",
        event: note("with a session", "s1")
      }
      const all = [...notes(1, 10), withSession]
      yield* journal.append(all.slice(0, 3))
      yield* journal.append(all.slice(3, 10))
      yield* journal.append([withSession])
      assert.strictEqual(yield* journal.headSeq, 11)

      assert.deepStrictEqual(Chunk.toArray(yield* Stream.runCollect(journal.read(0))), all)
      for (let k = 0; k <= 11; k++) {
        assert.deepStrictEqual(yield* seqsOf(journal.read(k)), range(k + 1, 11), `read(${k})`)
      }
      assert.deepStrictEqual(yield* seqsOf(journal.read(11)), [], "read(head) is empty")
      assert.deepStrictEqual(yield* seqsOf(journal.read(15)), [], "a cursor past the head reads nothing")

      assert.deepStrictEqual(yield* seqsOf(journal.read(2, 5)), [3, 4, 5])
      assert.deepStrictEqual(yield* seqsOf(journal.read(0, 1)), [1])
      assert.deepStrictEqual(yield* seqsOf(journal.read(10, 11)), [11])
      assert.deepStrictEqual(yield* seqsOf(journal.read(5, 5)), [])
      assert.deepStrictEqual(yield* seqsOf(journal.read(5, 3)), [])
      assert.deepStrictEqual(yield* seqsOf(journal.read(0, 100)), range(1, 11), "upTo is capped at the head")

      // `upTo` defaults to the head when the read runs, not when the stream value was made.
      const later = journal.read(9)
      yield* journal.append(notes(12, 2))
      assert.deepStrictEqual(yield* seqsOf(later), [10, 11, 12, 13])
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("read_lines_gives_each_event_as_its_wire_json_with_seq_session_and_key", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const journal = yield* open(dir, { segmentBytes: 1 })
      const events: Array<Journal.JournalEvent<NoteType>> = [
        ...notes(1, 2),
        { ...notes(3, 1)[0]!, key: "req-1:0" },
        { seq: 4, ts: "2026-11-27T10:00:01.500Z", session_id: "s\u00e9", event: note("caf\u00e9", "s"), key: "req-2" },
        // A session id with a character JSON escapes: not read in place, parsed in full instead.
        { seq: 5, ts: "2026-11-27T10:00:01.500Z", session_id: 'a"b', event: note("quoted", 'a"b'), key: "req-3" }
      ]
      const written: Array<string> = []
      for (const batch of [events.slice(0, 2), events.slice(2)]) {
        const encoded = yield* journal.append(batch)
        for (let i = 0; i < batch.length; i++) written.push(new TextDecoder().decode(Journal.lineAt(encoded.lines, i)))
      }
      const onDisk = (yield* segmentFiles(dir)).flatMap((name) => linesOf(`${dir}/${name}`))
      assert.deepStrictEqual(written, onDisk, "append answers the lines it wrote")
      assert.deepStrictEqual(
        onDisk.map((line) => JSON.parse(line).key),
        events.map((e) => e.key),
        "the key is stored in the line"
      )

      // What readers get is the ChangeEvent alone: neither the key nor the checksum.
      const wire = (e: ChangeEvent<NoteType>) =>
        JSON.stringify(
          e.session_id === undefined
            ? { seq: e.seq, ts: e.ts, event: e.event }
            : { seq: e.seq, ts: e.ts, session_id: e.session_id, event: e.event }
        )
      const lines = Chunk.toArray(yield* Stream.runCollect(journal.readLines(0)))
      assert.deepStrictEqual(
        lines.map((l) => [l.seq, l.sessionId, new TextDecoder().decode(wireJson(l)), l.key]),
        events.map((e) => [e.seq, e.session_id, wire(e), e.key])
      )
      assert.deepStrictEqual(
        Chunk.toArray(yield* Stream.runCollect(journal.readLines(2, 4))).map((l) => l.seq),
        [3, 4]
      )
      // `read` gives each event with its key, as appended.
      assert.deepStrictEqual(Chunk.toArray(yield* Stream.runCollect(journal.read(0))), events)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.effect("the_memory_journal_keeps_the_key_as_the_file_journal_does", () =>
    Effect.gen(function* () {
      const journal = yield* MemoryJournal.make(Note)
      const events: Array<Journal.JournalEvent<NoteType>> = [{ ...notes(1, 1)[0]!, key: "req-1" }, ...notes(2, 1)]
      yield* journal.append(events)
      assert.deepStrictEqual(Chunk.toArray(yield* Stream.runCollect(journal.read(0))), events)
      const lines = Chunk.toArray(yield* Stream.runCollect(journal.readLines(0)))
      assert.deepStrictEqual(
        lines.map((l) => [l.seq, l.key, JSON.parse(new TextDecoder().decode(wireJson(l)))]),
        [
          [1, "req-1", notes(1, 1)[0]],
          [2, undefined, notes(2, 1)[0]]
        ]
      )
    })
  )

  it.scoped("head_recovered_across_reopen", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withJournal(dir, {}, (journal) => appendBatches(journal, [3, 4]))

      const journal = yield* open(dir)
      assert.strictEqual(yield* journal.headSeq, 7)
      const info = yield* journal.info
      assert.strictEqual(info.oldestSeq, 1)
      assert.strictEqual(info.segments, 1)
      assert.strictEqual(info.bytes, sizeOf(`${dir}/${segmentFile(1)}`))
      assert.deepStrictEqual(journal.recovery, {
        unclean: false,
        newEpoch: false,
        tornBytes: 0,
        discardedBytes: 0,
        prunedSegments: 0,
        tookOverLockFrom: undefined
      })

      yield* journal.append(notes(8, 2))
      assert.strictEqual(yield* journal.headSeq, 9)
      assert.deepStrictEqual(Chunk.toArray(yield* Stream.runCollect(journal.read(0))), notes(1, 9))
      assert.deepStrictEqual(
        linesOf(`${dir}/${segmentFile(1)}`).map((line) => JSON.parse(line).seq),
        range(1, 9)
      )
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("appends_take_the_seqs_after_the_head_whatever_order_they_are_made_in", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const journal = yield* open(dir)
      // The seqs the entries were made with are not the journal's to take: it gives the next ones.
      const first = yield* journal.append([...notes(5, 1), ...notes(2, 1)])
      assert.deepStrictEqual(
        first.events.map((event) => event.seq),
        [1, 2]
      )
      const file = `${dir}/${segmentFile(1)}`
      const size = sizeOf(file)
      const empty = yield* journal.append([])
      assert.deepStrictEqual(empty.events, [])
      assert.strictEqual(sizeOf(file), size, "an empty batch writes nothing and takes no seq")
      const second = yield* journal.append(notes(9, 3))
      assert.deepStrictEqual(
        second.events.map((event) => event.seq),
        [3, 4, 5]
      )
      assert.strictEqual(yield* journal.headSeq, 5)
      assert.deepStrictEqual(yield* seqsOf(journal.read(0)), [1, 2, 3, 4, 5])
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Rotation
  // -------------------------------------------------------------------------------------------------------------

  it.scoped("rotation_names_each_segment_by_its_first_seq_and_reads_cross_segments", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // segmentBytes 1: every append after the first starts a new segment.
      const journal = yield* open(dir, { segmentBytes: 1 })
      const ranges = yield* appendBatches(journal, [3, 4, 2, 5, 1])
      assert.deepStrictEqual(ranges, [
        [1, 3],
        [4, 7],
        [8, 9],
        [10, 14],
        [15, 15]
      ])
      assert.deepStrictEqual(yield* segmentFiles(dir), [
        "events-00000000000000000001.jsonl",
        "events-00000000000000000004.jsonl",
        "events-00000000000000000008.jsonl",
        "events-00000000000000000010.jsonl",
        "events-00000000000000000015.jsonl"
      ])
      for (const [from, to] of ranges) {
        const lines = linesOf(`${dir}/${segmentFile(from)}`)
        assert.deepStrictEqual(
          lines.map((line) => JSON.parse(line).seq),
          range(from, to),
          `lines of ${segmentFile(from)}`
        )
      }
      const info = yield* journal.info
      assert.strictEqual(info.segments, 5)
      assert.strictEqual(
        info.bytes,
        ranges.reduce((sum, [from]) => sum + sizeOf(`${dir}/${segmentFile(from)}`), 0)
      )
      for (let k = 0; k <= 15; k++) {
        assert.deepStrictEqual(yield* seqsOf(journal.read(k)), range(k + 1, 15), `read(${k})`)
      }
      assert.deepStrictEqual(
        yield* seqsOf(journal.read(2, 9)),
        range(3, 9),
        "from inside one segment to the end of another"
      )
      assert.deepStrictEqual(yield* seqsOf(journal.read(5, 11)), range(6, 11))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("rotation_happens_once_a_segment_reaches_segment_bytes", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Payloads padded to a fixed width: a line with a 1-digit seq is `probe` bytes, a 2-digit one `probe + 1`
      // (the wire JSON, the checksum field `,"crc":"hhhhhhhh"` and the newline).
      const probe =
        Buffer.byteLength(JSON.stringify({ seq: 1, ts: notes(1, 1)[0]!.ts, event: notes(1, 1, 20)[0]!.event })) + 17 + 1
      const journal = yield* open(dir, { segmentBytes: 3 * probe })
      for (let seq = 1; seq <= 30; seq++) yield* journal.append(notes(seq, 1, 20))
      assert.strictEqual(sizeOf(`${dir}/${segmentFile(1)}`), 3 * probe, "the probe is the real line size")
      // Three lines fill a segment (>= segmentBytes): the next append rotates.
      const starts = [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
      assert.deepStrictEqual(yield* segmentFiles(dir), starts.map(segmentFile))
      for (const start of starts) {
        assert.deepStrictEqual(
          linesOf(`${dir}/${segmentFile(start)}`).map((l) => JSON.parse(l).seq),
          range(start, Math.min(start + 2, 30))
        )
      }
      for (let k = 0; k <= 30; k++) {
        assert.deepStrictEqual(yield* seqsOf(journal.read(k)), range(k + 1, 30), `read(${k})`)
      }
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Retention
  // -------------------------------------------------------------------------------------------------------------

  it.scoped("retention_by_count_at_open_removes_the_oldest_segments", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // segmentBytes 1: one segment per append, starting at 1, 6, 11, ..., 46.
      yield* withJournal(dir, { segmentBytes: 1, retention: { segments: 100 } }, (journal) =>
        appendBatches(journal, Array(10).fill(5))
      )
      assert.strictEqual((yield* segmentFiles(dir)).length, 10)

      const journal = yield* open(dir, { segmentBytes: 1, retention: { segments: 3 } })
      assert.strictEqual(journal.recovery.prunedSegments, 7)
      assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(36), segmentFile(41), segmentFile(46)])
      const info = yield* journal.info
      assert.strictEqual(info.headSeq, 50)
      assert.strictEqual(info.oldestSeq, 36)
      assert.strictEqual(info.segments, 3)
      assert.strictEqual(
        info.bytes,
        [36, 41, 46].reduce((sum, s) => sum + sizeOf(`${dir}/${segmentFile(s)}`), 0)
      )

      yield* expectPruned(journal.read(0), 1, 36)
      yield* expectPruned(journal.read(34), 35, 36)
      assert.deepStrictEqual(yield* seqsOf(journal.read(35)), range(36, 50))
      assert.deepStrictEqual(yield* seqsOf(journal.read(44)), range(45, 50))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("retention_by_count_while_running_prunes_after_each_rotation", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const journal = yield* open(dir, { segmentBytes: 1, retention: { segments: 3 } })
      let previousOldest = 1
      for (let k = 1; k <= 10; k++) {
        yield* journal.append(notes(5 * (k - 1) + 1, 5))
        const kept = range(Math.max(1, k - 2), k).map((i) => 5 * (i - 1) + 1)
        assert.deepStrictEqual(yield* segmentFiles(dir), kept.map(segmentFile), `after append ${k}`)
        const info = yield* journal.info
        assert.strictEqual(info.segments, kept.length)
        assert.strictEqual(info.oldestSeq, kept[0]!)
        assert.isAtLeast(info.oldestSeq, previousOldest)
        previousOldest = info.oldestSeq
        assert.deepStrictEqual(yield* seqsOf(journal.read(info.oldestSeq - 1)), range(info.oldestSeq, 5 * k))
      }
      assert.strictEqual(previousOldest, 36)
      yield* expectPruned(journal.read(0), 1, 36)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("retention_never_removes_the_active_segment", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Limits that no segment meets: only the active one is kept, however far over them it is.
      const options: Options = { segmentBytes: 1, retention: { segments: 0, bytes: 1 } }
      yield* withJournal(dir, options, (journal) =>
        Effect.gen(function* () {
          for (let k = 1; k <= 4; k++) {
            const from = 3 * (k - 1) + 1
            yield* journal.append(notes(from, 3))
            assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(from)], `after append ${k}`)
            assert.strictEqual((yield* journal.info).oldestSeq, from)
            assert.deepStrictEqual(yield* seqsOf(journal.read(from - 1)), [from, from + 1, from + 2])
          }
        })
      )
      const journal = yield* open(dir, options)
      assert.strictEqual(journal.recovery.prunedSegments, 0)
      assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(10)])
      assert.strictEqual(yield* journal.headSeq, 12)
      yield* journal.append(notes(13, 1))
      assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(13)], "the new active segment replaces it")
      assert.deepStrictEqual(yield* seqsOf(journal.read(12)), [13])
      yield* expectPruned(journal.read(9), 10, 13)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("retention_by_bytes_at_open_and_while_running", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // Five padded lines per segment (~875 bytes): two full segments fit in 2000 bytes, three do not.
      const options: Options = { segmentBytes: 1, retention: { segments: 100, bytes: 2000 } }
      yield* withJournal(dir, options, (journal) =>
        Effect.gen(function* () {
          for (let k = 1; k <= 10; k++) {
            const from = 5 * (k - 1) + 1
            yield* journal.append(notes(from, 5, 100))
            const size = sizeOf(`${dir}/${segmentFile(from)}`)
            assert.isTrue(2 * size <= 2000 && 3 * size > 2000, `segment size ${size} suits the test`)
            // Pruned at rotation, before the write: the two full segments and the new (empty) active one.
            const kept = range(Math.max(1, k - 2), k).map((i) => 5 * (i - 1) + 1)
            assert.deepStrictEqual(yield* segmentFiles(dir), kept.map(segmentFile), `after append ${k}`)
            assert.strictEqual((yield* journal.info).oldestSeq, kept[0]!)
          }
        })
      )
      // At open all three are full: one more goes.
      const journal = yield* open(dir, options)
      assert.strictEqual(journal.recovery.prunedSegments, 1)
      assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(41), segmentFile(46)])
      const info = yield* journal.info
      assert.strictEqual(info.oldestSeq, 41)
      assert.strictEqual(info.bytes, sizeOf(`${dir}/${segmentFile(41)}`) + sizeOf(`${dir}/${segmentFile(46)}`))
      assert.isAtMost(info.bytes, 2000)
      yield* expectPruned(journal.read(0), 1, 41)
      assert.deepStrictEqual(yield* seqsOf(journal.read(40)), range(41, 50))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Recovery: torn tails
  // -------------------------------------------------------------------------------------------------------------

  /** Writes 1..10 in two segments (1..4, 5..10) in `mode`, closed; answers the newest segment and the epoch. */
  const tenEvents = (dir: string, mode: Journal.FsyncMode = "always") =>
    Effect.gen(function* () {
      const epoch = yield* withJournal(dir, { segmentBytes: 1, fsync: mode }, (journal) =>
        appendBatches(journal, [4, 6]).pipe(Effect.as(journal.epoch))
      )
      return { newest: `${dir}/${segmentFile(5)}`, epoch }
    })

  /**
   * Writes 1..10, appends `tail` by hand to the newest segment, leaves the marker of a process
   * that crashed in this boot, and reopens: the torn tail is cut, in the same epoch.
   */
  const tornTailIsCut = (tail: Uint8Array, expectedHead = 10, expectedTorn = tail.length) =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { newest, epoch } = yield* tenEvents(dir)
      const before = sizeOf(newest)
      NFs.appendFileSync(newest, tail)
      crashed(dir, "always")

      const journal = yield* open(dir, { segmentBytes: 1000 })
      assert.strictEqual(journal.recovery.tornBytes, expectedTorn)
      assert.strictEqual(journal.recovery.discardedBytes, 0)
      assert.isTrue(journal.recovery.unclean)
      assert.isFalse(journal.recovery.newEpoch, "nothing anyone saw is gone: the epoch stays")
      assert.strictEqual(journal.epoch, epoch)
      assert.strictEqual(sizeOf(newest), before + tail.length - expectedTorn, "the torn tail is cut from the file")
      assert.strictEqual(yield* journal.headSeq, expectedHead)
      assert.strictEqual((yield* journal.info).bytes, sizeOf(`${dir}/${segmentFile(1)}`) + sizeOf(newest))

      yield* journal.append(notes(expectedHead + 1, 2))
      assert.deepStrictEqual(yield* segmentFiles(dir), [segmentFile(1), segmentFile(5)])
      assert.deepStrictEqual(
        linesOf(newest).map((line) => JSON.parse(line).seq),
        range(5, expectedHead + 2)
      )
      assert.deepStrictEqual(Chunk.toArray(yield* Stream.runCollect(journal.read(0))), notes(1, expectedHead + 2))
    })

  it.scoped("torn_partial_line_is_cut_at_open", () =>
    tornTailIsCut(Buffer.from(`{"seq":11,"ts":"2026-11-27T10:00:00.000Z","event":{"type":"no`)).pipe(
      Effect.provide(NodeContext.layer)
    )
  )

  it.scoped("torn_invalid_utf8_tail_is_cut_at_open", () =>
    tornTailIsCut(new Uint8Array([0xff, 0xfe])).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("torn_nul_tail_is_cut_at_open", () =>
    tornTailIsCut(new Uint8Array(4096)).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("torn_half_batch_keeps_its_complete_lines", () => {
    const complete = notes(11, 2)
      .map((e) => JSON.stringify({ seq: e.seq, ts: e.ts, event: e.event }) + "\n")
      .join("")
    const partial = `{"seq":13,"ts":"2026-11-27T10:00:00.000Z","ev`
    return tornTailIsCut(Buffer.from(complete + partial), 12, partial.length).pipe(Effect.provide(NodeContext.layer))
  })

  /** Opening `dir` fails with `JournalCorrupt` at `offset` of `file`, changing nothing on disk. */
  const refusesToOpen = (dir: string, file: string, offset: number, reason: string) =>
    Effect.gen(function* () {
      const size = sizeOf(file)
      const marker = NFs.existsSync(`${dir}/OPEN`) ? readText(`${dir}/OPEN`) : undefined
      const epoch = readText(`${dir}/EPOCH`)
      const error = yield* Effect.flip(open(dir))
      assert.instanceOf(error, Journal.JournalCorrupt)
      const corrupt = error as Journal.JournalCorrupt
      assert.strictEqual(corrupt.file, file)
      assert.strictEqual(corrupt.offset, offset)
      assert.include(corrupt.reason, reason)
      assert.include(corrupt.message, `${file} at byte ${offset}`)
      assert.include(corrupt.message, `change-feed inspect ${dir} --repair`)
      assert.strictEqual(sizeOf(file), size, "nothing is cut")
      assert.strictEqual(NFs.existsSync(`${dir}/OPEN`) ? readText(`${dir}/OPEN`) : undefined, marker)
      assert.strictEqual(readText(`${dir}/EPOCH`), epoch)
      // The refused open let go of the lock: a second try meets the same damage, not a lock.
      assert.instanceOf(yield* Effect.flip(open(dir)), Journal.JournalCorrupt)
    })

  /** The byte offset where the last line of `file` starts. */
  const lastLineOffset = (file: string) => {
    const lines = linesOf(file)
    return sizeOf(file) - Buffer.byteLength(lines[lines.length - 1]!) - 1
  }

  it.scoped("a_complete_bad_last_line_after_a_clean_stop_refuses_to_open", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { newest } = yield* tenEvents(dir)
      // The first byte of the last line changed: it no longer parses. Cutting it would hand seq 10 out again.
      const offset = lastLineOffset(newest)
      const bytes = NFs.readFileSync(newest)
      bytes[offset] = 0x78 // x
      NFs.writeFileSync(newest, bytes)
      yield* refusesToOpen(dir, newest, offset, "checksum mismatch")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_changed_character_in_the_last_line_refuses_to_open", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { newest } = yield* tenEvents(dir)
      const offset = lastLineOffset(newest)
      // Still valid JSON, still a valid event: only the checksum tells.
      NFs.writeFileSync(newest, readText(newest).replace('"text":"n10"', '"text":"n19"'))
      yield* refusesToOpen(dir, newest, offset, "checksum mismatch")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("an_incomplete_last_line_after_a_clean_stop_refuses_to_open", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { newest } = yield* tenEvents(dir)
      const offset = lastLineOffset(newest)
      NFs.truncateSync(newest, sizeOf(newest) - 5) // seq 10 loses its end (and its newline)
      yield* refusesToOpen(dir, newest, offset, "after a clean stop")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_complete_bad_last_line_after_a_process_crash_refuses_to_open_in_every_mode", () =>
    Effect.gen(function* () {
      for (const mode of ["always", "interval", "never"] as const) {
        const dir = yield* tempDir
        const { newest } = yield* tenEvents(dir, mode)
        const offset = sizeOf(newest)
        NFs.appendFileSync(newest, "\u0000\u0000garbage\n")
        crashed(dir, mode)
        yield* refusesToOpen(dir, newest, offset, "invalid JSON")
      }
    }).pipe(Effect.provide(NodeContext.layer))
  )

  for (const mode of ["interval", "never"] as const) {
    it.scoped(`after_an_os_restart_in_${mode}_mode_bad_complete_lines_at_the_end_are_cut_in_a_new_epoch`, () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const { newest, epoch } = yield* tenEvents(dir, mode)
        const before = sizeOf(newest)
        // What the OS may leave of pages it never flushed: zeros and stale bytes, in whole lines.
        const garbage = Buffer.from("\u0000".repeat(100) + "\n" + `{"seq":11,"ts":"x","ev\n` + "\u0000\u0000")
        NFs.appendFileSync(newest, garbage)
        crashed(dir, mode, "a-boot-before-this-one")
        const journal = yield* open(dir, { fsync: mode })
        assert.isTrue(journal.recovery.newEpoch)
        assert.notStrictEqual(journal.epoch, epoch)
        assert.strictEqual(readText(`${dir}/EPOCH`), journal.epoch + "\n")
        assert.strictEqual(journal.recovery.tornBytes, 2)
        assert.strictEqual(journal.recovery.discardedBytes, garbage.length - 2)
        assert.strictEqual(sizeOf(newest), before)
        assert.strictEqual(yield* journal.headSeq, 10)
      }).pipe(Effect.provide(NodeContext.layer))
    )
  }

  it.scoped("after_an_os_restart_in_always_mode_a_bad_complete_line_still_refuses_to_open", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { newest } = yield* tenEvents(dir, "always")
      const offset = sizeOf(newest)
      NFs.appendFileSync(newest, "garbage\n")
      // Every acknowledged batch was synced: nothing an OS restart leaves can excuse a bad complete line.
      crashed(dir, "always", "a-boot-before-this-one")
      yield* refusesToOpen(dir, newest, offset, "invalid JSON")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Corruption: reported with file and offset, never skipped
  // -------------------------------------------------------------------------------------------------------------

  /** 1..12 in three segments (1..4, 5..8, 9..12), closed; `tamper` then edits the files by hand. */
  const tamperedJournal = (tamper: (dir: string) => void) =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      yield* withJournal(dir, { segmentBytes: 1 }, (journal) => appendBatches(journal, [4, 4, 4]))
      tamper(dir)
      const journal = yield* open(dir, { segmentBytes: 1 })
      return { dir, journal }
    })

  /** Replaces line `index` of a segment with `bytes`; answers the byte offset where that line starts. */
  const replaceLine = (file: string, index: number, bytes: Uint8Array | undefined): number => {
    const lines = linesOf(file)
    const offset = lines.slice(0, index).reduce((sum, line) => sum + Buffer.byteLength(line) + 1, 0)
    const parts = lines.map((line) => Buffer.from(line + "\n"))
    if (bytes === undefined) parts.splice(index, 1)
    else parts[index] = Buffer.concat([bytes, Buffer.from("\n")])
    NFs.writeFileSync(file, Buffer.concat(parts))
    return offset
  }

  const reuse = { reuseChunks: true }

  /**
   * Every read from `since` (decoded, as lines, in runs, reusing its chunks or not) delivers
   * `delivered` and then fails naming the bad line.
   */
  const expectCorrupt = (
    journal: Journal.Journal<NoteType>,
    since: number,
    delivered: Array<number>,
    file: string,
    offset: number,
    reason: string
  ) =>
    Effect.gen(function* () {
      for (const [name, stream] of [
        ["read", journal.read(since)],
        ["readLines", journal.readLines(since)],
        ["readLineRuns", Stream.mapConcat(journal.readLineRuns!(since), eventsOfRuns)],
        ["readLines reusing chunks", Stream.mapConcat(journal.readLines(since, undefined, reuse), eventsOfRuns)],
        ["readLineRuns reusing chunks", Stream.mapConcat(journal.readLineRuns!(since, undefined, reuse), eventsOfRuns)]
      ] as const) {
        const { seen, error } = yield* untilFailure<{ readonly seq: number }, Journal.JournalReadError>(stream)
        assert.deepStrictEqual(
          seen.map((e) => e.seq),
          delivered,
          `${name}: the events before the bad line are delivered`
        )
        assert.instanceOf(error, Journal.JournalCorrupt, name)
        const corrupt = error as Journal.JournalCorrupt
        assert.strictEqual(corrupt.file, file, name)
        assert.strictEqual(corrupt.offset, offset, name)
        assert.include(corrupt.reason, reason, name)
        assert.include(corrupt.message, `${file} at byte ${offset}`, name)
      }
    })

  it.scoped("corrupt_line_in_a_closed_segment_is_reported_with_file_and_offset", () =>
    Effect.gen(function* () {
      let file = ""
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        file = `${dir}/${segmentFile(1)}`
        offset = replaceLine(file, 2, Buffer.from("this is not json"))
      })
      assert.strictEqual(file, `${dir}/${segmentFile(1)}`)
      assert.isAbove(offset, 0)
      assert.strictEqual(yield* journal.headSeq, 12)
      yield* expectCorrupt(journal, 0, [1, 2], file, offset, "invalid JSON")
      // Reads that start past the damaged segment are not affected.
      assert.deepStrictEqual(yield* seqsOf(journal.read(4)), range(5, 12))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("corrupt_line_in_the_middle_of_the_active_segment_is_reported_not_cut", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        offset = replaceLine(`${dir}/${segmentFile(9)}`, 1, Buffer.from(`{"seq":10,"ts":`))
      })
      assert.strictEqual(journal.recovery.tornBytes, 0, "only the tail is torn; the middle is corruption")
      assert.strictEqual(yield* journal.headSeq, 12)
      const file = `${dir}/${segmentFile(9)}`
      yield* expectCorrupt(journal, 0, range(1, 9), file, offset, "invalid JSON")
      yield* expectCorrupt(journal, 6, [7, 8, 9], file, offset, "invalid JSON")
      // A read that ends before the bad line does not see it.
      assert.deepStrictEqual(yield* seqsOf(journal.read(0, 9)), range(1, 9))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("line_cut_short_at_a_closing_brace_is_reported", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        const file = `${dir}/${segmentFile(5)}`
        const line = linesOf(file)[1]!
        // Still ends in "}" and still has its envelope: only the brackets show it is cut.
        offset = replaceLine(file, 1, Buffer.from(line.slice(0, line.lastIndexOf("}"))))
      })
      yield* expectCorrupt(journal, 0, range(1, 5), `${dir}/${segmentFile(5)}`, offset, "invalid JSON")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("line_that_is_not_utf8_in_the_middle_is_reported", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        offset = replaceLine(`${dir}/${segmentFile(9)}`, 1, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))
      })
      assert.strictEqual(yield* journal.headSeq, 12)
      yield* expectCorrupt(journal, 0, range(1, 9), `${dir}/${segmentFile(9)}`, offset, "not valid UTF-8")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("line_with_a_seq_gap_is_reported", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        offset = replaceLine(`${dir}/${segmentFile(9)}`, 1, undefined) // seq 10 is gone
      })
      assert.strictEqual(yield* journal.headSeq, 12)
      const file = `${dir}/${segmentFile(9)}`
      yield* expectCorrupt(journal, 0, range(1, 9), file, offset, "seq 11 where 10 was expected")
      yield* expectCorrupt(journal, 9, [], file, offset, "seq 11 where 10 was expected")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("line_with_a_repeated_seq_is_reported", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        const file = `${dir}/${segmentFile(5)}`
        offset = replaceLine(file, 2, Buffer.from(linesOf(file)[1]!)) // 5, 6, 6, 8
      })
      yield* expectCorrupt(journal, 0, range(1, 6), `${dir}/${segmentFile(5)}`, offset, "seq 6 where 7")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("missing_segment_is_reported_at_the_next_one", () =>
    Effect.gen(function* () {
      const { dir, journal } = yield* tamperedJournal((dir) => NFs.rmSync(`${dir}/${segmentFile(5)}`))
      yield* expectCorrupt(journal, 0, range(1, 4), `${dir}/${segmentFile(9)}`, 0, "expected 5")
      assert.deepStrictEqual(yield* seqsOf(journal.read(8)), range(9, 12))
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_segment_that_cannot_be_read_fails_every_read_naming_it_after_the_events_before_it", () =>
    Effect.gen(function* () {
      const file = (dir: string) => `${dir}/${segmentFile(5)}`
      // A folder where the segment was: it opens, and every read of it fails (EISDIR).
      const { dir, journal } = yield* tamperedJournal((dir) => {
        NFs.rmSync(file(dir))
        NFs.mkdirSync(file(dir))
      })
      for (const [name, stream] of [
        ["read", journal.read(0)],
        ["readLines", journal.readLines(0)],
        ["readLineRuns reusing chunks", Stream.mapConcat(journal.readLineRuns!(0, undefined, reuse), eventsOfRuns)]
      ] as const) {
        const { seen, error } = yield* untilFailure<{ readonly seq: number }, Journal.JournalReadError>(stream)
        assert.deepStrictEqual(
          seen.map((e) => e.seq),
          range(1, 4),
          name
        )
        assert.instanceOf(error, Journal.JournalIoError, name)
        assert.include(error.message, `journal read failed on ${file(dir)}`, name)
      }
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_changed_character_inside_a_stored_string_is_reported_by_both_reads", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        const file = `${dir}/${segmentFile(5)}`
        // Still valid JSON and a valid event: without the checksum it would be served as it is.
        offset = replaceLine(file, 1, Buffer.from(linesOf(file)[1]!.replace('"n6"', '"n7"')))
      })
      yield* expectCorrupt(journal, 0, range(1, 5), `${dir}/${segmentFile(5)}`, offset, "checksum mismatch")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  for (const [kind, checksum] of [
    ["with a checksum", true],
    ["of the original, without a checksum", false]
  ] as const) {
    it.scoped(`a_raw_control_byte_inside_a_line_${kind.replace(/[ ,]+/g, "_")}_is_reported_by_both_reads`, () =>
      Effect.gen(function* () {
        let offset = -1
        const { dir, journal } = yield* tamperedJournal((dir) => {
          const file = `${dir}/${segmentFile(5)}`
          const wire = `{"seq":6,"ts":"2026-11-27T10:00:00.000Z","event":{"type":"note","text":"a\rb"}}`
          offset = replaceLine(file, 1, Buffer.from(checksum ? withChecksum(wire) : wire))
        })
        // JSON forbids a raw control character in a string: `read` fails to parse the line, and
        // `readLines` (which does not parse lines it can vouch for) must not serve it either.
        yield* expectCorrupt(journal, 0, range(1, 5), `${dir}/${segmentFile(5)}`, offset, "invalid JSON")
      }).pipe(Effect.provide(NodeContext.layer))
    )
  }

  it.scoped("raw_line_separators_in_a_line_written_before_they_were_escaped_reach_readers_escaped", () =>
    Effect.gen(function* () {
      const { journal } = yield* tamperedJournal((dir) => {
        const file = `${dir}/${segmentFile(5)}`
        replaceLine(
          file,
          1,
          Buffer.from(`{"seq":6,"ts":"2026-11-27T10:00:00.000Z","event":{"type":"note","text":"a\u2028b\u2029c"}}`)
        )
      })
      const lines = Chunk.toArray(yield* Stream.runCollect(journal.readLines(5, 6)))
      const wire = new TextDecoder().decode(wireJson(lines[0]!))
      assert.strictEqual(
        wire,
        `{"seq":6,"ts":"2026-11-27T10:00:00.000Z","event":{"type":"note","text":"a\\u2028b\\u2029c"}}`
      )
      const events = Chunk.toArray(yield* Stream.runCollect(journal.read(5, 6)))
      assert.strictEqual(events[0]!.event.text, "a\u2028b\u2029c", "the same JSON")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("truncated_closed_segment_is_corruption_not_a_torn_tail", () =>
    Effect.gen(function* () {
      let offset = -1
      const { dir, journal } = yield* tamperedJournal((dir) => {
        const file = `${dir}/${segmentFile(1)}`
        const lines = linesOf(file)
        offset = lines.slice(0, 3).reduce((sum, line) => sum + line.length + 1, 0)
        NFs.truncateSync(file, sizeOf(file) - 5)
      })
      assert.strictEqual(journal.recovery.tornBytes, 0)
      yield* expectCorrupt(journal, 0, [1, 2, 3], `${dir}/${segmentFile(1)}`, offset, "no line break")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // One writer per directory
  // -------------------------------------------------------------------------------------------------------------

  const lockHolder = (dir: string) => JSON.parse(readText(`${dir}/LOCK`)) as { pid: number }

  it.scoped("second_writer_in_the_same_process_is_refused_naming_the_holder", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const first = yield* open(dir)
      const error = yield* Effect.flip(open(dir))
      assert.instanceOf(error, Journal.JournalLocked)
      const locked = error as Journal.JournalLocked
      assert.include(locked.holder, `pid ${process.pid} on ${Os.hostname()}`)
      assert.include(locked.message, `locked by pid ${process.pid} on ${Os.hostname()}`)
      assert.include(locked.message, dir)
      assert.include(locked.message, "stop it")
      // The refused open left the holder alone.
      assert.strictEqual(lockHolder(dir).pid, process.pid)
      yield* first.append(notes(1, 1))
      assert.deepStrictEqual(yield* seqsOf(first.read(0)), [1])
    }).pipe(Effect.provide(NodeContext.layer))
  )

  /** A node process that opens the journal in `dir` and holds it; answers once it has it. */
  const childHolder = (dir: string) =>
    Effect.acquireRelease(
      Effect.async<ChildProcess.ChildProcess, Error>((resume) => {
        const child = ChildProcess.spawn(
          process.execPath,
          ["--import", "tsx", `${import.meta.dirname}/Journal/LockHolder.ts`, dir],
          { stdio: ["ignore", "pipe", "pipe"] }
        )
        let stderr = ""
        child.stderr!.on("data", (chunk) => (stderr += chunk))
        child.stdout!.on("data", (chunk) => {
          if (String(chunk).includes("open")) resume(Effect.succeed(child))
        })
        child.once("exit", (code) => resume(Effect.fail(new Error(`the holder exited (${code}): ${stderr}`))))
      }),
      (child) => Effect.sync(() => child.kill("SIGKILL"))
    )

  const exitOf = (child: ChildProcess.ChildProcess) =>
    Effect.async<string>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) resume(Effect.succeed(String(child.signalCode)))
      else child.once("exit", (_, signal) => resume(Effect.succeed(String(signal))))
    })

  it.scoped(
    "a_live_holder_in_another_process_blocks_and_a_killed_one_releases_the_lock",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const child = yield* childHolder(dir)
        const error = yield* Effect.flip(open(dir))
        assert.instanceOf(error, Journal.JournalLocked)
        assert.include(error.message, `locked by pid ${child.pid} on ${Os.hostname()}`)

        // SIGKILL: no finalizer runs, the file still names the holder; the kernel releases the lock.
        child.kill("SIGKILL")
        assert.strictEqual(yield* exitOf(child), "SIGKILL")
        assert.strictEqual(lockHolder(dir).pid, child.pid)
        const journal = yield* open(dir)
        assert.include(journal.recovery.tookOverLockFrom ?? "", `pid ${child.pid} on ${Os.hostname()}`)
        assert.strictEqual(lockHolder(dir).pid, process.pid)
      }).pipe(Effect.provide(NodeContext.layer)),
    60_000
  )

  it.scoped("a_lock_file_of_the_earlier_format_naming_pid_1_another_host_or_a_dead_pid_does_not_block", () =>
    Effect.gen(function* () {
      const exited = ChildProcess.spawnSync(process.execPath, ["-e", ""])
      assert.strictEqual(exited.status, 0)
      for (const holder of [
        { pid: 1, hostname: Os.hostname(), started_at: "2026-11-27T09:00:00.000Z" },
        { pid: 4242, hostname: "another-host.invalid", started_at: "2026-11-27T09:00:00.000Z" },
        { pid: exited.pid!, hostname: Os.hostname(), started_at: "2026-11-27T09:00:00.000Z" }
      ]) {
        const dir = yield* tempDir
        NFs.writeFileSync(`${dir}/LOCK`, JSON.stringify(holder) + "\n")
        yield* withJournal(dir, {}, (journal) =>
          Effect.gen(function* () {
            assert.include(journal.recovery.tookOverLockFrom ?? "", `pid ${holder.pid} on ${holder.hostname}`)
            assert.strictEqual(lockHolder(dir).pid, process.pid)
            yield* journal.append(notes(1, 1))
          })
        )
        assert.strictEqual(readText(`${dir}/LOCK`), "", "a clean close releases the lock and clears the name")
        const journal = yield* open(dir)
        assert.strictEqual(journal.recovery.tookOverLockFrom, undefined, "after a clean close nothing is taken over")
        assert.strictEqual(yield* journal.headSeq, 1)
      }
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("an_unreadable_lock_file_does_not_block", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      NFs.writeFileSync(`${dir}/LOCK`, `{"pid":12`)
      const journal = yield* open(dir)
      assert.strictEqual(journal.recovery.tookOverLockFrom, undefined)
      assert.strictEqual(lockHolder(dir).pid, process.pid)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("without_flock_the_lock_fails_naming_the_missing_util_linux_tool", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      const error = yield* Effect.flip(acquireLock(fs, dir, `${dir}/LOCK`, { flock: `${dir}/no-such-flock` }))
      assert.instanceOf(error, Journal.JournalIoError)
      assert.include(error.message, "util-linux's 'flock' was not found")
      assert.include(error.message, "no-such-flock")
      // Found on the system, it is the real one.
      assert.isDefined(findFlock())
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Epoch
  // -------------------------------------------------------------------------------------------------------------

  it.scoped("opening_syncs_its_markers_and_fails_rather_than_run_on_one_that_may_not_last", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const faults = yield* FailingFileSystem.FaultInjector
      // EPOCH and OPEN, each synced and then its directory entry: an OS crash cannot lose them
      // while keeping the events written after them.
      yield* withJournal(dir, { fsync: "never" }, () => Effect.void)
      assert.strictEqual(faults.syncs, 4)
      yield* withJournal(dir, { fsync: "never" }, () => Effect.void)
      assert.strictEqual(faults.syncs, 6, "a reopen writes OPEN alone")

      faults.failSyncs(1)
      const error = yield* Effect.flip(open(dir, { fsync: "never" }))
      assert.instanceOf(error, Journal.JournalIoError)
      assert.include(error.message, "mark open")
      assert.isFalse(NFs.existsSync(`${dir}/OPEN`), "no marker that may not last")
      yield* withJournal(dir, { fsync: "never" }, () => Effect.void)
    }).pipe(Effect.provide(FailingFileSystem.layer))
  )

  it.scoped("epoch_is_stable_across_clean_reopens", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const epoch = yield* withJournal(dir, { fsync: "interval" }, (journal) =>
        Effect.gen(function* () {
          assert.match(journal.epoch, /^[0-9a-f]{16}$/)
          assert.strictEqual(readText(`${dir}/EPOCH`), journal.epoch + "\n")
          assert.deepStrictEqual(
            JSON.parse(readText(`${dir}/OPEN`)),
            { fsync: "interval", boot_id: thisBoot },
            "OPEN marks the journal in use, with its mode and the boot it runs in"
          )
          yield* journal.append(notes(1, 3))
          return journal.epoch
        })
      )
      assert.isFalse(NFs.existsSync(`${dir}/OPEN`), "a clean close removes OPEN")
      for (const fsync of ["always", "never", "interval"] as const) {
        yield* withJournal(dir, { fsync }, (journal) =>
          Effect.map(journal.info, (info) => {
            assert.strictEqual(journal.epoch, epoch)
            assert.strictEqual(info.fsync, fsync)
            assert.isFalse(journal.recovery.unclean)
            assert.isFalse(journal.recovery.newEpoch)
          })
        )
      }
      assert.strictEqual(readText(`${dir}/EPOCH`), epoch + "\n")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  /** Closes a journal of 1..3 written in `mode`, leaves `marker` as OPEN (a process that died), and reopens it. */
  const reopenAfter = (mode: Journal.FsyncMode, marker: string) =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const before = yield* withJournal(dir, { fsync: mode }, (journal) =>
        journal.append(notes(1, 3)).pipe(Effect.as(journal.epoch))
      )
      NFs.writeFileSync(`${dir}/OPEN`, marker)
      const journal = yield* open(dir)
      assert.isTrue(journal.recovery.unclean)
      assert.strictEqual(readText(`${dir}/EPOCH`), journal.epoch + "\n")
      assert.strictEqual((yield* journal.info).epoch, journal.epoch)
      assert.deepStrictEqual(JSON.parse(readText(`${dir}/OPEN`)), { fsync: "always", boot_id: thisBoot })
      assert.deepStrictEqual(yield* seqsOf(journal.read(0)), [1, 2, 3], "the events themselves are kept")
      return { journal, before }
    })

  for (const mode of ["always", "interval", "never"] as const) {
    it.scoped(`a_process_crash_in_${mode}_mode_keeps_the_epoch`, () =>
      Effect.gen(function* () {
        const { journal, before } = yield* reopenAfter(mode, JSON.stringify({ fsync: mode, boot_id: thisBoot }) + "\n")
        assert.strictEqual(journal.epoch, before)
        assert.isFalse(journal.recovery.newEpoch)
      }).pipe(Effect.provide(NodeContext.layer))
    )
  }

  for (const mode of ["interval", "never"] as const) {
    it.scoped(`an_os_restart_in_${mode}_mode_starts_a_new_epoch`, () =>
      Effect.gen(function* () {
        const { journal, before } = yield* reopenAfter(
          mode,
          JSON.stringify({ fsync: mode, boot_id: "a-boot-before-this-one" }) + "\n"
        )
        assert.notStrictEqual(journal.epoch, before)
        assert.match(journal.epoch, /^[0-9a-f]{16}$/)
        assert.isTrue(journal.recovery.newEpoch)
      }).pipe(Effect.provide(NodeContext.layer))
    )
  }

  it.scoped("an_os_restart_in_always_mode_keeps_the_epoch", () =>
    Effect.gen(function* () {
      const { journal, before } = yield* reopenAfter(
        "always",
        JSON.stringify({ fsync: "always", boot_id: "a-boot-before-this-one" }) + "\n"
      )
      assert.strictEqual(journal.epoch, before)
      assert.isFalse(journal.recovery.newEpoch)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("an_open_marker_without_a_boot_id_counts_as_an_os_restart_except_in_always_mode", () =>
    Effect.gen(function* () {
      // An earlier version wrote the mode alone: whether the OS restarted since is unknown.
      const interval = yield* reopenAfter("interval", "interval\n")
      assert.notStrictEqual(interval.journal.epoch, interval.before)
      assert.isTrue(interval.journal.recovery.newEpoch)
      const always = yield* reopenAfter("always", "always\n")
      assert.strictEqual(always.journal.epoch, always.before)
      // An unreadable marker: neither the mode nor the boot is known.
      const unreadable = yield* reopenAfter("always", "\u0000\u0000\u0000")
      assert.notStrictEqual(unreadable.journal.epoch, unreadable.before)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // The original's format
  // -------------------------------------------------------------------------------------------------------------

  it.scoped("journal_in_the_original_format_opens_reads_and_continues", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const first = [
        `{"seq":1,"ts":"2026-11-27T10:00:00.123Z","session_id":"s1","event":{"type":"session_created","session_id":"s1","title":"Plan"}}`,
        `{"seq":2,"ts":"2026-11-27T10:00:01.000Z","session_id":"s1","event":{"type":"message_appended","session_id":"s1","message_id":"m1","role":"user","content":[{"type":"text","text":"Hi \u00e9\u2603"}]}}`,
        `{"seq":3,"ts":"2026-11-27T10:00:02.500Z","event":{"type":"complete","usage":{}}}`
      ]
      const second = [
        `{"seq":4,"ts":"2026-11-27T10:00:03.000Z","session_id":"s1","event":{"type":"session_deleted","session_id":"s1"}}`,
        `{"seq":5,"ts":"2026-11-27T10:00:04.000Z","event":{"type":"config.changed","path":"/etc/agent/config.toml"}}`
      ]
      const file1 = `${dir}/events-00000000000000000001.jsonl`
      const file4 = `${dir}/events-00000000000000000004.jsonl`
      NFs.writeFileSync(file1, first.map((l) => l + "\n").join(""))
      NFs.writeFileSync(file4, second.map((l) => l + "\n").join(""))

      const journal = yield* FileJournal.make(AgentEvent, { directory: dir })
      assert.deepStrictEqual(journal.recovery, {
        unclean: false,
        newEpoch: false,
        tornBytes: 0,
        discardedBytes: 0,
        prunedSegments: 0,
        tookOverLockFrom: undefined
      })
      const info = yield* journal.info
      assert.strictEqual(info.headSeq, 5)
      assert.strictEqual(info.oldestSeq, 1)
      assert.strictEqual(info.segments, 2)
      assert.strictEqual(info.bytes, sizeOf(file1) + sizeOf(file4))

      const events = Chunk.toArray(yield* Stream.runCollect(journal.read(0)))
      const expected: Array<ChangeEvent<AgentEvent>> = [
        {
          seq: 1,
          ts: "2026-11-27T10:00:00.123Z",
          session_id: "s1",
          event: { type: "session_created", session_id: "s1", title: "Plan" }
        },
        {
          seq: 2,
          ts: "2026-11-27T10:00:01.000Z",
          session_id: "s1",
          event: {
            type: "message_appended",
            session_id: "s1",
            message_id: "m1",
            role: "user",
            content: [{ type: "text", text: "Hi \u00e9\u2603" }]
          }
        },
        { seq: 3, ts: "2026-11-27T10:00:02.500Z", event: { type: "complete", usage: {} } },
        {
          seq: 4,
          ts: "2026-11-27T10:00:03.000Z",
          session_id: "s1",
          event: { type: "session_deleted", session_id: "s1" }
        },
        { seq: 5, ts: "2026-11-27T10:00:04.000Z", event: { type: "config.changed", path: "/etc/agent/config.toml" } }
      ]
      assert.deepStrictEqual(events, expected)
      assert.isFalse("session_id" in events[2]!, "an absent session_id stays absent")

      // Appends continue in the newest file, in the same format.
      yield* journal.append([
        {
          ts: "2026-11-27T11:00:00.000Z",
          session_id: "s2",
          event: { type: "session_created", session_id: "s2" }
        },
        { ts: "2026-11-27T11:00:01.000Z", event: { type: "cancelled", reason: "user" } }
      ])
      assert.deepStrictEqual(yield* segmentFiles(dir), [
        "events-00000000000000000001.jsonl",
        "events-00000000000000000004.jsonl"
      ])
      assert.strictEqual(
        readText(file4),
        [
          ...second,
          withChecksum(
            `{"seq":6,"ts":"2026-11-27T11:00:00.000Z","session_id":"s2","event":{"type":"session_created","session_id":"s2"}}`
          ),
          withChecksum(`{"seq":7,"ts":"2026-11-27T11:00:01.000Z","event":{"type":"cancelled","reason":"user"}}`)
        ]
          .map((l) => l + "\n")
          .join("")
      )
      assert.deepStrictEqual(yield* seqsOf(journal.read(5)), [6, 7])

      // The same events journaled here are the original's lines byte for byte, with a checksum
      // field before the closing brace, which the original, ignoring fields it does not know, skips.
      const copyDir = yield* tempDir
      const copy = yield* FileJournal.make(AgentEvent, { directory: copyDir })
      yield* copy.append(events)
      assert.deepStrictEqual(
        NFs.readFileSync(`${copyDir}/events-00000000000000000001.jsonl`),
        Buffer.from([...first, ...second].map((l) => withChecksum(l) + "\n").join(""))
      )
    }).pipe(Effect.provide(NodeContext.layer))
  )

  // -------------------------------------------------------------------------------------------------------------
  // Bounded memory
  // -------------------------------------------------------------------------------------------------------------

  it.scopedLive(
    "reading_200k_events_from_0_holds_at_most_one_chunk_of_decoded_events",
    () =>
      Effect.gen(function* () {
        let decoded = 0
        // The Note schema, counting every line the journal decodes.
        const CountedNote = Schema.transform(Note, Schema.typeSchema(Note), {
          strict: true,
          decode: (n) => {
            decoded++
            return n
          },
          encode: (n) => n
        })
        const dir = yield* tempDir
        const readChunkBytes = 64 * 1024
        const journal = yield* FileJournal.make(CountedNote, {
          directory: dir,
          fsync: "never",
          readChunkBytes,
          segmentBytes: 4 * 1024 * 1024
        })
        const total = 200_000
        const batch = 500
        const pad = 24
        for (let from = 1; from <= total; from += batch) yield* journal.append(notes(from, batch, pad))
        assert.strictEqual(yield* journal.headSeq, total)
        const files = yield* segmentFiles(dir)
        assert.isAbove(files.length, 3, "the read crosses segments")

        // The shortest line is the first; a chunk (plus a carried partial line) holds at most this many lines.
        const firstLine = linesOf(`${dir}/${files[0]}`)[0]!
        assert.strictEqual(JSON.parse(firstLine).seq, 1)
        const linesPerChunk = Math.ceil(readChunkBytes / (Buffer.byteLength(firstLine) + 1)) + 1
        assert.isBelow(linesPerChunk, 1000)

        decoded = 0
        let consumed = 0
        let maxInFlight = 0
        let outOfOrder = 0
        yield* journal.read(0).pipe(
          Stream.runForEach((event) =>
            Effect.sync(() => {
              maxInFlight = Math.max(maxInFlight, decoded - consumed)
              consumed++
              if (event.seq !== consumed) outOfOrder++
            })
          )
        )
        assert.strictEqual(consumed, total)
        assert.strictEqual(decoded, total)
        assert.strictEqual(outOfOrder, 0)
        assert.isAbove(maxInFlight, 1, "decoding runs ahead by a chunk, which is what is measured")
        assert.isAtMost(maxInFlight, linesPerChunk)
      }).pipe(Effect.provide(NodeContext.layer)),
    30_000
  )
})

const expectPruned = <A>(stream: Stream.Stream<A, Journal.JournalReadError>, requested: number, oldest: number) =>
  Effect.gen(function* () {
    const { seen, error } = yield* untilFailure(stream)
    assert.strictEqual(seen.length, 0)
    assert.instanceOf(error, Journal.JournalPruned)
    const pruned = error as Journal.JournalPruned
    assert.strictEqual(pruned.requested, requested)
    assert.strictEqual(pruned.oldest, oldest)
  })
