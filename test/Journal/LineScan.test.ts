/**
 * The WebAssembly scan of a block's lines, held to what the JavaScript reads of a line answer:
 * where each line ends, whether it holds a control byte, whether it is read in place (and its seq,
 * body end, session and key), and the checksum of each span of lines read in place; and the CRC-32 arithmetic
 * a run that starts inside a span is checked with.
 */
import { describe, it, assert } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { crc32 } from "node:zlib"
import { crcOfRest } from "../../src/Journal/Crc.js"
import {
  BlockLines,
  blockLines,
  BODY_END,
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
} from "../../src/Journal/LineScan.js"
import { makeLineCodec, scanInPlace, wordsHoldControl } from "../../src/Journal/Lines.js"
import { Note, storedNote } from "../support/Notes.js"

const codec = makeLineCodec(Note)
const encoder = new TextEncoder()
const decoder = new TextDecoder()

interface Record {
  readonly start: number
  readonly end: number
  readonly flags: number
  readonly seq: number
  readonly bodyEnd: number
  readonly spanCrc: number
  readonly session: readonly [number, number]
  readonly keyFrom: number
}

/** Every record of a block, scanned batch after batch as a read does. */
const scanAll = (block: Uint8Array): Array<Record> => {
  const scanner = blockLines()
  assert.isDefined(scanner, "WebAssembly SIMD is available here")
  scanner.load(block)
  const records: Array<Record> = []
  for (let from = 0, scanned = BlockLines.batch; scanned === BlockLines.batch && from <= block.length;) {
    scanned = scanner.scan(from)
    const ints = scanner.records
    for (let r = 0; r < scanned * RECORD_INTS; r += RECORD_INTS) {
      records.push({
        start: ints[r + LINE_START]!,
        end: ints[r + LINE_END]!,
        flags: ints[r + LINE_FLAGS]!,
        seq: ints[r + SEQ_HIGH]! * 2 ** 32 + (ints[r + SEQ_LOW]! >>> 0),
        bodyEnd: ints[r + BODY_END]!,
        spanCrc: ints[r + SPAN_CRC]! >>> 0,
        session: [ints[r + SESSION_FROM]!, ints[r + SESSION_TO]!],
        keyFrom: ints[r + KEY_FROM]!
      })
      from = ints[r + LINE_END]! + 1
    }
  }
  return records
}

/** A line's text with its checksum field made anew for what precedes it (a line written by hand, checksum and all). */
const rechecksummed = (line: string): string => {
  const at = line.lastIndexOf(',"crc":"')
  if (at < 0 || !line.endsWith('"}')) return line
  const checked = line.slice(0, at)
  return `${checked},"crc":"${crc32(checked).toString(16).padStart(8, "0")}"}`
}

/**
 * Ways a line may differ from what the codec writes: most with their checksum made right again
 * (as by hand), some without a checksum, with a bad one, or cut. The line as written comes three
 * times, so that runs of lines read in place come too.
 */
