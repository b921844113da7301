/**
 * Section `pg` (`npm run bench -- --only pg`): the service on PostgreSQL, replicas and every
 * client in processes of their own, on a throwaway server (`fsync=on`) started from the machine's
 * binaries as the tests start one; skipped with a note where there are none. Each figure has a
 * baseline measured in the same run:
 *
 * - durable appends over HTTP (`e2e-client.ts post`, one client process per replica, one request
 *   in flight each) with 1 and 3 replicas at batches of 1, 50 and 200, against the journal's own
 *   append statement driven by a bare script (`pg-client.ts bare`, one process and connection per
 *   replica, one statement at a time) with the same events and the same batches;
 * - cross-replica delivery at 5,000 ev/s: a producer POSTs to replica A, an SSE subscriber on
 *   replica B, against the same with the subscriber on A;
 * - replay over SSE from the database (`sse-replay` of a replica that holds nothing in memory),
 *   against `COPY (SELECT seq, payload ...) TO STDOUT` of the same rows through `pg`.
 *
 * With `BENCH_CPU_PROFILE=<dir>` the replicas write CPU profiles there (see `profile.ts`).
 */
import { type PgServer, postgresUnavailable, startPostgres } from "../test/support/Postgres.js"
import { clock, Histogram, sleep } from "./common.js"
import type { LoadResult, ProduceResult, ReplayResult, SubscribeResult } from "./e2e-client.js"
import { type Load, runLoad, type Service, startClient, startService } from "./processes.js"
import { type BenchConfig, log, onExit, type Report } from "./support.js"

const SECTION = "pg"
const ACCOUNT = "default"
/** The client processes that talk SQL, not HTTP. */
const SQL_CLIENT = "pg-client.ts"
const APPEND_GOAL = 50_000
const APPEND_SHARE_GOAL = 0.8
const DELIVERY_RATE = 5_000
const DELIVERY_P99_GOAL_MS = 50
const REPLAY_GOAL = 300_000
const PRODUCER_IN_FLIGHT = 32

interface Sizes {
  /** Events each client process sends, by batch. */
  readonly perClient: Readonly<Record<number, number>>
  readonly deliverySeconds: number
  readonly replayEvents: number
}

const sizes = (config: BenchConfig): Sizes =>
  config.quick
    ? { perClient: { 1: 500, 50: 10_000, 200: 30_000 }, deliverySeconds: 3, replayEvents: 200_000 }
    : { perClient: { 1: 1_000, 50: 20_000, 200: 50_000 }, deliverySeconds: 8, replayEvents: 1_000_000 }

/** `count` replicas of the service on `url`, each in its own process. */
const startReplicas = (name: string, url: string, count: number): Promise<Array<Service>> =>
  Promise.all(Array.from({ length: count }, (_, i) => startService(`${name}-${i}`, { FEED_DATABASE_URL: url })))

const stopAll = (services: ReadonlyArray<Service>) => Promise.all(services.map((s) => s.stop()))

/** `use` with `count` replicas on a fresh database, stopped after. */
const onReplicas = async <A>(
  name: string,
  server: PgServer,
  count: number,
  use: (services: ReadonlyArray<Service>) => Promise<A>
): Promise<A> => {
  const services = await startReplicas(name, server.createDatabase(name.replace(/\W/g, "_")), count)
  try {
    // The replicas' hubs and pools settle before the clock starts.
    await sleep(500)
    return await use(services)
  } finally {
    await stopAll(services)
  }
}

/** Creates the journal's tables in `url` as a replica does at start (then stops it). */
const migrated = async (url: string): Promise<void> => stopAll(await startReplicas("migrate", url, 1)).then(() => {})

// ---------------------------------------------------------------------------------------------------------------
// Appends
// ---------------------------------------------------------------------------------------------------------------

const httpAppends = async (url: string, replicas: number, batch: number, perClient: number): Promise<Load> => {
  const services = await startReplicas(`append-${replicas}-${batch}`, url, replicas)
  try {
    const cpu = () => services.reduce((n, s) => n + s.cpuMs(), 0)
    return await runLoad(
      services.map((s) => ["post", [s.port, perClient, batch, 1]] as const),
      cpu
    )
  } finally {
    await stopAll(services)
  }
}

