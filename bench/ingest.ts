/**
 * Section 1, ingest: events/s from the producer to durable to broadcast, per fsync mode, with
 * ~300-byte events (`message_appended` with a 250-character content).
 *
 * - ours, `publish`: 64 concurrent publisher fibers, each waiting for its durable ack, so the
 *   writer's group commit forms batches; "durable" is the last ack, "broadcast" the moment a live
 *   reader (`feed.changes()`) receives the last event.
 * - ours, `record`: fire-and-forget into a queue big enough for the whole run; "durable" is the
 *   append that brings the journal head to the count, "broadcast" as above.
 * - Redis Streams (`redis-server` with AOF `appendfsync always`, then `everysec`, automatic AOF
 *   rewrite off), from client processes through the plain RESP client (`processes.ts`): against
 *   `publish`, 64 connections each sending one `XADD` and awaiting it; against `record`, one
 *   connection pipelining `XADD`s in the batch size our writer committed. Acked rate only.
 * - raw disk: `writeSync` of the same bytes in the same batch sizes, with `fsyncSync` per batch
 *   (`always`), every 100 ms (`interval`) or never.
 */
import { Deferred, Effect, Exit, Stream } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import type { FsyncMode } from "../src/Journal.js"
import {
  type BenchConfig,
  type BenchFeed,
  durableEvent,
  flushDisk,
  formatRatio,
  log,
  now,
  openFeed,
  profiled,
  removeDir,
  rounds,
  type Report,
  runEffect,
  sessionOf,
  tempDir
} from "./support.js"
import { redisLoad } from "./processes.js"
import { REDIS_MISSING, type RedisServer, redisVersion, startRedis } from "./redis.js"

const SECTION = "ingest"
const MODES: ReadonlyArray<FsyncMode> = ["always", "interval", "never"]
const PUBLISHERS = 64
const SYNC_INTERVAL_MS = 100

interface Sizes {
  /** Events per `publish` measurement (CPU-bound, see the report). */
  readonly publish: number
  /** Events per `record` measurement. */
  readonly record: number
  /** Most events per Redis measurement. */
  readonly redis: number
  /** Best of this many runs per figure (ours and baselines alike). */
  readonly repeat: number
}

const sizes = (config: BenchConfig): Sizes =>
  config.quick
    ? { publish: 4_000, record: 30_000, redis: 10_000, repeat: 1 }
    : { publish: 15_000, record: 200_000, redis: 50_000, repeat: 2 }

interface Throughput {
  /** Events per second until the last event was durable (acknowledged, or the head reached the count). */
  readonly durable: number
  /** Events per second until a live reader had received the last event. */
  readonly broadcast: number
  /** Mean events per journal append (group commit) or per pipeline. */
  readonly batch: number
  readonly dropped?: number
}

const perSecond = (count: number, ms: number) => count / (ms / 1000)

/** Follows the feed live from its head; `done` resolves with the time it received seq `last`. */
const liveReader = (bench: BenchFeed, last: number) =>
  Effect.gen(function* () {
    const caughtUp = yield* Deferred.make<void>()
    const done = yield* Deferred.make<number>()
    const since = yield* bench.feed.headSeq
    yield* bench.feed.changes({ since }).pipe(
      Stream.runForEachChunk((chunk) =>
        Effect.sync(() => {
          for (const item of chunk) {
            if (item._tag === "CaughtUp") Deferred.unsafeDone(caughtUp, Exit.void)
            else if (item._tag === "Change" && item.change.seq >= last) Deferred.unsafeDone(done, Exit.succeed(now()))
          }
        })
      ),
      Effect.forkScoped
    )
    yield* Deferred.await(caughtUp)
    return Deferred.await(done)
  })

/** `publish` from `PUBLISHERS` concurrent fibers, each awaiting its ack before the next. */
const oursPublish = async (mode: FsyncMode, count: number): Promise<Throughput> => {
  const dir = tempDir(`ingest-publish-${mode}`)
  const events = Array.from({ length: count }, (_, i) => durableEvent(i))
  try {
    return await runEffect(
      Effect.gen(function* () {
        const bench = yield* openFeed(dir, { fsync: mode, syncInterval: SYNC_INTERVAL_MS })
        const received = yield* liveReader(bench, count)
        let next = 0
        const publisher = Effect.gen(function* () {
          while (next < count) {
            const i = next++
            yield* bench.feed.publish(sessionOf(i), events[i]!)
          }
        })
        const t0 = now()
        yield* Effect.all(
          Array.from({ length: PUBLISHERS }, () => publisher),
          { concurrency: "unbounded", discard: true }
        )
        const tDurable = now()
        const tBroadcast = yield* received
        return {
          durable: perSecond(count, tDurable - t0),
          broadcast: perSecond(count, tBroadcast - t0),
          batch: bench.counter.events / bench.counter.batches
        }
      })
    )
  } finally {
    removeDir(dir)
  }
}

