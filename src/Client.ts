/**
 * The typed client, for Effect applications that consume a feed over HTTP.
 *
 * `follow` is a Stream that never gives up on a reachable server: it reconnects with
 * backoff, resumes from the last cursor it delivered (epoch-checked), verifies that an
 * unfiltered stream's seqs go up by exactly one (and resyncs from its cursor on a hole),
 * and surfaces resets as typed items. `append` and `status` are the typed `HttpApiClient`
 * calls of the same contract; `append` sends every request with an idempotency key and retries
 * it with the same key when the answer was lost, so a retry never appends twice.
 */
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import {
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  type ParseResult,
  Predicate,
  Redacted,
  Schedule,
  Schema,
  Stream
} from "effect"
import * as Crypto from "node:crypto"
import { AgentChangeEvent, FeedApi } from "./Api.js"
import { feedPath } from "./Api/Routes.js"
import type { AgentEvent } from "./Domain/AgentEvent.js"
import { type Cursor, parseCursor, showCursor } from "./Domain/Cursor.js"
import { CaughtUpData, ProgressData, ResetData, resetOfData, StreamFailure } from "./Domain/FeedFrame.js"
import { cursorAfter, type FeedItem } from "./Domain/FeedItem.js"
import { makeSseParser, type SseFrame } from "./Sse.js"

export interface ClientOptions {
  /** e.g. `http://127.0.0.1:8787` */
  readonly baseUrl: string
  /** The account whose feed to use (`/api/v1/accounts/{account}/...`); the service's default account when unset. */
  readonly account?: string | undefined
  readonly token?: string | Redacted.Redacted | undefined
  /** Reconnect backoff: doubling from `reconnectBase` (default 250 millis) up to `reconnectMax` (default 10 seconds). */
  readonly reconnectBase?: Duration.DurationInput | undefined
  readonly reconnectMax?: Duration.DurationInput | undefined
  /**
   * `append` retries a request whose answer did not come (a transport error), or that answered
   * a 5xx or a 503, with the same idempotency key: `attempts` in all (default 8), waiting
   * `base` (default 100 millis) doubling up to `max` (default 5 seconds) in between.
   */
  readonly appendRetry?:
    | {
        readonly attempts?: number | undefined
        readonly base?: Duration.DurationInput | undefined
        readonly max?: Duration.DurationInput | undefined
      }
    | undefined
}

export interface AppendOptions {
  /**
   * The request's idempotency key (default: a random UUID per call). Give your own to retry
   * beyond this call (after a restart of the caller, say): the same key with the same events
   * answers the seqs they got the first time.
   */
  readonly idempotencyKey?: string | undefined
}

export interface AppendEntry {
  readonly sessionId?: string | undefined
  readonly event: AgentEvent
}

export interface FollowOptions {
  /** Exclusive cursor: a seq or `<epoch>:<seq>` (default 0). */
  readonly since?: number | string | Cursor | undefined
  readonly sessionId?: string | undefined
}

/** The connection dropped, the server restarted, or the stream had a hole: reconnect from the cursor. */
export class Disconnected extends Data.TaggedError("Disconnected")<{ readonly reason: string }> {
  override get message() {
    return `feed connection lost: ${this.reason}`
  }
}

/** The server refused the request (bad cursor, bad token): retrying cannot help. */
export class Refused extends Data.TaggedError("Refused")<{ readonly status: number; readonly body: string }> {
  override get message() {
    return `the feed server refused the stream (HTTP ${this.status}): ${this.body}`
  }
}

/** The server sent something that is not the feed's protocol. */
export class ProtocolError extends Data.TaggedError("ProtocolError")<{ readonly detail: string }> {
  override get message() {
    return `unexpected data from the feed server: ${this.detail}`
  }
}

// Each frame's data decoded with the Schema the server encodes it with.
const decodeCaughtUp = Schema.decodeEither(Schema.parseJson(CaughtUpData))
const decodeProgress = Schema.decodeEither(Schema.parseJson(ProgressData))
const decodeFailure = Schema.decodeEither(Schema.parseJson(StreamFailure))
const decodeJson = Schema.decodeEither(Schema.parseJson())
const decodeReset = Schema.decodeUnknownEither(ResetData)
const decodeChange = Schema.decodeUnknownEither(AgentChangeEvent)

const cursorText = (since: FollowOptions["since"]): string => {
  if (since === undefined) return "0"
  if (typeof since === "number") return String(since)
  if (typeof since === "string") return since
  return showCursor(since)
}

