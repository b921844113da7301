/**
 * The HTTP service: handlers for the `FeedApi` contract, authorization, body limits, the
 * OpenAPI UI at `/docs`, and the server layer with its configuration from the environment.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as Path from "@effect/platform/Path"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { createServer, type Server, type ServerResponse } from "node:http"
import { Readable } from "node:stream"
import {
  Cause,
  Chunk,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Redacted,
  Runtime,
  Scope,
  Stream
} from "effect"
import type * as Access from "./Access.js"
import { Authorization, Caller, FeedApi } from "./Api.js"
import { feedPath, isStreamPath } from "./Api/Routes.js"
import { estimateBytes } from "./BufferBudget.js"
import * as ChangeFeed from "./ChangeFeed.js"
import type { LiveTail } from "./ChangeFeed/Reader.js"
import * as ChangeFeeds from "./ChangeFeeds.js"
import { ServerConfig, type ServerSettings } from "./Config.js"
import { DEFAULT_ACCOUNT } from "./Domain/Account.js"
import type { AgentEvent } from "./Domain/AgentEvent.js"
import type { ChangeEvent } from "./Domain/ChangeEvent.js"
import { type Cursor, parseCursor } from "./Domain/Cursor.js"
import {
  BadRequest,
  IdempotencyKeyReused,
  InternalError,
  JournalCorrupt,
  NotFound,
  Unavailable
} from "./Domain/Errors.js"
import { resetData } from "./Domain/FeedFrame.js"
import { cursorAfter, type FeedItem } from "./Domain/FeedItem.js"
import { authorize, makeAuthenticate } from "./Http/Auth.js"
import { appendEntries } from "./Http/Body.js"
import * as Cors from "./Http/Cors.js"
import { answerFailures, routesOf } from "./Http/Errors.js"
import * as MetricsRoute from "./Http/Metrics.js"
import {
  ConnectionWriter,
  FramePool,
  type OpenConnection,
  OpenConnections,
  readerScheduler
} from "./Http/Connection.js"
import { type FrameAlloc, feedErrorFrame, keepaliveFrame, makeFrameEncoder, retryFrame } from "./Http/Sse.js"
import * as Viewer from "./Http/Viewer.js"
import type * as Journal from "./Journal.js"
import type { JournalReadError } from "./Journal.js"
import * as FileJournal from "./Journal/File.js"
import * as PostgresJournal from "./Journal/Postgres.js"
import { SegmentIndexes } from "./Journal/SegmentIndex.js"
import * as Tracing from "./Tracing.js"

export interface HttpOptions {
  /** The admin token (every route of every account), when set. */
  readonly token?: Redacted.Redacted | undefined
  /** The secret account tokens (HS256 JWTs naming an account and scopes) are signed with, when set. */
  readonly jwtSecret?: Redacted.Redacted | undefined
  /** Keepalive comment period on open streams (default 15 seconds). */
  readonly keepalive?: Duration.DurationInput | undefined
  /** Reconnect delay advised to `EventSource` clients by the stream's first line, `retry:` (default 1 second). */
  readonly retry?: Duration.DurationInput | undefined
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
  /**
   * Most bytes (by the intake's estimate of decoded events) one `GET .../events` page holds
   * (default 8 MiB); a page always holds its first event, and `next_since` continues where it stops.
   */
  readonly maxPageBytes?: number | undefined
  /** Origins whose pages may read the feed (CORS); unset, cross-origin requests stay refused. */
  readonly corsOrigins?: Cors.CorsOrigins | undefined
}

/** Bytes of frames held by the open stream connections, summed (each holds at most `streamBufferBytes`). */
export const streamBufferedBytes = Metric.gauge("change_feed_stream_buffered_bytes")

/**
 * The stream connections' frame buffers (`FramePool`): frames from 16 KiB (a replayed chunk's
 * runs; smaller ones come from Node's own pool) to 4 MiB are pooled, and at most 8 MiB of buffers
 * wait for a frame, for all connections together.
 */
