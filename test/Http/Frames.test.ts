/**
 * The SSE frames of live batches: a run of a batch is a view of the batch's frames, made once,
 * and reads exactly as the same events rendered one by one.
 */
import { describe, it, assert } from "@effect/vitest"
import type { LiveBatch, LiveChange } from "../../src/ChangeFeed/Broadcast.js"
import type { LineChange, LineItem } from "../../src/Domain/FeedItem.js"
import { makeFrameEncoder } from "../../src/Http/Sse.js"

const text = new TextEncoder()
const decode = (parts: ReadonlyArray<Uint8Array>) => parts.map((part) => Buffer.from(part).toString("utf8")).join("")

/** A batch of `count` events from `first`, as the broadcast holds it. */
const batchOf = (first: number, count: number): LiveBatch<unknown> => {
  const items: Array<LiveChange<unknown>> = []
  const batch = { first, items }
  for (let i = 0; i < count; i++) {
    const seq = first + i
    const line: LineChange = {
      _tag: "Change",
      seq,
      sessionId: "s",
      body: text.encode(`{"seq":${seq},"ts":"t","session_id":"s","event":{"type":"x","n":"é${i}"}`),
      live: true
    }
    items.push({ decoded: { _tag: "Change", change: { seq, ts: "t", event: {} } }, line, batch })
  }
  return batch
}

/** The same events as a reader of single lines gets them (not live: rendered one by one). */
const linesOf = (batch: LiveBatch<unknown>, from: number): Array<LineItem> =>
  batch.items.slice(from - batch.first).map(({ line }) => ({ ...line, live: undefined }) as unknown as LineItem)

describe("frames of live batches", () => {
  it("a_run_from_inside_a_batch_and_a_whole_batch_read_as_their_events_one_by_one", () => {
    const frames = makeFrameEncoder("E")
    const batch = batchOf(10, 6)
    const next = batchOf(16, 3)
    for (const from of [10, 11, 13, 15]) {
      const run = decode(frames([{ _tag: "LiveRun", batch, from }]))
      assert.strictEqual(run, decode(frames(linesOf(batch, from))), `the run from ${from}`)
      assert.isTrue(run.startsWith(`id: E:${from}\ndata: {"seq":${from},`))
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
