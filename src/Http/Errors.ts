/**
 * How failures become answers, so that every error answer is JSON saying what went wrong: a
 * 404 for a path no route has, a 405 with `Allow` for a method its path does not have, a 500
 * for a defect, and every 5xx logged with its cause. The API's own errors (`BadRequest`,
 * `JournalCorrupt`, ...) pass through, to be encoded by the API with their status.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpBody from "@effect/platform/HttpBody"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Cause, Effect, Option, Schema } from "effect"
import { InternalError, MethodNotAllowed, NotFound } from "../Domain/Errors.js"

/** The methods each path answers. */
export type Routes = ReadonlyMap<string, ReadonlyArray<string>>

/** The routes of `api`, plus `extra` ones served beside it (the docs). */
export const routesOf = (api: HttpApi.HttpApi.Any, extra: ReadonlyArray<readonly [string, string]>): Routes => {
  const routes = new Map<string, Array<string>>()
  const add = (path: string, method: string) => routes.set(path, [...(routes.get(path) ?? []), method])
  HttpApi.reflect(api as HttpApi.HttpApi.AnyWithProps, {
    onGroup: () => {},
    onEndpoint: ({ endpoint }) => add(endpoint.path, endpoint.method)
  })
  for (const [path, method] of extra) add(path, method)
  return routes
}

type WireError = NotFound | MethodNotAllowed | InternalError

/** An error as the API encodes it: its JSON, with the status its schema declares. */
const answer = <E extends WireError>(schema: Schema.Schema<E, any>, error: E, headers?: Record<string, string>) =>
  HttpServerResponse.unsafeJson(Schema.encodeSync(schema)(error), {
    status: HttpApiSchema.getStatusError(schema),
    ...(headers === undefined ? {} : { headers })
  })

/** The schema of an API error (its class, which carries its status), if `error` is one. */
const schemaOf = (error: unknown): Schema.Schema.Any | undefined => {
  const constructor: unknown = typeof error === "object" && error !== null ? error.constructor : undefined
  return Schema.isSchema(constructor) ? constructor : undefined
}

/** The methods of the route whose path (`/a/:param/b`) matches `path`, if any. */
const methodsAt = (routes: Routes, path: string): ReadonlyArray<string> | undefined => {
  const exact = routes.get(path)
  if (exact !== undefined) return exact
  const parts = path.split("/")
  for (const [route, methods] of routes) {
    const pattern = route.split("/")
    if (pattern.length === parts.length && pattern.every((p, i) => p.startsWith(":") || p === parts[i])) return methods
  }
  return undefined
}

const unroutable = (routes: Routes, method: string, path: string) => {
  const allow = methodsAt(routes, path)
  if (allow === undefined) {
    return answer(NotFound, new NotFound({ message: `no route ${method} ${path}; the routes are listed at /docs` }))
  }
  return answer(
    MethodNotAllowed,
    new MethodNotAllowed({ message: `${path} does not answer ${method}; it answers ${allow.join(", ")}`, allow }),
    { allow: allow.join(", ") }
  )
}

/** Touches every answer on its way out: JSON says its charset, a 503 says when to come back. */
const finishAnswer = (
  _request: HttpServerRequest.HttpServerRequest,
  response: HttpServerResponse.HttpServerResponse
) => {
  // Said outright, so that no client guesses another encoding.
  const charset =
    response.body._tag === "Uint8Array" && response.body.contentType === "application/json"
      ? HttpServerResponse.setBody(response, HttpBody.uint8Array(response.body.body, "application/json; charset=utf-8"))
      : response
  // Every 503 is a condition that passes (a busy or closing feed): clients and proxies may retry after a second.
  return Effect.succeed(
    charset.status === 503 && charset.headers["retry-after"] === undefined
      ? HttpServerResponse.setHeader(charset, "retry-after", "1")
      : charset
  )
}

/** The middleware around the API's router (`HttpApiBuilder.middleware`). */
export const answerFailures =
  (routes: Routes) =>
  (app: HttpApp.Default): HttpApp.Default =>
    Effect.zipRight(
      HttpApp.appendPreResponseHandler(finishAnswer),
      Effect.catchAllCause(app, (cause) =>
        Effect.gen(function* () {
          const request = yield* HttpServerRequest.HttpServerRequest
          const path = request.url.split("?", 1)[0]!
          const failure = Cause.failureOption(cause as Cause.Cause<unknown>)
          if (Option.isSome(failure) && failure.value instanceof HttpServerError.RouteNotFound) {
            return unroutable(routes, request.method, path)
          }
          const defect = Cause.dieOption(cause)
          if (
            Cause.isInterruptedOnly(cause) ||
            (Option.isSome(defect) && HttpServerResponse.isServerResponse(defect.value))
          ) {
            return yield* Effect.failCause(cause)
          }
          const schema = Option.isSome(failure) ? schemaOf(failure.value) : undefined
          const status = schema === undefined ? 500 : HttpApiSchema.getStatusError(schema)
          const what = `${request.method} ${path} answered ${status}`
          if (status === 503) yield* Effect.logWarning(what, cause)
          else if (status >= 500) yield* Effect.logError(what, cause)
          // An error of the API: encoded by the API, with its status.
          if (schema !== undefined) return yield* Effect.failCause(cause)
          // A defect (a bug, a broken invariant) or an error no schema describes: the client
          // learns that much, the log has the cause.
          return answer(
            InternalError,
            new InternalError({ message: "the server failed to answer this request; its log has the cause" })
          )
        })
      )
    )
