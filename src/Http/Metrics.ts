/**
 * `GET /metrics`: every metric in the Prometheus text format, collected when scraped, for the
 * admin token only when the service has tokens (the `Authorization: Bearer` header; a scraper sets
 * it with its `authorization` option).
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Layer } from "effect"
import type * as Access from "../Access.js"
import * as Metrics from "../Metrics.js"
import { authorize, makeAuthenticate } from "./Auth.js"

export const path = "/metrics"

/** The route, for the answers to paths and methods no route has. */
export const routes = [[path, "GET"]] as const

export const layer = (access: Access.AccessOptions) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function* () {
      const authenticate = yield* makeAuthenticate(access)
      const scrape = yield* Metrics.PrometheusScrape
      yield* router.get(
        path,
        Effect.zipRight(
          Effect.flatMap(authenticate, (grant) => authorize(grant, "admin")),
          Effect.map(scrape, (text) => HttpServerResponse.text(text, { contentType: Metrics.prometheusContentType }))
        )
      )
    })
  ).pipe(Layer.provide(Metrics.layerPrometheus))
