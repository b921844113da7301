/**
 * The crash harness on PostgreSQL, shortened for the suite: two replicas on one database,
 * SIGKILLed four times under load, and the database stopped once with `-m immediate` and
 * started again. The full run is
 * `npm run crash -- --journal postgres --replicas 2 --kills 100 --db-stops 10 --server bundle`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { formatReports, runCrash } from "../harness/CrashRun.js"
import { runPostgresTests } from "./support/Postgres.js"

describe.runIf(runPostgresTests())("crash on PostgreSQL", () => {
  it.live(
    "replicas_killed_and_the_database_stopped_immediately_under_load_lose_nothing_acknowledged_and_append_nothing_twice",
    () =>
      Effect.gen(function* () {
        const report = yield* Effect.promise(() =>
          runCrash({
            journal: "postgres",
            replicas: 2,
            kills: 4,
            dbStops: 1,
            maxDownMs: 1000,
            // A retry goes to the replica its request first went to (see the harness: a retry on
            // another replica is not recognised by its key).
            route: "sticky",
            fsync: "always",
            producers: 2,
            readers: 2,
            seed: 20261129,
            launcher: "bundle"
          })
        )
        const table = formatReports([report])
        assert.deepStrictEqual(report.violations, [], table)
        assert.strictEqual(report.kills, 4)
        assert.strictEqual(report.dbStops, 1)
        assert.isAbove(report.ackedEvents, 0, table)
        assert.strictEqual(report.ackedVerified, report.ackedEvents, "every acknowledged event is at its seq")
        assert.strictEqual(report.duplicates, 0, table)
        assert.isAbove(report.readerEvents, 0, table)
        assert.strictEqual(report.epochs, 1, "neither a replica's crash nor the database's changes the epoch")
      }),
    120_000
  )
})
