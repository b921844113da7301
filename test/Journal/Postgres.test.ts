/**
 * The PostgreSQL journal against a real server: the append invariants (gapless per account,
 * head = count = max, many accounts in one statement), the wire bytes, reads and resume, an
 * append whose answer was lost, and heads passed between replicas.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Fiber, Schedule, Scope, Stream } from "effect"
import * as Pg from "pg"
import type { AccountId } from "../../src/Domain/Account.js"
import { NodeContext } from "@effect/platform-node"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as FileJournal from "../../src/Journal/File.js"
import { bodyAt } from "../../src/Journal/Lines.js"
import * as Postgres from "../../src/Journal/Postgres.js"
import type { JournalEntry, JournalLine, JournalStore } from "../../src/Journal.js"
import { type Note as NoteType, Note, note } from "../support/Notes.js"
import { type PgServer, query, runPostgresTests, startPostgres } from "../support/Postgres.js"
import { cutProxy, type Proxy } from "../support/PgProxy.js"

const account = (id: string) => id as AccountId
const entries = (prefix: string, count: number, extra: Partial<JournalEntry<NoteType>> = {}) =>
  Array.from({ length: count }, (_, i): JournalEntry<NoteType> => ({
    ts: "2026-11-29T10:00:00.000Z",
    event: note(`${prefix}${i}`),
    ...extra
  }))

let server: PgServer
let databases = 0
/** A fresh database for one test. */
const freshUrl = () => server.createDatabase(`t${++databases}`)

/** Runs `use` with a store on `url`, closed afterwards. */
const withStore = <X, E>(
  url: string,
  use: (store: JournalStore) => Effect.Effect<X, E, Scope.Scope>,
  options: Omit<Postgres.PostgresOptions, "url"> = {}
) => Effect.scoped(Effect.flatMap(Postgres.store({ url, pollMs: 100, ...options }), use))