const variants: ReadonlyArray<(line: string) => string> = [
  (line) => line,
  (line) => line,
  (line) => line,
  // Of the original: no checksum field.
  (line) => line.slice(0, line.lastIndexOf(',"crc":"')) + "}",
  (line) => rechecksummed(line.replace('"session_id":"', '"session_id":"a\\"')),
  (line) => rechecksummed(line.replace('"text":"', '"text":"\r')),
  (line) => rechecksummed(line.replace('"text":"', '"text":"\x01')),
  (line) => rechecksummed(line.replace(',"ts":"', ',"ts":"\\u0041')),
  (line) => rechecksummed(line.replace('{"seq":', '{"seq": ')),
  (line) => rechecksummed(line.replace(',"event":{', ',"other":1,"event":{')),
  (line) => rechecksummed(line.replace(',"crc":"', ',"key":"bad key","crc":"')),
  (line) => rechecksummed(line.replace(',"crc":"', ',"key":"","crc":"')),
  (line) => line.replace(/"crc":"(.)/, '"crc":"G'),
  (line) => rechecksummed(line.replace(/^\{"seq":\d+/, '{"seq":0')),
  (line) => rechecksummed(line.replace(/^\{"seq":\d+/, '{"seq":99999999999999999')),
  (line) => line.slice(0, 12)
]

const lineArbitrary = fc.record({
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  session: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
  key: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/), { nil: undefined }),
  text: fc.string({ maxLength: 60 }),
  variant: fc.nat(variants.length - 1)
})

const lineOf = (spec: typeof lineArbitrary extends fc.Arbitrary<infer T> ? T : never): string => {
  const written = decoder.decode(codec.encodeBatch([storedNote(spec)]).bytes).slice(0, -1)
  return variants[spec.variant]!(written)
}

describe("LineScan", () => {
  it.prop(
    "records_answer_for_each_line_what_the_read_of_a_line_in_place_answers",
    [fc.array(lineArbitrary, { minLength: 1, maxLength: 20 })],
    ([specs]) => {
      const lines = specs.map(lineOf)
      const block = encoder.encode(lines.join("\n"))
      const records = scanAll(block)
      assert.strictEqual(records.length, lines.length, "one record a line")
      let start = 0
      for (let i = 0; i < lines.length; i++) {
        const record = records[i]!
        const end = start + encoder.encode(lines[i]!).length
        assert.deepStrictEqual([record.start, record.end], [start, end], `line ${i}: where it lies`)
        const control = wordsHoldControl(block.subarray(start, end))
        assert.strictEqual((record.flags & HOLDS_CONTROL) !== 0, control, `line ${i}: control bytes`)
        const read = scanInPlace(block, start, end, !control)
        const inPlace = typeof read === "object"
        assert.strictEqual((record.flags & IN_PLACE) !== 0, inPlace, `line ${i}: read in place: ${lines[i]}`)
        if (typeof read === "object") {
          assert.strictEqual(record.seq, read.seq, `line ${i}: seq`)
          assert.strictEqual(record.bodyEnd, read.bodyEnd, `line ${i}: body end`)
          assert.deepStrictEqual(record.session, [read.sessionFrom, read.sessionTo], `line ${i}: session`)
          assert.strictEqual(record.keyFrom, read.keyFrom, `line ${i}: key`)
        }
        start = end + 1
      }
    },
    { fastCheck: { numRuns: 500 } }
  )

  it.prop(
    "each_line_read_in_place_carries_the_checksum_of_its_span_from_the_spans_first_line",
    [fc.array(lineArbitrary, { minLength: 1, maxLength: 20 })],
    ([specs]) => {
      const block = encoder.encode(specs.map(lineOf).join("\n"))
      let spanStart = -1
      let previousInPlace = false
      for (const record of scanAll(block)) {
        const inPlace = (record.flags & IN_PLACE) !== 0
        if (inPlace) {
          assert.strictEqual((record.flags & SPAN_START) !== 0, !previousInPlace, "a span starts after any other line")
          if (!previousInPlace) spanStart = record.start
          assert.strictEqual(record.spanCrc, crc32(block.subarray(spanStart, record.end)))
        }
        previousInPlace = inPlace
      }
    },
    { fastCheck: { numRuns: 500 } }
  )

  it("a_block_of_more_lines_than_a_scan_answers_is_scanned_on_with_its_span_unbroken", () => {
    const count = BlockLines.batch * 2 + 10
    const events = Array.from({ length: count }, (_, i) => storedNote({ seq: i + 1, text: `n${i}` }))
    const block = codec.encodeBatch(events).bytes
    const lines = block.subarray(0, block.length - 1)
    const records = scanAll(lines)
    assert.strictEqual(records.length, count)
    assert.deepStrictEqual(
      records.map((r) => r.seq),
      events.map((e) => e.seq)
    )
    assert.isTrue(records.every((r, i) => (r.flags & IN_PLACE) !== 0 && ((r.flags & SPAN_START) !== 0) === (i === 0)))
    assert.strictEqual(records[count - 1]!.spanCrc, crc32(lines))
  })

  it("lines_of_4096_bytes_and_more_fold_into_their_spans_checksum_as_shorter_ones_do", () => {
    // The fold keeps its multiples for lines below 4,096 bytes and works a bit at a time above:
    // lengths on both sides of that, and again, in one span.
    const texts = [10, 3990, 4070, 4075, 4080, 4085, 4090, 5000, 4080, 12, 9000, 4075].map((n) => "t".repeat(n))
    const events = texts.map((text, i) => storedNote({ seq: i + 1, text }))
    const block = codec.encodeBatch(events).bytes
    const lines = block.subarray(0, block.length - 1)
    const records = scanAll(lines)
    assert.strictEqual(records.length, texts.length)
    const lengths = records.map((r) => r.end - r.start)
    assert.isTrue(lengths.some((n) => n < 4096) && lengths.some((n) => n > 4096 + 18), `lengths ${lengths}`)
    for (const record of records) {
      assert.isTrue((record.flags & IN_PLACE) !== 0)
      assert.strictEqual(record.spanCrc, crc32(lines.subarray(0, record.end)), `line ending at ${record.end}`)
    }
  })

  it.prop(
    "the_checksum_of_what_follows_a_prefix_comes_from_the_prefixs_and_the_wholes",
    [fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 })],
    ([prefix, rest]) => {
      const whole = new Uint8Array([...prefix, ...rest])
      assert.strictEqual(crcOfRest(crc32(whole), crc32(prefix), rest.length), crc32(rest))
    },
    { fastCheck: { numRuns: 1000 } }
  )
})