const FRAME_POOL_MIN_BYTES = 16 * 1024
const FRAME_POOL_MAX_BYTES = 4 * 1024 * 1024
const FRAME_POOL_FREE_BYTES = 8 * 1024 * 1024

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

const accessOf = (options: HttpOptions) => ({ adminToken: options.token, jwtSecret: options.jwtSecret })

/** The check reads the request itself (the header, or `?access_token=` on the stream), not only the decoded bearer. */
const AuthorizationLive = (options: HttpOptions) =>
  Layer.effect(
    Authorization,
    Effect.map(makeAuthenticate(accessOf(options)), (authenticate) => ({ bearer: () => authenticate }))
  )

/**
 * A journal that could not be read, as the API answers it: a corrupt line names its file and
 * offset; anything else (an I/O error) is a server error with the journal's own message.
 */
const readFailure = (error: JournalReadError): JournalCorrupt | InternalError =>
  error._tag === "JournalCorrupt"
    ? new JournalCorrupt({ message: error.message, file: error.file, offset: error.offset })
    : new InternalError({ message: error.message })

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
 * What a stream connection sends next: its frames' bytes; none when its reader has parked at the
 * live tail (it says when to ask again); undefined once the frames end.
 */
type NextFrames = Effect.Effect<ReadonlyArray<Uint8Array> | undefined>

/**
 * A connection on Node, as its frames see it: where their buffers come from, where what comes
 * while its reader is parked goes, and how it is woken.
 */
interface NodeConnection {
  readonly writer: ConnectionWriter
  readonly alloc: FrameAlloc
  readonly wake: () => void
}

interface ConnectionOptions {
  readonly first: Uint8Array
  readonly keepalive: Uint8Array
  readonly keepaliveEvery: Duration.Duration
  readonly maxBufferedBytes: number
  readonly shutdown: Effect.Effect<void>
  /** The server's open connections on Node: their keepalives and their end at shutdown (`serveConnection`). */
  readonly connections: OpenConnections
  /** The buffers Node connections render their frames into, back once written (`serveConnection`). */
  readonly framePool: FramePool
}

/**
 * What one stream connection sends, written straight to Node's response: `first`, then the
 * frames, with a keepalive every `keepaliveEvery` (the server's one timer, `connections`), until
 * the frames end or the server shuts down.
 *
 * The answer's body is an empty `Readable` that the platform pipes into the response once it has
 * written the head: its first read starts the connection, its end ends the response, and the
 * response's close (the client went) destroys it, which stops the connection. The request's fiber
 * thus waits on a promise, not on a Stream run of its own (a fiber, a channel and a scope more for
 * every idle connection).
 *
 * A fiber (`run`, outside the request's) opens the reader and hands its frames to the
 * connection's writer (`Http/Connection.ts`), on the readers' scheduler, so that reader work
 * yields to the writer; the writer coalesces what waits for the socket into one write, and past
 * its budget in bytes the reader waits: a client that stops reading pauses its own reader, never
 * the feed. Once the reader is at the live tail it parks and the fiber ends: the batches that
 * come go straight to the writer while they fit (`NodeConnection`), and a fiber runs again only for
 * what does not (no room, a gap, the end). An idle connection thus holds no fiber of its own.
 * The reader is told to stop when the connection goes, not waited for: the connection's close
 * must not hang on a reader interrupted mid-replay. Its scope (its subscription) closes after.
 */