/** Turns one SSE frame into a feed item (`undefined` for a frame the client does not know), or says why it is not one. */
export const decodeFrame = (frame: SseFrame): Either.Either<FeedItem<AgentEvent> | undefined, ProtocolError> => {
  const invalid = (error: ParseResult.ParseError) =>
    new ProtocolError({ detail: `invalid ${frame.event} frame: ${error.message}` })
  switch (frame.event) {
    case "caught_up":
      return Either.mapBoth(decodeCaughtUp(frame.data), {
        onLeft: invalid,
        onRight: ({ seq }): FeedItem<AgentEvent> => ({ _tag: "CaughtUp", seq })
      })
    case "progress":
      return Either.mapBoth(decodeProgress(frame.data), {
        onLeft: invalid,
        onRight: ({ seq }): FeedItem<AgentEvent> => ({ _tag: "Progress", seq })
      })
    case "feed_error":
      return Either.flatMap(Either.mapLeft(decodeFailure(frame.data), invalid), (failure) =>
        Either.left(new ProtocolError({ detail: `the server ended the stream: ${failure.message}` }))
      )
    case "message":
      return Either.flatMap(
        Either.mapLeft(decodeJson(frame.data), invalid),
        (data): Either.Either<FeedItem<AgentEvent>, ProtocolError> => {
          // A frame without `event:` is a change, or a reset: the original's clients tell them apart by `type`.
          if (!(Predicate.hasProperty(data, "type") && data.type === "feed_reset")) {
            return Either.mapBoth(decodeChange(data), {
              onLeft: invalid,
              onRight: (change): FeedItem<AgentEvent> => ({ _tag: "Change", change })
            })
          }
          const idSeq =
            frame.id === undefined ? Option.none() : Option.map(Option.getRight(parseCursor(frame.id)), (c) => c.seq)
          return Either.mapBoth(decodeReset(data), {
            onLeft: invalid,
            onRight: (reset) =>
              resetOfData(
                reset,
                Option.getOrElse(idSeq, () => reset.head_seq)
              )
          })
        }
      )
    default:
      return Either.right(undefined)
  }
}

/**
 * Whether an append may have failed only in passing: no answer (the connection failed or dropped,
 * so the request may or may not have been journaled), a server error, or 503. Safe to send again
 * with the same idempotency key; anything else (a refused body, a bad token, a reused key) is not.
 */
const isRetryable = (error: { readonly _tag: string }): boolean => {
  if (error._tag === "Unavailable") return true
  if (error instanceof HttpClientError.RequestError) return error.reason === "Transport"
  if (error instanceof HttpClientError.ResponseError) return error.response.status >= 500
  return false
}

