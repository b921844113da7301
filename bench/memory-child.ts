/**
 * The child process of section 4 (memory): runs one workload in a fresh Node process, samples
 * `process.memoryUsage().rss` every 10 ms, and prints one JSON line with the figures. Run by
 * `memory.ts` as `node --import tsx bench/memory-child.ts <mode> <dir> [...]`:
 *
 * - `replay <dir>`: `feed.changes({ since: 0 })` over the whole journal until `CaughtUp`;
 * - `raw <dir>`: the raw baseline over the same files (read stream, split, `JSON.parse`);
 * - `readers <dir> <readers> <rate> <seconds>`: a feed on an empty journal with that many live
 *   readers attached, written to at `rate` events/s for `seconds`, then given up to 30 s to
 *   deliver everything to every reader.
 */
import { Deferred, Effect, Exit, Stream } from "effect"
import { durableEvent, MB, now, openFeed, rawRead, replayToHead, rssSampler, runEffect, sessionOf } from "./support.js"

export interface ChildResult {
  readonly mode: string
  /** RSS once the process is set up (modules loaded, feed open, readers attached), before the workload. */
  readonly startRssMB: number
  readonly peakRssMB: number
  readonly events: number
  readonly ms: number
  readonly heapUsedMB: number
  /** `readers` mode: events delivered over events expected (all readers). */
  readonly delivered?: number
  /** `readers` mode: RSS before the readers were attached. */
  readonly bareRssMB?: number
}

const [mode, dir, ...rest] = process.argv.slice(2)
const sampler = rssSampler(10)
const mb = (bytes: number) => bytes / MB

const replay = (directory: string) =>
  runEffect(
    Effect.gen(function* () {
      const { feed } = yield* openFeed(directory)
      sampler.reset()
      const startRss = process.memoryUsage().rss
      const t0 = now()
      const events = yield* replayToHead(feed)
      return { startRss, events, ms: now() - t0 }
    })
  )

const raw = async (directory: string) => {
  sampler.reset()
  const startRss = process.memoryUsage().rss
  const t0 = now()
  const events = await rawRead(directory)
  return { startRss, events, ms: now() - t0 }
}

const readers = (directory: string, count: number, rate: number, seconds: number) =>
  runEffect(
    Effect.gen(function* () {
      const { feed } = yield* openFeed(directory, { fsync: "always" })
      const bareRss = process.memoryUsage().rss
      const total = Math.round(rate * seconds)
      const received = new Array<number>(count).fill(0)
      let caughtUp = 0
      const allCaughtUp = yield* Deferred.make<void>()
      if (count === 0) Deferred.unsafeDone(allCaughtUp, Exit.void)
      for (let r = 0; r < count; r++) {
        yield* feed.changes({ since: 0 }).pipe(
          Stream.runForEachChunk((chunk) =>
            Effect.sync(() => {
              for (const item of chunk) {
                if (item._tag === "Change") received[r]!++
                else if (item._tag === "CaughtUp" && ++caughtUp === count) Deferred.unsafeDone(allCaughtUp, Exit.void)
              }
            })
          ),
          Effect.forkScoped
        )
      }
      yield* Deferred.await(allCaughtUp)
      sampler.reset()
      const startRss = process.memoryUsage().rss
      // Write at a fixed rate in 10 ms ticks.
      const t0 = now()
      let sent = 0
      while (sent < total) {
        const due = Math.min(total, Math.floor(((now() - t0) / 1000) * rate))
        for (; sent < due; sent++) feed.unsafeRecord(sessionOf(sent), durableEvent(sent))
        yield* Effect.sleep("10 millis")
      }
      const deadline = now() + 30_000
      const expected = total * count
      let delivered = 0
      for (;;) {
        delivered = received.reduce((a, b) => a + b, 0)
        if (delivered >= expected || now() > deadline) break
        yield* Effect.sleep("20 millis")
      }
      const dropped = yield* feed.droppedCount
      // Let the writer journal everything accepted before the feed closes.
      while ((yield* feed.headSeq) < total - dropped && now() < deadline) yield* Effect.sleep("10 millis")
      return {
        startRss,
        bareRss,
        events: total - dropped,
        ms: now() - t0,
        delivered: expected === 0 ? 1 : delivered / expected
      }
    })
  )

interface Outcome {
  readonly startRss: number
  readonly events: number
  readonly ms: number
  readonly delivered?: number
  readonly bareRss?: number
}

const main = async () => {
  if (dir === undefined) throw new Error("usage: memory-child.ts replay|raw|readers <dir> [readers rate seconds]")
  const result: Outcome | undefined =
    mode === "replay"
      ? await replay(dir)
      : mode === "raw"
        ? await raw(dir)
        : mode === "readers"
          ? await readers(dir, Number(rest[0]), Number(rest[1]), Number(rest[2]))
          : undefined
  if (result === undefined) throw new Error(`unknown mode ${mode}`)
  const peak = sampler.peak
  sampler.stop()
  const out: ChildResult = {
    mode: mode!,
    startRssMB: mb(result.startRss),
    peakRssMB: mb(peak),
    events: result.events,
    ms: result.ms,
    heapUsedMB: mb(process.memoryUsage().heapUsed),
    ...(result.delivered !== undefined && result.bareRss !== undefined
      ? { delivered: result.delivered, bareRssMB: mb(result.bareRss) }
      : {})
  }
  process.stdout.write(JSON.stringify(out) + "\n")
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`memory-child: ${String(error?.stack ?? error)}\n`)
    process.exit(1)
  }
)
