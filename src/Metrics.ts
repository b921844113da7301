/**
 * The feed's metrics and their export.
 *
 * Every metric is an Effect `Metric` labelled with the feed's `account`, but those of the
 * process's line indexes of sealed segments (`change_feed_segment_index_*`). Counters and
 * histograms are updated where the thing happens (an append, a reset, a refused publish).
 * Gauges of state (head, oldest seq, queue depth, subscribers, reader lag, degraded) are read
 * from each open feed when the metrics are collected, as OpenTelemetry's observable gauges
 * are: they cost nothing between scrapes and are never stale.
 *
 * An account's series are held while its feed (and journal) is open (`holdAccount`); once no
 * one holds them, the next collection exports their final values and they are dropped from
 * Effect's registry, which would otherwise keep every account the process ever opened.
 *
 * `layerPrometheus` exports them in the Prometheus text format through `@effect/opentelemetry`
 * and OpenTelemetry's Prometheus exporter, serialized on request (the service answers it at
 * `GET /metrics`, on its own port).
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { MetricProducer } from "@opentelemetry/sdk-metrics"
import {
  Clock,
  Context,
  Duration,
  Effect,
  Layer,
  Metric,
  MetricBoundaries,
  MetricKey,
  MetricLabel,
  type MetricKeyType,
  MutableHashMap,
  Predicate,
  type Scope
} from "effect"
import { ResetReason } from "./Domain/FeedItem.js"
import * as Finalizer from "./Finalizer.js"
import { SegmentIndexes } from "./Journal/SegmentIndex.js"

/** Makes the metrics of one series each, and keeps their keys in `made`. */
type Labelled = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  labels: Record<string, string>
) => Metric.Metric<Type, MetricKeyType.MetricKeyType.InType<Type>, MetricKeyType.MetricKeyType.OutType<Type>>

/** A metric with its labels fixed: updated through its own registry entry, with no label lookup per update. */
const labelledInto =
  (made: Array<MetricKey.MetricKey.Untyped>): Labelled =>
  (key, labels) => {
    const series = MetricKey.taggedWithLabels(
      key,
      Object.entries(labels).map(([name, value]) => MetricLabel.make(name, value))
    )
    made.push(series)
    const metric = Metric.fromMetricKey(series)
    // Registered now, so that the series is exported (at zero) before its first update.
    metric.unsafeValue([])
    return metric
  }

const counter = (name: string, description: string) => MetricKey.counter(name, { description, incremental: true })
const gauge = (name: string, description: string) => MetricKey.gauge(name, { description })
/** Latencies in seconds, from 50 µs to about 6.5 s. */
const seconds = (name: string, description: string) =>
  MetricKey.histogram(name, MetricBoundaries.exponential({ start: 0.00005, factor: 2, count: 18 }), description)

const keys = {
  journaled: counter("change_feed_journaled_total", "Events appended to the journal (and broadcast)"),
  appendFailures: counter("change_feed_append_failures_total", "Journal appends that failed and were retried"),
  dropped: counter("change_feed_dropped_total", "Recorded events dropped because the queue was full or closed"),
  refused: counter(
    "change_feed_refused_total",
    "Publishes refused, by reason: busy (no room in the queue in time), closed (shutting down), unwritable (an event the journal cannot encode)"
  ),
  ackTimeouts: counter(
    "change_feed_ack_timeouts_total",
    "Publishes answered NotYetDurable: accepted, but not on disk within their timeout"
  ),
  resets: counter("change_feed_resets_total", "Readers told to resync, by reason"),
  corrupt: counter("change_feed_journal_corrupt_total", "Corrupt journal lines met, by readers or at open"),
  publishSeconds: seconds("change_feed_publish_seconds", "publish/publishAll calls, from the call to the durable ack"),
  appendSeconds: seconds("change_feed_append_seconds", "Journal appends of one batch: the write and its fsync"),
  fsyncSeconds: seconds("change_feed_fsync_seconds", "Journal fsyncs"),
  batchEvents: MetricKey.histogram(
    "change_feed_batch_events",
    MetricBoundaries.exponential({ start: 1, factor: 2, count: 14 }),
    "Events per batch the writer appended"
  ),
  headSeq: gauge("change_feed_head_seq", "Seq of the last journaled event"),
  oldestSeq: gauge("change_feed_oldest_seq", "Seq of the oldest retained event (head + 1 when none)"),
  segments: gauge("change_feed_segments", "Journal segment files"),
  journalBytes: gauge("change_feed_journal_bytes", "Bytes in the journal's segments"),
  queueDepth: gauge("change_feed_queue_depth", "Items waiting in the intake queue"),
  subscribers: gauge("change_feed_subscribers", "Open readers (streams, pages)"),
  readerLag: gauge(
    "change_feed_reader_lag_max",
    "Events between the head and the reader furthest behind (0 with no reader)"
  ),
  degraded: gauge("change_feed_degraded", "1 while journal appends fail and the writer retries, else 0")
}

/** Why a publish was refused. */
export type RefusedReason = "busy" | "closed" | "unwritable"

