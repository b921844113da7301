/**
 * Tracing: the spans of HTTP requests, publishes, the writer's commits and readers' replays,
 * recorded by an in-memory exporter around a real server; the OTLP/HTTP export the service
 * configures from `OTEL_EXPORTER_OTLP_ENDPOINT`, received by a collector on loopback; and no
 * tracing at all without it.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { describe, it, assert } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Exit, Layer, Option, Redacted, Scope } from "effect"
import * as NodeHttp from "node:http"
import * as ChangeFeeds from "../src/ChangeFeeds.js"
import * as Settings from "../src/Config.js"
import * as Http from "../src/Http.js"
import * as Tracing from "../src/Tracing.js"
import { openStream, post, start } from "./support/Server.js"
import { tempDir } from "./support/TempDir.js"
import { eventually } from "./support/Wait.js"

const inMemoryTracing = Effect.sync(() => {
  const exporter = new InMemorySpanExporter()
  const layer = Layer.discard(NodeSdk.layer(() => ({ spanProcessor: new SimpleSpanProcessor(exporter) })))
  return { exporter, layer }
})

const named = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((span) => span.name === name)

describe("spans", () => {
  it.scopedLive("requests_publishes_commits_and_replays_have_spans_with_their_attributes", () =>
    Effect.gen(function* () {
      const { exporter, layer } = yield* inMemoryTracing
      const token = "trace-s3cret"
      const server = yield* start({
        directory: yield* tempDir,
        http: { token: Redacted.make(token) },
        around: layer
      })
      const traceId = "0af7651916cd43dd8448eb211c80319c"
      // The account's id labels its spans.
      const answer = yield* post(
        `${server.url}/api/v1/accounts/traced/events`,
        {
          events: [
            { event: { type: "session_created", session_id: "s1", title: "one" } },
            { event: { type: "token", content: "Hi" } },
            { event: { type: "session_deleted", session_id: "s1" } }
          ]
        },
        { authorization: `Bearer ${token}`, traceparent: `00-${traceId}-b7ad6b7169203331-01` }
      )
      assert.deepStrictEqual(answer.body, { seqs: [1, null, 2] })

      // A reader replays from 0 and stays open: its replay span ends when the replay does.
      const stream = yield* openStream(`${server.url}/api/v1/accounts/traced/stream?since=0&access_token=${token}`)
      yield* stream.untilCaughtUp
      yield* eventually(
        "the replay span ends",
        () => named(exporter.getFinishedSpans(), "ChangeFeed.replay").length > 0
      )

      const spans = exporter.getFinishedSpans()
      const [request] = named(spans, "http.server POST")
      assert.isDefined(request)
      assert.strictEqual(request!.spanContext().traceId, traceId, "the caller's trace goes on")
      assert.include(request!.attributes, {
        "http.request.method": "POST",
        "url.path": "/api/v1/accounts/traced/events",
        "http.response.status_code": 200
      })

      const [publish] = named(spans, "ChangeFeed.publishAll")
      assert.isDefined(publish)
      assert.strictEqual(publish!.parentSpanContext?.spanId, request!.spanContext().spanId)
      assert.include(publish!.attributes, {
        "feed.account": "traced",
        "feed.events": 3,
        "feed.durable": 2,
        "feed.seq.first": 1,
        "feed.seq.last": 2
      })

      const commits = named(spans, "ChangeFeed.commit")
      assert.deepStrictEqual(
        commits.map((span) => [span.attributes["feed.seq.first"], span.attributes["feed.seq.last"]]),
        [[1, 2]]
      )
      assert.include(commits[0]!.attributes, { "feed.account": "traced", "feed.batch.events": 2 })

      const [replay] = named(spans, "ChangeFeed.replay")
      assert.include(replay!.attributes, { "feed.account": "traced", "feed.replay.from": 0, "feed.replay.to": 2 })

      // The stream's request span: its query is exported with the token redacted.
      const streamScope = yield* Scope.make()
      const second = yield* Scope.extend(
        openStream(`${server.url}/api/v1/stream?since=2&access_token=${token}`),
        streamScope
      )
      yield* second.untilCaughtUp
      yield* Scope.close(streamScope, Exit.void)
      yield* eventually("the stream's request span ends", () =>
        named(exporter.getFinishedSpans(), "http.server GET").some((span) =>
          String(span.attributes["url.query"]).includes("since=2")
        )
      )
      const get = named(exporter.getFinishedSpans(), "http.server GET").find((span) =>
        String(span.attributes["url.query"]).includes("since=2")
      )!
      assert.strictEqual(get.attributes["url.query"], "since=2&access_token=REDACTED")
      assert.notInclude(JSON.stringify(exporter.getFinishedSpans().map((span) => span.attributes)), token)
    })
  )
})

describe("an account's feed and the requests that use it", () => {
  it.scopedLive("the_request_that_opened_an_account_is_no_parent_of_its_later_commits", () =>
    Effect.gen(function* () {
      const { exporter, layer } = yield* inMemoryTracing
      const server = yield* start({ directory: yield* tempDir, around: layer })
      const traceOf = (n: number) => `${String(n).padStart(2, "0")}f7651916cd43dd8448eb211c80319c`
      for (const n of [1, 2]) {
        const answer = yield* post(
          `${server.url}/api/v1/accounts/opened-by-a-request/events`,
          { event: { type: "session_created", session_id: `s${n}`, title: "t" } },
          { traceparent: `00-${traceOf(n)}-b7ad6b7169203331-01` }
        )
        assert.deepStrictEqual(answer.body, { seqs: [n] })
      }
      yield* eventually(
        "both commits are traced",
        () => named(exporter.getFinishedSpans(), "ChangeFeed.commit").length === 2
      )
      const spans = exporter.getFinishedSpans()
      const [open] = named(spans, "ChangeFeeds.open")
      assert.strictEqual(open!.spanContext().traceId, traceOf(1), "the open is part of the request that waited for it")
      for (const commit of named(spans, "ChangeFeed.commit")) {
        // The writer was forked as the feed opened: it outlives that request and the feed's own
        // opening, and a batch it commits holds the events of any of the requests after them.
        assert.isUndefined(commit.parentSpanContext, "a commit is a trace of its own")
        assert.notInclude([traceOf(1), traceOf(2), open!.spanContext().traceId], commit.spanContext().traceId)
      }
    })
  )
})

describe("OTLP export", () => {
  /** A collector on loopback: the JSON bodies posted to `/v1/traces`. */
  const collector = Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly bodies: Array<any>; readonly server: NodeHttp.Server }>((resume) => {
      const bodies: Array<any> = []
      const server = NodeHttp.createServer((request, response) => {
        let text = ""
        request.setEncoding("utf8")
        request.on("data", (chunk: string) => (text += chunk))
        request.on("end", () => {
          if (request.url === "/v1/traces") bodies.push(JSON.parse(text))
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as { port: number }
        resume(Effect.succeed({ url: `http://127.0.0.1:${address.port}`, bodies, server }))
      })
    }),
    ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )

  /** The service's settings, from the environment the test gives it. */
  const settings = (env: Record<string, string>) =>
    Effect.withConfigProvider(Settings.ServerConfig, ConfigProvider.fromMap(new Map(Object.entries(env))))

  it.scopedLive("the_service_posts_its_spans_to_the_otlp_endpoint_it_is_given", () =>
    Effect.gen(function* () {
      const otlp = yield* collector
      const directory = yield* tempDir
      const config = yield* settings({
        PORT: "8787",
        FEED_DIR: directory,
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_SERVICE_NAME: "feed-under-test"
      })
      assert.deepStrictEqual(
        config.tracing,
        Option.some({ url: `${otlp.url}/v1/traces`, serviceName: "feed-under-test" })
      )
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Http.layerFromSettings({ ...config, port: 0 }), scope)
      const feeds = Context.get(context, ChangeFeeds.ChangeFeeds)
      yield* feeds.use("default", (feed) => feed.publish("s1", { type: "session_deleted", session_id: "s1" }))
      // Closing the service flushes its spans.
      yield* Scope.close(scope, Exit.void)

      const spans = otlp.bodies.flatMap((body) =>
        body.resourceSpans.flatMap((resource: any) =>
          resource.scopeSpans.flatMap((scope: any) =>
            scope.spans.map((span: any) => ({ name: span.name, service: resource.resource.attributes }))
          )
        )
      )
      const names = spans.map((span) => span.name)
      assert.includeMembers(names, ["ChangeFeed.publish", "ChangeFeed.commit"])
      assert.deepInclude(spans[0]!.service, { key: "service.name", value: { stringValue: "feed-under-test" } })
    })
  )

  it.effect("without_an_endpoint_tracing_is_off_and_with_one_it_is_on", () =>
    Effect.gen(function* () {
      const none = yield* settings({})
      assert.isTrue(Option.isNone(none.tracing))
      assert.isFalse(yield* Effect.provide(Tracing.active, Tracing.layer(none.tracing)))
      const some = yield* settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1/base/" })
      assert.deepStrictEqual(
        some.tracing,
        Option.some({ url: "http://127.0.0.1:1/base/v1/traces", serviceName: "effect-change-feed" })
      )
      assert.isTrue(yield* Effect.provide(Tracing.active, Tracing.layer(some.tracing)))
      const traces = yield* settings({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:2/traces"
      })
      assert.strictEqual(Option.getOrThrow(traces.tracing).url, "http://127.0.0.1:2/traces")
      const bad = yield* Effect.flip(settings({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }))
      assert.include(String(bad), "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL")
    })
  )
})
