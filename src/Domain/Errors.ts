/**
 * Errors that cross the wire, each with its HTTP status. Every one names what was wrong and
 * what to do.
 */
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import { Schema } from "effect"

/** Bad input: `field` names the query parameter, header or body field at fault. */
export class BadRequest extends Schema.TaggedError<BadRequest>()(
  "BadRequest",
  { field: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 400 })
) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401 })
) {}

/** A valid credential that does not allow this route: another account's token, or a scope it lacks (403). */
export class Forbidden extends Schema.TaggedError<Forbidden>()(
  "Forbidden",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 403 })
) {}

/** The body or batch exceeds a limit; nothing of it was journaled. */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  { field: Schema.String, limit: Schema.Number, message: Schema.String },
  HttpApiSchema.annotations({ status: 413 })
) {}

/**
 * The feed could not take or confirm the events in time (queue full, journal degraded, or
 * shutting down). `accepted` says whether the events were taken and will still be journaled.
 */
export class Unavailable extends Schema.TaggedError<Unavailable>()(
  "Unavailable",
  { accepted: Schema.Boolean, message: Schema.String },
  HttpApiSchema.annotations({ status: 503 })
) {}

/** No route at this path (404). */
export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {}

/** A route exists at this path, but not for this method (405); `allow` lists the methods it has. */
export class MethodNotAllowed extends Schema.TaggedError<MethodNotAllowed>()(
  "MethodNotAllowed",
  { message: Schema.String, allow: Schema.Array(Schema.String) },
  HttpApiSchema.annotations({ status: 405 })
) {}

/**
 * The journal holds a line that cannot be served (500): stored data is damaged, at `offset`
 * bytes into `file`. Nothing a client can fix; the operator runs `change-feed inspect`.
 */
export class JournalCorrupt extends Schema.TaggedError<JournalCorrupt>()(
  "JournalCorrupt",
  { message: Schema.String, file: Schema.String, offset: Schema.Number },
  HttpApiSchema.annotations({ status: 500 })
) {}

/** The server failed in a way it did not expect (500); the cause is in its log. */
export class InternalError extends Schema.TaggedError<InternalError>()(
  "InternalError",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 500 })
) {}

/**
 * The `Idempotency-Key` already names a different request (another number of durable events, or
 * other content); nothing of this one was journaled.
 */
export class IdempotencyKeyReused extends Schema.TaggedError<IdempotencyKeyReused>()(
  "IdempotencyKeyReused",
  { field: Schema.String, key: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 422 })
) {}
