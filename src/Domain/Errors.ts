/**
 * Errors that cross the wire, each with its HTTP status. Every one names what was wrong and
 * what to do.
 */
import { HttpApiSchema } from "@effect/platform"
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

/**
 * The `Idempotency-Key` already names a different request (another number of durable events, or
 * other content); nothing of this one was journaled.
 */
export class IdempotencyKeyReused extends Schema.TaggedError<IdempotencyKeyReused>()(
  "IdempotencyKeyReused",
  { field: Schema.String, key: Schema.String, message: Schema.String },
  HttpApiSchema.annotations({ status: 422 })
) {}
