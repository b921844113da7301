/**
 * The HTTP contract of the feed as an `HttpApi`: importable by clients (`HttpApiClient`)
 * and the source of the OpenAPI document served at `/docs`.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import { Context, JSONSchema, Schema } from "effect"
import type { Grant } from "./Access.js"
import { finishDocument } from "./Api/Document.js"
import { accountPrefix, accountsPath, defaultPrefix } from "./Api/Routes.js"
import { AgentEvent } from "./Domain/AgentEvent.js"
import { fsyncModes } from "./Journal.js"
import { ChangeEvent, Seq } from "./Domain/ChangeEvent.js"
import {
  BadRequest,
  Forbidden,
  IdempotencyKeyReused,
  InternalError,
  JournalCorrupt,
  NotFound,
  PayloadTooLarge,
  Unauthorized,
  Unavailable
} from "./Domain/Errors.js"
import { NonNegative, ResetData } from "./Domain/FeedFrame.js"

export const AgentChangeEvent = ChangeEvent(AgentEvent)

export const EventsPage = Schema.Struct({
  events: Schema.Array(AgentChangeEvent),
  next_since: NonNegative,
  head_seq: NonNegative,
  epoch: Schema.String
}).annotations({ identifier: "EventsPage" })

export const ResetPage = Schema.Struct({
  reset: ResetData,
  next_since: NonNegative,
  head_seq: NonNegative,
  epoch: Schema.String
}).annotations({ identifier: "ResetPage" })

export const AppendOne = Schema.Struct({
  session_id: Schema.optionalWith(Schema.String, { exact: true }),
  event: AgentEvent
}).annotations({ identifier: "AppendOne" })

export const AppendBatch = Schema.Struct({
  events: Schema.Array(AppendOne)
}).annotations({ identifier: "AppendBatch" })

/** A JSON Schema embedded as the OpenAPI component `name`, its `$defs` references pointed at where they now live. */
const embeddedJsonSchema = (schema: Schema.Schema.Any, name: string): object =>
  JSON.parse(JSON.stringify(JSONSchema.make(schema)).replaceAll('"#/$defs/', `"#/components/schemas/${name}/$defs/`))

/**
 * The POST body as documented (one event, or a batch). It is decoded by the handler, so
 * that any malformed body, whatever its shape, is answered with the one field at fault
 * (`events[3].event.type`) rather than the whole union's mismatch.
 */
export const AppendBody = Schema.Unknown.annotations({
  identifier: "AppendBody",
  jsonSchema: embeddedJsonSchema(Schema.Union(AppendBatch, AppendOne), "AppendBody")
})

export const AppendResult = Schema.Struct({
  seqs: Schema.Array(Schema.NullOr(Seq))
}).annotations({ identifier: "AppendResult" })

export const Status = Schema.Struct({
  head_seq: NonNegative,
  oldest_seq: NonNegative,
  epoch: Schema.String,
  segments: NonNegative,
  bytes: NonNegative,
  dropped: NonNegative,
  subscribers: NonNegative,
  degraded: Schema.Boolean,
  last_error: Schema.NullOr(Schema.String),
  queued: NonNegative,
  fsync: Schema.Literal(...fsyncModes)
}).annotations({ identifier: "Status" })

/** Who the caller is, as the `Authorization` middleware found from its credential. */
export class Caller extends Context.Tag("effect-change-feed/Caller")<Caller, Grant>() {}

/**
 * The credential check on every `/api` route (when tokens are configured): who the caller is.
 * What the caller may do on the account a route addresses is checked by the route.
 */
export class Authorization extends HttpApiMiddleware.Tag<Authorization>()("Authorization", {
  failure: Unauthorized,
  provides: Caller,
  security: {
    bearer: HttpApiSecurity.bearer.pipe(
      HttpApiSecurity.annotate(
        OpenApi.Description,
        "`Authorization: Bearer <token>`, when the service has tokens: the admin token, or an account token " +
          "(an HS256 JWT naming the account and its scopes)"
      )
    )
  }
}) {}

const cursorDoc =
  "Exclusive cursor: a seq, or <epoch>:<seq> as the stream's ids carry. Events with a greater seq are returned."

const AccountPath = Schema.Struct({
  account: Schema.String.annotations({
    description: "The account: 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit"
  })
})

/**
 * The four routes of one account's feed under `prefix`: `/api/v1` for the default account (the
 * single-account service's routes, unchanged) and `/api/v1/accounts/:account` for any account.
 */
