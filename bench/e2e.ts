/**
 * The headline section (`http`): the service end to end over HTTP, as its users get it, against
 * Redis Streams in the same run. The server is the service as `npm start` runs it (`npm run
 * build`, then `node dist/main.js`, configured by its environment, fsync `always`; or
 * `BENCH_SERVER`'s build, run the same way) in a process of its own; every client is a process
 * of its own (`e2e-client.ts`); Redis (`redis-server`, AOF on, automatic rewrite off, a fresh
 * folder per run) is driven through the plain pipelined RESP client, with the same event count
 * and the same bytes per event (the feed's journal line).
 * Server CPU time is read from `/proc/<pid>/stat` (user + system, every thread) around each run.
 * Figures are of a warm server, as users of a running service get it: both sides first run the
 * same shape unmeasured (a server's first seconds compile its code); the first replay of a fresh
 * server is reported beside the second, and the overload shape, judged on its first seconds, has
 * no warm-up.
 *
 * 1. Ingest: 4 client processes POST 500-event batches (one request in flight each), against 4
 *    client processes each pipelining 500 `XADD`s per round trip, `appendfsync always` and
 *    `everysec`; each after a warm-up of the same shape on the same server, unmeasured: as many
 *    events as measured in a full run, 240,000 in a quick one (60,000 left the service ~10 %
 *    short of warm: more CPU per event than after 240,000, in every one of five pairs).
 * 2. Replay: `GET /api/v1/stream?since=0` until `caught_up` from a client process, against
 *    `XREAD COUNT 10000` over a stream holding the same journal lines, twice per server (the
 *    second is the headline); the server's peak RSS (`VmHWM`) over both. Then the same client
 *    against a process that sends the service's replay as recorded, from memory, with no work per
 *    event (`sse-recorded`): the client's own ceiling here, which ours and `XREAD` are read against.
 * 3. Fan-out: N SSE subscribers (in 4 client processes holding N/4 connections each) while a
 *    producer process POSTs at a fixed rate (a POST every 10 ms); each event carries the time it
 *    was sent, and latency is from then to its receipt by each subscriber, after a warm-up of
 *    the same shape whose events are not counted. Redis: N connections
 *    on `XREAD BLOCK` (in 4 processes) while the same producer shape `XADD`s, pipelined, with
 *    `appendfsync always`, each tick's XADDs in one MULTI/EXEC (one batch, as one POST is).
 *    Shapes: 100 subscribers at 10,000 ev/s; 1,000 at 1,000 ev/s; overload, 100 subscribers at
 *    3x the rate the machine sustained, its p99 per 1 s window and its acked rate against the
 *    same producer with none, on both sides at the same rate.
 * 4. Idle streams, in a fresh service of their own: a warm-up round of 200 SSE streams opened
 *    and closed (until `/api/v1/status` counts no subscriber), so one-time costs (code compiled,
 *    modules loaded lazily, the heap grown by the first connections) are not counted per stream;
 *    then the server's RSS (`VmRSS`, no GC forced) with none open and with 1,000 open and idle,
 *    the difference over 1,000.
 */
import { getJson } from "./common.js"
import type { ProduceResult, SubscribeResult } from "./e2e-client.js"
import {
  type Load,
  redisLoad,
  redisLoadJournal,
  redisReplay,
  type RecordedReplay,
  type Replay,
  runLoad,
  type Service,
  sseReplay,
  startClient,
  startRecordedReplay,
  startService
} from "./processes.js"
import { REDIS_MISSING, type RedisServer, redisVersion, startRedis } from "./redis.js"
import {
  type BenchConfig,
  clock,
  eventsForBytes,
  flushDisk,
  formatRatio,
  Histogram,
  log,
  MB,
  type Report,
  sleep,
  tempDir,
  writeJournal
} from "./support.js"

const SECTION = "http"
const BATCH = 500
const LOAD_CLIENTS = 4
const SUBSCRIBER_PROCESSES = 4
const PRODUCER_IN_FLIGHT = 32
const IDLE_STREAMS = 1000
const WARMUP_STREAMS = 200

