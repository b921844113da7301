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
import { HttpApiClient, HttpClient, HttpClientError, HttpClientRequest } from "@effect/platform"
import { Context, Data, Duration, Effect, Layer, Option, Redacted, Schedule, Schema, Stream } from "effect"
import * as Crypto from "node:crypto"
import { FeedApi } from "./Api.js"
import { AgentEvent } from "./Domain/AgentEvent.js"
import { ChangeEvent } from "./Domain/ChangeEvent.js"
import { type Cursor, formatCursor, parseCursor } from "./Domain/Cursor.js"
import { cursorAfter, type FeedItem, type ResetReason } from "./Domain/FeedItem.js"
import { makeSseParser, type SseFrame } from "./Sse.js"

export interface ClientOptions {
  /** e.g. `http://127.0.0.1:8787` */
  readonly baseUrl: string
  /** The account whose feed to use (`/api/v1/accounts/{account}/...`); the service's default account when unset. */
  readonly account?: string | undefined
  readonly token?: string | Redacted.Redacted | undefined
  /** Reconnect backoff: doubling from `baseMs` (default 250) up to `maxMs` (default 10 s). */
  readonly reconnectBaseMs?: number | undefined
  readonly reconnectMaxMs?: number | undefined
  /**
   * `append` retries a request whose answer did not come (a transport error), or that answered
   * a 5xx or a 503, with the same idempotency key: `attempts` in all (default 8), waiting
   * `baseMs` (default 100) doubling up to `maxMs` (default 5 s) in between.
   */
  readonly appendRetry?:
    | {
        readonly attempts?: number | undefined
        readonly baseMs?: number | undefined
        readonly maxMs?: number | undefined
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

const decodeChange = Schema.decodeUnknownEither(ChangeEvent(AgentEvent))

const cursorText = (since: FollowOptions["since"]): string => {
  if (since === undefined) return "0"
  if (typeof since === "number") return String(since)
  if (typeof since === "string") return since
  return since.epoch === undefined ? String(since.seq) : formatCursor(since.epoch, since.seq)
}

/** Turns one SSE frame into a feed item (or says why it is not one). */
const toItem = (frame: SseFrame): FeedItem<AgentEvent> | ProtocolError | undefined => {
  let data: any
  try {
    data = JSON.parse(frame.data)
  } catch {
    return new ProtocolError({ detail: `frame data is not JSON: ${frame.data.slice(0, 200)}` })
  }
  const idSeq =
    frame.id === undefined
      ? undefined
      : Option.getOrUndefined(Option.map(parseCursor(frame.id).pipe(Option.getRight), (c) => c.seq))
  switch (frame.event) {
    case "caught_up":
      return { _tag: "CaughtUp", seq: data.seq }
    case "progress":
      return { _tag: "Progress", seq: data.seq }
    case "feed_error":
      return new ProtocolError({ detail: `the server ended the stream: ${data.message}` })
    case "message": {
      if (data?.type === "feed_reset") {
        return {
          _tag: "Reset",
          reason: data.reason as ResetReason,
          fromSeq: data.from_seq,
          oldestSeq: data.oldest_seq,
          headSeq: data.head_seq,
          continueFrom: idSeq ?? data.head_seq
        }
      }
      const change = decodeChange(data)
      if (change._tag === "Left") return new ProtocolError({ detail: `invalid change event: ${String(change.left)}` })
      return { _tag: "Change", change: change.right }
    }
    default:
      return undefined
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
    const baseMs = options.reconnectBaseMs ?? 250
    const maxMs = options.reconnectMaxMs ?? 10_000
    const account = options.account
    const streamUrl = new URL(
      account === undefined ? "/api/v1/stream" : `/api/v1/accounts/${encodeURIComponent(account)}/stream`,
      options.baseUrl
    )
    const retryAttempts = options.appendRetry?.attempts ?? 8
    const appendBackoff = Schedule.exponential(Duration.millis(options.appendRetry?.baseMs ?? 100)).pipe(
      Schedule.union(Schedule.spaced(Duration.millis(options.appendRetry?.maxMs ?? 5_000))),
      Schedule.intersect(Schedule.recurs(Math.max(0, retryAttempts - 1)))
    )

    const append = (entries: ReadonlyArray<AppendEntry>, appendOptions: AppendOptions = {}) => {
      const key = appendOptions.idempotencyKey ?? Crypto.randomUUID()
      const request = {
        headers: { "idempotency-key": key },
        payload: {
          events: entries.map((e) =>
            e.sessionId === undefined ? { event: e.event } : { session_id: e.sessionId, event: e.event }
          )
        }
      }
      return (
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
    }

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
              .pipe(Effect.mapError((error) => new Disconnected({ reason: error.message })))
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
                  const item = toItem(frame)
                  if (item === undefined) return Effect.succeed(undefined)
                  if (item instanceof ProtocolError) return Effect.fail(item)
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
        const backoff = Schedule.exponential(Duration.millis(baseMs)).pipe(
          Schedule.union(Schedule.spaced(Duration.millis(maxMs))),
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
      status: account === undefined ? api.feed.status() : api.account.status({ path: { account } }),
      events: (params: { since?: string; limit?: number; session_id?: string; wait?: number } = {}) => {
        const urlParams = {
          ...(params.since === undefined ? {} : { since: params.since }),
          ...(params.limit === undefined ? {} : { limit: String(params.limit) }),
          ...(params.session_id === undefined ? {} : { session_id: params.session_id }),
          ...(params.wait === undefined ? {} : { wait: String(params.wait) })
        }
        return account === undefined
          ? api.feed.events({ urlParams })
          : api.account.events({ path: { account }, urlParams })
      }
    } as const
  })

export type FeedClientService = Effect.Effect.Success<ReturnType<typeof make>>

export class FeedClient extends Context.Tag("effect-change-feed/FeedClient")<FeedClient, FeedClientService>() {}

/** The client as a layer; provide an `HttpClient` (e.g. `NodeHttpClient.layerUndici`). */
export const layer = (options: ClientOptions): Layer.Layer<FeedClient, never, HttpClient.HttpClient> =>
  Layer.effect(FeedClient, make(options))
