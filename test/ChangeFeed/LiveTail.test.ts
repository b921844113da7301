/**
 * Readers parked at the live tail (`pullLines` with a `LiveTail`, as stream connections read):
 * filtered or not, whatever the tail takes or refuses, and with a live window small enough that
 * readers fall out of it and catch up from the journal, each gets exactly its events after its
 * cursor, in order, once each, and its `Progress` never passes over one of them.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { deleted, Env, follow, openFeed, seen, tempDir } from "../support/FeedTesting.js"
import { pulledWithTail } from "../support/Pulled.js"

const SESSIONS = ["a", "b", "c"] as const

describe("a reader parked at the live tail", () => {
  it.scopedLive.prop(
    "gets_exactly_its_events_in_order_once_each_whatever_the_tail_takes_and_however_far_behind_it_falls",
    {
      batches: fc.array(fc.array(fc.constantFrom(...SESSIONS), { minLength: 1, maxLength: 8 }), {
        minLength: 1,
        maxLength: 25
      }),
      openAfter: fc.nat({ max: 25 }),
      filter: fc.constantFrom(undefined, "a", "b"),
      takes: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }),
      // A few events' worth: readers fall out of the window and catch up from the journal.
      liveBufferBytes: fc.constantFrom(undefined, 4096)
    },
    ({ batches, filter, liveBufferBytes, openAfter, takes }) =>
      Effect.gen(function* () {
        const { feed } = yield* openFeed(yield* tempDir, { liveBufferBytes })
        const sessionOf: Array<string> = [""]
        const publish = (batch: ReadonlyArray<string>) =>
          Effect.gen(function* () {
            const seqs = yield* feed.publishAll(batch.map((session) => ({ event: deleted(session) })))
            seqs.forEach((seq, i) => (sessionOf[seq!] = batch[i]!))
          })
        const before = Math.min(openAfter, batches.length)
        for (const batch of batches.slice(0, before)) yield* publish(batch)
        const reader = yield* follow(pulledWithTail(takes)(feed, { since: 0, sessionId: filter }))
        for (const batch of batches.slice(before)) {
          yield* publish(batch)
          yield* Effect.yieldNow()
        }
        const head = sessionOf.length - 1
        yield* seen(reader, head)

        const expected = sessionOf.flatMap((session, seq) =>
          seq > 0 && (filter === undefined || session === filter) ? [seq] : []
        )
        const where = `filter ${filter}, takes ${takes}: ${JSON.stringify(
          reader.items.map((item) => (item._tag === "Change" ? item.change.seq : item))
        )}`
        let position = 0
        let next = 0
        for (const item of reader.items) {
          switch (item._tag) {
            case "Change":
              assert.strictEqual(item.change.seq, expected[next], `its next event, once; ${where}`)
              assert.strictEqual(item.change.session_id, sessionOf[item.change.seq], where)
              position = item.change.seq
              next++
              break
            case "Progress":
              assert.isAbove(item.seq, position, `progress moves on; ${where}`)
              assert.isTrue(next === expected.length || expected[next]! > item.seq, `nothing passed over; ${where}`)
              position = item.seq
              break
            case "CaughtUp":
              assert.strictEqual(item.seq, position, where)
              break
            case "Reset":
              assert.fail(`no reset from 0 with everything retained; ${where}`)
          }
        }
        assert.strictEqual(next, expected.length, `every event of its own; ${where}`)
        assert.strictEqual(position, Math.max(head, 0), `up to the head; ${where}`)
      }).pipe(Effect.provide(Env)),
    { timeout: 120_000, fastCheck: { numRuns: 40 } }
  )
})