interface Sizes {
  /** Events per ingest run (both sides). */
  readonly ingest: number
  /** Events of the unmeasured run before it, on the same server (both sides). */
  readonly ingestWarm: number
  readonly rounds: number
  /** Journal bytes replayed. */
  readonly replayBytes: number
  readonly fanSeconds: number
  /** The producer's warm-up before a fan-out run's measured seconds (its events not counted). */
  readonly fanWarmSeconds: number
  readonly overloadSeconds: number
  readonly waitMs: number
}

const sizes = (config: BenchConfig): Sizes =>
  config.quick
    ? {
        ingest: 60_000,
        ingestWarm: 240_000,
        rounds: 1,
        replayBytes: 64 * MB,
        fanSeconds: 1,
        fanWarmSeconds: 1,
        overloadSeconds: 3,
        waitMs: 2_000
      }
    : {
        ingest: 400_000,
        ingestWarm: 400_000,
        rounds: 2,
        replayBytes: 512 * MB,
        fanSeconds: 5,
        fanWarmSeconds: 2,
        overloadSeconds: 10,
        waitMs: 5_000
      }

const us = (n: number) => `${n.toFixed(1)} µs/event`

// ---------------------------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------------------------

/** Runs `load` of `warm` events unmeasured (the warm-up, its figures dropped), then of `events`, measured. */
const warmedUp = async <A>(load: (events: number) => Promise<A>, warm: number, events: number): Promise<A> => {
  await load(warm)
  return load(events)
}

const oursIngest = async (size: Sizes): Promise<Load> => {
  flushDisk()
  const service = await startService("ingest", { FEED_FSYNC: "always" })
  try {
    return await warmedUp(
      (events) =>
        runLoad(
          Array.from(
            { length: LOAD_CLIENTS },
            () => ["post", [service.port, events / LOAD_CLIENTS, BATCH, 1]] as const
          ),
          service.cpuMs
        ),
      size.ingestWarm,
      size.ingest
    )
  } finally {
    await service.stop()
  }
}

const redisIngest = async (appendfsync: "always" | "everysec", size: Sizes): Promise<Load> => {
  flushDisk()
  const server = await startRedis(appendfsync)
  try {
    return await warmedUp(
      (events) => redisLoad(server, "ingest", events, BATCH, LOAD_CLIENTS, 1),
      size.ingestWarm,
      size.ingest
    )
  } finally {
    await server.stop()
  }
}

