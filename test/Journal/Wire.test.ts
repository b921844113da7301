/**
 * What the journal keeps for itself never reaches a reader: lines stored with an idempotency
 * key and a checksum, and a line of an earlier version with raw U+2028/U+2029, served by a
 * real server over `GET /api/v1/stream` (the lines path, which copies bodies without parsing)
 * and `GET /api/v1/events` (the decoded path), and to the feed's own readers: each event is the
 * `ChangeEvent` alone, with its line separators escaped on the stream.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import * as NFs from "node:fs"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import * as Journal from "../../src/Journal.js"
import * as FileJournal from "../../src/Journal/File.js"
import { Env, openFeed } from "../support/FeedTesting.js"
import { dataOf, openStream, request, seqsOf, start, tempDirectory } from "../support/Server.js"

const deleted = (seq: number, key?: string): Journal.JournalEvent<AgentEvent> => ({
  seq,
  ts: "2026-11-27T10:00:00.000Z",
  session_id: `s${seq}`,
  event: { type: "session_deleted", session_id: `s${seq}` },
  ...(key === undefined ? {} : { key })
})

const WIRE_KEYS = ["seq", "ts", "session_id", "event"]

describe("the wire", () => {
  it.scopedLive("readers_get_the_change_event_alone_never_the_key_or_the_checksum", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* FileJournal.make(AgentEvent, { directory })
          yield* journal.append([deleted(1, "req-1"), deleted(2)])
          yield* journal.append([deleted(3, "req-2:0")])
        })
      ).pipe(Effect.provide(NodeContext.layer))
      // A line an earlier version wrote: no checksum, a raw U+2028 and U+2029 in a string.
      NFs.appendFileSync(
        `${directory}/events-00000000000000000001.jsonl`,
        `{"seq":4,"ts":"2026-11-27T10:00:00.000Z","session_id":"s4","event":{"type":"session_title_updated","session_id":"s4","title":"a\u2028b\u2029c"}}\n`
      )
      const onDisk = NFs.readFileSync(`${directory}/events-00000000000000000001.jsonl`, "utf8")
      assert.include(onDisk, `"key":"req-1"`, "the key is stored")
      assert.include(onDisk, `"crc":"`, "the checksum is stored")

      const server = yield* start({ directory })
      const stream = yield* openStream(`${server.url}/api/v1/stream?since=0`)
      const frames = yield* stream.untilCaughtUp
      assert.deepStrictEqual(seqsOf(frames), [1, 2, 3, 4])
      const changes = frames.filter((f) => f.event === "message").map((f) => f.data)
      for (const data of changes) {
        assert.deepStrictEqual(Object.keys(JSON.parse(data)), WIRE_KEYS, data)
        assert.notMatch(data, /[\u2028\u2029]/, "no raw line separator on the stream")
      }
      assert.include(changes[3]!, "a\\u2028b\\u2029c")
      assert.strictEqual(dataOf(frames[3]!).event.title, "a\u2028b\u2029c", "the same JSON")

      const page = yield* request(`${server.url}/api/v1/events?since=0`)
      assert.strictEqual(page.status, 200)
      const events = (page.body as { events: Array<Record<string, unknown>> }).events
      assert.deepStrictEqual(
        events.map((e) => e.seq),
        [1, 2, 3, 4]
      )
      for (const event of events) assert.deepStrictEqual(Object.keys(event), WIRE_KEYS, JSON.stringify(event))
    })
  )

  it.scoped("feed_items_carry_the_change_without_the_key_it_was_journaled_with", () =>
    Effect.gen(function* () {
      const directory = yield* tempDirectory
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* FileJournal.make(AgentEvent, { directory })
          yield* journal.append([deleted(1, "req-1"), deleted(2)])
        })
      )
      const { feed } = yield* openFeed(directory)
      const items = yield* feed.changes({ since: 0 }).pipe(
        Stream.takeUntil((item) => item._tag === "CaughtUp"),
        Stream.runCollect
      )
      const changes = Chunk.toArray(items).flatMap((item) => (item._tag === "Change" ? [item.change] : []))
      assert.deepStrictEqual(changes, [
        { seq: 1, ts: "2026-11-27T10:00:00.000Z", session_id: "s1", event: deleted(1).event },
        { seq: 2, ts: "2026-11-27T10:00:00.000Z", session_id: "s2", event: deleted(2).event }
      ])
      assert.isFalse("key" in changes[0]!)
    }).pipe(Effect.provide(Env))
  )
})
