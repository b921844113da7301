/**
 * Section 5, live fan-out: delivery latency p50/p99 from `publish` to receipt at 1, 100 and 1000
 * subscribers, with one producer publishing at a fixed event rate (fsync `always`, the default).
 *
 * Latency is measured per delivery: the producer notes the time it calls `publish` for event
 * `i` (carried in the event as `message_id: "m<i>"`), each subscriber notes when it receives it.
 * Deliveries still missing when the wait after the last publish runs out count as that long.
 * Baseline in the same run: the `publish` → durable ack latency, which no delivery can beat.
 *
 * Subscribers reach the feed through a `Transport`: `inProcess` follows `feed.changes()` in the
 * feed's process; `sseLoopback` connects HTTP clients to the service's own server
 * (`GET /api/v1/stream` over 127.0.0.1). Those clients run on a worker thread of their own
 * (`fanout-clients.ts`) and only scan each frame for the event's index: in production they are on
 * other machines and parse JSON there, and one thread serving the feed and parsing a million frames
 * a second (100 clients at 10,000 ev/s) would measure the bench, not the feed. Every run is a
 * child process (`fanout-child.ts`), so a run the machine cannot keep up with is cut at a cap.
 */
import { Deferred, Effect, Exit, Stream, type Scope } from "effect"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import { clock, spawnSseClients, Tally } from "./fanout-clients.js"
import { serveFeed } from "./server.js"
import {
  type BenchConfig,
  type BenchFeed,
  durableEvent,
  Histogram,
  indexOf,
  log,
  openFeed,
  type Report,
  runChild,
  runEffect,
  sessionOf,
  tempDir
} from "./support.js"

const SECTION = "fanout"
const GOAL_MS = 20
const GOAL_RATE = 10_000
const GOAL_SUBSCRIBERS = 100
/** Room beyond publishing and waiting for setting up the subscribers, before a run is cut. */
export const CAP_MARGIN_MS = 10_000

/** The transports by the name the child process is given. */
export type TransportName = "inprocess" | "sse"

/** How subscribers reach the feed. */
export interface Transport {
  readonly name: string
  /**
   * Attaches `count` subscribers following the feed live from its current head, and completes
   * once every one of them is live. Every change a subscriber receives is counted into `tally`,
   * by the index its event carries (`indexOf`). Answers `collect`, to call once while the scope
   * is open: it stops the counting and answers the latencies of the deliveries counted.
   */
  readonly attach: (
    bench: BenchFeed,
    count: number,
    tally: Tally
  ) => Effect.Effect<() => Histogram, unknown, Scope.Scope>
}

/**
 * Subscribers as HTTP clients of the service's own server (`Http.layer` on a Node server on
 * 127.0.0.1, port 0, serving the bench's feed): each one a `GET /api/v1/stream?since=<head>`
 * over its own loopback connection, all of them on a worker thread (`spawnSseClients`).
 */
export const sseLoopback: Transport = {
  name: "SSE over loopback (GET /api/v1/stream), clients on a worker thread",
  attach: (bench, count, tally) =>
    Effect.gen(function* () {
      const port = yield* serveFeed(bench.feed)
      const since = yield* bench.feed.headSeq
      return yield* spawnSseClients({ port, since, subscribers: count }, tally)
    })
}

/** Subscribers in this process, each a `feed.changes()` stream. */
export const inProcess: Transport = {
  name: "in-process feed.changes()",
  attach: (bench, count, tally) =>
    Effect.gen(function* () {
      const since = yield* bench.feed.headSeq
      const live = yield* Deferred.make<void>()
      let caughtUp = 0
      for (let s = 0; s < count; s++) {
        yield* bench.feed.changes({ since }).pipe(
          Stream.runForEachChunk((chunk) =>
            Effect.sync(() => {
              for (const item of chunk) {
                if (item._tag === "Change") tally.count(indexOf(item.change.event), clock())
                else if (item._tag === "CaughtUp" && ++caughtUp === count) Deferred.unsafeDone(live, Exit.void)
              }
            })
          ),
          Effect.forkScoped
        )
      }
      yield* Deferred.await(live)
      return () => {
        tally.stop()
        return tally.latency
      }
    })
}

export const transports: Record<TransportName, Transport> = { inprocess: inProcess, sse: sseLoopback }

/** What one run measured, as the child process reports it. */
export interface RunResult {
  readonly transport: string
  readonly producer: Producer
  readonly subscribers: number
  readonly published: number
  /** Achieved publish rate. */
  readonly rate: number
  /** Deliveries made in time over deliveries expected. */
  readonly delivered: number
  readonly p50: number
  readonly p99: number
  readonly max: number
  readonly ackP50: number
  readonly ackP99: number
  /** The run hit its hard time cap (the machine could not keep up). */
  readonly capped: boolean
}

