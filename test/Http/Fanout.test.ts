/**
 * Many connections on one feed, end to end on a real server and real HTTP clients over
 * loopback: a batch's frames shared by unfiltered readers next to filtered ones, a stalled
 * connection beside live ones, a reader that falls out of the live window, coalesced writes, a
 * replay behind a client that stops reading (its chunks and frame buffers reused), and shutdown
 * with a thousand open streams. Correctness only: nothing here times the server.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Metric, Option } from "effect"
import * as NodeHttp from "node:http"
import { streamBufferedBytes } from "../../src/Http.js"
import { makeSseParser, type SseFrame } from "../../src/Sse.js"
import { range } from "../support/Expected.js"
import { eventually } from "../support/Wait.js"
import {
  dataOf,
  openStream,
  post,
  seqsOf,
  socketBufferBytes,
  stalledStream,
  start,
  status,
  tempDirectory,
  type TestServer
} from "../support/Server.js"

const MiB = 1024 * 1024

const streamUrl = (server: TestServer, query = "") => `${server.url}/api/v1/stream${query}`

/** One POST of `count` events, numbered from `from`, of the sessions `sessionOf` gives, each `size` bytes of content. */
const appendBatch = (server: TestServer, from: number, count: number, sessionOf: (i: number) => string, size = 10) =>
  Effect.flatMap(
    post(`${server.url}/api/v1/events`, {
      events: Array.from({ length: count }, (_, k) => ({
        event: {
          type: "message_appended",
          session_id: sessionOf(from + k),
          message_id: `m${from + k}`,
          role: "user",
          content: "x".repeat(size)
        }
      }))
    }),
    (response) =>
      response.status === 200
        ? Effect.void
        : Effect.dieMessage(`POST /api/v1/events answered ${response.status}: ${JSON.stringify(response.body)}`)
  )

const subscribers = (server: TestServer) => Effect.map(status(server), (s) => s.subscribers)

/**
 * An SSE client that does not read until told to: its socket's buffers fill and the server's
 * writes to it wait. `resume` starts reading; every frame read is kept, in order.
 */
const pausedStream = (url: string) =>
  stalledStream(url).pipe(
    Effect.map((response) => {
      const frames: Array<SseFrame> = []
      const parse = makeSseParser((frame) => frames.push(frame))
      response.setEncoding("utf8")
      return {
        response,
        frames,
        resume: () => {
          response.on("data", (text: string) => parse(text))
          response.resume()
        }
      }
    })
  )

/** Every change frame's id is `<epoch>:<seq>` of the event it carries. */
const assertIds = (frames: ReadonlyArray<SseFrame>, epoch: string) => {
  for (const frame of frames) {
    if (frame.event !== "message") continue
    assert.strictEqual(frame.id, `${epoch}:${dataOf(frame).seq}`)
  }
}