const serveConnection = (
  response: ServerResponse,
  frames: (connection: NodeConnection) => Effect.Effect<NextFrames, never, Scope.Scope>,
  options: ConnectionOptions,
  run: <A>(effect: Effect.Effect<A>) => Fiber.RuntimeFiber<A>
): Readable => {
  /** The fiber sending now, if any (none while the reader is parked). */
  let sender: Fiber.RuntimeFiber<boolean> | undefined
  /** The reader's scope, from the connection's start to its end, across the fibers that send. */
  let scope: Scope.CloseableScope | undefined
  let connection: OpenConnection | undefined
  let over = false
  // The connection is over: its reader ended, the server is shutting down, or the client went.
  const finish = () => {
    if (over) return
    over = true
    if (connection !== undefined) {
      options.connections.remove(connection)
      connection.writer.end()
    }
    if (scope !== undefined) {
      const close = Scope.close(scope, Exit.void)
      run(sender === undefined ? close : Effect.zipRight(Fiber.interrupt(sender), close))
    }
    if (!body.destroyed) body.push(null)
  }
  const start = () => {
    const writer = new ConnectionWriter(
      response,
      options.maxBufferedBytes,
      (delta) => streamBufferedBytes.unsafeModify(delta, []),
      options.framePool
    )
    writer.send(options.first)
    connection = {
      writer,
      // Shutdown ends the connection at once, frames waiting or not. One whose client has
      // stopped reading is cut: the response would wait forever to send the rest, and the
      // server's close would wait for it.
      stop: () => {
        if (writer.needsDrain) response.destroy()
        finish()
      }
    }
    options.connections.add(connection)
    if (over) return
    const readerScope = Effect.runSync(Scope.make())
    scope = readerScope
    let next: NextFrames | undefined
    // Sends what the reader answers until it parks (true) or its frames end (false).
    const sendAll: Effect.Effect<boolean> = Effect.gen(function* () {
      // The reader's scope is in context only while it opens: the frames that follow need none.
      next ??= yield* Scope.extend(frames({ writer, alloc: options.framePool.alloc, wake }), readerScope)
      while (true) {
        const frames = yield* next
        if (frames === undefined) break
        if (frames.length === 0) return true
        // All of a pull in one write, unless it is more than the connection's budget.
        for (const bytes of frames) {
          if (!writer.fits(bytes.length)) {
            writer.flush()
            if (!writer.fits(bytes.length)) yield* writer.room
          }
          writer.queue(bytes)
        }
        writer.flush()
      }
      // What the feed ended with (a feed_error frame) goes out before the response ends.
      yield* writer.room
      return false
    }).pipe(
      // A reader that dies ends the connection rather than leaving it open and silent.
      Effect.catchAllDefect((defect) => Effect.as(Effect.logError("stream reader died", defect), false))
    )
    // The parked reader has something its writer did not take: a fiber sends again.
    const wake = () => {
      if (!over) send()
    }
    const send = () => {
      const fiber = run(sendAll)
      sender = fiber
      fiber.addObserver((exit) => {
        if (sender === fiber) sender = undefined
        if (!(Exit.isSuccess(exit) && exit.value)) finish()
      })
    }
    send()
  }
  const body: Readable = new Readable({
    read() {
      if (connection === undefined && !over) start()
    },
    destroy(error, callback) {
      finish()
      callback(error)
    }
  })
  return body
}

/**
 * The frames of a connection that is not served by Node's HTTP server (a web handler), as a
 * Stream the platform writes: the same frames, without coalescing.
 */
const connectionStream = (next: NextFrames, options: ConnectionOptions): Stream.Stream<Uint8Array> =>
  Stream.make(options.first).pipe(
    Stream.concat(
      Stream.repeatEffectOption(
        Effect.flatMap(next, (frames) => (frames === undefined ? Effect.fail(Option.none()) : Effect.succeed(frames)))
      ).pipe(Stream.mapConcat((frames) => frames))
    ),
    Stream.merge(Stream.repeatEffect(Effect.delay(Effect.succeed(options.keepalive), options.keepaliveEvery)), {
      haltStrategy: "left"
    }),
    Stream.interruptWhen(options.shutdown)
  )

