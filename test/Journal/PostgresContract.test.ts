/**
 * The journal contract and the feed on top of it (`test/support/JournalContract.ts`), the same
 * suite the file and in-memory journals run, on the PostgreSQL journal against a real server:
 * each test gets a database of its own.
 */
import { afterAll, beforeAll, describe } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Postgres from "../../src/Journal/Postgres.js"
import { feedContract, journalContract } from "../support/JournalContract.js"
import { type PgServer, runPostgresTests, startPostgres } from "../support/Postgres.js"

describe.runIf(runPostgresTests())("on PostgreSQL", () => {
  let server: PgServer
  let databases = 0
  beforeAll(async () => {
    server = await startPostgres()
  }, 120_000)
  afterAll(() => server?.destroy())

  const backend = {
    store: Effect.suspend(() => Postgres.store({ url: server.createDatabase(`contract${++databases}`), pollMs: 100 })),
    layer: Layer.empty
  }
  journalContract("postgres", backend)
  feedContract("postgres", backend)
})
