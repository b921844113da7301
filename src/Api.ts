/**
 * The HTTP contract of the feed as an `HttpApi`: importable by clients (`HttpApiClient`)
 * and the source of the OpenAPI document served at `/docs`.
 */
import {
  HttpApi,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity,
  OpenApi
} from "@effect/platform"
import { JSONSchema, Schema } from "effect"
import { finishDocument } from "./Api/Document.js"
import { AgentEvent } from "./Domain/AgentEvent.js"
import { ChangeEvent, Seq } from "./Domain/ChangeEvent.js"
import {
  BadRequest,
  InternalError,
  JournalCorrupt,
  PayloadTooLarge,
  Unauthorized,
  Unavailable
} from "./Domain/Errors.js"

export const AgentChangeEvent = ChangeEvent(AgentEvent)

const NonNegative = Schema.Int.pipe(Schema.nonNegative())

export const FeedResetWire = Schema.Struct({
  type: Schema.Literal("feed_reset"),
  from_seq: NonNegative,
  reason: Schema.Literal("below_retention", "ahead_of_head", "epoch_mismatch"),
  oldest_seq: NonNegative,
  head_seq: NonNegative
}).annotations({ identifier: "FeedReset" })

export const EventsPage = Schema.Struct({
  events: Schema.Array(AgentChangeEvent),
  next_since: NonNegative,
  head_seq: NonNegative,
  epoch: Schema.String
}).annotations({ identifier: "EventsPage" })

export const ResetPage = Schema.Struct({
  reset: FeedResetWire,
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
  fsync: Schema.Literal("always", "interval", "never")
}).annotations({ identifier: "Status" })

/** Bearer token check on every route (when a token is configured). */
export class Authorization extends HttpApiMiddleware.Tag<Authorization>()("Authorization", {
  failure: Unauthorized,
  security: {
    bearer: HttpApiSecurity.bearer.pipe(
      HttpApiSecurity.annotate(OpenApi.Description, "`Authorization: Bearer <token>`, when the service has a token")
    )
  }
}) {}

const cursorDoc =
  "Exclusive cursor: a seq, or <epoch>:<seq> as the stream's ids carry. Events with a greater seq are returned."

export class FeedGroup extends HttpApiGroup.make("feed")
  .add(
    HttpApiEndpoint.get("stream", "/api/v1/stream")
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
      )
  )
  .add(
    HttpApiEndpoint.get("events", "/api/v1/events")
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
      .addError(JournalCorrupt)
  )
  .add(
    HttpApiEndpoint.post("append", "/api/v1/events")
      .setPayload(AppendBody)
      .addSuccess(AppendResult)
      .addError(BadRequest)
      .addError(PayloadTooLarge)
      .addError(Unavailable)
      .annotate(OpenApi.Description, "Append one event or a batch; answers once durable, `null` for ephemeral events.")
  )
  .add(HttpApiEndpoint.get("status", "/api/v1/status").addSuccess(Status))
  .addError(Unauthorized)
  .addError(InternalError)
  .middleware(Authorization) {}

export class FeedApi extends HttpApi.make("change-feed")
  .add(FeedGroup)
  .annotate(OpenApi.Title, "effect-change-feed")
  .annotate(OpenApi.Description, "A durable, account-wide change feed for agent platforms")
  .annotate(OpenApi.Transform, finishDocument) {}
