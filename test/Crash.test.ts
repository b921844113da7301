/**
 * The crash harness, shortened for the suite: the real server as a child process, SIGKILLed
 * five times under load (`always` mode), restarted on the same directory and port. The full
 * run is `npm run crash -- --kills 100 --fsync all`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { formatReports, runCrash } from "../harness/CrashRun.js"

describe("crash", () => {
  it.live(
    "sigkill_under_load_loses_nothing_acknowledged_reuses_no_seq_and_readers_resume_without_gap",
    () =>
      Effect.gen(function* () {
        const report = yield* Effect.promise(() =>
          runCrash({
            kills: 5,
            fsync: "always",
            producers: 2,
            // One reader resumes by `Last-Event-ID`, the other by `?since=`.
            readers: 2,
            seed: 20261127,
            // The same sources bundled once: a restart takes a second, not several.
            launcher: "bundle"
          })
        )
        const table = formatReports([report])
        assert.deepStrictEqual(report.violations, [], table)
        assert.strictEqual(report.kills, 5)
        assert.isAbove(report.ackedEvents, 0, table)
        assert.strictEqual(report.ackedVerified, report.ackedEvents, "every acknowledged event is at its seq")
        assert.isAbove(report.readerEvents, 0, table)
        assert.isAtLeast(report.journalEvents, report.ackedEvents)
        assert.strictEqual(report.epochs, 1, "always mode keeps its epoch across kills")
      }),
    180_000
  )
})
