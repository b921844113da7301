/**
 * The cache of sealed segments' line indexes: its budget in bytes, least recently used out first,
 * stale stamps, and the builder that makes an index only of lines checked in order.
 */
import { describe, it, assert } from "@effect/vitest"
import * as NFs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import {
  IndexBuilder,
  type SegmentIndex,
  SegmentIndexes,
  settledAfter,
  stampOf
} from "../../src/Journal/SegmentIndex.js"

/** An index of `count` lines from seq 1, of 9 bytes each (4 bytes a line). */
const indexOf = (count: number): SegmentIndex => ({
  first: 1,
  count,
  lengths: new Uint16Array(count).fill(9),
  tails: new Uint16Array(count).fill(4)
})

describe("SegmentIndexes", () => {
  it("indexes_stay_within_their_budget_and_the_least_recently_used_go_first", () => {
    // Room for 3 indexes of 100 lines (400 bytes each).
    const indexes = new SegmentIndexes(1_200)
    indexes.put("/j/a", "s", indexOf(100))
    indexes.put("/j/b", "s", indexOf(100))
    indexes.put("/j/c", "s", indexOf(100))
    assert.strictEqual(indexes.bytes, 1_200)
    // `a` used last: `b` is the one to go.
    assert.isDefined(indexes.get("/j/a", "s"))
    indexes.put("/j/d", "s", indexOf(100))
    assert.strictEqual(indexes.size, 3)
    assert.isUndefined(indexes.get("/j/b", "s"))
    assert.isDefined(indexes.get("/j/a", "s"))
    assert.isDefined(indexes.get("/j/d", "s"))
    // Larger than the budget: kept not at all, and nothing dropped for it.
    indexes.put("/j/e", "s", indexOf(400))
    assert.strictEqual(indexes.size, 3)
    assert.isUndefined(indexes.get("/j/e", "s"))
    // Two at once go for one that needs their room.
    indexes.put("/j/f", "s", indexOf(200))
    assert.strictEqual(indexes.bytes, 1_200)
    assert.deepStrictEqual(
      ["/j/a", "/j/c", "/j/d", "/j/f"].map((file) => indexes.get(file, "s") !== undefined),
      [false, false, true, true]
    )
  })

  it("a_smaller_budget_drops_the_least_recently_used_down_to_it_and_none_keeps_nothing", () => {
    const indexes = new SegmentIndexes(1_200)
    for (const file of ["/j/a", "/j/b", "/j/c"]) indexes.put(file, "s", indexOf(100))
    assert.isDefined(indexes.get("/j/a", "s"))
    indexes.resize(800)
    assert.strictEqual(indexes.bytes, 800)
    assert.deepStrictEqual(
      ["/j/a", "/j/b", "/j/c"].map((file) => indexes.get(file, "s") !== undefined),
      [true, false, true]
    )
    indexes.resize(0)
    assert.strictEqual(indexes.size, 0)
    indexes.put("/j/d", "s", indexOf(1))
    assert.strictEqual(indexes.size, 0)
  })

  it("an_index_asked_for_with_another_stamp_is_dropped", () => {
    const indexes = new SegmentIndexes(10_000)
    indexes.put("/j/a", "old", indexOf(10))
    assert.isUndefined(indexes.get("/j/a", "new"))
    assert.strictEqual(indexes.size, 0)
    assert.strictEqual(indexes.bytes, 0)
    assert.isUndefined(indexes.get("/j/a", "old"))
    assert.strictEqual(indexes.misses, 2)
  })

  it("a_journal_folder_s_indexes_go_together_and_no_other_s", () => {
    const indexes = new SegmentIndexes(10_000)
    indexes.put("/j/a/events-1.jsonl", "s", indexOf(10))
    indexes.put("/j/a/events-2.jsonl", "s", indexOf(10))
    indexes.put("/j/ab/events-1.jsonl", "s", indexOf(10))
    indexes.deleteUnder("/j/a")
    assert.strictEqual(indexes.size, 1)
    assert.isDefined(indexes.get("/j/ab/events-1.jsonl", "s"))
  })

  it("a_file_is_settled_50_ms_after_its_last_write_where_file_times_have_fractions_of_a_second_and_2_s_where_they_do_not", () => {
    assert.strictEqual(settledAfter(1_796_066_572_000_000_000n), 2_000)
    assert.strictEqual(settledAfter(1_796_066_572_832_085_700n), 50)
    const file = Path.join(NFs.mkdtempSync(Path.join(Os.tmpdir(), "segment-index-")), "events.jsonl")
    try {
      NFs.writeFileSync(file, "abc\n")
      const fd = NFs.openSync(file, "r")
      try {
        // Written just now: the change time is this file system's, with or without fractions.
        const { ctimeNs } = NFs.fstatSync(fd, { bigint: true })
        const written = Number(ctimeNs / 1_000_000n)
        const after = settledAfter(ctimeNs)
        assert.isFalse(stampOf(fd, written + after - 1)!.settled)
        assert.isTrue(stampOf(fd, written + after + 1)!.settled)
      } finally {
        NFs.closeSync(fd)
      }
    } finally {
      NFs.rmSync(Path.dirname(file), { recursive: true })
    }
  })

  it("a_file_s_stamp_moves_with_any_write_to_it_and_it_is_settled_only_once_written_long_enough_ago", async () => {
    const file = Path.join(NFs.mkdtempSync(Path.join(Os.tmpdir(), "segment-index-")), "events.jsonl")
    try {
      NFs.writeFileSync(file, "abc\n")
      const fd = NFs.openSync(file, "r")
      try {
        const now = Date.now()
        const first = stampOf(fd, now, 2_000)!
        assert.isFalse(first.settled)
        assert.isTrue(stampOf(fd, now + 60_000, 2_000)!.settled)
        assert.strictEqual(stampOf(fd, now, 2_000)!.stamp, first.stamp)
        // Same size, same modification time: the change time still moves (once the file clock has ticked).
        const { mtime } = NFs.statSync(file)
        await new Promise((resolve) => setTimeout(resolve, 50))
        NFs.writeFileSync(file, "abd\n")
        NFs.utimesSync(file, mtime, mtime)
        assert.notStrictEqual(stampOf(fd, now, 2_000)!.stamp, first.stamp)
      } finally {
        NFs.closeSync(fd)
      }
    } finally {
      NFs.rmSync(Path.dirname(file), { recursive: true })
    }
  })
})

