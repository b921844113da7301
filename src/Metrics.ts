/**
 * The feed's metrics and their export.
 *
 * Every metric is an Effect `Metric` labelled with the feed's `account`. Counters and
 * histograms are updated where the thing happens (an append, a reset, a refused publish).
 * Gauges of state (head, oldest seq, queue depth, subscribers, reader lag, degraded) are read
 * from each open feed when the metrics are collected, as OpenTelemetry's observable gauges
 * are: they cost nothing between scrapes and are never stale.
 *
 * `layerPrometheus` exports them in the Prometheus text format through `@effect/opentelemetry`
 * and OpenTelemetry's Prometheus exporter, serialized on request (the service answers it at
 * `GET /metrics`, on its own port).
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as OtelResource from "@effect/opentelemetry/Resource"
import { PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus"
import type { MetricProducer } from "@opentelemetry/sdk-metrics"
import { Context, Effect, Layer, Metric, MetricBoundaries, MetricKey, MetricLabel, type MetricKeyType } from "effect"
import { ResetReason } from "./Domain/FeedItem.js"

/** A metric with its labels fixed: updated through its own registry entry, with no label lookup per update. */
const labelled = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  labels: Record<string, string>
) => {
  const metric = Metric.fromMetricKey(
    MetricKey.taggedWithLabels(
      key,
      Object.entries(labels).map(([name, value]) => MetricLabel.make(name, value))
    )
  )
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
  key: MetricKey.MetricKey<Type>,
  account: string,
  reasons: ReadonlyArray<R>
) =>
  Object.fromEntries(reasons.map((reason) => [reason, labelled(key, { account, reason })])) as Record<
    R,
    Metric.Metric<Type, MetricKeyType.MetricKeyType.InType<Type>, MetricKeyType.MetricKeyType.OutType<Type>>
  >

/** One account's metrics (two feeds of one account share them). */
export const forAccount = (account: string) => ({
  journaled: labelled(keys.journaled, { account }),
  appendFailures: labelled(keys.appendFailures, { account }),
  dropped: labelled(keys.dropped, { account }),
  refused: byReason(keys.refused, account, refusedReasons),
  ackTimeouts: labelled(keys.ackTimeouts, { account }),
  resets: byReason(keys.resets, account, resetReasons),
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

export type AccountMetrics = ReturnType<typeof forAccount>

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
    return producer.collect(options)
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
