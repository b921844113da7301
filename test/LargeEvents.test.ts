/**
 * Events of about 1 MB through the real server in a child process with a fixed heap: its
 * resident memory stays under a fixed bound, measured from outside (`npx tsx
 * harness/large-events.ts` runs the same with 4,061 events and prints the figures).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { formatLargeEvents, runLargeEvents } from "../harness/LargeEvents.js"

describe("large events", () => {
  it.live(
    "a_thousand_events_of_1_mb_through_the_server_keep_its_peak_rss_under_320_mib_with_a_128_mib_heap",
    () =>
      Effect.gen(function* () {
        const report = yield* Effect.promise(() => runLargeEvents({ events: 1000, heapMiB: 128 }))
        const summary = formatLargeEvents(report)
        assert.isUndefined(report.failure, summary)
        assert.isFalse(report.exit.duringRun, summary)
        assert.strictEqual(report.acked, 1000, summary)
        // Every event reaches the reading client, or a reset says which it missed: under load it
        // can fall behind the few segments the journal keeps here, and is then told to resync.
        assert.strictEqual(report.unannounced, 0, `no event missing without a reset: ${summary}`)
        assert.strictEqual(report.read + report.skipped, 1000, `every event read or reset over: ${summary}`)
        // Up, the server takes about 110 MiB; the heap may add up to 128 MiB, and the buffers
        // hold a few tens of MiB of events. Holding the events themselves would take gigabytes.
        assert.isBelow(report.peakRssMiB, 320, summary)
        assert.strictEqual(report.exit.code, 0, `SIGTERM stops it cleanly: ${summary}`)
      }),
    300_000
  )
})
