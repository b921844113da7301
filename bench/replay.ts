/**
 * Section 2, replay: events/s reading a whole journal from seq 0.
 *
 * - ours, `feed.changes({ since: 0 })` until its `CaughtUp` marker (what a reconnecting library
 *   reader gets: decoded, validated events), `feed.changeLines({ since: 0 })` (the same reader with
 *   each event as its journal line, what the SSE stream sends), `GET /api/v1/stream?since=0` over
 *   loopback until `caught_up` (a reconnecting SSE client: the server and a client that counts
 *   frames, in this process), and `feed.read(0)` (the journal's read stream, no live handoff);
 * - Redis Streams: `XREAD COUNT 10000` from id 0 over a stream holding the same lines (one field
 *   per entry), with and without `JSON.parse` of each entry: without, it hands out each entry's
 *   JSON as a string, as `changeLines` and the SSE stream hand out each event's JSON as bytes;
 * - raw: `fs.createReadStream` over the same segment files (256 KiB chunks, as ours), split into
 *   lines, `JSON.parse` each.
 *
 * The journal is written through the library beforehand (fsync `never`); every figure is the best
 * of the section's repeat count, and the page cache is warm for all of them alike.
 */
import { Effect, Stream } from "effect"
import * as Fs from "node:fs"
import * as NodeHttp from "node:http"
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
  segmentFiles,
  tempDir,
  removeDir,
  rounds,
  writeJournal
} from "./support.js"
import { serveFeed } from "./server.js"
import { REDIS_MISSING, type RedisServer, redisVersion, startRedis } from "./redis.js"

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

const DATA = Buffer.from("\ndata: ")
const CAUGHT_UP = Buffer.from("event: caught_up\n")

/** Counts the change frames of an SSE body (`data:` lines after an `id:`) until `caught_up`. */
const countFramesUntilCaughtUp = (response: NodeHttp.IncomingMessage): Promise<number> =>
  new Promise((resolve, reject) => {
    let frames = 0
    let tail = Buffer.alloc(0)
    response.on("data", (chunk: Buffer) => {
      // A marker split across two chunks: search the last few bytes of the previous one too.
      const bytes = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk
      const end = bytes.indexOf(CAUGHT_UP)
      const upTo = end < 0 ? bytes.length : end
      for (let at = bytes.indexOf(DATA); at >= 0 && at < upTo; at = bytes.indexOf(DATA, at + DATA.length)) frames++
      if (end >= 0) {
        response.destroy()
        // Frames before `caught_up` that were all counted: the markers are not changes.
        return resolve(frames)
      }
      const keep = Math.max(DATA.length, CAUGHT_UP.length) - 1
      const cut = Math.max(0, bytes.length - keep)
      // Whatever starts before the cut was already counted; keep only what could begin a marker.
      tail = Buffer.from(bytes.subarray(cut))
      if (tail.indexOf(DATA) >= 0) tail = Buffer.alloc(0)
    })
    response.on("error", reject)
  })

