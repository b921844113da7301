/**
 * Replicas on one PostgreSQL database, as a user runs them: two `node dist/main.js` processes
 * with `FEED_DATABASE_URL`, each on its own port. An SSE client on one replica receives what was
 * appended on the other, in order, with the same ids; while the database is down appends are
 * not acknowledged and the status says degraded, and both recover by themselves.
 */
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Path from "node:path"
import { projectRoot } from "../../harness/ServerProcess.js"
import { type PgServer, runPostgresTests, startPostgres } from "../support/Postgres.js"
import { dataOf, openStream, post, request, seqsOf } from "../support/Server.js"
import { eventually } from "../support/Wait.js"

interface Replica {
  readonly url: string
  readonly child: ChildProcess
  readonly log: () => string
}

/** The environment without the service's settings, so that only those a test gives apply. */
const withoutFeedSettings = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith("FEED_") && !name.startsWith("OTEL_")))

/** Starts the service on `database` on any free port; answers once its startup line names the port. */
const startReplica = (databaseUrl: string): Promise<Replica> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [Path.join(projectRoot, "dist/main.js")], {
      cwd: projectRoot,
      env: { ...withoutFeedSettings(process.env), FEED_DATABASE_URL: databaseUrl, PORT: "0", HOST: "127.0.0.1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let log = ""
    const onData = (chunk: Buffer) => {
      log += chunk.toString("utf8")
      const found = /stream at (http:\/\/127\.0\.0\.1:\d+)\//.exec(log)
      if (found !== null) resolve({ url: found[1]!, child, log: () => log })
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.on("exit", (code) => reject(new Error(`the replica exited (${code}) before it started:\n${log}`)))
  })

const stopReplica = (replica: Replica) =>
  new Promise<void>((resolve) => {
    if (replica.child.exitCode !== null) return resolve()
    replica.child.on("exit", () => resolve())
    replica.child.kill("SIGTERM")
  })

const deleted = (session: string) => ({ session_id: session, event: { type: "session_deleted", session_id: session } })

describe.runIf(runPostgresTests())("replicas on PostgreSQL", () => {
  let server: PgServer
  let a: Replica
  let b: Replica
  beforeAll(async () => {
    server = await startPostgres()
    const url = server.createDatabase("replicas")
    a = await startReplica(url)
    b = await startReplica(url)
  }, 120_000)
  afterAll(async () => {
    await Promise.all([a, b].filter((r) => r !== undefined).map(stopReplica))
    server?.destroy()
  })

  it.live("a_client_on_one_replica_receives_what_the_other_appended_in_order_with_the_same_ids", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const onA = yield* openStream(`${a.url}/api/v1/accounts/acme/stream?since=0`)
        const onB = yield* openStream(`${b.url}/api/v1/accounts/acme/stream?since=0`)
        yield* onA.untilCaughtUp
        yield* onB.untilCaughtUp
        // Both replicas append, interleaved: one seq order for the account, whoever appended.
        for (let i = 0; i < 10; i++) {
          const target = i % 2 === 0 ? a : b
          const answer = yield* post(`${target.url}/api/v1/accounts/acme/events`, {
            events: [deleted(`s${i}a`), deleted(`s${i}b`), deleted(`s${i}c`)]
          })
          assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
        }
        const fromA = yield* onA.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === 30)
        const fromB = yield* onB.takeUntil((frame) => frame.event === "message" && dataOf(frame).seq === 30)
        assert.deepStrictEqual(
          seqsOf(fromB),
          Array.from({ length: 30 }, (_, i) => i + 1)
        )
        assert.deepStrictEqual(
          fromB.map((frame) => [frame.id, frame.data]),
          fromA.map((frame) => [frame.id, frame.data])
        )
        assert.deepStrictEqual(
          fromB.map((frame) => dataOf(frame).session_id),
          Array.from({ length: 10 }, (_, i) => [`s${i}a`, `s${i}b`, `s${i}c`]).flat()
        )
      })
    )
  )

  it.live("a_page_read_on_one_replica_holds_what_the_other_appended", () =>
    Effect.gen(function* () {
      // B has the account open (and follows its head) before A appends to it.
      const opened = yield* request(`${b.url}/api/v1/accounts/pages/status`)
      assert.strictEqual(opened.status, 200)
      const appended = yield* post(`${a.url}/api/v1/accounts/pages/events`, {
        events: [deleted("p1"), deleted("p2"), deleted("p3")]
      })
      assert.deepStrictEqual(appended.body, { seqs: [1, 2, 3] })
      // A page without `wait` answers what is durable, whichever replica appended it.
      yield* eventually(
        "replica B's page holds the three events replica A appended",
        Effect.map(request(`${b.url}/api/v1/accounts/pages/events?since=0`), (page) => {
          const events = (page.body as { events: ReadonlyArray<{ seq: number }> }).events
          return events.map((e) => e.seq).join(",") === "1,2,3"
        })
      )
    })
  )

  it.live("a_retry_under_the_same_key_on_the_other_replica_is_answered_with_the_original_seqs", () =>
    Effect.gen(function* () {
      const body = { events: [deleted("k1"), deleted("k2")] }
      const headers = { "idempotency-key": "order-42" }
      // B has the account open already: it learnt the keys of its journal's tail before A appended.
      assert.strictEqual((yield* request(`${b.url}/api/v1/accounts/keys/status`)).status, 200)
      const first = yield* post(`${a.url}/api/v1/accounts/keys/events`, body, headers)
      assert.deepStrictEqual(first.body, { seqs: [1, 2] })
      const retried = yield* post(`${b.url}/api/v1/accounts/keys/events`, body, headers)
      assert.deepStrictEqual(retried.body, { seqs: [1, 2] }, "answered, not appended again")
      const other = yield* post(`${b.url}/api/v1/accounts/keys/events`, { events: [deleted("k3")] }, headers)
      assert.strictEqual(other.status, 422, "the key names another request")
      const next = yield* post(`${b.url}/api/v1/accounts/keys/events`, { events: [deleted("k4")] })
      assert.deepStrictEqual(next.body, { seqs: [3] })
    })
  )

  it.live("while_the_database_is_down_appends_are_not_acknowledged_and_both_replicas_recover_by_themselves", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const before = yield* post(`${a.url}/api/v1/accounts/down/events`, { events: [deleted("before")] })
        assert.strictEqual(before.status, 200)
        const onB = yield* openStream(`${b.url}/api/v1/accounts/down/stream?since=1`)
        yield* onB.untilCaughtUp
        server.stop("immediate")
        yield* Effect.addFinalizer(() => Effect.sync(() => server.start()))
        // The request is accepted but not durable: 503 once its wait runs out, never a seq.
        const during = yield* post(`${a.url}/api/v1/accounts/down/events`, { events: [deleted("during")] })
        assert.strictEqual(during.status, 503, JSON.stringify(during.body))
        assert.strictEqual((during.body as { accepted?: boolean }).accepted, true)
        const degraded = yield* request(`${a.url}/api/v1/accounts/down/status`)
        assert.strictEqual((degraded.body as { degraded: boolean }).degraded, true)

        server.start()
        // The accepted event lands once the database is back, and the other replica streams it.
        const frames = yield* onB.takeUntil((frame) => frame.event === "message")
        assert.deepStrictEqual(dataOf(frames.at(-1)!), {
          ...dataOf(frames.at(-1)!),
          seq: 2,
          session_id: "during"
        })
        yield* eventually(
          "replica A's status is no longer degraded",
          Effect.map(
            request(`${a.url}/api/v1/accounts/down/status`),
            (status) => (status.body as { degraded: boolean }).degraded === false
          )
        )
        const after = yield* post(`${b.url}/api/v1/accounts/down/events`, { events: [deleted("after")] })
        assert.deepStrictEqual(after.body, { seqs: [3] })
      })
    )
  )
})
