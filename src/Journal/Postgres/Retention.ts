/**
 * Retention of the PostgreSQL journal, by partitions of `feed_events`, run by one replica at a
 * time (`pg_try_advisory_lock`), which also keeps the partitions ahead of the appends.
 *
 * The oldest partition goes once more than `keepPartitions` partitions are in use: first every
 * transaction that may still write into it is waited out, then each account's `floor_seq` is
 * raised past its newest seq in it (the head rows locked in account order, as appends lock
 * them), then it is detached (`CONCURRENTLY`: appends and reads go on) and dropped. Since an
 * account's rows draw their `gpos` under its head lock, the partition holds a prefix of every
 * account's seqs: what remains is a suffix, never a range with a hole. A reader below the
 * floor gets `JournalPruned`.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Schedule } from "effect"

export interface RetentionOptions {
  /** Partitions in use to keep (undefined: keep everything). */
  readonly keepPartitions: number | undefined
  /** How often a replica tries to run it (default 10 s). */
  readonly intervalMs: number
}

const LOCK_KEY = "hashtext('feed_retention')"

type Query = <R>(text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<R>, SqlError>

/**
 * Drops partition `victim`, the oldest, after raising the floors past it. Not interrupted
 * halfway (a store closing): a cancelled `DETACH ... CONCURRENTLY` would stay pending.
 */
const dropPartition = (q: Query, victim: string) =>
  Effect.uninterruptible(
    Effect.gen(function* () {
      const [{ exists }] = (yield* q<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [
        victim
      ])) as [{ exists: boolean }]
      if (!exists) return yield* q(`DELETE FROM feed_partitions WHERE name = $1`, [victim])
      // Every gpos of the victim is drawn: wait out the transactions that drew them, committed or not.
      const [{ xid }] = (yield* q<{ xid: string }>(`SELECT pg_current_xact_id()::text AS xid`)) as [{ xid: string }]
      yield* q<{ done: boolean }>(`SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8 AS done`, [xid]).pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (rows) => rows[0]!.done })
      )
      yield* q(
        `WITH m AS (SELECT account_id, max(seq) AS max_seq FROM ${victim} GROUP BY account_id),
           locked AS (SELECT h.account_id FROM feed_heads h JOIN m USING (account_id) ORDER BY h.account_id FOR UPDATE OF h)
           UPDATE feed_heads h SET floor_seq = GREATEST(h.floor_seq, m.max_seq + 1)
           FROM m WHERE h.account_id = m.account_id AND h.account_id IN (SELECT account_id FROM locked)`
      )
      // A pass cut short (a crash, a cancelled statement) may have left the detach pending, or done.
      const [state] = yield* q<{ pending: boolean }>(
        `SELECT inhdetachpending AS pending FROM pg_inherits WHERE inhrelid = to_regclass($1)`,
        [victim]
      )
      if (state !== undefined) {
        yield* q(`ALTER TABLE feed_events DETACH PARTITION ${victim} ${state.pending ? "FINALIZE" : "CONCURRENTLY"}`)
      }
      yield* q(`DROP TABLE IF EXISTS ${victim}`)
      yield* q(`DELETE FROM feed_partitions WHERE name = $1`, [victim])
    })
  )

/**
 * One pass: creates the partitions ahead, and drops the oldest ones past `keepPartitions`.
 * Answers the partitions dropped (0 when another replica holds the lock).
 */
export const retainOnce = (sql: SqlClient, keepPartitions: number | undefined) =>
  Effect.scoped(
    Effect.gen(function* () {
      // Not interrupted while the pool connects: the connection would never go back to the pool.
      const connection = yield* Effect.uninterruptible(sql.reserve)
      const q: Query = <R>(text: string, params: ReadonlyArray<unknown> = []) =>
        connection.execute(text, params, undefined) as Effect.Effect<ReadonlyArray<R>, SqlError>
      const [{ locked }] = (yield* q<{ locked: boolean }>(`SELECT pg_try_advisory_lock(${LOCK_KEY}) AS locked`)) as [
        { locked: boolean }
      ]
      if (!locked) return 0
      yield* Effect.addFinalizer(() => Effect.ignore(q(`SELECT pg_advisory_unlock(${LOCK_KEY})`)))
      yield* q(`SELECT feed_ensure_partitions()`)
      if (keepPartitions === undefined) return 0
      let dropped = 0
      for (;;) {
        const used = yield* q<{ name: string }>(
          `SELECT name FROM feed_partitions, (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END AS next FROM feed_gpos) g
           WHERE lo < g.next ORDER BY lo`
        )
        if (used.length <= keepPartitions) return dropped
        yield* dropPartition(q, used[0]!.name)
        dropped++
      }
    })
  )

/** Runs `retainOnce` every `intervalMs` in the scope (errors are logged and retried next time). */
export const startRetention = (sql: SqlClient, options: Partial<RetentionOptions>) =>
  retainOnce(sql, options.keepPartitions).pipe(
    Effect.catchAll((error) => Effect.logWarning("journal retention failed; retrying later", error)),
    Effect.repeat(Schedule.spaced(options.intervalMs ?? 10_000)),
    Effect.forkScoped,
    Effect.asVoid
  )
