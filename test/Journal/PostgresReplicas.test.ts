/**
 * The PostgreSQL journal shared by several writers: writer processes on shared and hot accounts
 * leave every account gapless with every acknowledged event present once; overlapping
 * multi-account statements never deadlock; the head lock orders commits as seqs (a reader of
 * `seq > cursor` misses nothing, where a `bigserial` cursor does); and a tailer whose LISTEN
 * connection is killed still sees every head, through the poll.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Fiber, Ref, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Path from "node:path"
import * as Pg from "pg"
import type { AccountId } from "../../src/Domain/Account.js"
import * as Postgres from "../../src/Journal/Postgres.js"
import { appendStatement } from "../../src/Journal/Postgres/Append.js"
import { Note, note } from "../support/Notes.js"
import { type PgServer, runPostgresTests, startPostgres } from "../support/Postgres.js"

let server: PgServer
let databases = 0
const freshUrl = () => server.createDatabase(`r${++databases}`)

const connect = async (url: string) => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  return client
}
const query = async <R>(url: string, text: string, params: Array<unknown> = []): Promise<Array<R>> => {
  const client = await connect(url)
  try {
    return (await client.query(text, params)).rows as Array<R>
  } finally {
    await client.end()
  }
}

interface WriterReport {
  readonly acks: Record<string, Array<[number, number]>>
  readonly failures: Array<string>
}

const tsx = Path.resolve("node_modules/.bin/tsx")
const writerScript = Path.resolve("test/Journal/PostgresWriter.ts")

interface Writer {
  readonly child: ChildProcess
  /** Resolves once the writer finished its first round. */
  readonly started: Promise<void>
  readonly done: Promise<WriterReport>
}