const feedEndpoints = (prefix: typeof defaultPrefix | typeof accountPrefix) => {
  const endpoints = {
    stream: HttpApiEndpoint.get("stream", `${prefix}/stream`)
      .setUrlParams(
        Schema.Struct({
          since: Schema.optional(Schema.String.annotations({ description: cursorDoc })),
          session_id: Schema.optional(Schema.String),
          access_token: Schema.optional(
            Schema.String.annotations({ description: "The bearer token, for EventSource, which cannot set headers" })
          )
        })
      )
      .setHeaders(
        Schema.Struct({
          "last-event-id": Schema.optional(
            Schema.String.annotations({
              description: "Cursor sent by reconnecting EventSource clients; wins over `since`"
            })
          )
        })
      )
      .addSuccess(HttpApiSchema.Text({ contentType: "text/event-stream" }))
      .addError(BadRequest)
      .annotate(
        OpenApi.Description,
        "Server-Sent Events (`text/event-stream; charset=utf-8`): replay from the cursor, then the live tail. " +
          "Frames: `id:`+`data:` per ChangeEvent; `data: {type:feed_reset,...}` when the cursor cannot be served; " +
          "`event: caught_up` once replay reaches the head; `event: progress` while a session filter matches nothing; " +
          "`: keepalive` every 15 s. A stream the feed cannot go on serving (a corrupt journal line) ends with " +
          "`event: feed_error` and `data: {type:feed_error,_tag,message,...}` (`file` and `offset` for a corrupt line)."
      ),
    events: HttpApiEndpoint.get("events", `${prefix}/events`)
      .setUrlParams(
        Schema.Struct({
          since: Schema.optional(Schema.String.annotations({ description: cursorDoc })),
          limit: Schema.optional(
            Schema.String.annotations({ description: "Most events per page (1..1000, default 100)" })
          ),
          session_id: Schema.optional(Schema.String),
          wait: Schema.optional(
            Schema.String.annotations({
              description: "Long-poll: seconds to wait for an event when there is none (0..60)"
            })
          )
        })
      )
      .addSuccess(Schema.Union(EventsPage, ResetPage))
      .addError(BadRequest)
      .addError(JournalCorrupt),
    append: HttpApiEndpoint.post("append", `${prefix}/events`)
      .setPayload(AppendBody)
      .setHeaders(
        Schema.Struct({
          "idempotency-key": Schema.optional(
            Schema.String.annotations({
              description:
                "Makes the request safe to retry: 1 to 128 characters of A-Z a-z 0-9 . _ : - (a UUID will do), " +
                "new for every new request and the same on each retry of it. A request whose key was already " +
                "accepted is answered with its original seqs and appends nothing; one sent while the first is " +
                "in flight waits for it. The same key with other durable events answers 422. Keys are remembered, " +
                "across restarts, while the request's first event is among the last 100,000 journaled " +
                "(configurable); a retry after that is appended again."
            })
          )
        })
      )
      .addSuccess(AppendResult)
      .addError(BadRequest)
      .addError(PayloadTooLarge)
      .addError(IdempotencyKeyReused)
      .annotate(
        OpenApi.Description,
        "Append one event or a batch; answers once durable, `null` for ephemeral events. " +
          "Send an `Idempotency-Key` to retry safely (after a lost answer, a 5xx or a 503) without appending twice."
      ),
    status: HttpApiEndpoint.get("status", `${prefix}/status`).addSuccess(Status)
  }
  return endpoints
}

const defaultFeed = feedEndpoints(defaultPrefix)
const accountFeed = feedEndpoints(accountPrefix)

/** The default account's feed, at the single-account service's paths. */
export class FeedGroup extends HttpApiGroup.make("feed")
  .add(defaultFeed.stream)
  .add(defaultFeed.events)
  .add(defaultFeed.append)
  .add(defaultFeed.status)
  .middleware(Authorization) {}

/** Any account's feed: the same routes under `/api/v1/accounts/{account}`. */
export class AccountGroup extends HttpApiGroup.make("account")
  .add(accountFeed.stream.setPath(AccountPath))
  .add(accountFeed.events.setPath(AccountPath))
  .add(accountFeed.append.setPath(AccountPath))
  .add(accountFeed.status.setPath(AccountPath))
  .middleware(Authorization)
  .annotate(OpenApi.Description, "Each account has a feed of its own: its own seqs, epoch, journal and readers.") {}

export const AccountSummary = Schema.Struct({
  account: Schema.String,
  open: Schema.Boolean,
  head_seq: Schema.NullOr(NonNegative),
  epoch: Schema.NullOr(Schema.String),
  degraded: Schema.NullOr(Schema.Boolean),
  subscribers: Schema.NullOr(NonNegative)
}).annotations({ identifier: "AccountSummary" })

export const AccountList = Schema.Struct({
  accounts: Schema.Array(AccountSummary)
}).annotations({ identifier: "AccountList" })

/** What only the admin token may do. */
export class AdminGroup extends HttpApiGroup.make("admin")
  .add(
    HttpApiEndpoint.get("accounts", accountsPath)
      .addSuccess(AccountList)
      .annotate(
        OpenApi.Description,
        "The accounts with an open feed or a journal on disk; head, epoch and status for the open ones (admin token only)."
      )
  )
  .middleware(Authorization) {}

/** Errors any route can answer: a credential refused, an account that cannot be had or is damaged, a defect. */
export class FeedApi extends HttpApi.make("change-feed")
  .add(FeedGroup)
  .add(AccountGroup)
  .add(AdminGroup)
  .addError(BadRequest)
  .addError(Unauthorized)
  .addError(Forbidden)
  .addError(NotFound)
  .addError(Unavailable)
  .addError(JournalCorrupt)
  .addError(InternalError)
  .annotate(OpenApi.Title, "effect-change-feed")
  .annotate(OpenApi.Description, "A durable, account-wide change feed for agent platforms")
  .annotate(OpenApi.Transform, finishDocument) {}