const bareAppends = async (url: string, writers: number, batch: number, perClient: number): Promise<number> => {
  await migrated(url)
  const clients = await Promise.all(
    Array.from({ length: writers }, () => startClient<LoadResult>("bare", [url, ACCOUNT, perClient, batch], SQL_CLIENT))
  )
  const t0 = clock()
  for (const c of clients) c.send({ t0 })
  const results = await Promise.all(clients.map((c) => c.result))
  const acked = results.reduce((n, r) => n + r.acked, 0)
  const ms = Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt))
  return acked / (ms / 1000)
}

const appends = async (server: PgServer, size: Sizes, report: Report): Promise<void> => {
  let db = 0
  for (const replicas of [1, 3]) {
    for (const batch of [1, 50, 200]) {
      const perClient = size.perClient[batch]!
      log(`pg: appends, ${replicas} replica(s), batch ${batch}, ${perClient} events per client process`)
      const ours = await httpAppends(server.createDatabase(`append${++db}`), replicas, batch, perClient)
      const bare = await bareAppends(server.createDatabase(`append${++db}`), replicas, batch, perClient)
      const id = `pg.append.${replicas}.${batch}`
      report.figure(
        SECTION,
        id,
        `POST ${batch}-event batches, ${replicas} replica${replicas > 1 ? "s" : ""}`,
        ours.rate,
        "ev/s",
        {
          detail: `${ours.acked} events, ${replicas} client process(es), one request in flight each; replicas' CPU ${ours.cpuPerEventUs.toFixed(1)} µs/event`
        }
      )
      report.figure(
        SECTION,
        `${id}.bare`,
        `bare script, ${replicas} connection(s), ${batch} per statement`,
        bare,
        "ev/s",
        {
          baseline: true
        }
      )
      const share = report.ratio(id, `${id}.bare`, "of the bare script")
      const shareText = share === undefined ? "n/a" : `${(share.value * 100).toFixed(0)} %`
      if (batch === 200 && replicas === 3) {
        report.goal(
          SECTION,
          id,
          `pg appends with 3 replicas at 200 >= ${APPEND_GOAL} ev/s`,
          ours.rate >= APPEND_GOAL ? "PASS" : "MISS",
          `${Math.round(ours.rate)} ev/s (bare script ${Math.round(bare)})`
        )
      }
      report.goal(
        SECTION,
        id,
        `pg appends, ${replicas} replica(s) at ${batch} >= ${APPEND_SHARE_GOAL * 100} % of the bare script`,
        share !== undefined && share.value >= APPEND_SHARE_GOAL ? "PASS" : "MISS",
        `${shareText} (${Math.round(ours.rate)} vs ${Math.round(bare)} ev/s)`
      )
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-replica delivery
// ---------------------------------------------------------------------------------------------------------------

interface Delivery {
  readonly latency: Histogram
  readonly ackRate: number
  readonly delivered: number
  readonly sent: number
}

/** A producer at `DELIVERY_RATE` on `producer`, one SSE subscriber on `subscriber`. */
const delivery = async (producer: Service, subscriber: Service, seconds: number): Promise<Delivery> => {
  const sub = await startClient<SubscribeResult>("sse-sub", [subscriber.port, 1])
  const prod = await startClient<ProduceResult>("produce-http", [
    producer.port,
    DELIVERY_RATE,
    seconds,
    PRODUCER_IN_FLIGHT
  ])
  const t0 = clock()
  for (const c of [sub, prod]) c.send({ t0 })
  const produced = await prod.result
  if (produced.failures > 0) throw new Error(`the producer saw ${produced.failures} failures: ${produced.firstFailure}`)
  sub.send({ expect: produced.sent, deadline: clock() + 10_000 })
  const received = await sub.result
  const latency = Histogram.fromSparse(received.latency)
  // Deliveries missing at the deadline count as that late (a lower bound).
  const missing = produced.sent - received.deliveries
  if (missing > 0) latency.recordManyMs(10_000, missing)
  return {
    latency,
    ackRate: produced.acked / ((produced.endedAt - produced.startedAt) / 1000),
    delivered: received.deliveries / Math.max(1, produced.sent),
    sent: produced.sent
  }
}

const deliveries = async (server: PgServer, size: Sizes, report: Report): Promise<void> => {
  log(
    `pg: delivery at ${DELIVERY_RATE} ev/s for ${size.deliverySeconds} s, producer on replica A, subscriber on B (then A)`
  )
  // Each on a database of its own: a subscriber from since=0 counts only the events of its run.
  const cross = await onReplicas("delivery-cross", server, 2, ([a, b]) => delivery(a!, b!, size.deliverySeconds))
  const same = await onReplicas("delivery-same", server, 1, ([a]) => delivery(a!, a!, size.deliverySeconds))
  const detail = (d: Delivery) =>
    `acked ${Math.round(d.ackRate)} ev/s, ${(d.delivered * 100).toFixed(1)} % of ${d.sent} delivered, max ${d.latency.max.toFixed(0)} ms`
  for (const q of [0.5, 0.99] as const) {
    const name = q === 0.5 ? "p50" : "p99"
    report.figure(
      SECTION,
      `pg.delivery.cross.${name}`,
      `delivery A -> SSE on B, ${name}`,
      cross.latency.quantileMs(q),
      "ms",
      {
        detail: q === 0.5 ? detail(cross) : undefined
      }
    )
    report.figure(
      SECTION,
      `pg.delivery.same.${name}`,
      `delivery A -> SSE on A, ${name}`,
      same.latency.quantileMs(q),
      "ms",
      {
        baseline: true,
        detail: q === 0.5 ? detail(same) : undefined
      }
    )
    report.ratio(`pg.delivery.cross.${name}`, `pg.delivery.same.${name}`, "of the same-replica latency", true)
  }
  const p99 = cross.latency.quantileMs(0.99)
  report.goal(
    SECTION,
    "pg.delivery.cross.p99",
    `pg cross-replica delivery p99 at ${DELIVERY_RATE} ev/s < ${DELIVERY_P99_GOAL_MS} ms`,
    p99 < DELIVERY_P99_GOAL_MS && cross.delivered >= 0.999 ? "PASS" : "MISS",
    `${p99.toFixed(1)} ms (same replica ${same.latency.quantileMs(0.99).toFixed(1)} ms), ${(cross.delivered * 100).toFixed(1)} % delivered`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------------------------

const replay = async (server: PgServer, size: Sizes, report: Report): Promise<void> => {
  const url = server.createDatabase("replay")
  log(`pg: replay, loading ${size.replayEvents} events`)
  await bareAppends(url, 1, 5_000, size.replayEvents)
  server.psql("replay", "VACUUM ANALYZE")
  // A replica started after the load: nothing of it is in its memory, every event comes from the database.
  const [service] = await startReplicas("replay", url, 1)
  try {
    const sse = await startClient<ReplayResult>("sse-replay", [service!.port])
    sse.send({ t0: clock() })
    const ours = await sse.result
    const copy = await startClient<ReplayResult>("copy", [url, ACCOUNT], SQL_CLIENT)
    copy.send({ t0: clock() })
    const theirs = await copy.result
    const rate = (r: ReplayResult) => r.events / ((r.endedAt - r.startedAt) / 1000)
    // The load's warm-up statements add a few rows: both sides must count the same ones.
    if (ours.events !== theirs.events || ours.events < size.replayEvents) {
      throw new Error(
        `replay counted ${ours.events} events over SSE and ${theirs.events} by COPY (${size.replayEvents} loaded)`
      )
    }
    report.figure(SECTION, "pg.replay.sse", `replay over SSE from the database`, rate(ours), "ev/s", {
      detail: `${ours.events} events of ~330 B, one client from since=0 to caught_up`
    })
    report.figure(
      SECTION,
      "pg.replay.copy",
      "COPY (SELECT seq, payload ...) TO STDOUT through pg",
      rate(theirs),
      "ev/s",
      {
        baseline: true
      }
    )
    report.ratio("pg.replay.sse", "pg.replay.copy", "of COPY")
    report.goal(
      SECTION,
      "pg.replay.sse",
      `pg replay over SSE >= ${REPLAY_GOAL} ev/s`,
      rate(ours) >= REPLAY_GOAL ? "PASS" : "MISS",
      `${Math.round(rate(ours))} ev/s (COPY ${Math.round(rate(theirs))})`
    )
  } finally {
    await service!.stop()
  }
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const missing = postgresUnavailable()
  if (missing !== undefined) {
    report.note(SECTION, `skipped: ${missing}`)
    log(`pg: skipped: ${missing}`)
    return
  }
  const size = sizes(config)
  const server = await startPostgres()
  onExit(() => server.destroy())
  try {
    const only = process.env.BENCH_PG_ONLY?.split(",")
    if (only === undefined || only.includes("append")) await appends(server, size, report)
    if (only === undefined || only.includes("delivery")) await deliveries(server, size, report)
    if (only === undefined || only.includes("replay")) await replay(server, size, report)
  } finally {
    server.destroy()
  }
}
