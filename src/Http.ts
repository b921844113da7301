/**
 * The HTTP service: handlers for the `FeedApi` contract, authorization, body limits, the
 * OpenAPI UI at `/docs`, and the server layer with its configuration from the environment.
 */
import {
  HttpApiBuilder,
  HttpApiSwagger,
  HttpMiddleware,
  HttpServer,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { HttpIncomingMessage } from "@effect/platform"
import { NodeContext, NodeHttpServer, NodeHttpServerRequest } from "@effect/platform-node"
import * as Crypto from "node:crypto"
import { createServer, type Server, type ServerResponse } from "node:http"
import { fileURLToPath } from "node:url"
import {
  Chunk,
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Metric,
  Option,
  Queue,
  Redacted,
  Stream
} from "effect"
import { FeedApi, Authorization } from "./Api.js"
import { BufferBudget } from "./BufferBudget.js"
import * as ChangeFeed from "./ChangeFeed.js"
import { AgentEvent, decodeAgentEvent } from "./Domain/AgentEvent.js"
import { ChangeEvent } from "./Domain/ChangeEvent.js"
import { type Cursor, parseCursor } from "./Domain/Cursor.js"
import { BadRequest, PayloadTooLarge, Unauthorized, Unavailable } from "./Domain/Errors.js"
import { cursorAfter, type FeedItem, resetWire } from "./Domain/FeedItem.js"
import { keepaliveFrame, makeFrameEncoder, retryFrame } from "./Http/Sse.js"
import type { FsyncMode } from "./Journal.js"

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
  /**
   * Most bytes of frames one stream connection holds for a client that reads slower than the
   * feed moves (default 1 MiB); past it the connection stops reading the feed until the client
   * catches up (and then catches up from the journal).
   */
  readonly streamBufferBytes?: number | undefined
}

/** Bytes of frames held by the open stream connections, summed (each holds at most `streamBufferBytes`). */
export const streamBufferedBytes = Metric.gauge("change_feed_stream_buffered_bytes")

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

const tokenMatches = (expected: Redacted.Redacted, given: string): boolean => {
  const a = Buffer.from(Redacted.value(expected))
  const b = Buffer.from(given)
  return a.length === b.length && Crypto.timingSafeEqual(a, b)
}

const AuthorizationLive = (token: Redacted.Redacted | undefined) =>
  Layer.succeed(
    Authorization,
    Effect.gen(function* () {
      if (token === undefined) return
      const request = yield* HttpServerRequest.HttpServerRequest
      const header = request.headers["authorization"]
      let given: string | undefined
      if (header !== undefined) {
        const match = /^Bearer\s+(.+)$/i.exec(header)
        if (match === null) {
          return yield* new Unauthorized({ message: "the Authorization header must be 'Bearer <token>'" })
        }
        given = match[1]!.trim()
      } else {
        // EventSource cannot set headers: the stream also takes the token as a query parameter.
        const params = yield* HttpServerRequest.ParsedSearchParams
        const query = params["access_token"]
        if (typeof query === "string" && request.url.startsWith("/api/v1/stream")) given = query
      }
      if (given === undefined) {
        return yield* new Unauthorized({
          message:
            "this feed requires a bearer token: send 'Authorization: Bearer <token>' (or ?access_token= on the stream)"
        })
      }
      if (!tokenMatches(token, given)) return yield* new Unauthorized({ message: "the bearer token is not valid" })
    })
  )

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