/** An account's feed could not be had, as the API answers it. */
const accountFailure = (error: ChangeFeeds.AccountError): BadRequest | NotFound | Unavailable | JournalCorrupt => {
  switch (error._tag) {
    case "InvalidAccount":
      return new BadRequest({ field: "account", message: error.message })
    case "UnknownAccount":
      return new NotFound({ message: error.message })
    case "FeedsBusy":
      return new Unavailable({ accepted: false, message: error.message })
    case "AccountUnavailable":
      // A damaged journal is the operator's to mend (500, naming where); anything else may pass (503).
      return error.cause._tag === "JournalCorrupt"
        ? new JournalCorrupt({ message: error.message, file: error.cause.file, offset: error.cause.offset })
        : new Unavailable({ accepted: false, message: error.message })
  }
}

type Feed = ChangeFeed.ChangeFeedService<AgentEvent>

const statusWire = (s: ChangeFeed.FeedStatus) => ({
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
})

/**
 * What every route of an account's feed does, whichever path addresses the account: the
 * default account's `/api/v1/...` and any account's `/api/v1/accounts/{account}/...`. Each
 * checks what the caller may do on the account before anything else (the POST body included).
 */
const makeFeedRoutes = (options: HttpOptions) =>
  Effect.gen(function* () {
    const feeds = yield* ChangeFeeds.ChangeFeeds
    const shutdown = yield* StreamsShutdown
    const keepaliveEvery = Duration.decode(options.keepalive ?? Duration.seconds(15))
    const maxPageBytes = options.maxPageBytes ?? 8 * 1024 * 1024
    const limits = { maxBytes: options.maxBodyBytes ?? 1024 * 1024, maxBatch: options.maxBatchEvents ?? 1000 }
    const encoder = new TextEncoder()
    const retryBytes = encoder.encode(retryFrame(Duration.toMillis(options.retry ?? Duration.seconds(1))))
    const keepaliveBytes = encoder.encode(keepaliveFrame)
    // The Node connections' one keepalive timer, on the Effect clock, and their end at shutdown.
    const connections = new OpenConnections()
    const framePool = new FramePool(FRAME_POOL_MIN_BYTES, FRAME_POOL_MAX_BYTES, FRAME_POOL_FREE_BYTES)
    yield* Effect.sleep(keepaliveEvery).pipe(
      Effect.zipRight(Effect.sync(() => connections.keepalive(keepaliveBytes))),
      Effect.forever,
      Effect.forkScoped
    )
    yield* Deferred.await(shutdown).pipe(Effect.zipRight(Effect.sync(() => connections.shutdown())), Effect.forkScoped)
    const streamBudget = options.streamBufferBytes ?? 1024 * 1024
    // One encoder per feed, so that a live event's frame is made once for all its connections.
    const encoders = new WeakMap<Feed, ReturnType<typeof makeFrameEncoder>>()
    const framesOf = (feed: Feed) => {
      let frames = encoders.get(feed)
      if (frames === undefined) encoders.set(feed, (frames = makeFrameEncoder(feed.epoch)))
      return frames
    }

    /** `f` with the account's feed held open, once the caller may do `permission` on it. */
    const withFeed = <X, E, R>(
      account: string,
      permission: Access.Permission,
      f: (feed: Feed) => Effect.Effect<X, E, R>
    ) =>
      Effect.gen(function* () {
        yield* authorize(yield* Caller, permission, account)
        return yield* feeds
          .use(account, f)
          .pipe(Effect.catchIf(ChangeFeeds.isAccountError, (error) => Effect.fail(accountFailure(error))))
      })

    const stream = (
      account: string,
      request: {
        readonly headers: { readonly "last-event-id"?: string | undefined }
        readonly urlParams: { readonly since?: string | undefined; readonly session_id?: string | undefined }
      }
    ) =>
      Effect.gen(function* () {
        const lastEventId = request.headers["last-event-id"]
        const cursor =
          lastEventId !== undefined && lastEventId !== ""
            ? yield* cursorParam("Last-Event-ID", lastEventId)
            : yield* cursorParam("since", request.urlParams.since)
        // Opened (or refused) before the answer starts, so that a refusal is an HTTP error; the
        // stream then holds the feed for as long as it runs.
        yield* withFeed(account, "read", () => Effect.void)
        // The answer is already a 200 under way: the stream ends with a frame that says why.
        const failed = (error: ChangeFeeds.AccountError | JournalReadError) => {
          const failure = ChangeFeeds.isAccountError(error) ? accountFailure(error) : readFailure(error)
          return Effect.as(
            Effect.logError(`the stream of account '${account}' ended: ${failure.message}`, Cause.fail(error)),
            [encoder.encode(feedErrorFrame(failure))]
          )
        }
        // The reader, opened in the connection's scope: each pull's items as frames, the frames
        // of a live batch made once for every connection. Events travel as their journal lines,
        // so a frame is the line copied after its `id:`. Replay reads into the same buffers over
        // and over (`reuseChunks`): a pull's items are rendered into frames, which copies every
        // byte of them, before the next pull. On Node, frames are rendered into the server's pool
        // of buffers, and a reader parked at the live tail hands what comes straight to the
        // connection's writer while it fits, with no fiber; it wakes the connection for the rest.
        const openFrames = (connection?: NodeConnection): Effect.Effect<NextFrames, never, Scope.Scope> =>
          Effect.gen(function* () {
            const feed = yield* feeds.get(account)
            const frames = framesOf(feed)
            const alloc = connection?.alloc
            // Frames in buffers of at most the connection's budget, so that the budget bounds what it holds.
            const tail: LiveTail | undefined =
              connection === undefined
                ? undefined
                : {
                    offer: (items) => connection.writer.offer(frames(items, alloc, streamBudget)),
                    wake: connection.wake
                  }
            const pull = yield* feed.pullLines(
              { since: cursor, sessionId: request.urlParams.session_id, reuseChunks: true },
              tail
            )
            let ended = false
            return Effect.suspend((): NextFrames => {
              if (ended) return Effect.succeed(undefined)
              return Effect.matchEffect(pull, {
                onSuccess: (items) => Effect.succeed(frames(Chunk.toReadonlyArray(items), alloc, streamBudget)),
                onFailure: (end) => {
                  ended = true
                  return Option.isNone(end) ? Effect.succeed(undefined) : failed(end.value)
                }
              })
            })
          }).pipe(
            Effect.catchAll((error) => {
              let told = false
              return Effect.map(failed(error), (frames): NextFrames =>
                Effect.sync(() => (told ? undefined : ((told = true), frames)))
              )
            })
          )
        // Undefined when the request is not served by Node's HTTP server (a web handler).
        const response: ServerResponse | undefined = NodeHttpServerRequest.toServerResponse(
          yield* HttpServerRequest.HttpServerRequest
        )
        const connection: ConnectionOptions = {
          first: retryBytes,
          keepalive: keepaliveBytes,
          keepaliveEvery,
          maxBufferedBytes: streamBudget,
          framePool,
          shutdown: Deferred.await(shutdown),
          connections
        }
        const headers = { "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" }
        if (response === undefined) {
          // A web handler's frames are fresh buffers: nothing says when it has written them.
          const body = Stream.unwrapScoped(Effect.map(openFrames(), (next) => connectionStream(next, connection)))
          return HttpServerResponse.stream(body, { contentType: eventStream, headers })
        }
        // On Node the connection writes to the response itself, once the platform has written
        // the head; the body the platform pipes is empty, and it ends the response after it.
        const runReader = Runtime.runFork(yield* Effect.runtime<never>())
        return HttpServerResponse.raw(
          serveConnection(response, openFrames, connection, (effect) =>
            runReader(Effect.withScheduler(effect, readerScheduler))
          ),
          { contentType: eventStream, headers }
        )
      })

    const events = (
      account: string,
      urlParams: {
        readonly since?: string | undefined
        readonly limit?: string | undefined
        readonly session_id?: string | undefined
        readonly wait?: string | undefined
      }
    ) =>
      Effect.gen(function* () {
        const cursor = yield* cursorParam("since", urlParams.since)
        const limit = yield* intParam("limit", urlParams.limit, 100, 1, 1000)
        const waitSeconds = yield* intParam("wait", urlParams.wait, 0, 0, 60)
        return yield* withFeed(account, "read", (feed) =>
          page(feed, shutdown, cursor, { limit, maxBytes: maxPageBytes }, urlParams.session_id, waitSeconds * 1000)
        )
      })

    const append = (
      account: string,
      request: HttpServerRequest.HttpServerRequest,
      idempotencyKey: string | undefined
    ) =>
      withFeed(account, "append", (feed) =>
        Effect.gen(function* () {
          // The body is read here, once the caller may append, never before.
          const entries = yield* appendEntries(request, limits)
          const seqs = yield* feed.publishAll(entries, { idempotencyKey }).pipe(
            Effect.catchTags({
              FeedBusy: (e) => new Unavailable({ accepted: false, message: e.message }),
              FeedClosed: (e) => new Unavailable({ accepted: false, message: e.message }),
              NotYetDurable: (e) => new Unavailable({ accepted: true, message: e.message }),
              InvalidIdempotencyKey: (e) => new BadRequest({ field: "Idempotency-Key", message: e.message }),
              IdempotencyKeyConflict: (e) =>
                new IdempotencyKeyReused({ field: "Idempotency-Key", key: e.key, message: e.message })
            })
          )
          // Answered: its entries are let go of (see `Writer`'s `letGo`).
          entries.length = 0
          // The answer as the schema would encode it (an array of seqs and nulls), without
          // walking one number at a time through the encoder on every append.
          return HttpServerResponse.unsafeJson({ seqs })
        })
      )

    // Already the wire form the schema encodes (same fields, same order): answered as it is,
    // without walking it through the encoder on every poll.
    const status = (account: string) =>
      withFeed(account, "read", (feed) => Effect.map(feed.status, (s) => HttpServerResponse.unsafeJson(statusWire(s))))

    const accounts = Effect.gen(function* () {
      yield* authorize(yield* Caller, "admin")
      const all = yield* feeds.accounts
      return {
        accounts: all.map(({ account, status }) => ({
          account,
          open: status !== undefined,
          head_seq: status?.headSeq ?? null,
          epoch: status?.epoch ?? null,
          degraded: status?.degraded ?? null,
          subscribers: status?.subscribers ?? null
        }))
      }
    })

    return { stream, events, append, status, accounts }
  })