describe("stream connections on one feed", () => {
  it.scopedLive("filtered_and_unfiltered_readers_on_one_batch_each_get_exactly_their_frames", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDirectory })
      const { epoch } = yield* status(server)
      const all = yield* Effect.forEach(range(1, 3), () => openStream(streamUrl(server)))
      const s1 = yield* openStream(streamUrl(server, "?session_id=s1"))
      const s2 = yield* openStream(streamUrl(server, "?session_id=s2"))
      yield* Effect.forEach([...all, s1, s2], (stream) => stream.untilCaughtUp)

      // One batch, its sessions interleaved, then a second one.
      const sessionOf = (i: number) => (i % 3 === 0 ? "s2" : "s1")
      yield* appendBatch(server, 1, 30, sessionOf)
      yield* appendBatch(server, 31, 10, sessionOf)

      for (const stream of all) {
        const frames = yield* stream.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === 40)
        assert.deepStrictEqual(seqsOf(frames), range(1, 40))
        assertIds(frames, epoch)
      }
      // Unfiltered connections were sent the same bytes.
      assert.strictEqual(all[1]!.text(), all[0]!.text())
      assert.strictEqual(all[2]!.text(), all[0]!.text())

      const s1Frames = yield* s1.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === 40)
      assert.deepStrictEqual(
        seqsOf(s1Frames),
        range(1, 40).filter((i) => sessionOf(i) === "s1")
      )
      assertIds(s1Frames, epoch)
      const s2Frames = yield* s2.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === 39)
      assert.deepStrictEqual(
        seqsOf(s2Frames),
        range(1, 39).filter((i) => sessionOf(i) === "s2")
      )
      assertIds(s2Frames, epoch)
      for (const [frames, session] of [
        [s1Frames, "s1"],
        [s2Frames, "s2"]
      ] as const) {
        for (const frame of frames) if (frame.event === "message") assert.strictEqual(dataOf(frame).session_id, session)
      }
    })
  )

  it.scopedLive("a_stalled_connection_next_to_live_ones_leaves_them_everything_in_order_and_stays_connected", () =>
    Effect.gen(function* () {
      const budget = 64 * 1024
      const server = yield* start({
        directory: yield* tempDirectory,
        feed: { fsync: "never" },
        http: { streamBufferBytes: budget }
      })
      const { epoch } = yield* status(server)
      const stalled = yield* pausedStream(streamUrl(server, "?since=0"))
      const live = yield* Effect.forEach(range(1, 3), () => openStream(streamUrl(server, "?since=0")))
      yield* eventually(
        `the server counts ${4} subscribers`,
        Effect.map(subscribers(server), (n) => n === 4)
      )

      // More than the stalled client's socket buffers and its connection's budget take.
      const perBatch = 200
      const batches = Math.ceil((socketBufferBytes() + 4 * MiB) / (perBatch * 1000))
      for (let b = 0; b < batches; b++) yield* appendBatch(server, b * perBatch + 1, perBatch, () => "s", 1000)
      const total = perBatch * batches

      for (const stream of live) {
        const frames = yield* stream.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === total)
        assert.deepStrictEqual(seqsOf(frames), range(1, total))
        assertIds(frames, epoch)
      }
      assert.isFalse(stalled.response.destroyed, "the stalled client is still connected")
      // Once it reads again, it is sent the rest, every event once, in order.
      stalled.resume()
      yield* eventually(
        `the stalled client receives seq ${total}`,
        Effect.sync(() => {
          const last = stalled.frames[stalled.frames.length - 1]
          return last !== undefined && last.event === "message" && dataOf(last).seq === total
        })
      )
      assert.deepStrictEqual(seqsOf(stalled.frames), range(1, total))
    })
  )

  it.scopedLive("a_reader_that_falls_out_of_the_live_window_catches_up_with_every_seq_exactly_once", () =>
    Effect.gen(function* () {
      // A live window far smaller than what is appended while the reader does not read.
      const server = yield* start({
        directory: yield* tempDirectory,
        feed: { fsync: "never", liveBufferBytes: 256 * 1024 },
        http: { streamBufferBytes: 64 * 1024 }
      })
      const { epoch } = yield* status(server)
      const behind = yield* pausedStream(streamUrl(server, "?since=0"))
      const follower = yield* openStream(streamUrl(server, "?since=0"))
      yield* eventually(
        `the server counts ${2} subscribers`,
        Effect.map(subscribers(server), (n) => n === 2)
      )
      // More than the paused client's socket buffers can take, and far more than the window.
      const perBatch = 100
      const batches = Math.ceil((socketBufferBytes() + 4 * MiB) / (perBatch * 1000))
      for (let b = 0; b < batches; b++) yield* appendBatch(server, b * perBatch + 1, perBatch, () => "s", 1000)
      const total = perBatch * batches
      yield* follower.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === total)

      behind.resume()
      yield* eventually(
        `the behind client receives seq ${total}`,
        Effect.sync(() => {
          const last = behind.frames[behind.frames.length - 1]
          return last !== undefined && last.event === "message" && dataOf(last).seq === total
        })
      )
      assert.deepStrictEqual(seqsOf(behind.frames), range(1, total))
      assertIds(behind.frames, epoch)
    })
  )

  it.scopedLive("writes_coalesced_for_a_slow_client_keep_every_frame_in_order_with_its_id", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDirectory, feed: { fsync: "never" } })
      const { epoch } = yield* status(server)
      const slow = yield* pausedStream(streamUrl(server, "?since=0"))
      yield* eventually(
        `the server counts ${1} subscribers`,
        Effect.map(subscribers(server), (n) => n === 1)
      )
      // Many small batches while the client does not read: they wait for the socket together.
      const batches = 400
      const perBatch = 5
      yield* Effect.forEach(
        range(0, batches - 1),
        (b) => appendBatch(server, b * perBatch + 1, perBatch, (i) => `s${i % 4}`, 500),
        { concurrency: 4 }
      )
      const total = batches * perBatch
      slow.resume()
      yield* eventually(
        `the slow client receives seq ${total}`,
        Effect.sync(() => {
          const last = slow.frames[slow.frames.length - 1]
          return last !== undefined && last.event === "message" && dataOf(last).seq === total
        })
      )
      assert.deepStrictEqual(seqsOf(slow.frames), range(1, total))
      assertIds(slow.frames, epoch)
    })
  )

  it.scopedLive("a_client_that_stops_reading_during_a_replay_gets_every_frame_once_with_its_own_bytes", () =>
    Effect.gen(function* () {
      // Chunks of 32 KiB make frames of the size the server renders into its pooled buffers.
      const server = yield* start({
        directory: yield* tempDirectory,
        feed: { fsync: "never", readChunkBytes: 32 * 1024 }
      })
      const { epoch } = yield* status(server)
      // Some MiB: more than a paused client's socket takes before the kernel grows its buffers
      // (it grows them only as the client reads), so the replay's frames wait for it.
      const perBatch = 200
      const batches = 40
      for (let b = 0; b < batches; b++) {
        yield* appendBatch(server, b * perBatch + 1, perBatch, (i) => `s${i % 3}`, 1000)
      }
      const total = perBatch * batches
      const slow = yield* pausedStream(streamUrl(server, "?since=0"))
      yield* eventually(
        "the replay's frames wait for the paused client",
        Effect.map(Metric.value(streamBufferedBytes), (state) => state.value > 0)
      )
      slow.resume()
      // The replay ends with the caught_up frame.
      yield* eventually(
        "the paused client is told it caught up",
        Effect.sync(() => slow.frames.some((frame) => frame.event === "caught_up"))
      )
      assert.deepStrictEqual(seqsOf(slow.frames), range(1, total))
      assertIds(slow.frames, epoch)
      // Each frame holds its own event, not bytes of another rendered over it.
      for (const frame of slow.frames) {
        if (frame.event !== "message") continue
        const data = dataOf(frame)
        assert.strictEqual(data.event.message_id, `m${data.seq}`)
        assert.strictEqual(data.session_id, `s${data.seq % 3}`)
      }
    })
  )

  it.scopedLive(
    "shutdown_with_a_thousand_open_streams_ends_them_all_and_closes",
    () =>
      Effect.gen(function* () {
        const server = yield* start({ directory: yield* tempDirectory, feed: { fsync: "never" } })
        const count = 1000
        const agent = new NodeHttp.Agent({ keepAlive: false, maxSockets: Infinity })
        yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()))
        const ended: Array<Promise<void>> = []
        yield* Effect.forEach(
          range(1, count),
          () =>
            Effect.async<void>((resume) => {
              const request = NodeHttp.get(streamUrl(server), { agent }, (response) => {
                response.resume()
                ended.push(
                  new Promise((done) => {
                    response.on("close", () => done())
                  })
                )
                resume(Effect.void)
              })
              request.on("error", (error) => resume(Effect.die(error)))
            }),
          { concurrency: 50 }
        )
        yield* eventually(
          `the server counts ${count} subscribers`,
          Effect.map(subscribers(server), (n) => n === count)
        )
        yield* appendBatch(server, 1, 10, () => "s")

        // Generous: this is a bound on hanging, not a measure of speed.
        const closed = yield* server.close.pipe(Effect.timeout("60 seconds"), Effect.option)
        assert.isTrue(Option.isSome(closed), "the server closed with a thousand streams open")
        yield* Effect.promise(() => Promise.all(ended))
        assert.strictEqual(ended.length, count)
      }),
    120_000
  )
})
