/**
 * The PostgreSQL journal backend: the journals of many accounts in one database, shared by
 * several replicas of the service, each account with its own gapless seq.
 *
 * `store` opens the database (a pool, the migrations, the epoch), starts the replica's
 * committer (one append statement in flight, group commit across accounts; see
 * `Postgres/Append.ts`), its hub (heads other replicas reach; `Postgres/Hub.ts`) and retention
 * (`Postgres/Retention.ts`), and answers a `JournalStore` whose journals read in keyset pages,
 * producing the exact wire bytes the file backend produces for the same event.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClientTag from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Chunk, Deferred, Effect, Option, Redacted, Ref, Schedule, type Schema, type Scope, Stream } from "effect"
import type { AccountId } from "../Domain/Account.js"
import { newEpochId } from "./Epoch.js"
import { JournalCorrupt, JournalIoError, JournalPruned, type JournalReadError } from "./Errors.js"
import { bodyAt, makeLineCodec } from "./Lines.js"
import { type AppendFailed, batchOutcome, makeCommitter, type Submission } from "./Postgres/Append.js"
import { makeHub } from "./Postgres/Hub.js"
import { startRetention, type RetentionOptions } from "./Postgres/Retention.js"
import { ensurePartitions, migrate } from "./Postgres/Schema.js"
import {
  type Appended,
  cleanRecovery,
  type Journal,
  type JournalEntry,
  type JournalEvent,
  type JournalInfo,
  type JournalLine,
  type JournalStore,
  numbered
} from "../Journal.js"

export interface PostgresOptions {
  /** `postgres://user:password@host:port/database` */
  readonly url: string
  /** Pool size (default 10). */
  readonly maxConnections?: number | undefined
  /** Period of the head poll backing the LISTEN hints (default 500 ms). */
  readonly pollMs?: number | undefined
  /** Events per partition of `feed_events`, fixed when the database is first set up (default 10M). */
  readonly partitionRows?: number | undefined
  /** Rows per page of a read (default 5,000). */
  readonly pageRows?: number | undefined
  readonly retention?: Partial<RetentionOptions> | undefined
}

/** The url without its password, for messages. */
export const describe = (url: string): string => {
  try {
    const u = new URL(url)
    return `postgres://${u.host}${u.pathname}`
  } catch {
    return "postgres://(unparsable url)"
  }
}

const DEFAULT_PARTITION_ROWS = 10_000_000
const SEQ_OPEN = '{"seq":'