/**
 * How the producer publishes: `publish` once per event, each call in its own fiber (independent
 * producers), or `publishAll` once per 1 ms tick with the events due by then (a batching producer).
 */
export type Producer = "publish" | "publishAll"

export interface Measurement {
  /** Completes when every event was delivered and acknowledged, or `waitMs` after the last publish. */
  readonly done: Promise<void>
  /** The figures so far; deliveries and acks still missing count as arriving now. */
  readonly snapshot: (capped: boolean) => RunResult
}

/**
 * Starts one run: `subscribers` attached through `transport`, then `rate` events/s for `seconds`.
 * Meant for a process of its own (`fanout-child.ts`): a run the machine cannot keep up with is
 * cut short by its caller, which reads `snapshot` and exits without waiting for the teardown.
 */
export const start = (
  transport: Transport,
  producer: Producer,
  subscribers: number,
  rate: number,
  seconds: number,
  waitMs: number
): Measurement => {
  const dir = tempDir("fanout")
  const total = Math.round(rate * seconds)
  const events: Array<AgentEvent> = Array.from({ length: total }, (_, i) => durableEvent(i))
  // Times are `clock()` readings: subscribers on another thread compare theirs with `sentAt`.
  const tally = Tally.make(total)
  const { received, sentAt } = tally.memory
  const ackedAt = new Float64Array(total)
  let collect: (() => Histogram) | undefined
  let latency: Histogram | undefined
  let sent = 0
  let elapsed = 0
  let stoppedAt = 0
  // Stops the run and takes the subscribers' latencies: at the end of `done`, before the
  // subscribers are torn down, or from `snapshot` when the run is cut.
  const stop = (): Histogram => {
    if (latency === undefined) {
      stoppedAt = clock()
      tally.stop()
      latency = collect?.() ?? new Histogram()
    }
    return latency
  }
  const expected = total * subscribers
  const done = runEffect(
    Effect.gen(function* () {
      const bench = yield* openFeed(dir, { fsync: "always" })
      collect = yield* transport.attach(bench, subscribers, tally)
      // Events published but not yet acknowledged; the producer holds back while more than a
      // second's worth are, so an overloaded run stays bounded instead of piling up fibers.
      let pending = 0
      const acked = (from: number, to: number) =>
        Effect.sync(() => {
          const at = clock()
          for (let i = from; i < to; i++) ackedAt[i] = at
        })
      const settled = (count: number) => Effect.sync(() => void (pending -= count))
      const publishOne = (i: number) =>
        bench.feed.publish(sessionOf(i), events[i]!).pipe(Effect.zipRight(acked(i, i + 1)), Effect.ensuring(settled(1)))
      const publishTick = (from: number, to: number) => {
        const entries = []
        for (let i = from; i < to; i++) entries.push({ sessionId: sessionOf(i), event: events[i]! })
        return bench.feed
          .publishAll(entries)
          .pipe(Effect.zipRight(acked(from, to)), Effect.ensuring(settled(to - from)))
      }
      // Every tick, publish what is due by now; give up publishing after twice the planned time.
      const t0 = clock()
      while (sent < total && clock() - t0 < seconds * 2000) {
        const due = Math.min(total, Math.floor(((clock() - t0) / 1000) * rate) + 1, sent + Math.max(0, rate - pending))
        if (producer === "publishAll" && due > sent) {
          const at = clock()
          for (let i = sent; i < due; i++) sentAt[i] = at
          pending += due - sent
          yield* Effect.forkDaemon(publishTick(sent, due))
          sent = due
        }
        for (; sent < due; sent++) {
          pending++
          sentAt[sent] = clock()
          yield* Effect.forkDaemon(publishOne(sent))
        }
        yield* Effect.sleep("1 millis")
      }
      elapsed = clock() - t0
      // Wait for every ack and every delivery, but no longer than `waitMs` after the last publish.
      const deadline = clock() + waitMs
      while ((tally.deliveries < expected || pending > 0) && clock() < deadline) yield* Effect.sleep("5 millis")
      stop()
    })
  )
  const snapshot = (capped: boolean): RunResult => {
    const delivered = stop()
    const end = stoppedAt
    const ack = new Histogram()
    const all = new Histogram()
    all.merge(delivered)
    for (let i = 0; i < sent; i++) {
      const missing = subscribers - received[i]!
      if (missing > 0) all.recordManyMs(end - sentAt[i]!, missing)
      ack.recordMs((ackedAt[i]! > 0 ? ackedAt[i]! : end) - sentAt[i]!)
    }
    const publishMs = elapsed > 0 ? elapsed : end - (sent > 0 ? sentAt[0]! : end)
    return {
      transport: transport.name,
      producer,
      subscribers,
      published: sent,
      rate: sent / (publishMs / 1000),
      delivered: tally.deliveries / Math.max(1, sent * subscribers),
      p50: all.quantileMs(0.5),
      p99: all.quantileMs(0.99),
      max: all.max,
      ackP50: ack.quantileMs(0.5),
      ackP99: ack.quantileMs(0.99),
      capped
    }
  }
  return { done, snapshot }
}

