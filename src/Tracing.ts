/**
 * Traces: the service's spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and no tracer at all otherwise.
 *
 * The feed and the HTTP layer ask `active` once, when they are built: with no tracer installed
 * they add no span anywhere, so their hot paths cost exactly what they cost without tracing.
 * `httpSpans` is the span of each HTTP request, in place of the platform's own, which would
 * copy the stream's `?access_token=` into the exported `url.query`.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Config, ConfigError, Context, DefaultServices, Effect, Either, FiberRef, Layer, Option, Tracer } from "effect"

const builtInTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * Whether spans are collected here: tracing is on and a tracer other than Effect's built-in
 * one (which records spans for no one) is installed.
 */
export const active: Effect.Effect<boolean> = Effect.zipWith(
  FiberRef.get(FiberRef.currentTracerEnabled),
  Effect.tracer,
  (enabled, tracer) => enabled && tracer !== builtInTracer
)

export interface OtlpSettings {
  /** Where spans are posted (the collector's `/v1/traces`). */
  readonly url: string
  readonly serviceName: string
}

const url = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const parsed = URL.canParse(text) ? new URL(text) : undefined
      return parsed !== undefined && (parsed.protocol === "http:" || parsed.protocol === "https:")
        ? Either.right(parsed.toString())
        : Either.left(
            ConfigError.InvalidData(
              [name],
              `${name} must be an http(s) URL such as http://127.0.0.1:4318, got '${text}'`
            )
          )
    }),
    Config.option
  )

/**
 * The standard OpenTelemetry variables: the endpoint (spans go to its `/v1/traces`) or the
 * traces endpoint as it is, and the service name. `None` when neither endpoint is set.
 */
export const OtlpConfig: Config.Config<Option.Option<OtlpSettings>> = Config.all({
  endpoint: url("OTEL_EXPORTER_OTLP_ENDPOINT"),
  tracesEndpoint: url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
  serviceName: Config.string("OTEL_SERVICE_NAME").pipe(Config.withDefault("effect-change-feed"))
}).pipe(
  Config.map(({ endpoint, serviceName, tracesEndpoint }) =>
    Option.orElse(tracesEndpoint, () =>
      Option.map(endpoint, (base) => new URL("v1/traces", base.endsWith("/") ? base : `${base}/`).toString())
    ).pipe(Option.map((url) => ({ url, serviceName })))
  )
)

/** The OTLP/HTTP exporter when configured; otherwise tracing off, so no span is made anywhere. */
export const layer = (settings: Option.Option<OtlpSettings>): Layer.Layer<never> =>
  Option.match(settings, {
    onNone: () => Layer.setTracerEnabled(false),
    onSome: ({ serviceName, url }) =>
      Layer.discard(
        NodeSdk.layer(() => ({
          spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter({ url })),
          resource: { serviceName }
        }))
      )
  })

/** Query parameters whose values never leave the service in a span. */
const secretParams = ["access_token"]

/**
 * The span of one HTTP request (`http.server <METHOD>`), with the attributes OpenTelemetry's
 * conventions give a server span, the caller's trace continued from its `traceparent` (or B3)
 * header, and the token in the query redacted.
 */
export const httpSpans = (app: HttpApp.Default): HttpApp.Default =>
  Effect.withFiberRuntime((fiber) => {
    const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
    const name = Context.get(fiber.currentContext, HttpMiddleware.SpanNameGenerator)(request)
    const url = new URL(request.url, "http://localhost")
    for (const param of secretParams) if (url.searchParams.has(param)) url.searchParams.set(param, "REDACTED")
    return Effect.useSpan(
      name,
      {
        parent: Option.getOrUndefined(HttpTraceContext.fromHeaders(request.headers)),
        kind: "server",
        captureStackTrace: false
      },
      (span) => {
        span.attribute("http.request.method", request.method)
        span.attribute("url.path", url.pathname)
        if (url.search !== "") span.attribute("url.query", url.search.slice(1))
        span.attribute("url.scheme", "http")
        const agent = request.headers["user-agent"]
        if (agent !== undefined) span.attribute("user_agent.original", agent)
        if (Option.isSome(request.remoteAddress)) span.attribute("client.address", request.remoteAddress.value)
        return Effect.onExit(Effect.withParentSpan(app, span), (exit) =>
          Effect.sync(() => span.attribute("http.response.status_code", HttpServerError.exitResponse(exit).status))
        )
      }
    )
  })

/**
 * `HttpApiBuilder.serve()` with `httpSpans` when spans are collected, and never the platform's
 * own request spans (which `httpSpans` replaces).
 */
export const serveApi = Layer.unwrapEffect(
  Effect.map(active, (on) => (on ? HttpApiBuilder.serve(httpSpans) : HttpApiBuilder.serve()))
).pipe(HttpMiddleware.withTracerDisabledWhen(() => true))
