/**
 * Cross-origin access, for browser apps served from other origins. With `FEED_CORS_ORIGINS`
 * set (a comma-separated list of origins, or `*`), preflights are answered and every answer to
 * an allowed origin carries `Access-Control-Allow-Origin`, the event stream included. Without it
 * no CORS header is ever sent, so browsers keep refusing cross-origin reads.
 *
 * No cookie is involved (the token travels in `Authorization`, or `?access_token=` on the
 * stream), so credentials are never allowed, and `*` is a real wildcard.
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Config, ConfigError, Context, Effect, Either, Layer } from "effect"

/** The origins allowed to read the feed: every one, or these. */
export type CorsOrigins = "*" | ReadonlyArray<string>

/** Request headers a cross-origin page may send (`Last-Event-ID` is what `EventSource` resends). */
const allowHeaders = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
const allowMethods = "GET, POST"
/** How long a browser may keep a preflight's answer. */
const maxAgeSeconds = "600"

/** The origins of a `FEED_CORS_ORIGINS` value, or what is wrong with it. */
export const parseOrigins = (text: string): Either.Either<CorsOrigins, string> => {
  if (text.trim() === "*") return Either.right("*")
  const origins: Array<string> = []
  for (const item of text.split(",")) {
    const entry = item.trim()
    if (entry === "") continue
    const url = URL.canParse(entry) ? new URL(entry) : undefined
    // A trailing slash is forgiven (a browser's Origin has none); a path, query or other scheme is not.
    if (
      url === undefined ||
      (url.protocol !== "http:" && url.protocol !== "https:") ||
      !(entry === url.origin || entry === `${url.origin}/`)
    ) {
      return Either.left(
        `'${entry}' is not an origin: give scheme://host[:port] with nothing after it, e.g. https://app.example.com`
      )
    }
    origins.push(url.origin)
  }
  return origins.length === 0
    ? Either.left("is set but lists no origin: give a comma-separated list of origins, or *, or leave it unset")
    : Either.right(origins)
}

/** `FEED_CORS_ORIGINS`; unset, cross-origin requests stay refused. */
export const CorsConfig = Config.option(
  Config.string("FEED_CORS_ORIGINS").pipe(
    Config.mapOrFail((text) =>
      Either.mapLeft(parseOrigins(text), (problem) =>
        ConfigError.InvalidData(["FEED_CORS_ORIGINS"], `FEED_CORS_ORIGINS ${problem}`)
      )
    )
  )
)

const allows = (origins: CorsOrigins, origin: string) => origins === "*" || origins.includes(origin)

/**
 * The CORS headers of an answer to a request from `origin` (its `Origin` header): none when
 * CORS is off or the origin is not allowed. An answer that depends on the origin says so in
 * `Vary`, so that no cache serves it to another origin.
 */
export const responseHeaders = (
  origins: CorsOrigins | undefined,
  origin: string | undefined
): Record<string, string> => {
  if (origins === undefined) return {}
  if (origins === "*") return { "access-control-allow-origin": "*" }
  return origin !== undefined && allows(origins, origin)
    ? { "access-control-allow-origin": origin, vary: "Origin" }
    : { vary: "Origin" }
}

/** The middleware: preflights answered here, before routing; the headers added to every other answer. */
export const middleware =
  (origins: CorsOrigins) =>
  (app: HttpApp.Default): HttpApp.Default =>
    Effect.withFiberRuntime((fiber) => {
      const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
      const origin = request.headers["origin"]
      const headers = responseHeaders(origins, origin)
      if (
        request.method === "OPTIONS" &&
        origin !== undefined &&
        allows(origins, origin) &&
        request.headers["access-control-request-method"] !== undefined
      ) {
        return Effect.succeed(
          HttpServerResponse.empty({
            status: 204,
            headers: {
              ...headers,
              "access-control-allow-methods": allowMethods,
              "access-control-allow-headers": allowHeaders,
              "access-control-max-age": maxAgeSeconds
            }
          })
        )
      }
      return Effect.zipRight(
        HttpApp.appendPreResponseHandler((_request, response) =>
          Effect.succeed(HttpServerResponse.setHeaders(response, headers))
        ),
        app
      )
    })

/** The middleware around every route, when origins are allowed; nothing otherwise. */
export const layer = (origins: CorsOrigins | undefined): Layer.Layer<never> =>
  origins === undefined ? Layer.empty : HttpApiBuilder.middleware(middleware(origins))
