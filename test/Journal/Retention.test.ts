/**
 * Retention: how many of the oldest segments go, by count, bytes and age, never the active one.
 */
import { describe, it, assert } from "@effect/vitest"
import { defaultRetention, segmentsToPrune } from "../../src/Journal/Retention.js"
import { type Segment, segmentName } from "../../src/Journal/Segment.js"

/** Segments of the given sizes, starting 10 seqs apart. */
const segments = (...sizes: Array<number>): Array<Segment> =>
  sizes.map((bytes, i) => ({ start: 1 + 10 * i, name: segmentName(1 + 10 * i), bytes }))

const noAge = (index: number): number => assert.fail(`age of segment ${index} asked without an age limit`)

describe("Retention", () => {
  it("keeps_64_segments_by_default", () => {
    assert.deepStrictEqual(defaultRetention, { segments: 64 })
    const many = segments(...Array(70).fill(100))
    assert.strictEqual(segmentsToPrune(many, defaultRetention, 0, noAge), 6)
    assert.strictEqual(segmentsToPrune(many.slice(0, 64), defaultRetention, 0, noAge), 0)
  })

  it("prunes_by_count", () => {
    const s = segments(1, 1, 1, 1, 1)
    assert.strictEqual(segmentsToPrune(s, { segments: 3 }, 0, noAge), 2)
    assert.strictEqual(segmentsToPrune(s, { segments: 5 }, 0, noAge), 0)
    assert.strictEqual(segmentsToPrune(s, { segments: 9 }, 0, noAge), 0)
  })

  it("never_prunes_the_active_segment", () => {
    assert.strictEqual(segmentsToPrune(segments(1, 1, 1), { segments: 0 }, 0, noAge), 2)
    assert.strictEqual(segmentsToPrune(segments(1, 1, 1), { segments: 1, bytes: 0 }, 0, noAge), 2)
    assert.strictEqual(
      segmentsToPrune(segments(500), { segments: 0, bytes: 1 }, 0, () => 0),
      0
    )
    assert.strictEqual(
      segmentsToPrune(segments(5, 5), { segments: 9, maxAge: 1 }, 1000, () => 0),
      1
    )
    assert.strictEqual(segmentsToPrune([], { segments: 0 }, 0, noAge), 0)
  })

  it("prunes_by_total_bytes_after_count", () => {
    // 100 + 200 + 300 + 400 = 1000 bytes.
    const s = segments(100, 200, 300, 400)
    assert.strictEqual(segmentsToPrune(s, { segments: 10, bytes: 1000 }, 0, noAge), 0)
    assert.strictEqual(segmentsToPrune(s, { segments: 10, bytes: 999 }, 0, noAge), 1)
    assert.strictEqual(segmentsToPrune(s, { segments: 10, bytes: 700 }, 0, noAge), 2)
    assert.strictEqual(segmentsToPrune(s, { segments: 10, bytes: 699 }, 0, noAge), 3)
    // Count first (drops 100 and 200), then bytes on what is left.
    assert.strictEqual(segmentsToPrune(s, { segments: 2, bytes: 700 }, 0, noAge), 2)
    assert.strictEqual(segmentsToPrune(s, { segments: 2, bytes: 600 }, 0, noAge), 3)
  })

  it("prunes_by_age_asking_only_for_segments_count_and_bytes_keep", () => {
    const s = segments(100, 100, 100, 100, 100)
    const lastWrite = [100, 200, 300, 400, 500]
    const asked: Array<number> = []
    const age = (index: number) => {
      asked.push(index)
      return lastWrite[index]!
    }
    // now 1000, max age 650: segments last written before 350 go (indices 0..2).
    assert.strictEqual(segmentsToPrune(s, { segments: 10, maxAge: 650 }, 1000, age), 3)
    assert.deepStrictEqual(asked, [0, 1, 2, 3])
    asked.length = 0
    assert.strictEqual(segmentsToPrune(s, { segments: 3, maxAge: 650 }, 1000, age), 3)
    assert.deepStrictEqual(asked, [2, 3], "count already removed 0 and 1")
    asked.length = 0
    assert.strictEqual(segmentsToPrune(s, { segments: 10, maxAge: 10_000 }, 1000, age), 0)
    assert.deepStrictEqual(asked, [0])
  })
})