/** A reconnecting SSE client: `GET /api/v1/stream?since=0` over loopback until `caught_up`. */
export const oursSse = (dir: string): Promise<Rate> =>
  runEffect(
    Effect.gen(function* () {
      const { feed } = yield* openFeed(dir)
      const port = yield* serveFeed(feed)
      const t0 = now()
      const events = yield* Effect.promise(
        () =>
          new Promise<number>((resolve, reject) => {
            const request = NodeHttp.get(
              { host: "127.0.0.1", port, path: "/api/v1/stream?since=0", agent: false },
              (response) => countFramesUntilCaughtUp(response).then(resolve, reject)
            )
            request.on("error", reject)
          })
      )
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

/** Loads the journal's lines into a stream, one entry (field `d`) per line, in pipelines of 1000. */
const loadRedis = async (server: RedisServer, dir: string, key: string): Promise<number> => {
  const client = await server.connect()
  let pipeline = client.pipeline()
  let pending = 0
  let total = 0
  for (const file of segmentFiles(dir)) {
    const lines = Fs.readFileSync(file, "utf8").split("\n")
    for (const line of lines) {
      if (line === "") continue
      pipeline.xadd(key, "*", "d", line)
      total++
      if (++pending === 1000) {
        await pipeline.exec()
        pipeline = client.pipeline()
        pending = 0
      }
    }
  }
  if (pending > 0) await pipeline.exec()
  return total
}

const xread = async (server: RedisServer, key: string, total: number, parse: boolean): Promise<Rate> => {
  const client = await server.connect()
  let events = 0
  let last = "0"
  const t0 = now()
  while (events < total) {
    const reply = await client.xread("COUNT", XREAD_COUNT, "STREAMS", key, last)
    if (reply === null) break
    const entries = reply[0]![1]
    if (parse) for (const [, fields] of entries) JSON.parse(fields[1]!)
    events += entries.length
    last = entries[entries.length - 1]![0]
  }
  const rate = perSecond(events, now() - t0)
  client.disconnect()
  return { events, rate }
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  const dir = tempDir("replay")
  try {
    log(`replay: writing a journal of ${size.events} events`)
    await writeJournal(dir, size.events)
    const bytes = directoryBytes(dir)
    const detail = `${size.events} events, ${(bytes / MB).toFixed(0)} MiB`
    // Warm the page cache and the JIT for every reader alike (Redis's gets its own warm-up below).
    await rawRead(dir)
    await oursRead(dir)
    await oursChanges(dir, "decoded")
    await oursSse(dir) // reads lines too

    const version = redisVersion()
    if (version === undefined) report.note(SECTION, REDIS_MISSING)
    const server = version === undefined ? undefined : await startRedis("everysec")
    try {
      let loaded = 0
      if (server !== undefined) {
        log(`replay: loading ${size.events} entries into redis-server ${version}`)
        loaded = await loadRedis(server, dir, "replay")
        await xread(server, "replay", Math.min(loaded, 50_000), true) // warm-up
      }
      log(`replay: ${detail}; ours, raw read and XREAD in turn, best of ${size.repeat} rounds`)
      type Reader = "changes" | "lines" | "sse" | "read" | "raw" | "xreadParse" | "xread"
      const best = await rounds<Reader, Rate>(size.repeat, (r) => r.rate, [
        ["changes", () => profiled("replay-changes", () => oursChanges(dir, "decoded"))],
        ["lines", () => profiled("replay-lines", () => oursChanges(dir, "lines"))],
        ["sse", () => profiled("replay-sse", () => oursSse(dir))],
        ["read", () => profiled("replay-read", () => oursRead(dir))],
        ["raw", () => raw(dir)],
        ["xreadParse", () => (server === undefined ? undefined : xread(server, "replay", loaded, true))],
        ["xread", () => (server === undefined ? undefined : xread(server, "replay", loaded, false))]
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
      figure("replay.ours.sse", "ours GET /api/v1/stream?since=0 until caught_up", best.sse, false)
      figure("replay.ours.read", "ours feed.read(0) (journal stream)", best.read, false)
      figure("replay.raw", "raw createReadStream + split + JSON.parse", best.raw, true)
      figure("replay.redis.xread.parse", `redis XREAD COUNT ${XREAD_COUNT} + JSON.parse`, best.xreadParse, true)
      figure("replay.redis.xread", `redis XREAD COUNT ${XREAD_COUNT} (no parse)`, best.xread, true)
    } finally {
      await server?.stop()
    }
  } finally {
    removeDir(dir)
  }

  for (const fig of ["replay.ours.changes", "replay.ours.lines", "replay.ours.sse", "replay.ours.read"]) {
    report.ratio(fig, "replay.redis.xread.parse", "XREAD+parse")
    report.ratio(fig, "replay.redis.xread", "XREAD")
    report.ratio(fig, "replay.raw", "raw read")
  }
  // The goal compares like with like: events handed out as JSON (our lines, XREAD's strings), and
  // events handed out parsed (our decoded, validated events, XREAD's entries through JSON.parse).
  const ratio = (figure: string, against: string) =>
    report.ratios.find((r) => r.figure === figure && r.against === against)?.value
  const lines = ratio("replay.ours.lines", "replay.redis.xread")
  const sse = ratio("replay.ours.sse", "replay.redis.xread")
  const decoded = ratio("replay.ours.changes", "replay.redis.xread.parse")
  if (lines === undefined || decoded === undefined) {
    report.goal(SECTION, "replay.ours.lines", "replay >= 2x XREAD", "SKIP", "redis-server not installed")
  } else {
    report.goal(
      SECTION,
      "replay.ours.lines",
      "replay as JSON (changeLines from 0) >= 2x XREAD",
      lines >= 2 ? "PASS" : "MISS",
      `${formatRatio(lines)}${sse === undefined ? "" : `; over SSE ${formatRatio(sse)}`}`
    )
    report.goal(
      SECTION,
      "replay.ours.changes",
      "replay decoded (changes from 0) >= 2x XREAD + JSON.parse",
      decoded >= 2 ? "PASS" : "MISS",
      formatRatio(decoded)
    )
  }
}
