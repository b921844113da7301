/**
 * The HTTP service: handlers for the `FeedApi` contract, authorization, body limits, the
 * OpenAPI UI at `/docs`, and the server layer with its configuration from the environment.
 */
import { HttpApiBuilder, HttpApiSwagger, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeContext, NodeHttpServer } from "@effect/platform-node"
import { createServer, type Server } from "node:http"
import { fileURLToPath } from "node:url"
import {
  Cause,
  Chunk,
  Config,
  ConfigError,
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Option,
  Queue,
  Redacted,
  Schema,
  Stream
} from "effect"
import { FeedApi, Authorization } from "./Api.js"
import * as ChangeFeed from "./ChangeFeed.js"
import type { AgentEvent } from "./Domain/AgentEvent.js"
import type { ChangeEvent } from "./Domain/ChangeEvent.js"
import { type Cursor, parseCursor } from "./Domain/Cursor.js"
import { BadRequest, InternalError, JournalCorrupt, Unavailable } from "./Domain/Errors.js"
import { cursorAfter, type FeedItem, resetWire } from "./Domain/FeedItem.js"
import { makeAuthorize, tokenProblem } from "./Http/Auth.js"
import { appendEntries } from "./Http/Body.js"
import * as Cors from "./Http/Cors.js"
import { answerFailures, routesOf } from "./Http/Errors.js"
import * as MetricsRoute from "./Http/Metrics.js"
import { feedErrorFrame, keepaliveFrame, makeFrameEncoder, retryFrame } from "./Http/Sse.js"
import * as Viewer from "./Http/Viewer.js"
import type { FsyncMode, JournalReadError } from "./Journal.js"
import * as Tracing from "./Tracing.js"

export interface HttpOptions {
  /** Bearer token every `/api` route requires, when set. */
  readonly token?: Redacted.Redacted | undefined
  /** Keepalive comment period on open streams (default 15 s). */
  readonly keepaliveMs?: number | undefined
  /** Reconnect delay advised to `EventSource` clients by the stream's first line, `retry:` (default 1 s). */
  readonly retryMs?: number | undefined
  /** Largest request body (default 1 MiB). */
  readonly maxBodyBytes?: number | undefined
  /** Most events in one POST (default 1000). */
  readonly maxBatchEvents?: number | undefined
  /** Origins whose pages may read the feed (CORS); unset, cross-origin requests stay refused. */
  readonly corsOrigins?: Cors.CorsOrigins | undefined
}

/** The stream's media type; the charset said outright, since some clients assume Latin-1 without it. */
const eventStream = "text/event-stream; charset=utf-8"

/** Completed when the server begins to shut down, so open streams end and the server can close. */
export class StreamsShutdown extends Context.Tag("effect-change-feed/StreamsShutdown")<
  StreamsShutdown,
  Deferred.Deferred<void>
>() {}

const StreamsShutdownLive = Layer.effect(StreamsShutdown, Deferred.make<void>())

/** Built after the server, so released before it: ends the streams, then the server closes. */
const EndStreamsOnShutdown = Layer.scopedDiscard(
  Effect.gen(function* () {
    yield* HttpServer.HttpServer
    const shutdown = yield* StreamsShutdown
    yield* Effect.addFinalizer(() => Deferred.succeed(shutdown, undefined))
  })
)

/** The check reads the request itself (the header, or `?access_token=` on the stream), not only the decoded bearer. */
const AuthorizationLive = (token: Redacted.Redacted | undefined) =>
  Layer.effect(
    Authorization,
    Effect.map(makeAuthorize(token), (authorize) => ({ bearer: () => authorize }))
  )

/**
 * A journal that could not be read, as the API answers it: a corrupt line names its file and
 * offset; anything else (an I/O error) is a server error with the journal's own message.
 */
const readFailure = (error: JournalReadError): JournalCorrupt | InternalError =>
  error._tag === "JournalCorrupt"
    ? new JournalCorrupt({ message: error.message, file: error.file, offset: error.offset })
    : new InternalError({ message: error.message })

/** A read failure as the JSON the API answers it with. */
const encodeReadFailure = Schema.encodeSync(Schema.Union(JournalCorrupt, InternalError))

const cursorParam = (field: string, text: string | undefined): Effect.Effect<Cursor, BadRequest> => {
  if (text === undefined || text === "") return Effect.succeed({ seq: 0 })
  return Either.match(parseCursor(text), {
    onLeft: (message) => Effect.fail(new BadRequest({ field, message })),
    onRight: Effect.succeed
  })
}

