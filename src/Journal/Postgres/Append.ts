/**
 * Appending to the PostgreSQL journal: one statement per batch, and the replica's committer.
 *
 * The statement takes the batch as parallel arrays in submission order and, in one autocommit
 * statement, bumps each account's head in `feed_heads` (rows locked in account order, so that
 * overlapping batches of several replicas never deadlock), numbers the events
 * `head - n + row_number()`, inserts them, and sends one `pg_notify('feed', 'acct:head,...')`
 * (`*` when the list would not fit a notification). The head row stays locked until the commit,
 * so per account the commit order is the seq order and a reader of `seq > cursor` never misses
 * a row that commits late.
 *
 * The committer keeps one statement in flight per replica (two could invert one producer's
 * order): what the open journals submit while one runs is merged into the next (group commit
 * across accounts), and each submission is answered with its own first seq.
 *
 * A statement whose answer was lost (connection gone after sending) may have committed. Its
 * rows carry the statement's batch id, and its text starts with a comment naming the batch, so
 * `batchOutcome` can wait until no backend still runs it and then look the rows up.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Deferred, Effect, Option, Queue, Schedule } from "effect"
import * as Crypto from "node:crypto"
import { ensurePartitions, NO_PARTITION } from "./Schema.js"

/** One journal's batch: its account and each event's stored columns, in order. */
export interface Submission {
  readonly account: string
  readonly payloads: ReadonlyArray<string>
  readonly sessionIds: ReadonlyArray<string | null>
  readonly keys: ReadonlyArray<string | null>
  /** The statement's batch id, set when the committer sends it (for the outcome check). */
  batchId?: string
  /** Its appender stopped waiting before it was sent: it is not sent. */
  cancelled?: boolean
  readonly done: Deferred.Deferred<number, AppendFailed>
}

/** The statement carrying a submission failed; `sent` when its outcome is unknown. */
export interface AppendFailed {
  readonly batchId: string
  readonly sent: boolean
  readonly cause: unknown
}

/** The notification payload is at most 8,000 bytes; past this, `*` tells listeners to poll every account. */
const NOTIFY_LIMIT = 7900

/** The statement, tagged with its batch id (a uuid, so the text needs no quoting). */
export const appendStatement = (batchId: string) => `/* feed batch ${batchId} */
WITH input AS (
  SELECT account_id, payload, session_id, key, ord
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS i(account_id, payload, session_id, key, ord)
), counts AS (
  SELECT account_id, count(*) AS n FROM input GROUP BY account_id
), bumped AS (
  INSERT INTO feed_heads AS h (account_id, head)
  SELECT account_id, n FROM counts ORDER BY account_id
  ON CONFLICT (account_id) DO UPDATE SET head = h.head + EXCLUDED.head, updated_at = now()
  RETURNING h.account_id, h.head
), numbered AS (
  SELECT i.account_id, i.payload, i.session_id, i.key,
         b.head - c.n + row_number() OVER (PARTITION BY i.account_id ORDER BY i.ord) AS seq
  FROM input i JOIN bumped b USING (account_id) JOIN counts c USING (account_id)
), inserted AS (
  INSERT INTO feed_events (account_id, seq, session_id, key, batch_id, payload)
  SELECT account_id, seq, session_id, key, '${batchId}'::uuid, payload FROM numbered ORDER BY account_id, seq
  RETURNING 1
), notified AS (
  SELECT pg_notify('feed', CASE WHEN length(list) > ${NOTIFY_LIMIT} THEN '*' ELSE list END) AS sent
  FROM (SELECT string_agg(account_id || ':' || head, ',') AS list FROM bumped) l
)
SELECT b.account_id, b.head::text AS head, (SELECT count(*) FROM inserted)::int AS inserted, (SELECT count(*) FROM notified)::int AS notified
FROM bumped b`

/** The SQLSTATE of a server error, when the server answered with one. */
const sqlState = (error: SqlError): string | undefined => {
  const cause = error.cause as { code?: unknown; severity?: unknown } | undefined
  return typeof cause?.code === "string" && typeof cause.severity === "string" ? cause.code : undefined
}

/**
 * Whether a failed statement certainly did not commit: it never left this process (no
 * connection), or the server answered it with an error other than losing its session.
 */
const certainlyFailed = (error: SqlError): boolean => {
  const state = sqlState(error)
  if (state !== undefined) return !state.startsWith("57P") && !state.startsWith("08")
  return error.message.startsWith("Failed to acquire connection")
}

/** The most events one statement carries (bigger submissions go alone). */
const MAX_STATEMENT_EVENTS = 10_000

/**
 * Starts the replica's committer in the scope; answers the function journals submit through.
 * A submission's `done` gets its first seq (its seqs are that and the following ones).
 */