describe("IndexBuilder", () => {
  it("an_index_holds_the_lines_added_in_order_however_many_in_16_bits_a_field_where_they_fit", () => {
    const builder = new IndexBuilder()
    // Lines of 9 bytes and a newline, each body ending 4 bytes before its line's end.
    for (let i = 0; i < 20_000; i++) builder.add(7 + i, 10 * i + 9, 10 * i + 5)
    const index = builder.finish()!
    assert.strictEqual(index.first, 7)
    assert.strictEqual(index.count, 20_000)
    assert.instanceOf(index.lengths, Uint16Array)
    assert.deepStrictEqual([...new Set(index.lengths)], [9])
    assert.deepStrictEqual([...new Set(index.tails)], [4])
    const long = new IndexBuilder()
    long.add(1, 9, 5)
    long.add(2, 10 + 70_000, 12)
    const wide = long.finish()!
    assert.instanceOf(wide.lengths, Uint32Array)
    assert.deepStrictEqual([...wide.lengths], [9, 70_000])
    assert.deepStrictEqual([...wide.tails], [4, 69_998])
  })

  it("a_line_out_of_order_or_one_not_checked_leaves_no_index", () => {
    const gap = new IndexBuilder()
    gap.add(1, 9, 5)
    gap.add(3, 19, 15)
    assert.isUndefined(gap.finish())
    const unchecked = new IndexBuilder()
    unchecked.add(1, 9, 5)
    unchecked.spoil()
    unchecked.add(2, 19, 15)
    assert.isUndefined(unchecked.finish())
    assert.isUndefined(new IndexBuilder().finish())
    const backwards = new IndexBuilder()
    backwards.add(1, 9, 10)
    assert.isUndefined(backwards.finish())
  })
})