const intParam = (
  field: string,
  text: string | undefined,
  fallback: number,
  min: number,
  max: number
): Effect.Effect<number, BadRequest> => {
  if (text === undefined || text === "") return Effect.succeed(fallback)
  const value = /^\d{1,9}$/.test(text) ? Number(text) : Number.NaN
  return Number.isInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(
        new BadRequest({ field, message: `${field} must be an integer from ${min} to ${max}, got '${text}'` })
      )
}

/**
 * What one stream connection sends: `first`, then the frames, with a keepalive every
 * `keepaliveMs`, until the frames end or `shutdown` completes. Frames and keepalives meet in one
 * bounded queue the response drains; merging the streams instead would cost fibers per frame.
 * A client that stops reading fills the queue and pauses its own reader, never the feed.
 */
const connectionBody = (
  frames: Stream.Stream<Uint8Array>,
  options: {
    readonly first: Uint8Array
    readonly keepalive: Uint8Array
    readonly keepaliveMs: number
    readonly shutdown: Effect.Effect<void>
  }
): Stream.Stream<Uint8Array> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      // `null` marks the end of the frames: what was queued before it is still sent. Small, since
      // each entry can be a large run of frames and a client that stops reading keeps it full.
      const queue = yield* Effect.acquireRelease(Queue.bounded<Uint8Array | null>(4), Queue.shutdown)
      yield* Queue.offer(queue, options.first)
      yield* frames.pipe(
        Stream.runForEachChunk((chunk) => Queue.offerAll(queue, chunk)),
        Effect.zipRight(Queue.offer(queue, null)),
        // A reader that dies ends the connection rather than leaving it open and silent.
        Effect.catchAllDefect((defect) =>
          Effect.zipRight(Effect.logError("stream reader died", defect), Queue.shutdown(queue))
        ),
        // Told to stop when the connection goes, not waited for: the connection's close must not
        // hang on a reader interrupted mid-replay. The reader lets go of its subscription as it ends.
        Effect.forkDaemon,
        Effect.tap((reader) => Effect.addFinalizer(() => Fiber.interruptFork(reader)))
      )
      yield* Queue.offer(queue, options.keepalive).pipe(
        Effect.delay(Duration.millis(options.keepaliveMs)),
        Effect.forever,
        Effect.forkScoped
      )
      // Shutdown ends the connection at once, queued frames or not.
      yield* options.shutdown.pipe(Effect.zipRight(Queue.shutdown(queue)), Effect.forkScoped)
      return Stream.fromQueue(queue).pipe(Stream.takeWhile((bytes): bytes is Uint8Array => bytes !== null))
    })
  )

const FeedGroupLive = (options: HttpOptions) =>
  HttpApiBuilder.group(FeedApi, "feed", (handlers) =>
    Effect.gen(function* () {
      const feed = yield* ChangeFeed.ChangeFeed
      const shutdown = yield* StreamsShutdown
      const keepaliveMs = options.keepaliveMs ?? 15_000
      const retry = retryFrame(options.retryMs ?? 1000)
      const limits = { maxBytes: options.maxBodyBytes ?? 1024 * 1024, maxBatch: options.maxBatchEvents ?? 1000 }
      const encoder = new TextEncoder()
      const frames = makeFrameEncoder(feed.epoch)
      const retryBytes = encoder.encode(retry)
      const keepaliveBytes = encoder.encode(keepaliveFrame)

      return handlers
        .handle("stream", ({ headers, urlParams }) =>
          Effect.gen(function* () {
            const lastEventId = headers["last-event-id"]
            const cursor =
              lastEventId !== undefined && lastEventId !== ""
                ? yield* cursorParam("Last-Event-ID", lastEventId)
                : yield* cursorParam("since", urlParams.since)
            // Events travel as their journal lines, so a frame is the line copied after its `id:`.
            const events = feed.changeLines({ since: cursor, sessionId: urlParams.session_id }).pipe(
              Stream.mapChunks((items) => Chunk.of(frames(Chunk.toReadonlyArray(items)))),
              // The answer is already a 200 under way: the stream ends with a frame that says why.
              Stream.catchAll((error) =>
                Stream.fromEffect(
                  Effect.as(
                    Effect.logError("GET /api/v1/stream ended: the journal could not be read", Cause.fail(error)),
                    encoder.encode(feedErrorFrame(encodeReadFailure(readFailure(error))))
                  )
                )
              )
            )
            const body = connectionBody(events, {
              first: retryBytes,
              keepalive: keepaliveBytes,
              keepaliveMs,
              shutdown: Deferred.await(shutdown)
            })
            return HttpServerResponse.stream(body, {
              contentType: eventStream,
              headers: { "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" }
            })
          })
        )
        .handle("events", ({ urlParams }) =>
          Effect.gen(function* () {
            const cursor = yield* cursorParam("since", urlParams.since)
            const limit = yield* intParam("limit", urlParams.limit, 100, 1, 1000)
            const waitSeconds = yield* intParam("wait", urlParams.wait, 0, 0, 60)
            return yield* page(feed, shutdown, cursor, limit, urlParams.session_id, waitSeconds * 1000)
          })
        )
        .handleRaw("append", ({ request }) =>
          Effect.gen(function* () {
            // Raw, so that the body is read here, after the `Authorization` middleware, never before.
            const entries = yield* appendEntries(request, limits)
            const seqs = yield* feed.publishAll(entries).pipe(
              Effect.catchTags({
                FeedBusy: (e) => new Unavailable({ accepted: false, message: e.message }),
                FeedClosed: (e) => new Unavailable({ accepted: false, message: e.message }),
                NotYetDurable: (e) => new Unavailable({ accepted: true, message: e.message })
              })
            )
            return { seqs }
          })
        )
        .handle("status", () =>
          Effect.map(feed.status, (s) => ({
            head_seq: s.headSeq,
            oldest_seq: s.oldestSeq,
            epoch: s.epoch,
            segments: s.segments,
            bytes: s.bytes,
            dropped: s.dropped,
            subscribers: s.subscribers,
            degraded: s.degraded,
            last_error: s.lastError ?? null,
            queued: s.queued,
            fsync: s.fsync
          }))
        )
    })
  )