class FeedRoutes extends Context.Tag("effect-change-feed/Http/FeedRoutes")<
  FeedRoutes,
  Effect.Effect.Success<ReturnType<typeof makeFeedRoutes>>
>() {}

const FeedGroupLive = HttpApiBuilder.group(FeedApi, "feed", (handlers) =>
  Effect.map(FeedRoutes, (routes) =>
    handlers
      .handle("stream", (request) => routes.stream(DEFAULT_ACCOUNT, request))
      .handle("events", ({ urlParams }) => routes.events(DEFAULT_ACCOUNT, urlParams))
      .handleRaw("append", ({ headers, request }) =>
        routes.append(DEFAULT_ACCOUNT, request, headers["idempotency-key"])
      )
      .handle("status", () => routes.status(DEFAULT_ACCOUNT))
  )
)

const AccountGroupLive = HttpApiBuilder.group(FeedApi, "account", (handlers) =>
  Effect.map(FeedRoutes, (routes) =>
    handlers
      .handle("stream", (request) => routes.stream(request.path.account, request))
      .handle("events", ({ path, urlParams }) => routes.events(path.account, urlParams))
      .handleRaw("append", ({ headers, path, request }) =>
        routes.append(path.account, request, headers["idempotency-key"])
      )
      .handle("status", ({ path }) => routes.status(path.account))
  )
)

