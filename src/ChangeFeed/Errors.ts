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