/** Starts one writer process. */
const startWriter = (url: string, accounts: ReadonlyArray<string>, rounds: number, batch: number): Writer => {
  const child = spawn(tsx, [writerScript, JSON.stringify({ url, accounts, rounds, batch })], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  let err = ""
  let onStart: () => void = () => undefined
  const started = new Promise<void>((resolve) => (onStart = resolve))
  child.stdout!.on("data", (d) => {
    out += d
    if (out.includes("round ")) onStart()
  })
  child.stderr!.on("data", (d) => (err += d))
  const done = new Promise<WriterReport>((resolve, reject) =>
    child.on("exit", (code, signal) =>
      code === 0
        ? resolve(JSON.parse(out.trim().split("\n").pop()!))
        : reject(new Error(`writer exited ${code ?? signal}: ${err}`))
    )
  )
  return { child, started, done }
}

/** Runs one writer process to its end and answers its report. */
const runWriter = (url: string, accounts: ReadonlyArray<string>, rounds: number, batch: number) =>
  startWriter(url, accounts, rounds, batch).done

/**
 * Every account's seqs are 1..head, each once, head = count = max, and every acknowledged event
 * is there once; `exact`: nothing else is (no append's outcome was unknown).
 */
const checkInvariants = async (url: string, reports: ReadonlyArray<WriterReport>, exact = true) => {
  const rows = await query<{ account_id: string; n: number; distinct_seqs: number; mx: string; head: string }>(
    url,
    `SELECT h.account_id, count(e.seq)::int AS n, count(DISTINCT e.seq)::int AS distinct_seqs,
            coalesce(max(e.seq), 0)::text AS mx, h.head::text AS head
     FROM feed_heads h LEFT JOIN feed_events e USING (account_id) GROUP BY h.account_id, h.head`
  )
  const acked = new Map<string, Array<boolean>>()
  for (const report of reports) {
    for (const [account, ranges] of Object.entries(report.acks)) {
      const seen = acked.get(account) ?? []
      acked.set(account, seen)
      for (const [first, count] of ranges) {
        for (let s = first; s < first + count; s++) {
          assert.isUndefined(seen[s], `seq ${s} of ${account} acknowledged twice`)
          seen[s] = true
        }
      }
    }
  }
  for (const row of rows) {
    assert.strictEqual(row.n, row.distinct_seqs, `duplicate seqs in ${row.account_id}`)
    assert.strictEqual(String(row.n), row.head, `count != head in ${row.account_id}`)
    assert.strictEqual(row.mx, row.head, `max != head in ${row.account_id}`)
    const seen = acked.get(row.account_id) ?? []
    const acknowledged = seen.filter(Boolean).length
    if (exact) assert.strictEqual(acknowledged, row.n, `acknowledged != stored in ${row.account_id}`)
    assert.isAtMost(seen.length - 1, Number(row.head), `an acknowledged seq of ${row.account_id} is past its head`)
  }
  return rows
}

const deadlocks = async (url: string) =>
  (
    await query<{ deadlocks: string }>(
      url,
      `SELECT deadlocks::text FROM pg_stat_database WHERE datname = current_database()`
    )
  )[0]!.deadlocks

describe.runIf(runPostgresTests())("Postgres journal, several writers", () => {
  beforeAll(async () => {
    server = await startPostgres()
  })
  afterAll(() => server?.destroy())

  it("writer_processes_on_shared_and_hot_accounts_leave_every_account_gapless", async () => {
    const url = freshUrl()
    const reports = await Promise.all([
      runWriter(url, ["hot", "shared-1", "own-a"], 25, 6),
      runWriter(url, ["hot", "shared-1", "own-b"], 25, 6),
      runWriter(url, ["hot", "shared-2", "own-c"], 25, 6)
    ])
    for (const report of reports) assert.deepStrictEqual(report.failures, [])
    const rows = await checkInvariants(url, reports)
    assert.strictEqual(rows.length, 6)
    assert.isAbove(Number(rows.find((r) => r.account_id === "hot")!.head), 100)
  })

  it("overlapping_multi_account_statements_from_three_processes_never_deadlock", async () => {
    const url = freshUrl()
    const accounts = Array.from({ length: 8 }, (_, i) => `acct-${i}`)
    // Each process opens (and so submits) the accounts in another order.
    const reports = await Promise.all([
      runWriter(url, accounts, 30, 4),
      runWriter(url, [...accounts].reverse(), 30, 4),
      runWriter(url, [...accounts.slice(4), ...accounts.slice(0, 4)], 30, 4)
    ])
    for (const report of reports) assert.deepStrictEqual(report.failures, [])
    await checkInvariants(url, reports)
    assert.strictEqual(await deadlocks(url), "0")
    const [{ multi }] = await query<{ multi: number }>(
      url,
      `SELECT count(*)::int AS multi FROM (SELECT batch_id FROM feed_events GROUP BY batch_id HAVING count(DISTINCT account_id) > 1) b`
    )
    assert.isAbove(multi!, 0, "no statement carried several accounts")
  })

  it("a_writer_killed_mid_batch_leaves_no_gap_and_no_duplicate", async () => {
    const url = freshUrl()
    const accounts = ["hot", "k-1", "k-2"]
    const victim = startWriter(url, accounts, 400, 8)
    const survivors = [startWriter(url, accounts, 15, 8), startWriter(url, [...accounts].reverse(), 15, 8)]
    await victim.started
    victim.child.kill("SIGKILL")
    await victim.done.catch(() => undefined)
    const reports = await Promise.all(survivors.map((w) => w.done))
    for (const report of reports) assert.deepStrictEqual(report.failures, [])
    // The killed writer's acknowledgements are lost with it: what it committed is there, gapless.
    await checkInvariants(url, reports, false)
  })

  it("the_server_stopped_immediately_under_load_loses_no_acknowledged_event_and_seqs_continue", async () => {
    const url = freshUrl()
    const accounts = ["hot", "c-1", "c-2"]
    const writers = [startWriter(url, accounts, 60, 6), startWriter(url, [...accounts].reverse(), 60, 6)]
    await Promise.all(writers.map((w) => w.started))
    server.stop("immediate")
    server.start()
    const reports = await Promise.all(writers.map((w) => w.done))
    // Appends failed while the server was down (nothing acknowledged), and went on after.
    assert.isAbove(
      reports.reduce((n, r) => n + r.failures.length, 0),
      0,
      "no append met the stopped server"
    )
    await checkInvariants(url, reports, false)
    const after = await runWriter(url, ["hot"], 1, 1)
    const [{ head }] = await query<{ head: string }>(url, `SELECT head::text FROM feed_heads WHERE account_id = 'hot'`)
    assert.strictEqual(after.acks["hot"]![0]![0], Number(head))
  })

  it("a_waiting_writer_commits_after_the_holder_so_a_seq_cursor_misses_nothing_unlike_bigserial", async () => {
    const url = freshUrl()
    // The schema, through a store.
    await Effect.runPromise(Effect.scoped(Postgres.store({ url })))
    const t1 = await connect(url)
    const t2 = await connect(url)
    const reader = await connect(url)
    try {
      const append = (client: Pg.Client, text: string) =>
        client.query(appendStatement(crypto.randomUUID()), [["acct"], [`,"text":"${text}"`], [null], [null]])
      const seqsAfter = async (cursor: number) =>
        (
          await reader.query<{ seq: string }>(
            `SELECT seq FROM feed_events WHERE account_id = 'acct' AND seq > $1 ORDER BY seq`,
            [cursor]
          )
        ).rows.map((r) => Number(r.seq))
      await t1.query("BEGIN")
      await append(t1, "first")
      const second = append(t2, "second")
      await waitUntilBlocked(url, "/* feed batch%")
      assert.deepStrictEqual(await seqsAfter(0), [], "nothing is visible while the first holds the head")
      await t1.query("COMMIT")
      await second
      assert.deepStrictEqual(await seqsAfter(0), [1, 2])

      // The control: a bigserial as the cursor. The later transaction takes id 2 and commits first.
      await reader.query("CREATE TABLE control (id bigserial PRIMARY KEY, text text)")
      await t1.query("BEGIN")
      await t1.query("INSERT INTO control (text) VALUES ('first')")
      await t2.query("INSERT INTO control (text) VALUES ('second')")
      const idsAfter = async (cursor: number) =>
        (await reader.query<{ id: string }>(`SELECT id FROM control WHERE id > $1 ORDER BY id`, [cursor])).rows.map(
          (r) => Number(r.id)
        )
      const firstRead = await idsAfter(0)
      assert.deepStrictEqual(firstRead, [2])
      await t1.query("COMMIT")
      assert.deepStrictEqual(await idsAfter(2), [], "the bigserial reader never sees id 1")
      assert.deepStrictEqual(await idsAfter(0), [1, 2])
    } finally {
      await Promise.all([t1.end(), t2.end(), reader.end()])
    }
  })

  it.live("a_tailer_whose_listen_connection_is_killed_reads_every_event_in_order", () =>
    Effect.gen(function* () {
      const url = freshUrl()
      const total = 60
      yield* Effect.scoped(
        Effect.gen(function* () {
          const replicaA = yield* Postgres.store({ url, pollMs: 100 })
          const replicaB = yield* Postgres.store({ url, pollMs: 100 })
          const writer = yield* replicaA.open(Note, "tail" as AccountId)
          const tailer = yield* replicaB.open(Note, "tail" as AccountId)
          const killed = yield* Ref.make(0)
          const cursor = yield* Ref.make(0)
          // The tailer: on every head hint, reads what it has not seen; the first seq must follow the cursor.
          const tail = yield* tailer.foreignHeads!.pipe(
            Stream.mapEffect((head) =>
              Effect.gen(function* () {
                const from = yield* Ref.get(cursor)
                if (head <= from) return from
                let expected = from + 1
                yield* tailer.readLines(from, head).pipe(
                  Stream.runForEach((line) =>
                    Effect.sync(() => {
                      assert.strictEqual(line.seq, expected)
                      expected++
                    })
                  )
                )
                yield* Ref.set(cursor, expected - 1)
                return expected - 1
              })
            ),
            Stream.takeUntil((at) => at >= total),
            Stream.runDrain,
            Effect.fork
          )
          for (let i = 0; i < total; i++) {
            yield* writer.append([{ ts: new Date().toISOString(), event: note(`e${i}`) }])
            if (i % 10 === 5) {
              const rows = yield* Effect.promise(() =>
                query<{ killed: boolean }>(
                  url,
                  `SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = 'feed-listen' AND datname = current_database()`
                )
              )
              yield* Ref.update(killed, (n) => n + rows.filter((r) => r.killed).length)
            }
          }
          yield* Fiber.join(tail)
          assert.strictEqual(yield* Ref.get(cursor), total)
          assert.isAbove(yield* Ref.get(killed), 0)
        })
      )
    })
  )
})

/** Waits until a backend running a statement matching `pattern` waits on a lock. */
const waitUntilBlocked = async (url: string, pattern: string) => {
  for (;;) {
    const rows = await query<{ n: number }>(
      url,
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE $1 AND wait_event_type = 'Lock'`,
      [pattern]
    )
    if (rows[0]!.n > 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
