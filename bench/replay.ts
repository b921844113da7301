/**
 * Section 2, replay, in process: events/s reading a whole journal from seq 0.
 *
 * - ours, `feed.changes({ since: 0 })` until its `CaughtUp` marker (what a reconnecting library
 *   reader gets: decoded, validated events), `feed.changeLines({ since: 0 })` (the same reader with
 *   each event as its journal line, what the SSE stream sends), and `feed.read(0)` (the journal's
 *   read stream, no live handoff). Replay over SSE is measured end to end in section `http`.
 * - Redis Streams: `XREAD COUNT 10000` from the start over a stream holding the same lines (one
 *   field per entry), from a client process through the plain RESP client (replies counted).
 * - raw: `fs.createReadStream` over the same segment files (256 KiB chunks, as ours), split into
 *   lines, `JSON.parse` each.
 *
 * The journal is written through the library beforehand (fsync `never`); every figure is the best
 * of the section's repeat count, and the page cache is warm for all of them alike.
 */
import { Effect, Stream } from "effect"
import {
  type BenchConfig,
  directoryBytes,
  formatRatio,
  log,
  MB,
  now,
  openFeed,
  replayToHead,
  profiled,
  rawRead,
  type Report,
  runEffect,
  tempDir,
  removeDir,
  rounds,
  writeJournal
} from "./support.js"
import { redisLoadJournal, redisReplay } from "./processes.js"
import { REDIS_MISSING, redisVersion, startRedis } from "./redis.js"

const SECTION = "replay"
const XREAD_COUNT = 10_000

const sizes = (config: BenchConfig) => (config.quick ? { events: 60_000, repeat: 1 } : { events: 400_000, repeat: 2 })

const perSecond = (count: number, ms: number) => count / (ms / 1000)

interface Rate {
  readonly events: number
  readonly rate: number
}

export const oursChanges = (dir: string, as: "decoded" | "lines"): Promise<Rate> =>
  runEffect(
    Effect.gen(function* () {
      const { feed } = yield* openFeed(dir)
      const t0 = now()
      const events = yield* replayToHead(feed, as)
      return { events, rate: perSecond(events, now() - t0) }
    })
  )

const oursRead = (dir: string): Promise<Rate> =>
  runEffect(
    Effect.gen(function* () {
      const { feed } = yield* openFeed(dir)
      let events = 0
      const t0 = now()
      yield* feed.read(0).pipe(Stream.runForEachChunk((chunk) => Effect.sync(() => (events += chunk.length))))
      return { events, rate: perSecond(events, now() - t0) }
    })
  )

const raw = async (dir: string): Promise<Rate> => {
  const t0 = now()
  const events = await rawRead(dir)
  return { events, rate: perSecond(events, now() - t0) }
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  const dir = tempDir("replay")
  try {
    log(`replay: writing a journal of ${size.events} events`)
    await writeJournal(dir, size.events)
    const bytes = directoryBytes(dir)
    const detail = `${size.events} events, ${(bytes / MB).toFixed(0)} MiB`
    // Warm the page cache and the JIT for every reader alike.
    await rawRead(dir)
    await oursRead(dir)
    await oursChanges(dir, "decoded")

    const version = redisVersion()
    if (version === undefined) report.note(SECTION, REDIS_MISSING)
    const server = version === undefined ? undefined : await startRedis("everysec")
    try {
      let loaded = 0
      if (server !== undefined) {
        log(`replay: loading ${size.events} entries into redis-server ${version}`)
        loaded = await redisLoadJournal(server, "replay", dir)
      }
      log(`replay: ${detail}; ours, raw read and XREAD (from a client process) in turn, best of ${size.repeat} rounds`)
      type Reader = "changes" | "lines" | "read" | "raw" | "xread"
      const best = await rounds<Reader, Rate>(size.repeat, (r) => r.rate, [
        ["changes", () => profiled("replay-changes", () => oursChanges(dir, "decoded"))],
        ["lines", () => profiled("replay-lines", () => oursChanges(dir, "lines"))],
        ["read", () => profiled("replay-read", () => oursRead(dir))],
        ["raw", () => raw(dir)],
        ["xread", () => (server === undefined ? undefined : redisReplay(server, "replay", loaded))]
      ])
      for (const [what, r] of Object.entries(best)) {
        if (r !== undefined && r.events !== size.events) {
          throw new Error(`replay ${what}: read ${r.events} events, expected ${size.events}`)
        }
      }
      const figure = (id: string, label: string, r: Rate | undefined, baseline: boolean) => {
        if (r !== undefined) report.figure(SECTION, id, label, r.rate, "ev/s", { baseline, detail })
      }
      figure("replay.ours.changes", "ours feed.changes({since:0}) until CaughtUp", best.changes, false)
      figure("replay.ours.lines", "ours feed.changeLines({since:0}) until CaughtUp", best.lines, false)
      figure("replay.ours.read", "ours feed.read(0) (journal stream)", best.read, false)
      figure("replay.raw", "raw createReadStream + split + JSON.parse", best.raw, true)
      figure(
        "replay.redis.xread",
        `redis XREAD COUNT ${XREAD_COUNT}, plain client in a client process (replies counted)`,
        best.xread,
        true
      )
    } finally {
      await server?.stop()
    }
  } finally {
    removeDir(dir)
  }

  for (const fig of ["replay.ours.changes", "replay.ours.lines", "replay.ours.read"]) {
    report.ratio(fig, "replay.redis.xread", "XREAD")
    report.ratio(fig, "replay.raw", "raw read")
  }
  const lines = report.ratios.find((r) => r.figure === "replay.ours.lines" && r.against === "replay.redis.xread")
  report.goal(
    SECTION,
    "replay.ours.lines",
    "replay as JSON in process (changeLines from 0) >= 2x XREAD",
    lines === undefined ? "SKIP" : lines.value >= 2 ? "PASS" : "MISS",
    lines === undefined ? "redis-server not installed" : formatRatio(lines.value)
  )
}