export const makeCommitter = (sql: SqlClient) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Submission>()
    yield* Effect.addFinalizer(() => Queue.shutdown(queue))

    const run = (batchId: string, columns: ReadonlyArray<ReadonlyArray<string | null>>) => {
      const statement = sql.unsafe<{ account_id: string; head: string }>(appendStatement(batchId), columns)
      // A statement that reached no partition inserted nothing: create the partitions, run it again.
      return statement.pipe(
        Effect.catchIf(
          (error) => sqlState(error) === NO_PARTITION,
          () => Effect.zipRight(ensurePartitions(sql), statement)
        )
      )
    }

    const commit = (batch: ReadonlyArray<Submission>) =>
      Effect.gen(function* () {
        const batchId = Crypto.randomUUID()
        const accounts: Array<string> = []
        const payloads: Array<string> = []
        const sessions: Array<string | null> = []
        const keys: Array<string | null> = []
        for (const sub of batch) {
          sub.batchId = batchId
          for (let i = 0; i < sub.payloads.length; i++) {
            accounts.push(sub.account)
            payloads.push(sub.payloads[i]!)
            sessions.push(sub.sessionIds[i]!)
            keys.push(sub.keys[i]!)
          }
        }
        // Never interrupted halfway: a cancelled statement's outcome would be unknown for nothing.
        const rows = yield* Effect.uninterruptible(Effect.either(run(batchId, [accounts, payloads, sessions, keys])))
        if (rows._tag === "Left") {
          const failure: AppendFailed = { batchId, sent: !certainlyFailed(rows.left), cause: rows.left }
          yield* Effect.forEach(batch, (sub) => Deferred.fail(sub.done, failure), { discard: true })
          return
        }
        // Each account's head after the statement, less what the statement added: the seqs start after it.
        const next = new Map<string, number>()
        const counts = new Map<string, number>()
        for (const sub of batch) counts.set(sub.account, (counts.get(sub.account) ?? 0) + sub.payloads.length)
        for (const row of rows.right) next.set(row.account_id, Number(row.head) - counts.get(row.account_id)! + 1)
        for (const sub of batch) {
          const first = next.get(sub.account)!
          next.set(sub.account, first + sub.payloads.length)
          yield* Deferred.succeed(sub.done, first)
        }
      })

    const loop = Effect.gen(function* () {
      const batch: Array<Submission> = []
      let events = 0
      while (events < MAX_STATEMENT_EVENTS) {
        const next = batch.length === 0 ? yield* Queue.take(queue) : Option.getOrUndefined(yield* Queue.poll(queue))
        if (next === undefined) break
        if (next.cancelled) continue
        batch.push(next)
        events += next.payloads.length
      }
      if (batch.length > 0) yield* commit(batch)
    }).pipe(Effect.forever)
    yield* Effect.forkScoped(loop)

    return {
      /**
       * Sends `sub` with the next statement and answers its first seq. An appender that stops
       * waiting (interrupted) before it is sent withdraws it; after, the outcome is `sub.batchId`'s.
       */
      submit: (sub: Submission) =>
        Queue.offer(queue, sub).pipe(
          Effect.zipRight(Deferred.await(sub.done)),
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              if (sub.batchId === undefined) sub.cancelled = true
            })
          )
        )
    }
  })

/** Where an append whose answer was lost stands: committed with these seqs, or not at all. */
export type Outcome = { readonly committed: true; readonly first: number } | { readonly committed: false }

/**
 * The outcome of batch `batchId` for `account` (`count` events, seqs above `after`): waits until
 * no backend still runs the statement (a statement whose client vanished can still commit), then
 * looks its rows up.
 */
export const batchOutcome = (sql: SqlClient, batchId: string, account: string, after: number, count: number) =>
  Effect.gen(function* () {
    const tag = `/* feed batch ${batchId} */%`
    yield* sql
      .unsafe<{ running: number }>(
        `SELECT count(*)::int AS running FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid() AND query LIKE $1`,
        [tag]
      )
      .pipe(Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (rows) => rows[0]!.running === 0 }))
    const rows = yield* sql.unsafe<{ first: string | null; n: number }>(
      `SELECT min(seq)::text AS first, count(*)::int AS n FROM feed_events WHERE account_id = $1 AND seq > $2 AND batch_id = $3::uuid`,
      [account, after, batchId]
    )
    const found = rows[0]!
    if (found.n === 0) return { committed: false } as Outcome
    if (found.n !== count) {
      return yield* Effect.die(new Error(`batch ${batchId} holds ${found.n} rows of ${account}, not ${count}`))
    }
    return { committed: true, first: Number(found.first) } as Outcome
  })