/** `unsafeRecord` of the whole count in one go (the queue holds it all), then wait for the writer. */
const oursRecord = async (mode: FsyncMode, count: number): Promise<Throughput> => {
  const dir = tempDir(`ingest-record-${mode}`)
  const events = Array.from({ length: count }, (_, i) => durableEvent(i))
  try {
    return await runEffect(
      Effect.gen(function* () {
        const bench = yield* openFeed(dir, {
          fsync: mode,
          syncInterval: SYNC_INTERVAL_MS,
          queueCapacity: count + 1024
        })
        const received = yield* liveReader(bench, count)
        const t0 = now()
        for (let i = 0; i < count; i++) bench.feed.unsafeRecord(sessionOf(i), events[i]!)
        const tBroadcast = yield* received
        // The append that brought the head to the count is the durable moment (the writer broadcasts right after).
        const tDurable = bench.counter.lastAppendAt
        return {
          durable: perSecond(count, tDurable - t0),
          broadcast: perSecond(count, tBroadcast - t0),
          batch: bench.counter.events / bench.counter.batches,
          dropped: yield* bench.feed.droppedCount
        }
      })
    )
  } finally {
    removeDir(dir)
  }
}

/** The same bytes with `writeSync`, in batches of `batch` events, synced per the mode. */
const rawDisk = (mode: FsyncMode, count: number, batch: number, sync: "fsync" | "fdatasync" = "fsync"): number => {
  const dir = tempDir(`ingest-raw-${mode}`)
  try {
    const buffers: Array<Buffer> = []
    const ts = new Date().toISOString()
    for (let i = 0; i < count; i += batch) {
      let text = ""
      for (let k = i; k < Math.min(count, i + batch); k++) {
        text += JSON.stringify({ seq: k + 1, ts, session_id: sessionOf(k), event: durableEvent(k) }) + "\n"
      }
      buffers.push(Buffer.from(text))
    }
    const fd = Fs.openSync(Path.join(dir, "events.jsonl"), "a")
    const doSync = sync === "fsync" ? Fs.fsyncSync : Fs.fdatasyncSync
    const t0 = now()
    let lastSync = t0
    for (const buffer of buffers) {
      Fs.writeSync(fd, buffer)
      if (mode === "always") doSync(fd)
      else if (mode === "interval" && now() - lastSync >= SYNC_INTERVAL_MS) {
        doSync(fd)
        lastSync = now()
      }
    }
    const elapsed = now() - t0
    Fs.closeSync(fd)
    return perSecond(count, elapsed)
  } finally {
    removeDir(dir)
  }
}

/**
 * The Redis baseline of a path, from client processes through the plain RESP client: `publish`
 * from 64 fibers against 64 connections (4 processes of 16) each sending one `XADD` and awaiting
 * it; `record` against one connection pipelining `XADD`s in the batch size our writer committed.
 */
const redisIngest = async (
  server: RedisServer,
  path: "publish" | "record",
  count: number,
  batch: number,
  key: string
) => {
  const load =
    path === "publish"
      ? await redisLoad(server, key, count, 1, 4, PUBLISHERS / 4)
      : await redisLoad(server, key, count, batch, 1, 1)
  return { durable: load.rate, broadcast: load.rate, batch: path === "publish" ? 1 : batch }
}