// On the live clock: the store's own waits (the outcome of a lost answer, the hub's polls) are real
// time against a real server, and would never end on the test clock.
describe.runIf(runPostgresTests())("Postgres journal", () => {
  beforeAll(async () => {
    server = await startPostgres()
  })
  afterAll(() => server?.destroy())

  it.live("appends_gapless_seqs_per_account_and_the_head_is_the_count_and_the_max", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      yield* withStore(url, (store) =>
        Effect.gen(function* () {
          const a = yield* store.open(Note, account("a"))
          const b = yield* store.open(Note, account("b"))
          const appended = yield* Effect.all(
            Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).append(entries(`x${i}-`, 1 + (i % 7)))),
            { concurrency: "unbounded" }
          )
          for (const batch of appended) {
            const seqs = batch.events.map((e) => e.seq)
            assert.deepStrictEqual(
              seqs,
              seqs.map((_, i) => seqs[0]! + i)
            )
          }
          const total = (journal: typeof a) =>
            appended.filter((_, i) => (i % 2 === 0) === (journal === a)).reduce((n, x) => n + x.events.length, 0)
          assert.strictEqual(yield* a.headSeq, total(a))
          assert.strictEqual(yield* b.headSeq, total(b))
          const read = Chunk.toReadonlyArray(yield* Stream.runCollect(a.read(0)))
          assert.deepStrictEqual(
            read.map((e) => e.seq),
            Array.from({ length: total(a) }, (_, i) => i + 1)
          )
        })
      )
      const rows = yield* Effect.promise(() =>
        query<{ account_id: string; n: number; mx: string; head: string }>(
          url,
          `SELECT e.account_id, count(*)::int AS n, max(seq)::text AS mx, h.head::text AS head
           FROM feed_events e JOIN feed_heads h USING (account_id) GROUP BY e.account_id, h.head ORDER BY 1`
        )
      )
      assert.strictEqual(rows.length, 2)
      for (const row of rows) {
        assert.strictEqual(String(row.n), row.mx)
        assert.strictEqual(row.head, row.mx)
      }
    })
  )

  it.live("many_accounts_share_one_statement_each_answered_with_its_own_seqs", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      yield* withStore(url, (store) =>
        Effect.gen(function* () {
          const journals = yield* Effect.forEach(
            Array.from({ length: 30 }, (_, i) => `acct-${i}`),
            (id) => store.open(Note, account(id))
          )
          // The first append of each is sent while the committer is busy: the rest go in one statement.
          const answers = yield* Effect.all(
            journals.map((j) => j.append(entries("e", 3))),
            { concurrency: "unbounded" }
          )
          for (const a of answers)
            assert.deepStrictEqual(
              a.events.map((e) => e.seq),
              [1, 2, 3]
            )
          assert.deepStrictEqual<ReadonlyArray<string>>(
            yield* store.accounts,
            journals.map((_, i) => `acct-${i}`).sort()
          )
        })
      )
      const [{ batches }] = yield* Effect.promise(() =>
        query<{ batches: number }>(url, `SELECT count(DISTINCT batch_id)::int AS batches FROM feed_events`)
      )
      assert.isBelow(batches!, 30)
    })
  )

  it.live("a_read_line_body_is_byte_identical_to_the_file_backends", () =>
    Effect.gen(function* () {
      const tricky: Array<JournalEntry<NoteType>> = [
        { ts: "2026-11-29T10:00:00.000Z", event: note('line\u2028sep\u2029 "quoted" é 😀') },
        { ts: "2026-11-29T10:00:00.001Z", session_id: 'se"ss\\ion', event: note("s", "sess"), key: "req-1" },
        { ts: "2026-11-29T10:00:00.002Z", event: { type: "blip", text: "\u0001 control" } }
      ]
      const decoder = new TextDecoder()
      const bodies = (lines: ReadonlyArray<JournalLine>) => lines.map((l) => decoder.decode(l.body))
      // The file backend, on the same events.
      const directory = Fs.mkdtempSync(Path.join(Os.tmpdir(), "feed-bytes-"))
      const fromFiles = yield* Effect.scoped(
        Effect.gen(function* () {
          const j = yield* FileJournal.make(Note, { directory })
          yield* j.append(tricky)
          return Chunk.toReadonlyArray(yield* Stream.runCollect(j.readLines(0)))
        })
      ).pipe(
        Effect.provide(NodeContext.layer),
        Effect.ensuring(Effect.sync(() => Fs.rmSync(directory, { recursive: true, force: true })))
      )
      yield* withStore(freshUrl(), (store) =>
        Effect.gen(function* () {
          const j = yield* store.open(Note, account("bytes"))
          const appended = yield* j.append(tricky)
          const lines = Chunk.toReadonlyArray(yield* Stream.runCollect(j.readLines(0)))
          assert.deepStrictEqual(bodies(lines), bodies(fromFiles))
          assert.deepStrictEqual(
            bodies(lines),
            appended.events.map((_, i) => decoder.decode(bodyAt(appended.lines, i)))
          )
          assert.deepStrictEqual(
            lines.map((l) => [l.seq, l.sessionId, l.key]),
            fromFiles.map((l) => [l.seq, l.sessionId, l.key])
          )
          const events = Chunk.toReadonlyArray(yield* Stream.runCollect(j.read(0)))
          assert.deepStrictEqual(events, appended.events)
        })
      )
    })
  )

  it.live("reads_resume_from_any_cursor_and_stop_at_up_to", () =>
    Effect.gen(function* () {
      yield* withStore(
        freshUrl(),
        (store) =>
          Effect.gen(function* () {
            const j = yield* store.open(Note, account("resume"))
            yield* j.append(entries("r", 25))
            const seqs = (since: number, upTo?: number) =>
              Stream.runCollect(j.readLines(since, upTo)).pipe(
                Effect.map((c) => Chunk.toReadonlyArray(c).map((l) => l.seq))
              )
            assert.deepStrictEqual(
              yield* seqs(0),
              Array.from({ length: 25 }, (_, i) => i + 1)
            )
            assert.deepStrictEqual(
              yield* seqs(12),
              Array.from({ length: 13 }, (_, i) => i + 13)
            )
            assert.deepStrictEqual(yield* seqs(12, 14), [13, 14])
            assert.deepStrictEqual(yield* seqs(25), [])
            assert.deepStrictEqual(yield* seqs(40), [])
            const info = yield* j.info
            assert.strictEqual(info.headSeq, 25)
            assert.strictEqual(info.oldestSeq, 1)
            assert.strictEqual(info.epoch, j.epoch)
          }),
        { pageRows: 4 }
      )
    })
  )

  it.live("a_second_replica_sees_the_heads_the_first_appends", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      yield* withStore(url, (replicaA) =>
        withStore(url, (replicaB) =>
          Effect.gen(function* () {
            const writer = yield* replicaA.open(Note, account("shared"))
            const reader = yield* replicaB.open(Note, account("shared"))
            assert.strictEqual(writer.epoch, reader.epoch)
            const heads = yield* reader.foreignHeads!.pipe(
              Stream.takeUntil((h) => h >= 10),
              Stream.runCollect,
              Effect.fork
            )
            yield* writer.append(entries("w", 4))
            yield* writer.append(entries("w", 6))
            const seen = Chunk.toReadonlyArray(yield* Fiber.join(heads))
            assert.strictEqual(seen[seen.length - 1], 10)
          })
        )
      )
    })
  )

  it.live("after_a_failover_seen_on_reconnect_appends_fail_with_the_new_epoch_named", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      yield* withStore(url, (store) =>
        Effect.gen(function* () {
          const j = yield* store.open(Note, account("failover"))
          yield* j.append(entries("before", 1))
          // What a promoted standby looks like from here: the server's timeline is not the one recorded.
          yield* Effect.promise(() => query(url, `UPDATE feed_meta SET timeline = 'FFFFFFFF'`))
          yield* Effect.promise(() =>
            query(url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'feed-listen'`)
          )
          // Appends go on until the hub has reconnected and seen the timeline.
          const refused = yield* j
            .append(entries("during", 1))
            .pipe(Effect.flip, Effect.retry(Schedule.spaced("20 millis")))
          assert.include(refused.message, "timeline changed")
          const [{ epoch }] = yield* Effect.promise(() => query<{ epoch: string }>(url, `SELECT epoch FROM feed_meta`))
          assert.notStrictEqual(epoch, j.epoch)
        })
      )
    })
  )

  it.live("an_append_whose_answer_was_lost_is_not_appended_twice", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      const proxy: Proxy = yield* Effect.promise(() => cutProxy(server.port))
      const viaProxy = url.replace(`:${server.port}/`, `:${proxy.port}/`)
      yield* withStore(viaProxy, (store) =>
        Effect.gen(function* () {
          const j = yield* store.open(Note, account("lost"))
          yield* j.append(entries("before", 2))
          // Hold the head row, so that the next append waits on the server, then cut its connection.
          const holder = new Pg.Client({ connectionString: url })
          yield* Effect.promise(() => holder.connect())
          yield* Effect.promise(() => holder.query("BEGIN"))
          yield* Effect.promise(() => holder.query("SELECT head FROM feed_heads WHERE account_id = 'lost' FOR UPDATE"))
          const batch = entries("lost", 3)
          const attempt = yield* Effect.fork(Effect.exit(j.append(batch)))
          yield* Effect.promise(() => waitForStatement(url, "/* feed batch%", "Lock"))
          proxy.cut()
          const first = yield* Fiber.join(attempt)
          assert.isTrue(Exit.isFailure(first))
          // The statement goes on without its client and commits.
          yield* Effect.promise(() => holder.query("COMMIT").then(() => holder.end()))
          const again = yield* j.append(batch)
          assert.deepStrictEqual(
            again.events.map((e) => e.seq),
            [3, 4, 5]
          )
          const next = yield* j.append(entries("after", 1))
          assert.deepStrictEqual(
            next.events.map((e) => e.seq),
            [6]
          )
        })
      )
      const [{ n }] = yield* Effect.promise(() =>
        query<{ n: number }>(url, `SELECT count(*)::int AS n FROM feed_events WHERE account_id = 'lost'`)
      )
      assert.strictEqual(n, 6)
      proxy.close()
    })
  )

  it.live("an_append_interrupted_after_it_was_sent_is_not_appended_twice_by_its_retry", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      yield* withStore(url, (store) =>
        Effect.gen(function* () {
          const j = yield* store.open(Note, account("interrupted"))
          yield* j.append(entries("before", 2))
          const holder = new Pg.Client({ connectionString: url })
          yield* Effect.promise(() => holder.connect())
          yield* Effect.promise(() => holder.query("BEGIN"))
          yield* Effect.promise(() =>
            holder.query("SELECT head FROM feed_heads WHERE account_id = 'interrupted' FOR UPDATE")
          )
          const batch = entries("sent", 3)
          const attempt = yield* Effect.fork(j.append(batch))
          yield* Effect.promise(() => waitForStatement(url, "/* feed batch%", "Lock"))
          yield* Fiber.interrupt(attempt)
          yield* Effect.promise(() => holder.query("COMMIT").then(() => holder.end()))
          const again = yield* j.append(batch)
          assert.deepStrictEqual(
            again.events.map((e) => e.seq),
            [3, 4, 5]
          )
        })
      )
      const [{ n }] = yield* Effect.promise(() =>
        query<{ n: number }>(url, `SELECT count(*)::int AS n FROM feed_events WHERE account_id = 'interrupted'`)
      )
      assert.strictEqual(n, 5)
    }).pipe(
      // Stuck: say on what, from the server's side, rather than only that it timed out.
      Effect.timeoutFail({
        duration: "40 seconds",
        onTimeout: () => new Error("the interrupted append's test did not finish in 40 s")
      }),
      Effect.tapError(() =>
        Effect.promise(async () =>
          console.error(
            "server activity:",
            JSON.stringify(
              await query(
                server.url("postgres"),
                `SELECT a.datname, a.pid, a.state, a.wait_event_type, a.wait_event, left(a.query, 120) AS query,
                        (SELECT string_agg(l.locktype || ':' || l.mode || ':' || l.granted, ',') FROM pg_locks l WHERE l.pid = a.pid) AS locks
                 FROM pg_stat_activity a WHERE a.datname IS NOT NULL`
              ),
              null,
              1
            )
          )
        )
      )
    )
  )
})

/** Waits until a backend runs a statement matching `pattern` and waits on `waitEvent` (e.g. "Lock"). */
export const waitForStatement = async (url: string, pattern: string, waitEventType: string) => {
  for (;;) {
    const rows = await query<{ n: number }>(
      url,
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE $1 AND wait_event_type = $2`,
      [pattern, waitEventType]
    )
    if (rows[0]!.n > 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
