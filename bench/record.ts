/**
 * Section 3, the `record` hot path: calls/s of the producer-side entry points, which run on
 * every event an agent session emits.
 *
 * - `feed.unsafeRecord` (code outside Effect) with an ephemeral event (filtered, never copied),
 *   with a durable event into a queue big enough to hold the whole run (measured: the calls; the
 *   writer drains afterwards), and with a durable event into a full queue (the drop path: count
 *   and rate-limited warning);
 * - `feed.record` (an `Effect`) yielded in one `Effect.gen` loop, no `Effect.runSync` per call,
 *   ephemeral and durable (the writer fiber runs in between when the loop yields);
 * - baselines: the same loops doing only `array.push({ sessionId, event })`, plain and wrapped in
 *   `Effect.sync` inside `Effect.gen` (the least any enqueue can cost).
 */
import { Effect, LogLevel } from "effect"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import {
  type BenchConfig,
  durableEvent,
  ephemeralEvent,
  log,
  now,
  openFeed,
  profiled,
  removeDir,
  type Report,
  rounds,
  runEffect,
  sessionOf,
  tempDir
} from "./support.js"

const SECTION = "record"
const GOAL = 1_000_000
/** Calls per timed slice; between slices the writer gets the event loop when the queue is filling up. */
const SLICE = 256
const CAPACITY = 8192

const sizes = (config: BenchConfig) =>
  config.quick
    ? { ephemeral: 2_000_000, durable: 200_000, repeat: 1 }
    : { ephemeral: 10_000_000, durable: 400_000, repeat: 2 }

interface Calls {
  readonly rate: number
  readonly dropped: number
}

const perSecond = (count: number, ms: number) => count / (ms / 1000)

/** Prebuilt events, so the loops time the calls and not the building of events. */
const pool = (make: (i: number) => AgentEvent, size = 1024): Array<AgentEvent> =>
  Array.from({ length: size }, (_, i) => make(i))
const sessions = Array.from({ length: 1024 }, (_, i) => sessionOf(i))

const feedOf = (dir: string, capacity: number) =>
  Effect.map(openFeed(dir, { fsync: "never", queueCapacity: capacity }), (bench) => bench.feed)

type Feed = Effect.Effect.Success<ReturnType<typeof feedOf>>

/**
 * Runs `loop` (which answers its calls/s) against a fresh feed (fsync `never`, a queue of
 * `capacity`), then waits for the writer to journal everything accepted before closing the feed.
 */
const withFeed = async (
  capacity: number,
  loop: (feed: Feed) => Effect.Effect<number>,
  level = LogLevel.Warning
): Promise<Calls> => {
  const dir = tempDir("record")
  try {
    return await runEffect(
      Effect.gen(function* () {
        const feed = yield* feedOf(dir, capacity)
        const rate = yield* loop(feed)
        yield* settle(feed)
        return { rate, dropped: yield* feed.droppedCount }
      }),
      level
    )
  } finally {
    removeDir(dir)
  }
}

/** Waits until the queue is empty and the writer has journaled what it took. */
const settle = (feed: Feed) =>
  Effect.gen(function* () {
    for (;;) {
      const status = yield* feed.status
      yield* Effect.sleep("2 millis")
      if (status.queued === 0 && (yield* feed.headSeq) === status.headSeq) return
    }
  })

/** Lets the writer catch up while the queue is more than half full (outside the timed slices). */
const pace = (feed: Feed) =>
  Effect.gen(function* () {
    while ((yield* feed.status).queued > CAPACITY / 2) yield* Effect.sleep("1 millis")
  })

/** `feed.unsafeRecord` in timed slices of `SLICE` calls; only the slices count. */
const unsafeLoop = (feed: Feed, events: ReadonlyArray<AgentEvent>, count: number, paced = true) =>
  Effect.gen(function* () {
    let spent = 0
    for (let done = 0; done < count; done += SLICE) {
      const t0 = now()
      for (let i = done, end = Math.min(count, done + SLICE); i < end; i++)
        feed.unsafeRecord(sessions[i & 1023], events[i & 1023]!)
      spent += now() - t0
      if (paced) yield* pace(feed)
    }
    return perSecond(count, spent)
  })

/** `yield* feed.record` in one `Effect.gen`, in timed slices; only the slices count. */
const effectLoop = (feed: Feed, events: ReadonlyArray<AgentEvent>, count: number) =>
  Effect.gen(function* () {
    let spent = 0
    for (let done = 0; done < count; done += SLICE) {
      const t0 = now()
      for (let i = done, end = Math.min(count, done + SLICE); i < end; i++)
        yield* feed.record(sessions[i & 1023], events[i & 1023]!)
      spent += now() - t0
      yield* pace(feed)
    }
    return perSecond(count, spent)
  })

interface Entry {
  readonly sessionId: string | undefined
  readonly event: AgentEvent
}