const refusedReasons: ReadonlyArray<RefusedReason> = ["busy", "closed", "unwritable"]
const resetReasons: ReadonlyArray<ResetReason> = ResetReason.literals

const byReason = <R extends string, Type extends MetricKeyType.MetricKeyType<any, any>>(
  labelled: Labelled,
  key: MetricKey.MetricKey<Type>,
  account: string,
  reasons: ReadonlyArray<R>
) =>
  Object.fromEntries(reasons.map((reason) => [reason, labelled(key, { account, reason })])) as Record<
    R,
    Metric.Metric<Type, MetricKeyType.MetricKeyType.InType<Type>, MetricKeyType.MetricKeyType.OutType<Type>>
  >

/** One account's metrics, made with `labelled`. */
const accountMetrics = (labelled: Labelled, account: string) => ({
  journaled: labelled(keys.journaled, { account }),
  appendFailures: labelled(keys.appendFailures, { account }),
  dropped: labelled(keys.dropped, { account }),
  refused: byReason(labelled, keys.refused, account, refusedReasons),
  ackTimeouts: labelled(keys.ackTimeouts, { account }),
  resets: byReason(labelled, keys.resets, account, resetReasons),
  corrupt: labelled(keys.corrupt, { account }),
  publishSeconds: labelled(keys.publishSeconds, { account }),
  appendSeconds: labelled(keys.appendSeconds, { account }),
  fsyncSeconds: labelled(keys.fsyncSeconds, { account }),
  batchEvents: labelled(keys.batchEvents, { account }),
  headSeq: labelled(keys.headSeq, { account }),
  oldestSeq: labelled(keys.oldestSeq, { account }),
  segments: labelled(keys.segments, { account }),
  journalBytes: labelled(keys.journalBytes, { account }),
  queueDepth: labelled(keys.queueDepth, { account }),
  subscribers: labelled(keys.subscribers, { account }),
  readerLag: labelled(keys.readerLag, { account }),
  degraded: labelled(keys.degraded, { account })
})

/** The keys of the series of each account `forAccount` made, until they are dropped. */
const seriesOf = new Map<string, ReadonlyArray<MetricKey.MetricKey.Untyped>>()

/**
 * One account's metrics (two feeds of one account share them), registered now. An open feed and
 * its journal hold them (`holdAccount`); this alone does not, so what it registers stays until a
 * hold of the account is let go.
 */
export const forAccount = (account: string) => {
  const made: Array<MetricKey.MetricKey.Untyped> = []
  const metrics = accountMetrics(labelledInto(made), account)
  if (!seriesOf.has(account)) seriesOf.set(account, made)
  return metrics
}

export type AccountMetrics = ReturnType<typeof forAccount>

// ---- the series of accounts no longer open ------------------------------------------------

/**
 * How long the series of an account that no feed holds any more are kept at most, for a scrape
 * to export their final values. Effect's registry keeps every series it is given for the life of
 * the process: a service that serves many accounts in turn would otherwise keep (and export) the
 * ~30 series of every account it ever opened, ~20 KiB of heap each account.
 */
export const releasedSeriesKept = Duration.minutes(5)

/** How many open feeds and journals hold each account's series. */
const holds = new Map<string, number>()
/** The accounts no hold keeps, with when the last one was let go, oldest first. */
const released = new Map<string, number>()

/**
 * The map of Effect's registry of series (`Metric.globalMetricRegistry`), which has no way to
 * remove one of its own. Checked for its type: in a registry without it, series are kept as
 * they always were.
 */
const registryMap = ((): MutableHashMap.MutableHashMap<MetricKey.MetricKey.Untyped, unknown> | undefined => {
  const map: unknown = (Metric.globalMetricRegistry as unknown as { readonly map?: unknown }).map
  return Predicate.hasProperty(map, Symbol.for("effect/MutableHashMap"))
    ? (map as unknown as MutableHashMap.MutableHashMap<MetricKey.MetricKey.Untyped, unknown>)
    : undefined
})()

const drop = (account: string) => {
  released.delete(account)
  const series = seriesOf.get(account)
  if (series === undefined || registryMap === undefined) return
  seriesOf.delete(account)
  for (const key of series) MutableHashMap.remove(registryMap, key)
}

/** Drops the series of the accounts let go `releasedSeriesKept` ago or longer. */
const dropExpired = (now: number) => {
  const before = now - Duration.toMillis(releasedSeriesKept)
  for (const [account, at] of released) {
    if (at > before) break
    drop(account)
  }
}

/**
 * One account's metrics, held while the scope is open. Once no scope holds them, the account's
 * series are kept until the next collection (`layerPrometheus`) has exported their final
 * values, and `releasedSeriesKept` at most; then they are dropped from the registry, and an
 * account opened again starts them afresh (its counters from zero: a counter reset, which
 * Prometheus's `rate` and `increase` take in their stride).
 */