const AdminGroupLive = HttpApiBuilder.group(FeedApi, "admin", (handlers) =>
  Effect.map(FeedRoutes, (routes) => handlers.handle("accounts", () => routes.accounts))
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
  { limit, maxBytes }: { readonly limit: number; readonly maxBytes: number },
  sessionId: string | undefined,
  waitMs: number
) =>
  Effect.scoped(
    Effect.gen(function* () {
      // An ended stream (the feed is closing) reads as an empty chunk; a journal that cannot be read is a server error.
      const pull = (yield* feed.pullChanges({ since: cursor, sessionId })).pipe(
        Effect.catchAll((end) =>
          Option.isNone(end) ? Effect.succeed(Chunk.empty()) : Effect.fail(readFailure(end.value))
        )
      )
      const events: Array<ChangeEvent<AgentEvent>> = []
      const scanLimit = cursor.seq + Math.max(10_000, limit)
      let next = cursor.seq
      let caughtUp = false
      let bytes = 0
      let full = false
      while (events.length < limit && !full && next < scanLimit) {
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
              reset: resetData(item),
              next_since: item.continueFrom,
              head_seq: status.headSeq,
              epoch: status.epoch
            }
          }
          if (events.length >= limit) break
          if (item._tag === "Change") {
            // Bounded in bytes too (a thousand large events would make a huge page), but never
            // empty: the next page starts where this one stops.
            const size = estimateBytes(item.change.event, maxBytes)
            if (events.length > 0 && bytes + size > maxBytes) {
              full = true
              break
            }
            bytes += size
            events.push(item.change)
          }
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

/**
 * The docs page (Swagger UI), made on its first request: its bundle is megabytes of script that
 * would otherwise sit in every server's heap from the start. The page is Swagger's own, taken
 * from its layer built aside, once.
 */
const DocsPage = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function* () {
    const api = yield* HttpApi.Api
    const page = yield* Effect.cached(
      Effect.gen(function* () {
        const Swagger = yield* Effect.promise(() => import("@effect/platform/HttpApiSwagger"))
        // The router the layer registers into is the one \`Router.Live\` makes, shared within one build.
        const aside = yield* Layer.build(
          Layer.merge(HttpApiBuilder.Router.Live, Swagger.layer({ path: docsRoutes[0][0] }))
        ).pipe(Effect.provideService(HttpApi.Api, api))
        const routes = yield* Context.get(aside, HttpApiBuilder.Router).router
        const route = Chunk.findFirst(routes.routes, (r) => r.path === docsRoutes[0][0])
        if (Option.isNone(route)) return yield* Effect.dieMessage("the Swagger layer registered no docs page")
        return route.value.handler
      }).pipe(Effect.scoped)
    )
    yield* router.get(docsRoutes[0][0], Effect.flatten(page))
  })
)