type Contender = "ours" | "raw" | "rawDatasync" | "redisAlways" | "redisEverysec"

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  const version = redisVersion()
  if (version === undefined) report.note(SECTION, REDIS_MISSING)
  {
    // Warm the JIT on every path so the first measured mode is not the slow one.
    await oursPublish("never", 20_000)
    await oursRecord("never", 20_000)
    if (version !== undefined) {
      log(`ingest: redis-server ${version} baselines: a fresh server per measurement`)
      const server = await startRedis("everysec")
      await redisIngest(server, "record", 5_000, 64, "warm")
      await server.stop()
    }

    for (const mode of MODES) {
      for (const path of ["publish", "record"] as const) {
        const count = path === "publish" ? size.publish : size.record
        const redisCount = Math.min(count, size.redis)
        const what = path === "publish" ? `publish x${PUBLISHERS}` : "record"
        log(`ingest: ${what}, fsync=${mode}: ours ${count} events, then its baselines; best of ${size.repeat} rounds`)
        // Baselines use the batch size our writer committed in the first round.
        let batch = 0
        // A fresh redis-server (and data folder) per measurement.
        const redisRun = (appendfsync: "always" | "everysec") => async () => {
          if (mode !== "always" || version === undefined) return undefined
          flushDisk()
          const server = await startRedis(appendfsync)
          try {
            return await redisIngest(server, path, redisCount, batch, "ingest")
          } finally {
            await server.stop()
          }
        }
        const best = await rounds<Contender, Throughput>(size.repeat, (t) => t.durable, [
          [
            "ours",
            async () => {
              flushDisk()
              const t = await profiled(`ingest-${path}-${mode}`, () =>
                path === "publish" ? oursPublish(mode, count) : oursRecord(mode, count)
              )
              if (batch === 0) batch = Math.max(1, Math.round(t.batch))
              return t
            }
          ],
          [
            "raw",
            () => {
              flushDisk()
              const rate = rawDisk(mode, count, batch)
              return { durable: rate, broadcast: rate, batch }
            }
          ],
          [
            "rawDatasync",
            () => {
              if (mode !== "always") return undefined
              flushDisk()
              const rate = rawDisk(mode, count, batch, "fdatasync")
              return { durable: rate, broadcast: rate, batch }
            }
          ],
          ["redisAlways", redisRun("always")],
          ["redisEverysec", redisRun("everysec")]
        ])
        const ours = best.ours!
        const p = `ingest.ours.${mode}.${path}`
        report.figure(
          SECTION,
          `${p}.durable`,
          `ours ${what}, fsync=${mode}: durable (batch ~${batch})`,
          ours.durable,
          "ev/s",
          {
            detail: ours.dropped === undefined ? undefined : `dropped ${ours.dropped}`
          }
        )
        report.figure(SECTION, `${p}.broadcast`, `ours ${what}, fsync=${mode}: at live reader`, ours.broadcast, "ev/s")
        const rawLabel =
          mode === "never" ? "writeSync" : mode === "always" ? "writeSync+fsyncSync" : "writeSync, fsyncSync/100ms"
        report.figure(
          SECTION,
          `ingest.raw.${mode}.${path}`,
          `raw fs ${rawLabel}, batch ${batch}, pre-encoded`,
          best.raw!.durable,
          "ev/s",
          {
            baseline: true
          }
        )
        if (best.rawDatasync !== undefined) {
          report.figure(
            SECTION,
            `ingest.raw.${mode}.${path}.fdatasync`,
            `raw fs writeSync+fdatasyncSync, batch ${batch}, pre-encoded`,
            best.rawDatasync.durable,
            "ev/s",
            {
              baseline: true
            }
          )
        }
        for (const [appendfsync, r] of [
          ["always", best.redisAlways],
          ["everysec", best.redisEverysec]
        ] as const) {
          if (r === undefined) continue
          const q = `ingest.redis.${appendfsync}.${path}`
          const how = path === "publish" ? `from ${PUBLISHERS} connections, one at a time` : `pipelined, batch ${batch}`
          report.figure(
            SECTION,
            `${q}.durable`,
            `redis XADD ${how}, appendfsync=${appendfsync}: acked`,
            r.durable,
            "ev/s",
            { baseline: true, detail: `${redisCount} events, plain RESP client in client processes` }
          )
        }
      }
    }
  }

  // Ratios and goals. Interval and never are compared with Redis everysec (measured in `always`'s batch sizes).
  for (const mode of MODES) {
    for (const path of ["publish", "record"] as const) {
      const p = `ingest.ours.${mode}.${path}`
      if (mode === "always") report.ratio(`${p}.durable`, `ingest.redis.always.${path}.durable`, "redis always")
      report.ratio(`${p}.durable`, `ingest.redis.everysec.${path}.durable`, "redis everysec")
      report.ratio(`${p}.durable`, `ingest.raw.${mode}.${path}`, "raw fs")
    }
  }
  for (const path of ["publish", "record"] as const) {
    const fig = `ingest.ours.always.${path}.durable`
    const what = `ingest ${path === "publish" ? `publish x${PUBLISHERS}` : "record"}, fsync=always`
    const always = report.ratios.find((r) => r.figure === fig && r.against === `ingest.redis.always.${path}.durable`)
    const everysec = report.ratios.find(
      (r) => r.figure === fig && r.against === `ingest.redis.everysec.${path}.durable`
    )
    // `publish` from 64 fibers is judged against 64 Redis clients each awaiting its XADD (>= 1x);
    // `record` against Redis pipelining in our batch sizes.
    const target = path === "publish" ? 1 : 2
    const against = path === "publish" ? `redis appendfsync always, ${PUBLISHERS} clients` : "redis appendfsync always"
    if (always === undefined || everysec === undefined) {
      report.goal(SECTION, fig, `${what} >= ${target}x ${against}`, "SKIP", "redis-server not installed")
    } else {
      report.goal(
        SECTION,
        fig,
        `${what} >= ${target}x ${against}`,
        always.value >= target ? "PASS" : "MISS",
        `${formatRatio(always.value)}; ${formatRatio(everysec.value)} redis everysec`
      )
    }
  }
}
