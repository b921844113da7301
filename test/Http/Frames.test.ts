/**
 * The SSE frames of runs: a run of a live batch is a view of the batch's frames, made once, and a
 * run of journal lines is rendered from the bytes read; both read exactly as the same events
 * rendered one by one, and a run's size is counted right across every change in the length of its
 * seqs.
 */
import { describe, it, assert } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { LiveBatch } from "../../src/ChangeFeed/Broadcast.js"
import type { LineItem } from "../../src/Domain/FeedItem.js"
import type { JournalLineRun } from "../../src/Journal.js"
import { bodyAt, lineAt, makeLineCodec, readInPlace } from "../../src/Journal/Lines.js"
import { digitsOfRange, type FrameItem, makeFrameEncoder } from "../../src/Http/Sse.js"
import { digitsOf } from "../../src/Scratch.js"
import { Note, note } from "../support/Notes.js"

const decode = (parts: ReadonlyArray<Uint8Array>) => parts.map((part) => Buffer.from(part).toString("utf8")).join("")

const codec = makeLineCodec(Note)

/**
 * A batch of `count` events from `first` (some keyed, some in a session), as the broadcast holds
 * it: as the lines the writer encoded, or as the bodies read back from the journal.
 */
const batchOf = (first: number, count: number, held: "lines" | "bodies" = "lines"): LiveBatch<unknown> => {
  const events = Array.from({ length: count }, (_, i) => ({
    seq: first + i,
    ts: "2026-11-29T10:00:00.000Z",
    ...(i % 2 === 0 ? { session_id: "s" } : {}),
    ...(i % 3 === 0 ? { key: `k${i}` } : {}),
    event: note(`é${i}`)
  }))
  const lines = codec.encodeBatch(events)
  const sessions = events.map((event) => event.session_id)
  return held === "lines"
    ? new LiveBatch(first, count, sessions, lines, undefined, codec.decodeLine)
    : new LiveBatch(
        first,
        count,
        sessions,
        events.map((_, i) => bodyAt(lines, i)),
        events,
        codec.decodeLine
      )
}

/** The same events as a reader of single lines gets them (not live: rendered one by one). */
const linesOf = (batch: LiveBatch<unknown>, from: number): Array<LineItem> =>
  Array.from(
    { length: batch.last - from + 1 },
    (_, k) => ({ ...batch.change(from - batch.first + k).line, live: undefined }) as unknown as LineItem
  )

describe("frames of live batches", () => {
  it("a_run_from_inside_a_batch_and_a_whole_batch_read_as_their_events_one_by_one", () => {
    const frames = makeFrameEncoder("E")
    const batch = batchOf(10, 6)
    const next = batchOf(16, 3)
    const readBack = batchOf(10, 6, "bodies")
    for (const from of [10, 11, 13, 15]) {
      const run = decode(frames([{ _tag: "LiveRun", batch, from }]))
      assert.strictEqual(run, decode(frames(linesOf(batch, from))), `the run from ${from}`)
      assert.isTrue(run.startsWith(`id: E:${from}\ndata: {"seq":${from},`))
      assert.notInclude(run, '"key"', "the key is the journal's alone")
      assert.strictEqual(
        decode(frames([{ _tag: "LiveRun", batch: readBack, from }])),
        run,
        "a batch read back from the journal frames as the one the writer encoded"
      )
    }
    const mixed = decode(
      frames([
        { _tag: "CaughtUp", seq: 9 },
        { _tag: "LiveRun", batch, from: 12 },
        { _tag: "LiveRun", batch: next, from: 16 }
      ])
    )
    assert.strictEqual(
      mixed,
      `event: caught_up\nid: E:9\ndata: {"type":"caught_up","seq":9}\n\n` +
        decode(frames(linesOf(batch, 12))) +
        decode(frames(linesOf(next, 16)))
    )
  })

  it("a_batch_s_frames_read_as_its_events_one_by_one_whatever_the_digits_of_their_seqs", () => {
    const frames = makeFrameEncoder("E")
    for (const [first, count] of [
      [7, 5],
      [95, 10],
      [1_098, 4],
      [999_999, 2]
    ] as const) {
      const batch = batchOf(first, count)
      assert.strictEqual(
        decode(frames([{ _tag: "LiveRun", batch, from: first }])),
        decode(frames(linesOf(batch, first))),
        `the batch from ${first}`
      )
    }
  })

  it("a_batch_s_frames_are_made_once_and_every_run_of_it_is_a_view_of_them", () => {
    const frames = makeFrameEncoder("E")
    const batch = batchOf(1, 4)
    const [whole] = frames([{ _tag: "LiveRun", batch, from: 1 }])
    const [again] = frames([{ _tag: "LiveRun", batch, from: 1 }])
    const [tail] = frames([{ _tag: "LiveRun", batch, from: 3 }])
    assert.strictEqual(again, whole)
    assert.strictEqual(tail!.buffer, whole!.buffer)
  })
})