/** One event of a request body, or a `BadRequest` naming the field at fault. */
const decodeEvent = (field: string, input: unknown): Effect.Effect<AgentEvent, BadRequest> =>
  Either.match(decodeAgentEvent(field, input), {
    onLeft: (invalid) => Effect.fail(new BadRequest(invalid)),
    onRight: Effect.succeed
  })

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** `{"session_id"?, "event"}` or `{"events": [...]}`, every entry checked, the first fault named. */
const decodeAppendBody = (
  body: unknown,
  maxBatch: number
): Effect.Effect<Array<ChangeFeed.Entry<AgentEvent>>, BadRequest | PayloadTooLarge> =>
  Effect.gen(function* () {
    if (!isObject(body) || (!("events" in body) && !("event" in body))) {
      return yield* new BadRequest({
        field: "body",
        message:
          'the body must be {"session_id"?: string, "event": {...}} or {"events": [{"session_id"?, "event"}, ...]}'
      })
    }
    const batch = "events" in body
    const entries = batch ? body["events"] : [body]
    if (!Array.isArray(entries)) return yield* new BadRequest({ field: "events", message: "events must be an array" })
    if (entries.length > maxBatch) {
      return yield* new PayloadTooLarge({
        field: "events",
        limit: maxBatch,
        message: `a batch holds at most ${maxBatch} events, got ${entries.length}; split it`
      })
    }
    const decoded: Array<ChangeFeed.Entry<AgentEvent>> = []
    for (let i = 0; i < entries.length; i++) {
      const entry: unknown = entries[i]
      const at = batch ? `events[${i}]` : ""
      if (!isObject(entry)) return yield* new BadRequest({ field: at, message: `${at} must be an object` })
      const sessionId = entry["session_id"]
      if (sessionId !== undefined && typeof sessionId !== "string") {
        const field = batch ? `${at}.session_id` : "session_id"
        return yield* new BadRequest({ field, message: `${field} must be a string` })
      }
      const event = yield* decodeEvent(batch ? `${at}.event` : "event", entry["event"])
      decoded.push({ sessionId, event })
    }
    return decoded
  })

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
    readonly maxBufferedBytes: number
    readonly shutdown: Effect.Effect<void>
    /** Cuts the connection if its client has stopped taking what was sent. */
    readonly cutIfStalled: Effect.Effect<void>
  }
): Stream.Stream<Uint8Array> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      // `null` marks the end of the frames: what was queued before it is still sent. Bounded in
      // entries and in bytes, since each entry can be a large run of frames and a client that
      // stops reading keeps it full.
      const budget = new BufferBudget(4, options.maxBufferedBytes, (delta) =>
        streamBufferedBytes.unsafeModify(delta, [])
      )
      const queue = yield* Effect.acquireRelease(Queue.unbounded<Uint8Array | null>(), (queue) =>
        Effect.zipRight(
          Queue.shutdown(queue),
          Effect.sync(() => budget.close())
        )
      )
      const offer = (bytes: Uint8Array | null) =>
        Effect.zipRight(budget.take(bytes?.length ?? 0), Queue.offer(queue, bytes))
      yield* offer(options.first)
      yield* frames.pipe(
        Stream.runForEachChunk((chunk) => Effect.forEach(chunk, offer, { discard: true })),
        Effect.zipRight(offer(null)),
        // A reader that dies ends the connection rather than leaving it open and silent.
        Effect.catchAllDefect((defect) =>
          Effect.zipRight(Effect.logError("stream reader died", defect), Queue.shutdown(queue))
        ),
        // Told to stop when the connection goes, not waited for: the connection's close must not
        // hang on a reader interrupted mid-replay. The reader lets go of its subscription as it ends.
        Effect.forkDaemon,
        Effect.tap((reader) => Effect.addFinalizer(() => Fiber.interruptFork(reader)))
      )
      yield* offer(options.keepalive).pipe(
        Effect.delay(Duration.millis(options.keepaliveMs)),
        Effect.forever,
        Effect.forkScoped
      )
      // Shutdown ends the connection at once, queued frames or not. One whose client has stopped
      // reading is cut: the response would wait forever to send the rest, and the server's close
      // would wait for it.
      yield* options.shutdown.pipe(
        Effect.zipRight(options.cutIfStalled),
        Effect.zipRight(Queue.shutdown(queue)),
        Effect.forkScoped
      )
      return Stream.fromQueue(queue).pipe(
        Stream.mapChunks((taken) => {
          for (const bytes of taken) budget.release(bytes?.length ?? 0)
          return taken
        }),
        Stream.takeWhile((bytes): bytes is Uint8Array => bytes !== null)
      )
    })
  )