/** The API, its docs and the server, on whatever `HttpServer` is provided. Requires the feeds. */
export const layer = (options: HttpOptions = {}) =>
  Layer.mergeAll(Tracing.serveApi, EndStreamsOnShutdown).pipe(
    Layer.provide(
      HttpApiBuilder.middleware(
        FeedApi,
        answerFailures(routesOf(FeedApi, [...docsRoutes, ...MetricsRoute.routes, ...Viewer.routes]))
      )
    ),
    Layer.provide(MetricsRoute.layer(accessOf(options))),
    Layer.provide(Viewer.layer),
    Layer.provide(Cors.layer(options.corsOrigins)),
    Layer.provide(DocsPage),
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: docsRoutes[1][0] })),
    Layer.provide(
      HttpApiBuilder.api(FeedApi).pipe(
        Layer.provide([FeedGroupLive, AccountGroupLive, AdminGroupLive]),
        Layer.provide(Layer.scoped(FeedRoutes, makeFeedRoutes(options)))
      )
    ),
    Layer.provide(AuthorizationLive(options)),
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
    if (isStreamPath(request.url ?? "")) {
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

/** The service's HTTP server on `host:port`, serving the feeds in context. */
export interface ServerOptions extends HttpOptions {
  readonly host: string
  readonly port: number
}

/**
 * The API on a Node server listening on `host:port`: the one server composition that `npm start`,
 * the command line, the tests, the crash harness and the benchmarks run. The feeds come from the
 * caller (`ChangeFeeds.layer` for a directory of accounts, `ChangeFeeds.layerSingle` for one feed),
 * provided with `Layer.provideMerge`, so that they outlive the server: requests in flight at
 * shutdown still find them, and every stream has ended before a feed drains.
 */
export const layerServer = (options: ServerOptions) =>
  layer(options).pipe(
    Layer.provideMerge(
      NodeHttpServer.layer(() => createNodeServer(options.corsOrigins), {
        host: options.host,
        port: options.port
      }).pipe(Layer.catchAll((error) => Layer.fail(portInUse(error, options.port) ?? error)))
    )
  )

/** Another process (or another server of this one) listens on the port the service was to take. */
export class PortInUse extends Data.TaggedError("PortInUse")<{ readonly port: number; readonly message: string }> {}

const portInUse = (error: HttpServerError.ServeError, port: number): PortInUse | undefined =>
  (error.cause as { readonly code?: unknown } | undefined)?.code === "EADDRINUSE"
    ? new PortInUse({
        port,
        message: `port ${port} is in use: set another PORT (or --port), or stop the process listening on ${port}`
      })
    : undefined

/** The URL the server in context listens at, with the port it was given (PORT=0 asks for any free one). */
export const listeningUrl: Effect.Effect<string, never, HttpServer.HttpServer> = HttpServer.addressWith((address) =>
  Effect.succeed(
    address._tag === "UnixAddress"
      ? `http+unix://${address.path}`
      : `http://${address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname}:${address.port}`
  )
)

/** Where the settings keep the journals: a PostgreSQL database when one is given, else files under the directory. */
const journalStore = (
  config: ServerSettings
): Effect.Effect<Journal.JournalStore, Journal.JournalIoError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Option.match(config.databaseUrl, {
    onNone: () =>
      // The process's indexes, which every file journal here uses (and the metrics read), sized for the service.
      Effect.zipRight(
        Effect.sync(() => SegmentIndexes.shared.resize(config.segmentIndexBytes)),
        FileJournal.store({
          directory: config.directory,
          fsync: config.fsync,
          segmentBytes: config.segmentBytes,
          retention: { segments: config.retainSegments }
        })
      ),
    onSome: (url) =>
      PostgresJournal.store({
        url: Redacted.value(url),
        retention: { keepPartitions: Option.getOrUndefined(config.retainPartitions) }
      })
  })

const journalsWhere = (config: ServerSettings): string =>
  Option.match(config.databaseUrl, {
    onNone: () => `${config.directory} (fsync ${config.fsync})`,
    onSome: (url) => PostgresJournal.describe(Redacted.value(url))
  })

/** The whole service (the feeds of every account, the API, the Node server) from settings; the feeds are an output too. */
export const layerFromSettings = (
  config: ServerSettings
): Layer.Layer<ChangeFeeds.ChangeFeeds | HttpServer.HttpServer, unknown> =>
  layerServer({
    host: config.host,
    port: config.port,
    token: Option.getOrUndefined(config.token),
    jwtSecret: Option.getOrUndefined(config.jwtSecret),
    corsOrigins: Option.getOrUndefined(config.corsOrigins)
  }).pipe(
    Layer.provideMerge(
      ChangeFeeds.layerStore(journalStore(config), {
        maxOpen: config.maxOpenAccounts,
        idleTimeToLive: config.accountIdle
      })
    ),
    // Said once the port is bound and the feeds are open, so that it names the port really taken
    // and is never printed by a service that failed to start.
    Layer.tap((context) =>
      Effect.flatMap(Effect.provide(listeningUrl, context), (url) =>
        Effect.logInfo(
          `change feed: journals in ${journalsWhere(config)}; ` +
            `stream at ${url}${feedPath("stream")}, docs at ${url}/docs`
        )
      )
    ),
    Layer.provide(NodeContext.layer),
    Layer.provide(Tracing.layer(config.tracing))
  )

/** The whole service from the environment. */
export const layerFromConfig = Layer.unwrapEffect(Effect.map(ServerConfig, layerFromSettings))