const pushLoop = (events: ReadonlyArray<AgentEvent>, count: number): Calls => {
  let sink: Array<Entry> = []
  let spent = 0
  for (let done = 0; done < count; done += SLICE) {
    const t0 = now()
    for (let i = done, end = Math.min(count, done + SLICE); i < end; i++)
      sink.push({ sessionId: sessions[i & 1023], event: events[i & 1023]! })
    spent += now() - t0
    if (sink.length >= CAPACITY / 2) sink = []
  }
  return { rate: perSecond(count, spent), dropped: 0 }
}

const pushEffectLoop = (events: ReadonlyArray<AgentEvent>, count: number): Promise<Calls> => {
  let sink: Array<Entry> = []
  const push = (i: number) =>
    Effect.sync(() => {
      sink.push({ sessionId: sessions[i & 1023], event: events[i & 1023]! })
    })
  return Effect.runPromise(
    Effect.gen(function* () {
      let spent = 0
      for (let done = 0; done < count; done += SLICE) {
        const t0 = now()
        for (let i = done, end = Math.min(count, done + SLICE); i < end; i++) yield* push(i)
        spent += now() - t0
        if (sink.length >= CAPACITY / 2) sink = []
      }
      return { rate: perSecond(count, spent), dropped: 0 }
    })
  )
}

type Key =
  "unsafeEphemeral" | "unsafeDurable" | "unsafeDrop" | "recordEphemeral" | "recordDurable" | "push" | "pushEffect"

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  const durable = pool(durableEvent)
  const ephemeral = pool(ephemeralEvent)
  const n = size.durable

  // Warm-up of every loop on small counts.
  await withFeed(CAPACITY, (feed) => unsafeLoop(feed, durable, 50_000))
  await withFeed(CAPACITY, (feed) => effectLoop(feed, durable, 50_000))
  log(`record: ${size.ephemeral} ephemeral / ${n} durable calls per loop, best of ${size.repeat} rounds`)

  const best = await rounds<Key, Calls>(size.repeat, (c) => c.rate, [
    ["unsafeEphemeral", () => withFeed(CAPACITY, (feed) => unsafeLoop(feed, ephemeral, size.ephemeral))],
    [
      "unsafeDurable",
      () => profiled("record-unsafe-durable", () => withFeed(CAPACITY, (feed) => unsafeLoop(feed, durable, n)))
    ],
    // A queue of 16 and no pacing: after 16 offers every call takes the drop path.
    ["unsafeDrop", () => withFeed(16, (feed) => unsafeLoop(feed, durable, n, false), LogLevel.Error)],
    ["recordEphemeral", () => withFeed(CAPACITY, (feed) => effectLoop(feed, ephemeral, size.ephemeral))],
    [
      "recordDurable",
      () => profiled("record-effect-durable", () => withFeed(CAPACITY, (feed) => effectLoop(feed, durable, n)))
    ],
    ["push", () => pushLoop(durable, n)],
    ["pushEffect", () => pushEffectLoop(durable, n)]
  ])

  const figure = (key: Key, id: string, label: string, baseline = false, detail?: string) => {
    const calls = best[key]
    if (calls !== undefined) report.figure(SECTION, id, label, calls.rate, "calls/s", { baseline, detail })
  }
  const durableDetail = (calls: Calls | undefined) =>
    `queue ${CAPACITY}, paced; dropped ${calls?.dropped ?? "?"} of ${n}`
  figure("unsafeEphemeral", "record.unsafe.ephemeral", "ours unsafeRecord, ephemeral (filtered)")
  figure(
    "unsafeDurable",
    "record.unsafe.durable",
    "ours unsafeRecord, durable",
    false,
    durableDetail(best.unsafeDurable)
  )
  figure(
    "unsafeDrop",
    "record.unsafe.drop",
    "ours unsafeRecord, durable, queue full (drop path)",
    false,
    `dropped ${best.unsafeDrop?.dropped ?? "?"} of ${n}`
  )
  figure("recordEphemeral", "record.effect.ephemeral", "ours yield* feed.record in Effect.gen, ephemeral")
  figure(
    "recordDurable",
    "record.effect.durable",
    "ours yield* feed.record in Effect.gen, durable",
    false,
    durableDetail(best.recordDurable)
  )
  figure("push", "record.baseline.push", "plain JS array.push({sessionId, event})", true)
  figure("pushEffect", "record.baseline.pushEffect", "yield* Effect.sync(() => array.push(...)) in Effect.gen", true)

  for (const id of ["record.unsafe.ephemeral", "record.unsafe.durable", "record.unsafe.drop"]) {
    report.ratio(id, "record.baseline.push", "array.push")
  }
  for (const id of ["record.effect.ephemeral", "record.effect.durable"]) {
    report.ratio(id, "record.baseline.pushEffect", "Effect.sync push")
  }
  for (const id of [
    "record.unsafe.ephemeral",
    "record.unsafe.durable",
    "record.effect.ephemeral",
    "record.effect.durable"
  ]) {
    const f = report.get(id)
    if (f === undefined) continue
    report.goal(
      SECTION,
      id,
      `${f.label.replace(/^ours /, "")} > 1,000,000 calls/s`,
      f.value > GOAL ? "PASS" : "MISS",
      `${(f.value / 1e6).toFixed(2)} M calls/s`
    )
  }
}
