/**
 * `GET /api/v1/stream` end to end on a real server: live frames and their headers, resume by
 * `Last-Event-ID` and `since`, each reset reason with its `id:`, and the session filter.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect } from "effect"
import {
  append,
  created,
  createdMany,
  dataOf,
  openStream,
  seqsOf,
  start,
  status,
  type TestServer
} from "../support/Server.js"
import { range, resetData } from "../support/Expected.js"
import { tempDir } from "../support/TempDir.js"

const streamUrl = (server: TestServer, query = "") => `${server.url}/api/v1/stream${query}`

/** A fresh server on a fresh journal, with `n` events appended. */
const serverWith = (n: number, feed: Parameters<typeof start>[0]["feed"] = {}) =>
  Effect.gen(function* () {
    const server = yield* start({ directory: yield* tempDir, feed })
    if (n > 0) yield* append(server, createdMany(n))
    const { epoch } = yield* status(server)
    return { server, epoch }
  })

describe("GET /api/v1/stream", () => {
  it.scopedLive("posted_events_arrive_live_as_id_and_data_frames_with_sse_headers", () =>
    Effect.gen(function* () {
      const { server, epoch } = yield* serverWith(2)
      const stream = yield* openStream(streamUrl(server))
      assert.strictEqual(stream.status, 200)
      assert.strictEqual(stream.headers["content-type"], "text/event-stream; charset=utf-8")
      assert.strictEqual(stream.headers["cache-control"], "no-cache, no-transform")
      assert.strictEqual(stream.headers["x-accel-buffering"], "no")

      const replayed = yield* stream.untilCaughtUp
      assert.deepStrictEqual(seqsOf(replayed), [1, 2])
      const caughtUp = replayed[replayed.length - 1]!
      assert.strictEqual(caughtUp.data, `{"type":"caught_up","seq":2}`)
      assert.strictEqual(caughtUp.id, `${epoch}:2`)

      yield* append(server, [
        { session_id: "s9", event: { type: "session_title_updated", session_id: "s9", title: "T" } }
      ])
      const live = yield* stream.next
      assert.strictEqual(live.event, "message")
      assert.strictEqual(live.id, `${epoch}:3`)
      const change = dataOf(live)
      assert.deepStrictEqual(Object.keys(change), ["seq", "ts", "session_id", "event"])
      assert.strictEqual(change.seq, 3)
      assert.strictEqual(change.session_id, "s9")
      assert.deepStrictEqual(change.event, { type: "session_title_updated", session_id: "s9", title: "T" })
      assert.match(change.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)

      // The raw wire: `retry:` first, then `id:` and `data:` per event, a blank line after each frame.
      assert.isTrue(stream.text().startsWith("retry: 1000\n\n"), stream.text())
      assert.include(stream.text(), `id: ${epoch}:3\ndata: ${live.data}\n\n`)
      assert.include(stream.text(), `event: caught_up\nid: ${epoch}:2\ndata: {"type":"caught_up","seq":2}\n\n`)
    })
  )

  it.scopedLive("an_event_without_a_session_omits_session_id", () =>
    Effect.gen(function* () {
      const { server } = yield* serverWith(0)
      const stream = yield* openStream(streamUrl(server))
      yield* stream.untilCaughtUp
      yield* append(server, [{ event: { type: "complete", usage: { total_tokens: 3 } } }])
      const change = dataOf(yield* stream.next)
      assert.deepStrictEqual(Object.keys(change), ["seq", "ts", "event"])
    })
  )

  it.scopedLive("an_empty_feed_is_caught_up_at_zero", () =>
    Effect.gen(function* () {
      const { server, epoch } = yield* serverWith(0)
      const stream = yield* openStream(streamUrl(server))
      const frames = yield* stream.untilCaughtUp
      assert.deepStrictEqual(
        frames.map((f) => [f.event, f.id, f.data]),
        [["caught_up", `${epoch}:0`, `{"type":"caught_up","seq":0}`]]
      )
    })
  )

  describe("resume", () => {
    it.scopedLive("by_last_event_id_with_epoch", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(5)
        const stream = yield* openStream(streamUrl(server), { "last-event-id": `${epoch}:2` })
        const frames = yield* stream.untilCaughtUp
        assert.deepStrictEqual(seqsOf(frames), [3, 4, 5])
        assert.deepStrictEqual(
          frames.map((f) => f.id),
          [`${epoch}:3`, `${epoch}:4`, `${epoch}:5`, `${epoch}:5`]
        )
      })
    )

    it.scopedLive("by_last_event_id_as_a_plain_seq", () =>
      Effect.gen(function* () {
        const { server } = yield* serverWith(5)
        const stream = yield* openStream(streamUrl(server), { "last-event-id": "3" })
        assert.deepStrictEqual(seqsOf(yield* stream.untilCaughtUp), [4, 5])
      })
    )

    it.scopedLive("by_since_query_plain_and_with_epoch", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(5)
        const plain = yield* openStream(streamUrl(server, "?since=4"))
        assert.deepStrictEqual(seqsOf(yield* plain.untilCaughtUp), [5])
        const withEpoch = yield* openStream(streamUrl(server, `?since=${epoch}:1`))
        assert.deepStrictEqual(seqsOf(yield* withEpoch.untilCaughtUp), [2, 3, 4, 5])
      })
    )

    it.scopedLive("last_event_id_wins_over_since", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(5)
        const stream = yield* openStream(streamUrl(server, "?since=4"), { "last-event-id": `${epoch}:1` })
        assert.deepStrictEqual(seqsOf(yield* stream.untilCaughtUp), [2, 3, 4, 5])
      })
    )

    it.scopedLive("resume_then_live_has_no_gap_and_no_duplicate", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(3)
        const first = yield* openStream(streamUrl(server))
        const seen = seqsOf(yield* first.takeUntil((f) => f.id === `${epoch}:2`))
        // Reconnect from the last id the first connection delivered, while events keep coming.
        const second = yield* openStream(streamUrl(server), { "last-event-id": `${epoch}:2` })
        yield* append(server, createdMany(2))
        const frames = yield* second.takeUntil((f) => f.event === "message" && dataOf(f).seq === 5)
        assert.deepStrictEqual([...seen, ...seqsOf(frames)], range(1, 5))
      })
    )
  })

  describe("reset", () => {
    it.scopedLive("ahead_of_head_resets_to_the_head_and_its_id_does_not_reset_again", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(3)
        const stream = yield* openStream(streamUrl(server, "?since=10"))
        const frames = yield* stream.untilCaughtUp
        assert.deepStrictEqual(
          frames.map((f) => [f.event, f.id, f.data]),
          [
            ["message", `${epoch}:3`, JSON.stringify(resetData("ahead_of_head", 10, { oldestSeq: 1, headSeq: 3 }))],
            ["caught_up", `${epoch}:3`, `{"type":"caught_up","seq":3}`]
          ]
        )
        // The stream goes on live from the head.
        yield* append(server, createdMany(1))
        assert.deepStrictEqual(seqsOf([yield* stream.next]), [4])

        // What a reconnecting EventSource sends: the reset's id. No second reset.
        const again = yield* openStream(streamUrl(server), { "last-event-id": frames[0]!.id! })
        const replay = yield* again.untilCaughtUp
        assert.deepStrictEqual(
          replay.map((f) => [f.event, dataOf(f).type ?? "change"]),
          [
            ["message", "change"],
            ["caught_up", "caught_up"]
          ]
        )
        assert.deepStrictEqual(seqsOf(replay), [4])
      })
    )

    it.scopedLive("epoch_mismatch_resets_to_the_head_and_its_id_does_not_reset_again", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(3)
        const stream = yield* openStream(streamUrl(server), { "last-event-id": "deadbeef:1" })
        const [reset, caughtUp] = yield* stream.untilCaughtUp
        assert.strictEqual(reset!.id, `${epoch}:3`)
        assert.strictEqual(reset!.data, JSON.stringify(resetData("epoch_mismatch", 1, { oldestSeq: 1, headSeq: 3 })))
        assert.strictEqual(caughtUp!.data, `{"type":"caught_up","seq":3}`)

        const again = yield* openStream(streamUrl(server), { "last-event-id": reset!.id! })
        const frames = yield* again.untilCaughtUp
        assert.deepStrictEqual(
          frames.map((f) => f.event),
          ["caught_up"]
        )
      })
    )

    it.scopedLive("below_retention_after_pruning_resets_since_zero_and_its_id_does_not_reset_again", () =>
      Effect.gen(function* () {
        // Tiny segments, two kept: appending rotates and prunes while the server runs.
        const { server, epoch } = yield* serverWith(0, { segmentBytes: 256, retention: { segments: 2 } })
        yield* append(server, createdMany(12))
        const info = yield* status(server)
        assert.strictEqual(info.head_seq, 12)
        assert.strictEqual(info.segments, 2)
        assert.isAbove(info.oldest_seq, 2, "old segments were pruned")

        const stream = yield* openStream(streamUrl(server, "?since=0"))
        const frames = yield* stream.untilCaughtUp
        assert.deepStrictEqual(
          frames.map((f) => [f.event, f.id, f.data]),
          [
            [
              "message",
              `${epoch}:12`,
              JSON.stringify(resetData("below_retention", 0, { oldestSeq: info.oldest_seq, headSeq: 12 }))
            ],
            ["caught_up", `${epoch}:12`, `{"type":"caught_up","seq":12}`]
          ]
        )

        // The oldest retained cursor is still served in full.
        const oldest = yield* openStream(streamUrl(server, `?since=${info.oldest_seq - 1}`))
        assert.deepStrictEqual(seqsOf(yield* oldest.untilCaughtUp), range(info.oldest_seq, 12))

        const again = yield* openStream(streamUrl(server), { "last-event-id": frames[0]!.id! })
        assert.deepStrictEqual(
          (yield* again.untilCaughtUp).map((f) => f.event),
          ["caught_up"]
        )
      })
    )
  })

  describe("session filter", () => {
    it.scopedLive("delivers_only_that_sessions_events_and_progress_frames_for_the_rest", () =>
      Effect.gen(function* () {
        const { server, epoch } = yield* serverWith(0)
        const stream = yield* openStream(streamUrl(server, "?session_id=s1"))
        yield* stream.untilCaughtUp

        yield* append(server, [created("s1")])
        const own = yield* stream.next
        assert.strictEqual(own.event, "message")
        assert.strictEqual(own.id, `${epoch}:1`)
        assert.strictEqual(dataOf(own).session_id, "s1")

        // Another session's event (routed by its payload, and by the caller's session id) moves the cursor only.
        yield* append(server, [created("s2")])
        const progress = yield* stream.next
        assert.strictEqual(progress.event, "progress")
        assert.strictEqual(progress.id, `${epoch}:2`)
        assert.strictEqual(progress.data, `{"type":"progress","seq":2}`)
        yield* append(server, [{ session_id: "s2", event: { type: "complete", usage: {} } }])
        const progress3 = yield* stream.next
        assert.deepStrictEqual([progress3.event, progress3.id], ["progress", `${epoch}:3`])

        yield* append(server, [{ session_id: "s1", event: { type: "complete", usage: {} } }])
        const own4 = yield* stream.next
        assert.deepStrictEqual([own4.event, own4.id, dataOf(own4).session_id], ["message", `${epoch}:4`, "s1"])
        assert.notInclude(stream.text(), `"session_id":"s2"`)

        // Replay is filtered the same way.
        const replay = yield* openStream(streamUrl(server, "?session_id=s1&since=0"))
        const frames = yield* replay.untilCaughtUp
        assert.deepStrictEqual(seqsOf(frames), [1, 4])
        assert.isTrue(frames.every((f) => f.id !== undefined && f.id.startsWith(`${epoch}:`)))
      })
    )
  })
})