const FeedGroupLive = (options: HttpOptions) =>
  HttpApiBuilder.group(FeedApi, "feed", (handlers) =>
    Effect.gen(function* () {
      const feed = yield* ChangeFeed.ChangeFeed
      const shutdown = yield* StreamsShutdown
      const keepaliveMs = options.keepaliveMs ?? 15_000
      const retry = retryFrame(options.retryMs ?? 1000)
      const maxBatch = options.maxBatchEvents ?? 1000
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
              Stream.catchAll((error) =>
                Stream.make(
                  encoder.encode(`event: error\ndata: ${JSON.stringify({ type: "error", message: error.message })}\n\n`)
                )
              )
            )
            // Undefined when the request is not served by Node's HTTP server (a web handler in tests).
            const response: ServerResponse | undefined = NodeHttpServerRequest.toServerResponse(
              yield* HttpServerRequest.HttpServerRequest
            )
            const body = connectionBody(events, {
              first: retryBytes,
              keepalive: keepaliveBytes,
              keepaliveMs,
              maxBufferedBytes: options.streamBufferBytes ?? 1024 * 1024,
              shutdown: Deferred.await(shutdown),
              cutIfStalled: Effect.sync(() => {
                if (response?.writableNeedDrain === true) response.destroy()
              })
            })
            return HttpServerResponse.stream(body, {
              contentType: "text/event-stream",
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
        .handle("append", ({ payload }) =>
          Effect.gen(function* () {
            const decoded = yield* decodeAppendBody(payload, maxBatch)
            const seqs = yield* feed.publishAll(decoded).pipe(
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
      // An ended stream (the feed is closing) reads as an empty chunk; a corrupt journal is a server error.
      const pull = (yield* Stream.toPull(feed.changes({ since: cursor, sessionId }))).pipe(
        Effect.catchAll((end) => (Option.isNone(end) ? Effect.succeed(Chunk.empty()) : Effect.die(end.value)))
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

const errorResponse = (status: number, body: Record<string, unknown>) => HttpServerResponse.unsafeJson(body, { status })

/** Deeper than this, encoding an event for the journal could overflow the stack. */
const MAX_BODY_DEPTH = 256

/**
 * Why parsed JSON could not be journaled as sent, if it could not: nested so deep that encoding
 * it would overflow the stack (and take the writer down), or holding a number literal too large
 * for a double (`1e999` parses as Infinity and would be written as `null`, a line that no longer
 * decodes). Walks without recursion, so the check itself cannot overflow.
 */
const cannotBeJournaled = (value: unknown): string | undefined => {
  const pending: Array<unknown> = [value]
  const depths: Array<number> = [1]
  while (pending.length > 0) {
    const next = pending.pop()
    const depth = depths.pop()!
    if (typeof next === "number" && !Number.isFinite(next)) return "holds a number too large to store"
    if (next === null || typeof next !== "object") continue
    if (depth > MAX_BODY_DEPTH) return `nests arrays and objects more than ${MAX_BODY_DEPTH} levels deep`
    for (const child of Object.values(next)) {
      pending.push(child)
      depths.push(depth + 1)
    }
  }
  return undefined
}

/**
 * Reads POST bodies up front so that an oversized body answers 413 (before reading it when
 * it declares its length) and one that is not JSON answers 400 naming `body`; the API then
 * decodes the same, already read, text.
 */
const checkBody = (maxBytes: number) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (request.method !== "POST") return yield* app
      const tooLarge = (size: string) =>
        errorResponse(413, {
          _tag: "PayloadTooLarge",
          field: "body",
          limit: maxBytes,
          message: `the request body is ${size}; at most ${maxBytes} bytes are accepted, split the batch`
        })
      const length = request.headers["content-length"]
      if (length !== undefined && Number(length) > maxBytes) return tooLarge(`${length} bytes`)
      // The API reads other media types as bytes or multipart, from the stream read here: it would
      // wait forever for a body already consumed. A body is JSON, sent as such or without a type.
      const type = request.headers["content-type"]
      if (type !== undefined && type.trim() !== "" && !/^application\/json\s*(;|$)/i.test(type.trim())) {
        return errorResponse(400, {
          _tag: "BadRequest",
          field: "content-type",
          message: `the request body must be JSON, sent with 'content-type: application/json' (got '${type}')`
        })
      }
      const text = yield* Effect.either(HttpIncomingMessage.withMaxBodySize(request.text, Option.some(maxBytes)))
      if (Either.isLeft(text)) {
        return String(text.left.cause ?? text.left.message).includes("max")
          ? tooLarge(`over the limit`)
          : errorResponse(400, { _tag: "BadRequest", field: "body", message: `the request body could not be read` })
      }
      let body: unknown
      try {
        body = JSON.parse(text.right)
      } catch (error) {
        return errorResponse(400, {
          _tag: "BadRequest",
          field: "body",
          message: `the request body is not valid JSON: ${(error as Error).message}`
        })
      }
      const unstorable = cannotBeJournaled(body)
      if (unstorable !== undefined) {
        return errorResponse(400, { _tag: "BadRequest", field: "body", message: `the request body ${unstorable}` })
      }
      return yield* app
    })
  )

/** The API, its docs and the server, on whatever `HttpServer` is provided. Requires the feed. */
export const layer = (options: HttpOptions = {}) =>
  Layer.mergeAll(HttpApiBuilder.serve(checkBody(options.maxBodyBytes ?? 1024 * 1024)), EndStreamsOnShutdown).pipe(
    Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/docs/openapi.json" })),
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
export const createNodeServer = (): Server => {
  const server = createServer()
  server.on("request", (request, response) => {
    if (server.listenerCount("request") > 1) return
    if (request.url?.startsWith("/api/v1/stream")) {
      // An EventSource gives up for good on any answer but a 200 event stream: an empty one
      // makes it reconnect, to the restarted server.
      response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "close" })
      response.end()
      return
    }
    response.writeHead(503, { "content-type": "application/json", connection: "close" })
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
  token: Config.option(Config.redacted("FEED_TOKEN")),
  segmentBytes: Config.integer("FEED_SEGMENT_BYTES").pipe(
    Config.validate({ message: "FEED_SEGMENT_BYTES must be at least 1024", validation: (n) => n >= 1024 }),
    Config.withDefault(8 * 1024 * 1024)
  ),
  retainSegments: Config.integer("FEED_RETAIN_SEGMENTS").pipe(
    Config.validate({ message: "FEED_RETAIN_SEGMENTS must be at least 1", validation: (n) => n >= 1 }),
    Config.withDefault(64)
  )
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
      return layer({ token: Option.getOrUndefined(config.token) }).pipe(
        HttpServer.withLogAddress,
        Layer.provide(NodeHttpServer.layer(createNodeServer, { host: config.host, port: config.port })),
        Layer.provideMerge(feed),
        Layer.provide(NodeContext.layer)
      )
    })
  )

/** The whole service from the environment. */
export const layerFromConfig = Layer.unwrapEffect(Effect.map(ServerConfig, layerFromSettings))