/**
 * In-process subscribers only: SSE fan-out is measured end to end in section `http` (server,
 * producer and subscribers in processes of their own). `sseLoopback` stays for `profile.ts`.
 */
const sizes = (config: BenchConfig) =>
  config.quick
    ? { rate: 10_000, seconds: 0.5, waitMs: 2_000, subscribers: [1, 100], sse: [] as Array<number> }
    : { rate: 10_000, seconds: 3, waitMs: 10_000, subscribers: [1, 100, 1000], sse: [] as Array<number> }

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  // The matrix with a batching producer, in process and over SSE; then the goal's configuration
  // with one publish call per event.
  const runs: Array<readonly [TransportName, Producer, number]> = [
    ...size.subscribers.map((s) => ["inprocess", "publishAll", s] as const),
    ...size.sse.map((s) => ["sse", "publishAll", s] as const),
    ["inprocess", "publish", GOAL_SUBSCRIBERS]
  ]
  for (const [transport, producer, subscribers] of runs) {
    log(
      `fanout: ${transports[transport].name}, ${producer}, ${subscribers} subscriber(s), ${size.rate} ev/s for ${size.seconds} s (child process)`
    )
    // The child cuts itself at its cap; should it be too starved to, it is killed a while later.
    const capMs = size.seconds * 2000 + size.waitMs + CAP_MARGIN_MS
    const outcome = await runChild<RunResult>(
      "fanout-child.ts",
      [transport, producer, String(subscribers), String(size.rate), String(size.seconds), String(size.waitMs)],
      capMs + 20_000
    ).then(
      (run) => run.result,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error)))
    )
    const id = `fanout.${transport}.${producer}.${subscribers}`
    const via = producer === "publish" ? "publish per event" : "publishAll per 1 ms tick"
    if (outcome instanceof Error) {
      report.note(
        SECTION,
        `${transports[transport].name}, ${via}, ${subscribers} subscribers: no result (${outcome.message})`
      )
      if (subscribers === GOAL_SUBSCRIBERS) {
        report.goal(
          SECTION,
          `${id}.p99`,
          `p99 delivery < ${GOAL_MS} ms at ${GOAL_RATE} ev/s, ${GOAL_SUBSCRIBERS} subscribers (${via}, ${transports[transport].name})`,
          "MISS",
          "the run did not finish"
        )
      }
      continue
    }
    const r = outcome
    const what = `${subscribers} sub${subscribers === 1 ? "" : "s"} @ ${Math.round(r.rate)} ev/s, ${via}`
    const detail =
      `${r.transport}; ${(r.delivered * 100).toFixed(1)} % of ${r.published} x ${subscribers} delivered ` +
      `within ${size.waitMs / 1000} s of the last publish${r.capped ? " (run cut at its time cap)" : ""}, ` +
      `the rest counted as that late; max ${r.max.toFixed(0)} ms`
    report.figure(SECTION, `${id}.p50`, `ours publish->receipt p50, ${what}`, r.p50, "ms", { detail })
    report.figure(SECTION, `${id}.p99`, `ours publish->receipt p99, ${what}`, r.p99, "ms")
    report.figure(SECTION, `${id}.ack.p50`, `publish->durable ack p50 (same run)`, r.ackP50, "ms", { baseline: true })
    report.figure(SECTION, `${id}.ack.p99`, `publish->durable ack p99 (same run)`, r.ackP99, "ms", { baseline: true })
    if (subscribers === GOAL_SUBSCRIBERS && (transport === "inprocess" || producer === "publishAll")) {
      const onRate = r.rate >= GOAL_RATE * 0.95
      report.goal(
        SECTION,
        `${id}.p99`,
        `p99 delivery < ${GOAL_MS} ms at ${GOAL_RATE} ev/s, ${GOAL_SUBSCRIBERS} subscribers (${via}, ${r.transport})`,
        onRate && r.p99 < GOAL_MS ? "PASS" : "MISS",
        `p99 ${r.p99.toFixed(1)} ms at ${Math.round(r.rate)} ev/s${onRate ? "" : " (the producer could not hold the rate)"}`
      )
    }
  }
}
