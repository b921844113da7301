/**
 * Segment naming: `events-<20-digit start>.jsonl`, name order == seq order, and the lookup of
 * the segment that holds a seq.
 */
import { describe, it, assert } from "@effect/vitest"
import { parseSegmentName, type Segment, segmentIndexFor, segmentName } from "../../src/Journal/Segment.js"

const segment = (start: number): Segment => ({ start, name: segmentName(start), bytes: 0 })

describe("Segment", () => {
  it("names_a_segment_by_its_start_seq_in_20_digits", () => {
    assert.strictEqual(segmentName(1), "events-00000000000000000001.jsonl")
    assert.strictEqual(segmentName(1234567), "events-00000000000001234567.jsonl")
    assert.strictEqual(segmentName(Number.MAX_SAFE_INTEGER), "events-00009007199254740991.jsonl")
  })

  it("name_order_is_seq_order", () => {
    const starts = [1, 9, 10, 99, 100, 12345, 1_000_000_000]
    const names = starts.map(segmentName)
    assert.deepStrictEqual([...names].sort(), names)
  })

  it("parses_what_it_names_and_nothing_else", () => {
    for (const start of [1, 42, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      assert.strictEqual(parseSegmentName(segmentName(start)), start)
    }
    assert.strictEqual(parseSegmentName("events-00000000000000000000.jsonl"), undefined, "seq 0 holds no event")
    assert.strictEqual(parseSegmentName("events-1.jsonl"), undefined)
    assert.strictEqual(parseSegmentName("events-000000000000000000001.jsonl"), undefined, "21 digits")
    assert.strictEqual(parseSegmentName("events-99999999999999999999.jsonl"), undefined, "beyond a safe integer")
    assert.strictEqual(parseSegmentName("events-00000000000000000001.jsonl.tmp"), undefined)
    assert.strictEqual(parseSegmentName("xevents-00000000000000000001.jsonl"), undefined)
    assert.strictEqual(parseSegmentName("EPOCH"), undefined)
    assert.strictEqual(parseSegmentName("LOCK"), undefined)
  })

  it("finds_the_segment_that_holds_a_seq", () => {
    const segments = [segment(5), segment(10), segment(11), segment(30)]
    const cases: Array<[number, number]> = [
      [1, -1],
      [4, -1],
      [5, 0],
      [9, 0],
      [10, 1],
      [11, 2],
      [29, 2],
      [30, 3],
      [1000, 3]
    ]
    for (const [seq, index] of cases) assert.strictEqual(segmentIndexFor(segments, seq), index, `seq ${seq}`)
    assert.strictEqual(segmentIndexFor([], 1), -1)
    assert.strictEqual(segmentIndexFor([segment(1)], 1), 0)
  })
})
