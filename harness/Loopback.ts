/**
 * The service in-process on a loopback port, as `Http.layerFromSettings` composes it (feed,
 * API, Node server) but with the feed exposed, so a test can publish straight into the feed
 * and read it back over HTTP, and measure the server's memory in its own process.
 */
import { HttpServer } from "@effect/platform"
import { NodeContext, NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { createServer } from "node:http"
import * as ChangeFeed from "../src/ChangeFeed.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import * as Http from "../src/Http.js"

export interface LoopbackOptions {
  readonly directory: string
  readonly feed?: Omit<ChangeFeed.FeedOptions, "directory"> | undefined
  readonly http?: Http.HttpOptions | undefined
}

export interface Loopback {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly feed: ChangeFeed.ChangeFeedService<AgentEvent>
  /** Shuts the server down as a clean stop does; also done when the caller's scope closes. */
  readonly close: Effect.Effect<void>
}

export const startLoopback = (options: LoopbackOptions): Effect.Effect<Loopback, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const layer = Http.layer(options.http ?? {}).pipe(
      Layer.provideMerge(ChangeFeed.layer({ ...options.feed, directory: options.directory })),
      Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
      Layer.provide(NodeContext.layer)
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
    )
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("the loopback server must listen on TCP")
    return {
      url: `http://127.0.0.1:${address.port}`,
      feed: Context.get(context, ChangeFeed.ChangeFeed),
      close: Scope.close(scope, Exit.void)
    }
  })