/**
 * One page for polling clients: up to `limit` events after the cursor (or a reset), reading
 * through the same reader as the stream. With `waitMs`, waits that long for a first event.
 * A filtered page scans a bounded number of events, so `next_since` moves even when none match.
 */
const page = (
  feed: ChangeFeed.ChangeFeedService<AgentEvent>,
  shutdown: Deferred.Deferred<void>,
  cursor: Cursor,
  limit: number,
  sessionId: string | undefined,
  waitMs: number
) =>
  Effect.scoped(
    Effect.gen(function* () {
      // An ended stream (the feed is closing) reads as an empty chunk; a journal that cannot be read is a server error.
      const pull = (yield* Stream.toPull(feed.changes({ since: cursor, sessionId }))).pipe(
        Effect.catchAll((end) =>
          Option.isNone(end) ? Effect.succeed(Chunk.empty()) : Effect.fail(readFailure(end.value))
        )
      )
      const events: Array<ChangeEvent<AgentEvent>> = []
      const scanLimit = cursor.seq + Math.max(10_000, limit)
      let next = cursor.seq
      let caughtUp = false
      while (events.length < limit && next < scanLimit) {
        if (caughtUp && (events.length > 0 || waitMs <= 0)) break
        const chunk = caughtUp
          ? yield* pull.pipe(
              Effect.timeout(Duration.millis(waitMs)),
              Effect.catchTag("TimeoutException", () => Effect.succeed(Chunk.empty())),
              // A long-poll must not hold up the server's close: shutdown ends the wait like a timeout.
              Effect.raceFirst(Effect.as(Deferred.await(shutdown), Chunk.empty<FeedItem<AgentEvent>>()))
            )
          : yield* pull
        if (Chunk.isEmpty(chunk)) break
        for (const item of chunk) {
          if (item._tag === "Reset") {
            const status = yield* feed.status
            return {
              reset: resetWire(item),
              next_since: item.continueFrom,
              head_seq: status.headSeq,
              epoch: status.epoch
            }
          }
          if (events.length >= limit) break
          if (item._tag === "Change") events.push(item.change)
          if (item._tag === "CaughtUp") caughtUp = true
          next = cursorAfter(item)
        }
      }
      const status = yield* feed.status
      return { events, next_since: next, head_seq: status.headSeq, epoch: status.epoch }
    })
  )

/** Where the docs are served, beside the API. */
const docsRoutes = [
  ["/docs", "GET"],
  ["/docs/openapi.json", "GET"]
] as const

/** The API, its docs and the server, on whatever `HttpServer` is provided. Requires the feed. */
export const layer = (options: HttpOptions = {}) =>
  Layer.mergeAll(Tracing.serveApi, EndStreamsOnShutdown).pipe(
    Layer.provide(
      HttpApiBuilder.middleware(
        FeedApi,
        answerFailures(routesOf(FeedApi, [...docsRoutes, ...MetricsRoute.routes, ...Viewer.routes]))
      )
    ),
    Layer.provide(MetricsRoute.layer(options.token)),
    Layer.provide(Viewer.layer),
    Layer.provide(Cors.layer(options.corsOrigins)),
    Layer.provide(HttpApiSwagger.layer({ path: docsRoutes[0][0] })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: docsRoutes[1][0] })),
    Layer.provide(HttpApiBuilder.api(FeedApi).pipe(Layer.provide(FeedGroupLive(options)))),
    Layer.provide(AuthorizationLive(options.token)),
    Layer.provide(StreamsShutdownLive)
  )