const ingest = async (size: Sizes, report: Report, redis: boolean): Promise<void> => {
  log(
    `http: ingest, ${size.ingest} events (after ${size.ingestWarm} unmeasured) in POSTs of ${BATCH} from ` +
      `${LOAD_CLIENTS} client processes (fsync always), against XADD pipelines of ${BATCH} from ${LOAD_CLIENTS} ` +
      `processes; best of ${size.rounds}`
  )
  let ours: Load | undefined
  const theirs: Partial<Record<"always" | "everysec", Load>> = {}
  const better = (a: Load | undefined, b: Load) => (a === undefined || b.rate > a.rate ? b : a)
  for (let round = 0; round < size.rounds; round++) {
    ours = better(ours, await oursIngest(size))
    if (redis) {
      theirs.always = better(theirs.always, await redisIngest("always", size))
      theirs.everysec = better(theirs.everysec, await redisIngest("everysec", size))
    }
  }
  const detail = `${size.ingest} events of ~330 B, ${LOAD_CLIENTS} client processes, one request in flight each`
  report.figure(
    SECTION,
    "http.ingest.ours",
    `ours POST ${BATCH}-event batches, fsync always: acked`,
    ours!.rate,
    "ev/s",
    {
      detail
    }
  )
  report.figure(SECTION, "http.ingest.ours.cpu", "  server CPU per event", ours!.cpuPerEventUs, "µs")
  for (const fsync of ["always", "everysec"] as const) {
    const r = theirs[fsync]
    if (r === undefined) continue
    report.figure(
      SECTION,
      `http.ingest.redis.${fsync}`,
      `redis XADD pipelined ${BATCH}, appendfsync ${fsync}: acked`,
      r.rate,
      "ev/s",
      { baseline: true }
    )
    report.figure(SECTION, `http.ingest.redis.${fsync}.cpu`, "  redis-server CPU per event", r.cpuPerEventUs, "µs", {
      baseline: true
    })
    report.ratio("http.ingest.ours", `http.ingest.redis.${fsync}`, `redis ${fsync}`)
    report.ratio("http.ingest.ours.cpu", `http.ingest.redis.${fsync}.cpu`, `redis ${fsync}`, true)
  }
  const always = theirs.always
  report.goal(
    SECTION,
    "http.ingest.ours",
    "HTTP ingest (fsync always) >= 1.0x redis appendfsync always (aim 2x)",
    always === undefined ? "SKIP" : ours!.rate >= always.rate ? "PASS" : "MISS",
    always === undefined
      ? "redis-server not installed"
      : `${formatRatio(ours!.rate / always.rate)}${ours!.rate >= 2 * always.rate ? " (aim met)" : ""}`
  )
  report.goal(
    SECTION,
    "http.ingest.ours.cpu",
    "HTTP ingest server CPU <= 4 µs/event (500-event POSTs)",
    ours!.cpuPerEventUs <= 4 ? "PASS" : "MISS",
    `${us(ours!.cpuPerEventUs)}${always === undefined ? "" : `; redis always ${us(always.cpuPerEventUs)}`}`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------------------------

const replay = async (size: Sizes, config: BenchConfig, report: Report, redis: boolean): Promise<void> => {
  const events = eventsForBytes(size.replayBytes)
  const dir = tempDir("replay-service")
  log(`http: replay, writing a journal of ~${size.replayBytes / MB} MiB (${events} events)`)
  await writeJournal(dir, events)
  let server: RedisServer | undefined
  let ours: Replay | undefined
  let theirs: Replay | undefined
  // The first replay of a fresh server, before its code is compiled, reported beside the second.
  let oursFirst: Replay | undefined
  let theirsFirst: Replay | undefined
  let recorded: RecordedReplay | undefined
  let ceiling: Replay | undefined
  let peak = 0
  let before = 0
  try {
    log(`http: replay, XREAD COUNT 10000 from a client process, then over SSE to a client process`)
    if (redis) {
      // Loaded from the journal's own lines before the service replays it (its stop removes the folder).
      server = await startRedis("everysec")
      const loaded = await redisLoadJournal(server, "replay", dir)
      theirsFirst = await redisReplay(server, "replay", loaded)
      theirs = await redisReplay(server, "replay", loaded)
      await server.stop()
      server = undefined
    }
    const service: Service = await startService("replay", {}, dir)
    try {
      before = service.peakRss()
      oursFirst = await sseReplay(service)
      ours = await sseReplay(service)
      peak = service.peakRss()
      recorded = await startRecordedReplay(service)
    } finally {
      await service.stop()
    }
    // The same client against the replay's bytes served from memory: what it takes at most here.
    await sseReplay(recorded)
    ceiling = await sseReplay(recorded)
  } finally {
    await server?.stop()
    await recorded?.stop()
  }
  if (ours.events !== events) throw new Error(`SSE replay counted ${ours.events} events, expected ${events}`)
  if (ceiling!.events !== events)
    throw new Error(`the recorded replay counted ${ceiling!.events} events, expected ${events}`)
  const first = (r: Replay) => `first replay of the fresh server ${Math.round(r.rate)} ev/s, ${us(r.cpuPerEventUs)}`
  const detail = `${events} events, ${(size.replayBytes / MB).toFixed(0)} MiB; ${first(oursFirst!)}`
  report.figure(
    SECTION,
    "http.replay.ours",
    "ours GET /api/v1/stream?since=0 until caught_up (2nd replay)",
    ours.rate,
    "ev/s",
    { detail }
  )
  report.figure(SECTION, "http.replay.ours.cpu", "  server CPU per event", ours.cpuPerEventUs, "µs")
  report.figure(SECTION, "http.replay.ours.first", "  1st replay of the fresh server", oursFirst!.rate, "ev/s")
  report.figure(
    SECTION,
    "http.replay.ceiling",
    "  the same client from a process sending the recorded replay (no work per event)",
    ceiling!.rate,
    "ev/s",
    { detail: "the SSE client's own ceiling on this machine (2nd of two)" }
  )
  report.ratio("http.replay.ours", "http.replay.ceiling", "ceiling")
  if (theirs !== undefined) {
    if (theirs.events !== events) throw new Error(`XREAD counted ${theirs.events} events, expected ${events}`)
    report.figure(
      SECTION,
      "http.replay.redis",
      "redis XREAD COUNT 10000, plain client (2nd replay)",
      theirs.rate,
      "ev/s",
      {
        baseline: true,
        detail: first(theirsFirst!)
      }
    )
    report.figure(SECTION, "http.replay.redis.cpu", "  redis-server CPU per event", theirs.cpuPerEventUs, "µs", {
      baseline: true
    })
    report.figure(SECTION, "http.replay.redis.first", "  1st replay of the fresh server", theirsFirst!.rate, "ev/s", {
      baseline: true
    })
    report.ratio("http.replay.ours", "http.replay.redis", "XREAD")
    report.ratio("http.replay.ours.cpu", "http.replay.redis.cpu", "XREAD", true)
    report.ratio("http.replay.ours.first", "http.replay.redis.first", "XREAD")
    report.ratio("http.replay.ceiling", "http.replay.redis", "XREAD")
  }
  report.goal(
    SECTION,
    "http.replay.ours",
    "replay over SSE to a client process >= 1.0x XREAD COUNT 10000 (aim 1.5x)",
    theirs === undefined ? "SKIP" : ours.rate >= theirs.rate ? "PASS" : "MISS",
    theirs === undefined ? "redis-server not installed" : formatRatio(ours.rate / theirs.rate)
  )
  report.figure(
    SECTION,
    "http.replay.peak",
    `server peak RSS (VmHWM) replaying ${(size.replayBytes / MB).toFixed(0)} MiB over SSE`,
    peak / MB,
    "MB",
    { detail: `peak before the replay ${(before / MB).toFixed(0)} MB` }
  )
  report.goal(
    SECTION,
    "http.replay.peak",
    `server peak RSS < 200 MB replaying 512 MiB${config.quick ? ` (quick: ${size.replayBytes / MB} MiB)` : ""}`,
    peak / MB < 200 ? "PASS" : "MISS",
    `${(peak / MB).toFixed(0)} MB`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Fan-out
// ---------------------------------------------------------------------------------------------------------------

interface FanRun {
  readonly subscribers: number
  readonly rate: number
  readonly sent: number
  readonly acked: number
  /** Events acknowledged per second, from the first send to the last acknowledgement. */
  readonly ackRate: number
  readonly ackP99: number
  /** Deliveries over sent x subscribers. */
  readonly delivered: number
  readonly latency: Histogram
  /** p99 per 1 s window of receipt. */
  readonly windows: Array<number>
  readonly cpuPerEventUs: number
}

/** Splits `n` connections over at most `SUBSCRIBER_PROCESSES` processes. */
const spread = (n: number): Array<number> => {
  const processes = Math.min(n, SUBSCRIBER_PROCESSES)
  return Array.from(
    { length: processes },
    (_, k) => Math.floor(((k + 1) * n) / processes) - Math.floor((k * n) / processes)
  )
}

/** The same shape on both sides: subscribers ready, then a producer at `rate` for `seconds`. */
const fanRun = async (
  side: "ours" | "redis",
  subscribers: number,
  rate: number,
  seconds: number,
  waitMs: number,
  warmSeconds: number
): Promise<FanRun> => {
  flushDisk()
  let service: Service | undefined
  let redis: RedisServer | undefined
  try {
    if (side === "ours") service = await startService(`fanout-${subscribers}-${rate}`, { FEED_FSYNC: "always" })
    else redis = await startRedis("always")
    const port = service?.port ?? redis!.port
    // The server settles after its start, and the subscribers after they connected, before the go.
    await sleep(300)
    const subs = await Promise.all(
      spread(subscribers).map((connections) =>
        startClient<SubscribeResult>(
          side === "ours" ? "sse-sub" : "xread-sub",
          side === "ours" ? [port, connections] : [port, "fan", connections]
        )
      )
    )
    await sleep(500)
    const producer = await startClient<ProduceResult>(
      side === "ours" ? "produce-http" : "produce-redis",
      side === "ours"
        ? [port, rate, seconds, PRODUCER_IN_FLIGHT, warmSeconds]
        : [port, "fan", rate, seconds, PRODUCER_IN_FLIGHT, warmSeconds]
    )
    const cpuMs = service?.cpuMs ?? redis!.cpuMs
    const go = clock()
    const t0 = go + warmSeconds * 1000
    producer.send({ t0: go })
    for (const c of subs) c.send({ t0 })
    await sleep(t0 - clock())
    const cpu0 = cpuMs()
    const produced = await producer.result
    if (produced.failures > 0)
      throw new Error(`the producer saw ${produced.failures} failures: ${produced.firstFailure}`)
    for (const s of subs) s.send({ expect: produced.sent, deadline: clock() + waitMs })
    const received = await Promise.all(subs.map((s) => s.result))
    const cpu1 = cpuMs()
    const latency = new Histogram()
    const windows: Array<Histogram> = []
    let deliveries = 0
    for (const r of received) {
      deliveries += r.deliveries
      latency.merge(Histogram.fromSparse(r.latency))
      r.windows.forEach((w, i) => {
        while (windows.length <= i) windows.push(new Histogram())
        windows[i]!.merge(Histogram.fromSparse(w))
      })
    }
    // Deliveries still missing at the deadline count as that late (a lower bound).
    const missing = produced.sent * subscribers - deliveries
    if (missing > 0) latency.recordManyMs(waitMs, missing)
    return {
      subscribers,
      rate,
      sent: produced.sent,
      acked: produced.acked,
      ackRate: produced.acked / ((produced.endedAt - produced.startedAt) / 1000),
      ackP99: Histogram.fromSparse(produced.ack).quantileMs(0.99),
      delivered: subscribers === 0 ? 1 : deliveries / Math.max(1, produced.sent * subscribers),
      latency,
      windows: windows.map((w) => w.quantileMs(0.99)),
      cpuPerEventUs: ((cpu1 - cpu0) * 1000) / Math.max(1, produced.acked)
    }
  } finally {
    await service?.stop()
    await redis?.stop()
  }
}

const fanDetail = (r: FanRun): string =>
  `acked ${Math.round(r.ackRate)} ev/s of ${r.rate} asked (ack p99 ${r.ackP99.toFixed(0)} ms), ` +
  `${(r.delivered * 100).toFixed(1)} % of ${r.sent} x ${r.subscribers} delivered, max ${r.latency.max.toFixed(0)} ms, ` +
  `server CPU ${us(r.cpuPerEventUs)}`

const keptUp = (r: FanRun): boolean => r.ackRate >= r.rate * 0.95 && r.delivered >= 0.999

const fanFigures = (report: Report, id: string, what: string, ours: FanRun, redis: FanRun | undefined): void => {
  report.figure(SECTION, `${id}.p50`, `ours SSE ${what}: delivery p50`, ours.latency.quantileMs(0.5), "ms", {
    detail: fanDetail(ours)
  })
  report.figure(SECTION, `${id}.p99`, `ours SSE ${what}: delivery p99`, ours.latency.quantileMs(0.99), "ms")
  report.figure(SECTION, `${id}.ack`, `ours SSE ${what}: producer acked`, ours.ackRate, "ev/s")
  if (redis === undefined) return
  report.figure(
    SECTION,
    `${id}.redis.p50`,
    `redis XREAD BLOCK ${what}: delivery p50`,
    redis.latency.quantileMs(0.5),
    "ms",
    {
      baseline: true,
      detail: fanDetail(redis)
    }
  )
  report.figure(
    SECTION,
    `${id}.redis.p99`,
    `redis XREAD BLOCK ${what}: delivery p99`,
    redis.latency.quantileMs(0.99),
    "ms",
    {
      baseline: true
    }
  )
  report.figure(SECTION, `${id}.redis.ack`, `redis XREAD BLOCK ${what}: producer acked`, redis.ackRate, "ev/s", {
    baseline: true
  })
  report.ratio(`${id}.p50`, `${id}.redis.p50`, "redis", true)
  report.ratio(`${id}.p99`, `${id}.redis.p99`, "redis", true)
  report.ratio(`${id}.ack`, `${id}.redis.ack`, "redis")
}

interface IdleRun {
  /** Server RSS after the warm-up round, with no stream open, bytes. */
  readonly none: number
  /** Server RSS with `IDLE_STREAMS` idle streams open, bytes. */
  readonly idle: number
}

/** Opens `streams` idle SSE streams from client processes; answers a function that closes them. */
const openStreams = async (port: number, streams: number): Promise<() => Promise<void>> => {
  const clients = await Promise.all(
    spread(streams).map((connections) => startClient<SubscribeResult>("sse-sub", [port, connections]))
  )
  return async () => {
    // Expecting no event, each client process reports at once and exits, which closes its connections.
    for (const c of clients) c.send({ t0: clock() })
    for (const c of clients) c.send({ expect: 0, deadline: clock() })
    await Promise.all(clients.map((c) => c.result))
  }
}

/** Waits until the service's status counts no subscriber (the streams closed are gone from it). */
const noSubscribers = async (port: number, timeoutMs = 30_000): Promise<void> => {
  const deadline = clock() + timeoutMs
  for (;;) {
    const { subscribers } = await getJson<{ subscribers: number }>(port, "/api/v1/status")
    if (subscribers === 0) return
    if (clock() > deadline)
      throw new Error(`the service still counts ${subscribers} subscribers ${timeoutMs} ms after they closed`)
    await sleep(50)
  }
}

/**
 * RSS of a fresh service with no stream open and with `IDLE_STREAMS` idle ones, read as it is
 * (`VmRSS`, no GC forced). A warm-up round of `WARMUP_STREAMS` streams is opened and closed
 * first, so what a first connection costs once (code compiled, modules loaded lazily, the heap
 * grown) is in the "none" reading rather than spread over the streams.
 */
const idleRun = async (): Promise<IdleRun> => {
  const service = await startService("idle", { FEED_FSYNC: "always" })
  try {
    const close = await openStreams(service.port, WARMUP_STREAMS)
    await close()
    await noSubscribers(service.port)
    await sleep(300)
    const none = service.rss()
    const closeIdle = await openStreams(service.port, IDLE_STREAMS)
    await sleep(500)
    const idle = service.rss()
    await closeIdle()
    return { none, idle }
  } finally {
    await service.stop()
  }
}

const idle = async (report: Report): Promise<void> => {
  log(
    `http: idle streams, a warm-up round of ${WARMUP_STREAMS} SSE streams opened and closed, ` +
      `then ${IDLE_STREAMS} in ${spread(IDLE_STREAMS).length} client processes`
  )
  const r = await idleRun()
  const perIdle = (r.idle - r.none) / IDLE_STREAMS / 1024
  report.figure(
    SECTION,
    "http.idle",
    `server RSS per idle SSE stream ((${IDLE_STREAMS.toLocaleString("en-US")} streams - none) / ${IDLE_STREAMS.toLocaleString("en-US")})`,
    perIdle,
    "KiB",
    {
      detail:
        `"none" after a warm-up round of ${WARMUP_STREAMS} streams (opened, closed, status back to 0 subscribers); ` +
        `VmRSS, no GC forced: ${(r.none / MB).toFixed(0)} MB -> ${(r.idle / MB).toFixed(0)} MB`
    }
  )
  report.goal(
    SECTION,
    "http.idle",
    "memory per idle SSE subscriber < 64 KiB",
    perIdle < 64 ? "PASS" : "MISS",
    `${perIdle.toFixed(1)} KiB`
  )
}

const fanout = async (size: Sizes, report: Report, redis: boolean): Promise<void> => {
  const shape = (subscribers: number, rate: number) => `${subscribers} subs @ ${rate} ev/s`
  const both = async (subscribers: number, rate: number, seconds: number) => {
    log(
      `http: fan-out, ${shape(subscribers, rate)} for ${seconds} s after a warm-up of ${size.fanWarmSeconds} s: ` +
        `SSE subscribers in ${spread(subscribers).length} ` +
        `client processes, producer POSTing every 10 ms; then Redis XREAD BLOCK, the same shape`
    )
    const ours = await fanRun("ours", subscribers, rate, seconds, size.waitMs, size.fanWarmSeconds)
    const theirs = redis
      ? await fanRun("redis", subscribers, rate, seconds, size.waitMs, size.fanWarmSeconds)
      : undefined
    return { ours, theirs }
  }

  // 100 subscribers at 10,000 ev/s.
  const a = await both(100, 10_000, size.fanSeconds)
  fanFigures(report, "http.fan100", shape(100, 10_000), a.ours, a.theirs)
  const p99 = a.ours.latency.quantileMs(0.99)
  const redisP99 = a.theirs?.latency.quantileMs(0.99)
  report.goal(
    SECTION,
    "http.fan100.p99",
    "100 SSE subscribers, producer over HTTP at 10,000 ev/s: keeps up and p99 < 50 ms (aim < 20 ms, <= 2x redis)",
    keptUp(a.ours) && p99 < 50 ? "PASS" : "MISS",
    `p99 ${p99.toFixed(1)} ms, acked ${Math.round(a.ours.ackRate)} ev/s, ${(a.ours.delivered * 100).toFixed(1)} % delivered` +
      (redisP99 === undefined ? "" : `; redis p99 ${redisP99.toFixed(1)} ms (${formatRatio(p99 / redisP99)} of it)`) +
      (keptUp(a.ours) && p99 < 20 && (redisP99 === undefined || p99 <= 2 * redisP99) ? "; aim met" : "")
  )

  // 1,000 subscribers at 1,000 ev/s; then the memory of an idle stream, in a service of its own.
  const b = await both(1000, 1_000, size.fanSeconds)
  fanFigures(report, "http.fan1000", shape(1000, 1_000), b.ours, b.theirs)
  const p99b = b.ours.latency.quantileMs(0.99)
  report.goal(
    SECTION,
    "http.fan1000.p99",
    "1,000 SSE subscribers at 1,000 ev/s: p99 < 100 ms",
    keptUp(b.ours) && p99b < 100 ? "PASS" : "MISS",
    `p99 ${p99b.toFixed(1)} ms, ${(b.ours.delivered * 100).toFixed(1)} % delivered` +
      (b.theirs === undefined ? "" : `; redis p99 ${b.theirs.latency.quantileMs(0.99).toFixed(1)} ms`)
  )
  await idle(report)

  // Overload: 3x what the machine sustained with 100 subscribers, the same rate on both sides.
  const sustained = keptUp(a.ours) ? 10_000 : Math.max(100, Math.min(a.ours.ackRate, 10_000 * a.ours.delivered))
  const rate = Math.round((3 * sustained) / 100) * 100
  log(
    `http: overload, 100 subscribers at ${rate} ev/s (3x the ${Math.round(sustained)} ev/s sustained), then no subscriber; ` +
      `then Redis XREAD BLOCK, the same two runs`
  )
  const ours = await overloadRun("ours", rate, size)
  const theirs = redis ? await overloadRun("redis", rate, size) : undefined
  overloadFigures(report, "http.over", `ours SSE overload, ${shape(100, rate)}`, "same producer", ours, false)
  if (theirs !== undefined) {
    overloadFigures(
      report,
      "http.over.redis",
      `redis XREAD BLOCK overload, ${shape(100, rate)}`,
      "same MULTI/XADD producer",
      theirs,
      true
    )
    report.ratio("http.over.p99", "http.over.redis.p99", "redis", true)
    report.ratio("http.over.ack", "http.over.redis.ack", "redis")
  }
  report.goal(
    SECTION,
    "http.over.p99",
    "overload (100 subscribers at 3x sustained): p99 stops growing after the first seconds",
    ours.plateau.holds ? "PASS" : "MISS",
    `${ours.plateau.text}${theirs === undefined ? "" : `; redis ${theirs.plateau.text}`}`
  )
  report.goal(
    SECTION,
    "http.over.ack",
    "overload: acked ingest >= 80 % of the rate with no subscriber",
    ours.over.ackRate >= 0.8 * ours.alone.ackRate ? "PASS" : "MISS",
    `${ackedShare(ours)}${theirs === undefined ? "" : `; redis ${ackedShare(theirs)}`}`
  )
}

interface Overload {
  /** 100 subscribers at the overload rate. */
  readonly over: FanRun
  /** The same producer with no subscriber. */
  readonly alone: FanRun
  /** p99 per 1 s window of receipt, over the producer's seconds. */
  readonly windows: Array<number>
  readonly plateau: { readonly holds: boolean; readonly text: string }
}

/** One side's overload: 100 subscribers at `rate`, then the same producer with none. */
const overloadRun = async (side: "ours" | "redis", rate: number, size: Sizes): Promise<Overload> => {
  // No warm-up: the first seconds, where the backlog builds, are what the plateau is judged on.
  const over = await fanRun(side, 100, rate, size.overloadSeconds, size.waitMs, 0)
  const alone = await fanRun(side, 0, rate, size.overloadSeconds, size.waitMs, 0)
  const windows = over.windows.slice(0, size.overloadSeconds)
  // Plateau: after a ramp of two windows, no window's p99 exceeds 1.5x the higher of those two.
  const ramp = Math.max(windows[0] ?? Number.NaN, windows[1] ?? Number.NaN)
  const later = windows.slice(2)
  const worst = Math.max(...later)
  return {
    over,
    alone,
    windows,
    plateau: {
      holds: later.length > 0 && worst <= 1.5 * ramp,
      text:
        `p99 per 1 s window ${windowsText(windows)} ms ` +
        `(worst from the 3rd on ${worst.toFixed(0)} ms, ${formatRatio(worst / ramp)} the first two's)`
    }
  }
}

const windowsText = (windows: ReadonlyArray<number>): string => windows.map((w) => w.toFixed(0)).join(", ")

const ackedShare = (o: Overload): string =>
  `${Math.round(o.over.ackRate)} vs ${Math.round(o.alone.ackRate)} ev/s ` +
  `(${((o.over.ackRate / o.alone.ackRate) * 100).toFixed(0)} %)`

/** One side's overload figures: delivery p99 (its windows in the detail), acked, acked with no subscriber. */
const overloadFigures = (
  report: Report,
  id: string,
  what: string,
  alone: string,
  o: Overload,
  baseline: boolean
): void => {
  report.figure(SECTION, `${id}.p99`, `${what}: delivery p99`, o.over.latency.quantileMs(0.99), "ms", {
    baseline,
    detail: `p99 per 1 s window: ${windowsText(o.windows)} ms; ${fanDetail(o.over)}`
  })
  report.figure(SECTION, `${id}.ack`, `${what}: producer acked`, o.over.ackRate, "ev/s", { baseline })
  report.figure(SECTION, `${id}.alone`, `${alone}, no subscriber: acked`, o.alone.ackRate, "ev/s", {
    baseline: true
  })
  report.ratio(`${id}.ack`, `${id}.alone`, "no subscriber")
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  const version = redisVersion()
  if (version === undefined) report.note(SECTION, REDIS_MISSING)
  const redis = version !== undefined
  await ingest(size, report, redis)
  await replay(size, config, report, redis)
  await fanout(size, report, redis)
}
