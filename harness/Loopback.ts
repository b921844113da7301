/**
 * The service in-process on a loopback port, composed by `Http.layerServer` as `npm start` is,
 * with the default account's feed exposed (and held open), so a test can publish straight into
 * the feed and read it back over HTTP, and measure the server's memory in its own process.
 */
import { HttpServer } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import type * as ChangeFeed from "../src/ChangeFeed.js"
import * as ChangeFeeds from "../src/ChangeFeeds.js"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import * as Http from "../src/Http.js"

export interface LoopbackOptions {
  readonly directory: string
  readonly feed?: Omit<ChangeFeeds.FileFeedsOptions, "directory"> | undefined
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
    const layer = Http.layerServer({ ...options.http, host: "127.0.0.1", port: 0 }).pipe(
      Layer.provideMerge(ChangeFeeds.layer({ ...options.feed, directory: options.directory })),
      Layer.provide(NodeContext.layer)
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(
      Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
    )
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("the loopback server must listen on TCP")
    return {
      url: `http://127.0.0.1:${address.port}`,
      feed: yield* Context.get(context, ChangeFeeds.ChangeFeeds)
        .get(ChangeFeeds.DEFAULT_ACCOUNT)
        .pipe(Effect.orDie, Scope.extend(scope)),
      close: Scope.close(scope, Exit.void)
    }
  })