/**
 * The Node server to run the service on. It answers any request no handler takes: at shutdown
 * the platform detaches the app's handler before it closes the server, and a request arriving
 * in between (on an open keep-alive connection, or while the feed drains) would otherwise never
 * be answered, and the server's close would wait for it forever.
 */
export const createNodeServer = (corsOrigins?: Cors.CorsOrigins): Server => {
  const server = createServer()
  server.on("request", (request, response) => {
    if (server.listenerCount("request") > 1) return
    // With the CORS headers the API would send: a browser gives up for good on an answer it may not read.
    const cors = Cors.responseHeaders(corsOrigins, request.headers.origin)
    if (request.url?.startsWith("/api/v1/stream")) {
      // An EventSource gives up for good on any answer but a 200 event stream: an empty one
      // makes it reconnect, to the restarted server.
      response.writeHead(200, {
        ...cors,
        "content-type": eventStream,
        "cache-control": "no-cache",
        connection: "close"
      })
      response.end()
      return
    }
    response.writeHead(503, { ...cors, "content-type": "application/json; charset=utf-8", connection: "close" })
    response.end(
      JSON.stringify({ _tag: "Unavailable", accepted: false, message: "the feed is shutting down; retry shortly" })
    )
  })
  return server
}

/** Where `npm start` keeps its journal: a folder inside the project. */
export const defaultDirectory = fileURLToPath(new URL("../data/feed", import.meta.url))

/** Server configuration from the environment, with defaults. */
export const ServerConfig = Config.all({
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1")),
  port: Config.port("PORT").pipe(Config.withDefault(8787)),
  directory: Config.string("FEED_DIR").pipe(Config.withDefault(defaultDirectory)),
  fsync: Config.literal("always", "interval", "never")("FEED_FSYNC").pipe(Config.withDefault("always" as FsyncMode)),
  token: Config.option(
    Config.redacted("FEED_TOKEN").pipe(
      Config.mapOrFail((token) => {
        const problem = tokenProblem(Redacted.value(token))
        return problem === undefined
          ? Either.right(token)
          : Either.left(
              ConfigError.InvalidData(
                ["FEED_TOKEN"],
                `FEED_TOKEN ${problem}: set it to the bearer token clients must send, or unset it to serve without one`
              )
            )
      })
    )
  ),
  segmentBytes: Config.integer("FEED_SEGMENT_BYTES").pipe(
    Config.validate({ message: "FEED_SEGMENT_BYTES must be at least 1024", validation: (n) => n >= 1024 }),
    Config.withDefault(8 * 1024 * 1024)
  ),
  retainSegments: Config.integer("FEED_RETAIN_SEGMENTS").pipe(
    Config.validate({ message: "FEED_RETAIN_SEGMENTS must be at least 1", validation: (n) => n >= 1 }),
    Config.withDefault(64)
  ),
  corsOrigins: Cors.CorsConfig,
  tracing: Tracing.OtlpConfig
})

export type ServerSettings = Config.Config.Success<typeof ServerConfig>

/** The whole service (journal, feed, API, Node server) from settings; the feed is an output too. */
export const layerFromSettings = (config: ServerSettings): Layer.Layer<ChangeFeed.ChangeFeed, unknown> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const feed = ChangeFeed.layer({
        directory: config.directory,
        fsync: config.fsync,
        segmentBytes: config.segmentBytes,
        retention: { segments: config.retainSegments }
      })
      yield* Effect.logInfo(
        `change feed: journal in ${config.directory} (fsync ${config.fsync}); ` +
          `stream at http://${config.host}:${config.port}/api/v1/stream, docs at http://${config.host}:${config.port}/docs`
      )
      const corsOrigins = Option.getOrUndefined(config.corsOrigins)
      return layer({ token: Option.getOrUndefined(config.token), corsOrigins }).pipe(
        HttpServer.withLogAddress,
        Layer.provide(
          NodeHttpServer.layer(() => createNodeServer(corsOrigins), { host: config.host, port: config.port })
        ),
        Layer.provideMerge(feed),
        Layer.provide(NodeContext.layer),
        Layer.provide(Tracing.layer(config.tracing))
      )
    })
  )

/** The whole service from the environment. */
export const layerFromConfig = Layer.unwrapEffect(Effect.map(ServerConfig, layerFromSettings))
