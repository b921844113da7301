/**
 * Errors a producer can see from `publish`. Each says whether the event was accepted.
 */
import { Data } from "effect"

/** The feed is shutting down; the event was not accepted. */
export class FeedClosed extends Data.TaggedError("FeedClosed")<{}> {
  override get message() {
    return "the change feed is shutting down; the event was not accepted"
  }
}

/** No room in the queue within the timeout; the event was not accepted (nothing is journaled). */
export class FeedBusy extends Data.TaggedError("FeedBusy")<{ readonly timeoutMs: number }> {
  override get message() {
    return `the change feed queue stayed full for ${this.timeoutMs} ms; the event was not accepted, retry later`
  }
}

/**
 * Accepted, but not durable within the timeout (the journal is failing, see status.degraded).
 * The feed keeps the event and journals it once appends succeed again.
 */
export class NotYetDurable extends Data.TaggedError("NotYetDurable")<{ readonly timeoutMs: number }> {
  override get message() {
    return `the event was accepted but is not yet durable after ${this.timeoutMs} ms (journal degraded); it will be journaled when the disk recovers`
  }
}

export type PublishError = FeedClosed | FeedBusy | NotYetDurable

/** An idempotency key that is not 1 to 128 characters of `A-Z a-z 0-9 . _ : -`; nothing was accepted. */
export class InvalidIdempotencyKey extends Data.TaggedError("InvalidIdempotencyKey")<{ readonly key: string }> {
  override get message() {
    const shown = this.key.length > 140 ? `${this.key.slice(0, 140)}...` : this.key
    return `idempotency key ${JSON.stringify(shown)} is not valid: use 1 to 128 characters of A-Z a-z 0-9 . _ : - (a UUID will do)`
  }
}

/**
 * The key was already used for a request with other durable events (another count, or other
 * content); nothing of this one was accepted. A retry must send the same request with its key.
 */
export class IdempotencyKeyConflict extends Data.TaggedError("IdempotencyKeyConflict")<{
  readonly key: string
  /** Durable events of the request the key already names, and of this one. */
  readonly acceptedEvents: number
  readonly requestEvents: number
}> {
  override get message() {
    const differs =
      this.acceptedEvents === this.requestEvents
        ? `other content in its ${this.requestEvents} durable event(s)`
        : `${this.acceptedEvents} durable event(s), this one has ${this.requestEvents}`
    return (
      `idempotency key '${this.key}' was already used for a different request (${differs}); nothing was appended. ` +
      `Retry a request only with its own key, and give every new request a new key`
    )
  }
}

export type IdempotencyError = InvalidIdempotencyKey | IdempotencyKeyConflict

/** What a keyed `publishAll` can fail with. */
export type PublishAllError = PublishError | IdempotencyError
