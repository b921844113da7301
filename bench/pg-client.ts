/**
 * The client processes of the PostgreSQL section (`pg.ts`) that talk SQL, not HTTP: the
 * baselines the service is measured against, each in a Node process of its own. Same protocol
 * as `e2e-client.ts`: `ready` once connected, then a line `{"t0": ...}` on stdin, then the
 * result as one JSON line last.
 *
 *   bare <url> <account> <events> <batch>   the journal's append statement from one `pg` connection,
 *                                          `batch` events per statement, one statement at a time
 *   copy <url> <account>                    `COPY (SELECT seq, payload ... ORDER BY seq) TO STDOUT`
 *
 * `bare` stores the same bytes the service stores for the bench events of `e2e-client.ts post`
 * (the wire JSON after `{"seq":N`), with their sessions and no key.
 */
import * as Crypto from "node:crypto"
import * as Pg from "pg"
import type { Connection } from "pg"
import { appendStatement } from "../src/Journal/Postgres/Append.js"
import { changeLine, clock, finish, ready, runMode, sessionOf } from "./common.js"
import type { LoadResult, ReplayResult } from "./e2e-client.js"

/** What the journal stores of bench event `i`: its wire JSON less `{"seq":0` and the closing brace. */
const payloadOf = (i: number): string => changeLine(0, i).slice('{"seq":0'.length, -1)

const bare = async (url: string, account: string, events: number, batch: number): Promise<void> => {
  const client = new Pg.Client({ connectionString: url, application_name: "bench-bare" })
  await client.connect()
  const columns = [
    Array.from({ length: batch }, () => account),
    Array.from({ length: batch }, (_, i) => payloadOf(i)),
    Array.from({ length: batch }, (_, i) => sessionOf(i)),
    Array.from({ length: batch }, () => null)
  ]
  // As the load clients do: a few statements first, so the connection and the plan are warm.
  for (let k = 0; k < 5; k++) await client.query(appendStatement(Crypto.randomUUID()), columns)
  await ready()
  const statements = Math.ceil(events / batch)
  const startedAt = clock()
  for (let k = 0; k < statements; k++) await client.query(appendStatement(Crypto.randomUUID()), columns)
  const endedAt = clock()
  await client.end()
  finish({ acked: statements * batch, startedAt, endedAt, failures: 0 } satisfies LoadResult)
}

/**
 * A `COPY ... TO STDOUT` through `pg`'s own connection: a submittable (the interface `pg`
 * hands its protocol messages to) that counts the rows of the copy data.
 */
const copyOut = (client: Pg.Client, text: string): Promise<number> =>
  new Promise((resolve, reject) => {
    let rows = 0
    let failed: unknown
    const submittable = {
      submit: (connection: Connection) => connection.query(text),
      handleCopyData: (message: { chunk: Buffer }) => {
        // Text format: one row a line; newlines inside values are escaped.
        for (let at = message.chunk.indexOf(10); at >= 0; at = message.chunk.indexOf(10, at + 1)) rows++
      },
      handleCommandComplete: () => undefined,
      handleRowDescription: () => undefined,
      handleDataRow: () => undefined,
      handleEmptyQuery: () => undefined,
      handleError: (error: unknown) => {
        failed = error
      },
      handleReadyForQuery: () => (failed === undefined ? resolve(rows) : reject(failed))
    }
    client.query(submittable as unknown as Pg.Submittable)
  })

const copy = async (url: string, account: string): Promise<void> => {
  const client = new Pg.Client({ connectionString: url, application_name: "bench-copy" })
  await client.connect()
  await ready()
  const startedAt = clock()
  const events = await copyOut(
    client,
    `COPY (SELECT seq, payload FROM feed_events WHERE account_id = ${Pg.escapeLiteral(account)} ORDER BY seq) TO STDOUT`
  )
  const endedAt = clock()
  await client.end()
  finish({ events, startedAt, endedAt } satisfies ReplayResult)
}

runMode("pg-client", {
  bare: (a) => bare(a[0]!, a[1]!, Number(a[2]), Number(a[3])),
  copy: (a) => copy(a[0]!, a[1]!)
})