export const holdAccount = (account: string): Effect.Effect<AccountMetrics, never, Scope.Scope> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Finalizer.acquireSync(
      () => {
        dropExpired(now)
        released.delete(account)
        holds.set(account, (holds.get(account) ?? 0) + 1)
        return forAccount(account)
      },
      () =>
        Effect.flatMap(Clock.currentTimeMillis, (later) =>
          Effect.sync(() => {
            const left = holds.get(account)! - 1
            if (left > 0) return void holds.set(account, left)
            holds.delete(account)
            // Added last (it was not there while held): the map stays in the order of the times.
            released.set(account, later)
            dropExpired(later)
          })
        )
    )
  )

/**
 * Runs `collect` (a collection, which reads the registry as it starts), then drops the series
 * of the accounts let go before it started and not held since: it exported their final values.
 */
const droppingAfter = <A>(collect: () => Promise<A>): Promise<A> => {
  const due = [...released]
  return collect().then((collected) => {
    for (const [account, at] of due) if (released.get(account) === at) drop(account)
    return collected
  })
}

/** The account of a feed that was given none. */
export const defaultAccount = "default"

/** `effect`, with the seconds it took when it succeeds recorded in `histogram`. */
export const timed =
  (histogram: Metric.Metric.Histogram<number>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      const start = performance.now()
      return Effect.tap(effect, () => histogram.unsafeUpdate((performance.now() - start) / 1000, []))
    })

// ---- gauges read at collection --------------------------------------------------------------

/** What open feeds register: a synchronous read of their state into their gauges. */
const samplers = new Set<Effect.Effect<void>>()

const sampleAll = () => {
  for (const sample of samplers) Effect.runSync(sample)
  sampleIndexes()
}

// ---- the process's line indexes of sealed segments ---------------------------------------

/** Series of the process rather than of an account: never dropped, so the keys it keeps are never read. */
const processWide = labelledInto([])
const indexReads = counter(
  "change_feed_segment_index_reads_total",
  "Opens of a sealed segment by a read, by result: hit (read through its line index), miss (scanned)"
)

/** The series of `SegmentIndexes.shared`, which every journal opened without indexes of its own uses: no account label. */
const indexSeries = {
  bytes: Metric.fromMetricKey(
    gauge(
      "change_feed_segment_index_bytes",
      "Bytes the line indexes of sealed segments hold (their budget: FEED_SEGMENT_INDEX_BYTES, 32 MiB unless set)"
    )
  ),
  segments: Metric.fromMetricKey(gauge("change_feed_segment_index_segments", "Sealed segments with a line index")),
  reads: {
    hit: processWide(indexReads, { result: "hit" }),
    miss: processWide(indexReads, { result: "miss" })
  }
}
/** The reads counted into the counters so far: each collection adds what came since. */
let indexReadsCounted = { hit: 0, miss: 0 }

const sampleIndexes = () => {
  const indexes = SegmentIndexes.shared
  const reads = { hit: indexes.hits, miss: indexes.misses }
  Effect.runSync(
    Effect.all([
      Metric.set(indexSeries.bytes, indexes.bytes),
      Metric.set(indexSeries.segments, indexes.size),
      Metric.incrementBy(indexSeries.reads.hit, reads.hit - indexReadsCounted.hit),
      Metric.incrementBy(indexSeries.reads.miss, reads.miss - indexReadsCounted.miss)
    ])
  )
  indexReadsCounted = reads
}

/** Keeps `sample` (which sets gauges from live state) run at every collection while the scope is open. */
export const sampleWhileOpen = (sample: Effect.Effect<void>) =>
  Effect.acquireRelease(
    Effect.sync(() => samplers.add(sample)),
    () => Effect.sync(() => samplers.delete(sample))
  )

/** Effect's producer, with the gauges brought up to date first. */
const sampling = (producer: MetricProducer): MetricProducer => ({
  collect: (options) => {
    sampleAll()
    return droppingAfter(() => producer.collect(options))
  }
})

// ---- Prometheus ---------------------------------------------------------------------------

/** The Prometheus text format's media type. */
export const prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

/** Collects every metric and serializes it in the Prometheus text format. */
export class PrometheusScrape extends Context.Tag("effect-change-feed/PrometheusScrape")<
  PrometheusScrape,
  Effect.Effect<string>
>() {}

/**
 * The Prometheus exporter as a reader of Effect's metrics, without a server of its own: the
 * scrape collects and serializes when asked.
 */
export const layerPrometheus: Layer.Layer<PrometheusScrape> = Layer.scoped(
  PrometheusScrape,
  Effect.gen(function* () {
    const exporter = new PrometheusExporter({ preventServerStart: true })
    yield* OtelMetrics.registerProducer(sampling(yield* OtelMetrics.makeProducer), () => exporter)
    // Without the scope labels (`otel_scope_name`) on every series: they would all say the same.
    const serializer = new PrometheusSerializer(undefined, false, undefined, false, true)
    return Effect.map(
      Effect.promise(() => exporter.collect()),
      ({ resourceMetrics }) => serializer.serialize(resourceMetrics)
    )
  })
).pipe(Layer.provide(OtelResource.layer({ serviceName: "effect-change-feed" })))
