/**
 * Retention and resume of the PostgreSQL journal: partitions dropped under load leave every
 * account's retained range a suffix (no hole), a read from below the floor is refused as pruned,
 * and the epoch holds across restarts but changes with the server's timeline (a failover).
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Reactivity from "@effect/experimental/Reactivity"
import { PgClient } from "@effect/sql-pg"
import { Chunk, Effect, Either, Fiber, Redacted, Ref, Stream } from "effect"
import type { AccountId } from "../../src/Domain/Account.js"
import * as Postgres from "../../src/Journal/Postgres.js"
import { retainOnce } from "../../src/Journal/Postgres/Retention.js"
import { Note, note } from "../support/Notes.js"
import { type PgServer, query, runPostgresTests, startPostgres } from "../support/Postgres.js"

let server: PgServer
let databases = 0
const freshUrl = () => server.createDatabase(`k${++databases}`)

interface Range {
  readonly account_id: string
  readonly floor: number
  readonly head: number
  /** Rows at or above the floor. */
  readonly retained: number
  readonly lowest: number | null
}

const ranges = (url: string) =>
  Effect.promise(() =>
    query<{ account_id: string; floor: string; head: string; retained: number; lowest: string | null }>(
      url,
      `SELECT h.account_id, h.floor_seq::text AS floor, h.head::text AS head,
              count(e.seq) FILTER (WHERE e.seq >= h.floor_seq)::int AS retained, min(e.seq)::text AS lowest
       FROM feed_heads h LEFT JOIN feed_events e USING (account_id) GROUP BY h.account_id, h.floor_seq, h.head`
    )
  ).pipe(
    Effect.map((rows) =>
      rows.map((r): Range => ({
        account_id: r.account_id,
        floor: Number(r.floor),
        head: Number(r.head),
        retained: r.retained,
        lowest: r.lowest === null ? null : Number(r.lowest)
      }))
    )
  )

describe.runIf(runPostgresTests())("Postgres journal retention and resume", () => {
  beforeAll(async () => {
    server = await startPostgres()
  })
  afterAll(() => server?.destroy())

  it.live("retention_under_load_leaves_each_accounts_retained_range_a_suffix", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      const options = { url, pollMs: 100, partitionRows: 40, retention: { keepPartitions: 2, intervalMs: 30 } }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const store = yield* Postgres.store(options)
          const journals = yield* Effect.forEach(["k1", "k2", "k3"], (a) => store.open(Note, a as AccountId))
          const writing = yield* Effect.forEach(
            Array.from({ length: 120 }, (_, round) => round),
            (round) =>
              Effect.forEach(
                journals,
                (j, i) =>
                  j.append(
                    Array.from({ length: 1 + ((round + i) % 5) }, (_, k) => ({ ts: "t", event: note(`${round}-${k}`) }))
                  ),
                { concurrency: "unbounded", discard: true }
              ),
            { discard: true }
          ).pipe(Effect.fork)
          const checks = yield* Ref.make(0)
          // While the writer and retention run: above each floor, every seq up to the head is there.
          const checking = yield* Effect.gen(function* () {
            for (const r of yield* ranges(url)) {
              assert.strictEqual(r.retained, r.head - r.floor + 1, `a hole in ${r.account_id}: ${JSON.stringify(r)}`)
            }
            // A read is contiguous from where it starts, or refused as pruned.
            const read = yield* Stream.runCollect(journals[0]!.readLines(0)).pipe(Effect.either)
            if (Either.isRight(read)) {
              const seqs = Chunk.toReadonlyArray(read.right).map((l) => l.seq)
              seqs.forEach((s, i) => assert.strictEqual(s, i + 1))
            } else {
              assert.strictEqual(read.left._tag, "JournalPruned")
            }
            yield* Ref.update(checks, (n) => n + 1)
          }).pipe(Effect.forever, Effect.fork)
          yield* Fiber.join(writing)
          yield* Fiber.interrupt(checking)
          assert.isAbove(yield* Ref.get(checks), 0)
          assert.isTrue(
            (yield* ranges(url)).some((r) => r.floor > 1),
            "nothing was dropped under load"
          )
        })
      )
      // Once more with no load: the oldest partitions go, and what is left starts at each floor.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const sql = yield* PgClient.make({ url: Redacted.make(url) }).pipe(Effect.provide(Reactivity.layer))
          yield* retainOnce(sql, 2)
        })
      )
      const after = yield* ranges(url)
      assert.isTrue(
        after.some((r) => r.floor > 1),
        "retention dropped nothing"
      )
      for (const r of after) {
        assert.strictEqual(r.retained, r.head - r.floor + 1)
        assert.strictEqual(r.lowest, r.floor, `rows below the floor of ${r.account_id} remain`)
      }
      yield* Effect.scoped(
        Effect.gen(function* () {
          const store = yield* Postgres.store({ url })
          const j = yield* store.open(Note, "k1" as AccountId)
          const r = after.find((x) => x.account_id === "k1")!
          const pruned = yield* Stream.runCollect(j.readLines(r.floor - 2)).pipe(Effect.flip)
          assert.strictEqual(pruned._tag, "JournalPruned")
          const kept = Chunk.toReadonlyArray(yield* Stream.runCollect(j.readLines(r.floor - 1)))
          assert.strictEqual(kept[0]!.seq, r.floor)
          assert.strictEqual(kept.length, r.head - r.floor + 1)
          const info = yield* j.info
          assert.strictEqual(info.oldestSeq, r.floor)
          // Seqs continue past retention: never reused.
          const next = yield* j.append([{ ts: "t", event: note("after") }])
          assert.strictEqual(next.events[0]!.seq, r.head + 1)
        })
      )
    })
  )

  it.live("the_epoch_holds_across_restarts_and_changes_with_the_servers_timeline", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      const epochOf = Effect.scoped(Effect.map(Postgres.store({ url }), (s) => s.epoch))
      const first = yield* epochOf
      assert.strictEqual(yield* epochOf, first)
      // What a promoted standby looks like from here: the timeline in the WAL file names moved on.
      yield* Effect.promise(() => query(url, `UPDATE feed_meta SET timeline = 'FFFFFFFF'`))
      const afterFailover = yield* epochOf
      assert.notStrictEqual(afterFailover, first)
      assert.strictEqual(yield* epochOf, afterFailover)
    })
  )
})