/** The store's epoch: the one in `feed_meta`, or a new one when the server's timeline changed (a failover). */
const currentEpoch = (sql: SqlClient, partitionRows: number) =>
  Effect.gen(function* () {
    const [{ timeline }] = (yield* sql.unsafe<{ timeline: string }>(
      `SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS timeline`
    )) as unknown as [{ timeline: string }]
    yield* sql.unsafe(
      `INSERT INTO feed_meta (epoch, timeline, partition_rows) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
      [newEpochId(), timeline, partitionRows]
    )
    // A failover with asynchronous replication can lose acknowledged commits: seqs may be handed out again.
    yield* sql.unsafe(
      `UPDATE feed_meta SET epoch = $1, timeline = $2, updated_at = now() WHERE timeline IS DISTINCT FROM $2`,
      [newEpochId(), timeline]
    )
    const rows = yield* sql.unsafe<{ epoch: string }>(`SELECT epoch FROM feed_meta`)
    return rows[0]!.epoch
  })

interface HeadRow {
  readonly head: number
  readonly floor: number
}

/** What a journal remembers of an append whose answer was lost, for the retry of the same array. */
interface Unanswered {
  readonly batchId: string
  readonly after: number
}

/**
 * Opens the store: the pool, the migrations, the epoch, the committer, the hub and retention,
 * all closed with the scope.
 */
export const store = (
  options: PostgresOptions
): Effect.Effect<JournalStore & { readonly epoch: string }, JournalIoError, Scope.Scope> =>
  Effect.gen(function* () {
    const location = describe(options.url)
    const io = (operation: string) => (cause: unknown) => new JournalIoError({ operation, path: location, cause })
    const sql = yield* PgClient.make({
      url: Redacted.make(options.url),
      maxConnections: options.maxConnections ?? 10,
      applicationName: "change-feed"
    }).pipe(Effect.provide(Reactivity.layer), Effect.mapError(io("connect")))
    yield* migrate.pipe(
      Effect.provideService(PgClient.PgClient, sql),
      Effect.provideService(SqlClientTag.SqlClient, sql),
      Effect.mapError(io("migrate"))
    )
    const epoch = yield* currentEpoch(sql, options.partitionRows ?? DEFAULT_PARTITION_ROWS).pipe(
      Effect.mapError(io("read the epoch"))
    )
    yield* ensurePartitions(sql).pipe(Effect.mapError(io("create partitions")))
    const stale = yield* Ref.make(false)
    const committer = yield* makeCommitter(sql)
    const hub = yield* makeHub(sql, {
      url: options.url,
      pollMs: options.pollMs ?? 500,
      onConnect: currentEpoch(sql, 1).pipe(
        Effect.flatMap((now) => (now === epoch ? Effect.void : Ref.set(stale, true))),
        Effect.ignore
      )
    })
    yield* startRetention(sql, options.retention ?? {})
    const pageRows = options.pageRows ?? 5000

    const headRow = (account: string): Effect.Effect<HeadRow, SqlError> =>
      sql
        .unsafe<{ head: string; floor_seq: string }>(
          `SELECT head::text AS head, floor_seq::text AS floor_seq FROM feed_heads WHERE account_id = $1`,
          [account]
        )
        .pipe(
          Effect.map((rows) =>
            rows.length === 0
              ? { head: 0, floor: 1 }
              : { head: Number(rows[0]!.head), floor: Number(rows[0]!.floor_seq) }
          )
        )

    const open = <A, I>(schema: Schema.Schema<A, I>, account: AccountId) =>
      Effect.gen(function* () {
        const where = `${location}#${account}`
        const ioHere = (operation: string) => (cause: unknown) => new JournalIoError({ operation, path: where, cause })
        const codec = makeLineCodec(schema)
        const start = yield* headRow(account).pipe(Effect.mapError(ioHere("open")))
        let head = start.head
        const heads = yield* hub.watch(account, head)
        const unanswered = new WeakMap<ReadonlyArray<JournalEntry<A>>, Unanswered>()

        const answer = (entries: ReadonlyArray<JournalEntry<A>>, first: number): Appended<A> => {
          const events = numbered(entries, first)
          return { events, lines: codec.encodeBatch(events, entries) }
        }
        const advanced = (first: number, count: number) =>
          Effect.suspend(() => {
            head = Math.max(head, first + count - 1)
            return hub.appended(account, first, first + count - 1)
          })

        const send = (entries: ReadonlyArray<JournalEntry<A>>) =>
          Effect.gen(function* () {
            // The wire JSON less its `{"seq":N` prefix, which the statement's seq completes (the
            // entries are encoded numbered from 0, so entry i's prefix is `{"seq":i`).
            const unnumbered = codec.encodeBatch(numbered(entries, 0), entries)
            const payloads = entries.map((_, i) =>
              Buffer.from(bodyAt(unnumbered, i).subarray(SEQ_OPEN.length + String(i).length)).toString("utf8")
            )
            const done = yield* Deferred.make<number, AppendFailed>()
            const submission: Submission = {
              account,
              payloads,
              sessionIds: entries.map((e) => e.session_id ?? null),
              keys: entries.map((e) => e.key ?? null),
              done
            }
            const after = head
            return yield* committer.submit(submission).pipe(
              Effect.tapError((failed) =>
                Effect.sync(() => {
                  if (failed.sent) unanswered.set(entries, { batchId: failed.batchId, after })
                })
              ),
              // Interrupted once sent, the statement may still commit: a retry finds out first.
              Effect.onInterrupt(() =>
                Effect.sync(() => {
                  const batchId = submission.batchId
                  if (batchId !== undefined) unanswered.set(entries, { batchId, after })
                })
              ),
              Effect.mapError((failed) =>
                ioHere(failed.sent ? "append (outcome unknown: retry it to find out)" : "append")(failed.cause)
              )
            )
          })

        const append = (entries: ReadonlyArray<JournalEntry<A>>): Effect.Effect<Appended<A>, JournalIoError> =>
          Effect.gen(function* () {
            if (entries.length === 0) return { events: [], lines: codec.encodeBatch([]) }
            if (yield* Ref.get(stale)) {
              return yield* ioHere("append")(
                "the database server's timeline changed (a failover): the journal has a new epoch; restart this replica"
              )
            }
            const lost = unanswered.get(entries)
            if (lost !== undefined) {
              const outcome = yield* batchOutcome(sql, lost.batchId, account, lost.after, entries.length).pipe(
                Effect.mapError(ioHere("append (finding out whether the previous attempt committed)"))
              )
              unanswered.delete(entries)
              if (outcome.committed) {
                yield* advanced(outcome.first, entries.length)
                return answer(entries, outcome.first)
              }
            }
            const first = yield* send(entries)
            yield* advanced(first, entries.length)
            return answer(entries, first)
          })

        /** Rows `since < seq <= upTo` in keyset pages, checked contiguous from `since + 1`. */
        const rows = (since: number, upTo: number | undefined) =>
          Stream.unwrap(
            Effect.gen(function* () {
              const now = yield* headRow(account).pipe(Effect.mapError(ioHere("read")))
              const to = Math.min(upTo ?? now.head, now.head)
              if (since >= to) return Stream.empty
              if (since + 1 < now.floor) return yield* new JournalPruned({ requested: since + 1, oldest: now.floor })
              const page = (after: number) =>
                sql
                  .unsafe<{ seq: string; session_id: string | null; key: string | null; payload: string }>(
                    `SELECT seq, session_id, key, payload FROM feed_events
                     WHERE account_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4`,
                    [account, after, to, pageRows]
                  )
                  .pipe(Effect.mapError(ioHere("read")))
              const missing = (expected: number): Effect.Effect<never, JournalReadError> =>
                headRow(account).pipe(
                  Effect.mapError(ioHere("read")),
                  Effect.flatMap((again): Effect.Effect<never, JournalReadError> =>
                    expected < again.floor
                      ? Effect.fail(new JournalPruned({ requested: expected, oldest: again.floor }))
                      : Effect.fail(
                          new JournalCorrupt({ file: where, offset: expected, reason: `seq ${expected} is missing` })
                        )
                  )
                )
              return Stream.paginateChunkEffect(since, (after) =>
                Effect.gen(function* () {
                  const found = yield* page(after)
                  let expected = after + 1
                  for (const r of found) {
                    if (Number(r.seq) !== expected) return yield* missing(expected)
                    expected++
                  }
                  const last = expected - 1
                  if (found.length < pageRows && last < to) return yield* missing(expected)
                  return [found, last < to ? Option.some(last) : Option.none<number>()] as const
                }).pipe(Effect.map(([found, next]) => [Chunk.unsafeFromArray(found), next] as const))
              )
            })
          )

        const readLines = (since: number, upTo?: number): Stream.Stream<JournalLine, JournalReadError> =>
          rows(since, upTo).pipe(
            Stream.map((r): JournalLine => ({
              _tag: "Change",
              seq: Number(r.seq),
              sessionId: r.session_id ?? undefined,
              body: Buffer.from(`{"seq":${r.seq}${r.payload}`, "utf8"),
              key: r.key ?? undefined
            }))
          )

        const read = (since: number, upTo?: number): Stream.Stream<JournalEvent<A>, JournalReadError> =>
          rows(since, upTo).pipe(
            Stream.mapEffect((r) => {
              const decoded = codec.decodeLine(`{"seq":${r.seq}${r.payload}}`)
              return typeof decoded === "string"
                ? Effect.fail(new JournalCorrupt({ file: where, offset: Number(r.seq), reason: decoded }))
                : Effect.succeed(r.key === null ? decoded : { ...decoded, key: r.key })
            })
          )

        const info = Effect.gen(function* () {
          const now = yield* headRow(account)
          const [size] = yield* sql.unsafe<{ segments: number; bytes: string }>(
            `SELECT count(*)::int AS segments, coalesce(sum(pg_total_relation_size(to_regclass(name))), 0)::text AS bytes FROM feed_partitions`
          )
          return {
            headSeq: Math.max(head, now.head),
            oldestSeq: Math.min(now.floor, now.head + 1),
            epoch,
            segments: size!.segments,
            bytes: Number(size!.bytes),
            fsync: "always"
          } satisfies JournalInfo
        }).pipe(
          Effect.orElse(() =>
            Effect.succeed({
              headSeq: head,
              oldestSeq: head + 1,
              epoch,
              segments: 0,
              bytes: 0,
              fsync: "always"
            } satisfies JournalInfo)
          )
        )

        // A key's events, once every append statement already running (on any replica) has ended:
        // one of them may be the first attempt of the request this key is asked for.
        const seqsOfKey = (key: string): Effect.Effect<ReadonlyArray<number>, JournalIoError> =>
          Effect.gen(function* () {
            const [{ since }] = (yield* sql.unsafe<{ since: string }>(
              `SELECT clock_timestamp()::text AS since`
            )) as unknown as [{ since: string }]
            yield* sql
              .unsafe<{ running: number }>(
                `SELECT count(*)::int AS running FROM pg_stat_activity
                 WHERE state <> 'idle' AND pid <> pg_backend_pid() AND query LIKE '/* feed batch %'
                   AND query_start < $1::timestamptz`,
                [since]
              )
              .pipe(Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (rows) => rows[0]!.running === 0 }))
            const rows = yield* sql.unsafe<{ seq: string }>(
              `SELECT seq FROM feed_events WHERE account_id = $1 AND key = $2 ORDER BY seq`,
              [account, key]
            )
            return rows.map((row) => Number(row.seq))
          }).pipe(Effect.mapError(ioHere("look up an idempotency key")))

        const journal: Journal<A> = {
          location: where,
          epoch,
          recovery: cleanRecovery,
          headSeq: Effect.sync(() => head),
          info,
          append,
          read,
          readLines,
          // What other replicas committed is durable too: the head readers replay to includes it.
          foreignHeads: Stream.tap(heads, (reached) => Effect.sync(() => (head = Math.max(head, reached)))),
          seqsOfKey
        }
        return journal
      })

    const accounts = sql
      .unsafe<{ account_id: string }>(`SELECT account_id FROM feed_heads ORDER BY account_id COLLATE "C"`)
      .pipe(
        Effect.map((rows) => rows.map((r) => r.account_id as AccountId)),
        // As for files: an unreadable store lists no account (opening one reports the fault).
        Effect.catchAll((error) =>
          Effect.as(Effect.logWarning(`could not list the accounts in ${location}`, error), [])
        )
      )

    return { location, epoch, open, accounts }
  })