describe("frames of journal runs", () => {
  /** Events `first`..`first + count - 1` as the journal wrote them (some keyed, some in a session), as one run. */
  const runOf = (first: number, count: number): JournalLineRun => {
    const lines = codec.encodeBatch(
      Array.from({ length: count }, (_, i) => ({
        seq: first + i,
        ts: "2026-11-29T10:00:00.000Z",
        ...(i % 2 === 0 ? { session_id: "s1" } : {}),
        ...(i % 3 === 0 ? { key: `k${i}` } : {}),
        event: note(`é${i}`.repeat(i + 1))
      }))
    )
    return { _tag: "LineRun", first, lines }
  }

  /** The run's events as a reader of single lines gets them. */
  const linesOfRun = (run: JournalLineRun): Array<LineItem> =>
    run.lines.ends.map((_, i) => readInPlace(lineAt(run.lines, i)) as LineItem)

  it("a_run_of_journal_lines_reads_as_its_events_one_by_one_whatever_the_digits_of_their_seqs", () => {
    const frames = makeFrameEncoder("E")
    for (const [first, count] of [
      [1, 1],
      [8, 5],
      [97, 6],
      [1_098, 4],
      [999_998, 4]
    ] as const) {
      const run = runOf(first, count)
      const rendered = frames([run])
      assert.strictEqual(rendered.length, 1, "one buffer for the whole run")
      const text = decode(rendered)
      assert.strictEqual(text, decode(frames(linesOfRun(run))), `the run from ${first}`)
      assert.notInclude(text, '"key"', "the key is the journal's alone")
      assert.notInclude(text, '"crc"')
      const frameTexts = text.split("\n\n").slice(0, -1)
      assert.strictEqual(frameTexts.length, count)
      for (const frame of frameTexts) {
        const [id, data] = frame.split("\n")
        assert.strictEqual(
          id,
          `id: E:${JSON.parse(data!.slice("data: ".length)).seq}`,
          "each frame's id is its event's seq"
        )
      }
    }
    const run = runOf(5, 3)
    const mixed = decode(frames([{ _tag: "CaughtUp", seq: 4 }, run, ...linesOfRun(runOf(8, 2)), runOf(10, 2)]))
    assert.strictEqual(
      mixed,
      `event: caught_up\nid: E:4\ndata: {"type":"caught_up","seq":4}\n\n` +
        decode(frames(linesOfRun(run))) +
        decode(frames(linesOfRun(runOf(8, 2)))) +
        decode(frames(linesOfRun(runOf(10, 2))))
    )
  })
  it("rendered_frames_are_cut_between_frames_into_buffers_of_at_most_the_budget_but_for_a_frame_larger_alone", () => {
    type Piece =
      | { readonly kind: "run"; readonly count: number }
      | { readonly kind: "lines"; readonly count: number }
      | { readonly kind: "marker" }
      | { readonly kind: "live"; readonly count: number; readonly skip: number }
    const piece: fc.Arbitrary<Piece> = fc.oneof(
      fc.record({ kind: fc.constant("run" as const), count: fc.integer({ min: 1, max: 12 }) }),
      fc.record({ kind: fc.constant("lines" as const), count: fc.integer({ min: 1, max: 3 }) }),
      fc.record({ kind: fc.constant("marker" as const) }),
      fc.record({
        kind: fc.constant("live" as const),
        count: fc.integer({ min: 1, max: 12 }),
        skip: fc.integer({ min: 0, max: 11 })
      })
    )
    fc.assert(
      fc.property(
        fc.array(piece, { minLength: 1, maxLength: 6 }),
        fc.integer({ min: 1, max: 1500 }),
        (pieces, budget) => {
          const frames = makeFrameEncoder("E")
          let seq = 1
          const items = pieces.flatMap((p): Array<FrameItem> => {
            const first = seq
            switch (p.kind) {
              case "run":
                seq += p.count
                return [runOf(first, p.count)]
              case "lines":
                seq += p.count
                return linesOfRun(runOf(first, p.count))
              case "marker":
                return [{ _tag: "CaughtUp" as const, seq: first - 1 }]
              case "live": {
                seq += p.count
                const batch = batchOf(first, p.count)
                return [{ _tag: "LiveRun" as const, batch, from: first + Math.min(p.skip, p.count - 1) }]
              }
            }
          })
          const whole = frames(items)
          const cut = frames(items, undefined, budget)
          assert.strictEqual(decode(cut), decode(whole), "the same bytes")
          // A live run's frames are the batch's, made once for every connection, and go as they are.
          const shared = new Set(
            items.flatMap((item) => (item._tag === "LiveRun" ? frames([item]).map((view) => view.buffer) : []))
          )
          for (const buffer of cut) {
            if (shared.has(buffer.buffer)) continue
            const text = decode([buffer])
            assert.isTrue(text.endsWith("\n\n"), "a buffer ends where a frame does")
            const framesIn = text.split("\n\n").length - 1
            assert.isTrue(
              buffer.length <= budget || framesIn === 1,
              `${buffer.length} bytes over ${budget} hold one frame`
            )
          }
        }
      ),
      { numRuns: 300 }
    )
  })
})

describe("frame sizes", () => {
  it("the_digits_of_a_range_of_seqs_are_the_sum_of_each_one_s_across_every_length_boundary", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0, max: 2_000 }),
          fc.constantFrom(9, 10, 99, 100, 999_990, 9_999_999_990),
          fc.integer({ min: 0, max: 10 ** 15 })
        ),
        fc.integer({ min: 0, max: 3_000 }),
        (first, count) => {
          let sum = 0
          for (let i = 0; i < count; i++) sum += digitsOf(first + i)
          return digitsOfRange(first, count) === sum
        }
      ),
      { numRuns: 500 }
    )
  })
})
