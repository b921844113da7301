/**
 * `GET /metrics`: every metric in the Prometheus text format, collected when scraped, behind the
 * same bearer-token check as the API (the `Authorization: Bearer` header; a scraper sets it with
 * its `authorization` option).
 */
import { HttpApiBuilder, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, type Redacted } from "effect"
import * as Metrics from "../Metrics.js"
import { makeAuthorize } from "./Auth.js"

export const path = "/metrics"

/** The route, for the answers to paths and methods no route has. */
export const routes = [[path, "GET"]] as const

export const layer = (token: Redacted.Redacted | undefined) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function* () {
      const authorize = yield* makeAuthorize(token)
      const scrape = yield* Metrics.PrometheusScrape
      yield* router.get(
        path,
        Effect.zipRight(
          authorize,
          Effect.map(scrape, (text) => HttpServerResponse.text(text, { contentType: Metrics.prometheusContentType }))
        )
      )
    })
  ).pipe(Layer.provide(Metrics.layerPrometheus))