export const make = (options: ClientOptions) =>
  Effect.gen(function* () {
    const token =
      options.token === undefined
        ? undefined
        : Redacted.isRedacted(options.token)
          ? Redacted.value(options.token)
          : options.token
    const withAuth = (client: HttpClient.HttpClient) =>
      token === undefined ? client : HttpClient.mapRequest(client, HttpClientRequest.bearerToken(token))
    const http = withAuth(yield* HttpClient.HttpClient)
    const api = yield* HttpApiClient.make(FeedApi, { baseUrl: options.baseUrl, transformClient: withAuth })
    const reconnectBase = options.reconnectBase ?? Duration.millis(250)
    const reconnectMax = options.reconnectMax ?? Duration.seconds(10)
    const account = options.account
    const streamUrl = new URL(feedPath("stream", account), options.baseUrl)
    const retryAttempts = options.appendRetry?.attempts ?? 8
    const appendBackoff = Schedule.exponential(options.appendRetry?.base ?? Duration.millis(100)).pipe(
      Schedule.union(Schedule.spaced(options.appendRetry?.max ?? Duration.seconds(5))),
      Schedule.intersect(Schedule.recurs(Math.max(0, retryAttempts - 1)))
    )

    const append = Effect.fn("FeedClient.append")(function* (
      entries: ReadonlyArray<AppendEntry>,
      appendOptions: AppendOptions = {}
    ) {
      const key = appendOptions.idempotencyKey ?? Crypto.randomUUID()
      yield* Effect.annotateCurrentSpan({ "feed.events": entries.length, "feed.idempotency_key": key })
      const request = {
        headers: { "idempotency-key": key },
        payload: {
          events: entries.map((e) =>
            e.sessionId === undefined ? { event: e.event } : { session_id: e.sessionId, event: e.event }
          )
        }
      }
      return yield* (
        account === undefined ? api.feed.append(request) : api.account.append({ ...request, path: { account } })
      ).pipe(
        Effect.tapError((error) =>
          isRetryable(error)
            ? Effect.logDebug(`change feed client: append with key ${key} failed, retrying: ${error.message}`)
            : Effect.void
        ),
        Effect.retry({ schedule: appendBackoff, while: isRetryable }),
        Effect.map((result) => result.seqs)
      )
    })

    const follow = (followOptions: FollowOptions = {}): Stream.Stream<FeedItem<AgentEvent>, Refused | ProtocolError> =>
      Stream.suspend(() => {
        let cursor = cursorText(followOptions.since)
        /** The seq `cursor` names, kept alongside it rather than parsed again per event. */
        let lastSeq = Option.getOrElse(
          Option.map(Option.getRight(parseCursor(cursor)), (c) => c.seq),
          () => 0
        )
        const filtered = followOptions.sessionId !== undefined

        const connection = Stream.unwrapScoped(
          Effect.gen(function* () {
            const url = new URL(streamUrl)
            if (filtered) url.searchParams.set("session_id", followOptions.sessionId!)
            const response = yield* http
              .execute(
                HttpClientRequest.get(url).pipe(
                  HttpClientRequest.setHeaders({ accept: "text/event-stream", "last-event-id": cursor })
                )
              )
              .pipe(
                Effect.mapError((error) => new Disconnected({ reason: error.message })),
                Effect.withSpan("FeedClient.connect", { attributes: { "feed.cursor": cursor } })
              )
            if (response.status >= 400 && response.status < 500) {
              const body = yield* response.text.pipe(Effect.orElseSucceed(() => ""))
              return yield* new Refused({ status: response.status, body })
            }
            if (response.status !== 200) return yield* new Disconnected({ reason: `HTTP ${response.status}` })
            // One parser per connection: a new connection starts with an empty buffer.
            let frames: Array<SseFrame> = []
            const parser = makeSseParser((frame) => frames.push(frame))
            return response.stream.pipe(
              Stream.mapError((error) => new Disconnected({ reason: error.message })),
              Stream.decodeText(),
              Stream.mapConcat((text) => {
                parser(text)
                const out = frames
                frames = []
                return out
              }),
              Stream.mapEffect(
                (frame): Effect.Effect<FeedItem<AgentEvent> | undefined, Disconnected | ProtocolError> => {
                  const decoded = decodeFrame(frame)
                  if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
                  const item = decoded.right
                  if (item === undefined) return Effect.succeed(undefined)
                  // A hole in an unfiltered stream: drop the connection, resume from the last good cursor.
                  if (!filtered && item._tag === "Change" && item.change.seq !== lastSeq + 1) {
                    return Effect.fail(
                      new Disconnected({ reason: `hole: seq ${item.change.seq} after ${lastSeq}, resyncing` })
                    )
                  }
                  if (frame.id !== undefined) {
                    cursor = frame.id
                    lastSeq = cursorAfter(item)
                  }
                  return Effect.succeed(item)
                }
              ),
              Stream.filter((item): item is FeedItem<AgentEvent> => item !== undefined),
              Stream.concat(Stream.fail(new Disconnected({ reason: "the server ended the stream" })))
            )
          })
        )
        const backoff = Schedule.exponential(reconnectBase).pipe(
          Schedule.union(Schedule.spaced(reconnectMax)),
          Schedule.whileInput((error: Disconnected | Refused | ProtocolError) => error._tag === "Disconnected"),
          Schedule.tapInput((error: Disconnected | Refused | ProtocolError) =>
            Effect.logDebug(`change feed client: ${error.message}; reconnecting from ${cursor}`)
          )
        )
        // Only `Disconnected` is retried, so it never escapes.
        return Stream.retry(connection, backoff) as Stream.Stream<FeedItem<AgentEvent>, Refused | ProtocolError>
      })

    return {
      follow,
      append,
      status: (account === undefined ? api.feed.status() : api.account.status({ path: { account } })).pipe(
        Effect.withSpan("FeedClient.status")
      ),
      /** One page of events after `since`; with `wait`, a long poll (whole seconds, up to 60). */
      events: Effect.fn("FeedClient.events")(function* (
        params: {
          readonly since?: string | undefined
          readonly limit?: number | undefined
          readonly session_id?: string | undefined
          readonly wait?: Duration.DurationInput | undefined
        } = {}
      ) {
        const urlParams = {
          ...(params.since === undefined ? {} : { since: params.since }),
          ...(params.limit === undefined ? {} : { limit: String(params.limit) }),
          ...(params.session_id === undefined ? {} : { session_id: params.session_id }),
          ...(params.wait === undefined ? {} : { wait: String(Math.ceil(Duration.toSeconds(params.wait))) })
        }
        return yield* account === undefined
          ? api.feed.events({ urlParams })
          : api.account.events({ path: { account }, urlParams })
      })
    } as const
  })

export type FeedClientService = Effect.Effect.Success<ReturnType<typeof make>>

export class FeedClient extends Context.Tag("effect-change-feed/FeedClient")<FeedClient, FeedClientService>() {}

/** The client as a layer; provide an `HttpClient` (e.g. `NodeHttpClient.layerUndici`). */
export const layer = (options: ClientOptions): Layer.Layer<FeedClient, never, HttpClient.HttpClient> =>
  Layer.effect(FeedClient, make(options))
