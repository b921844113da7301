/**
 * The service's own HTTP server on a bench feed, for the sections that measure what HTTP
 * clients get: `Http.layer` on a Node server on 127.0.0.1, port 0, serving the given feed.
 */
import { HttpServer } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Context, Effect, Layer, type Scope } from "effect"
import * as ChangeFeed from "../src/ChangeFeed.js"
import * as ChangeFeeds from "../src/ChangeFeeds.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import * as Http from "../src/Http.js"

/** Serves `feed` for as long as the scope lasts; answers the port it listens on. */
export const serveFeed = (
  feed: ChangeFeed.ChangeFeedService<AgentEvent>
): Effect.Effect<number, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const server = Http.layerServer({ host: "127.0.0.1", port: 0 }).pipe(
      Layer.provide(ChangeFeeds.layerSingle),
      Layer.provide(Layer.succeed(ChangeFeed.ChangeFeed, feed)),
      Layer.provide(NodeContext.layer)
    )
    const context = yield* Layer.build(server)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("the bench server must listen on TCP")
    return address.port
  })
