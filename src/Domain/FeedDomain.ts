/**
 * The seam between the feed mechanism and a catalog of events.
 *
 * The journal, the writer and the readers know nothing about agents: they work for any
 * event Schema that can say whether an event is durable and which session it belongs to.
 * The agent catalog (`AgentEvent`) is one such domain and the default one.
 */
import type { Schema } from "effect"

export interface FeedDomain<A, I = unknown> {
  /** Wire schema of one event (the `event` field of a `ChangeEvent`). */
  readonly schema: Schema.Schema<A, I>
  /** `true` for events the feed keeps; ephemeral events are filtered before any copy. */
  readonly isDurable: (event: A) => boolean
  /** The session an event names by itself, if any; a caller's session id wins over it. */
  readonly sessionId: (event: A) => string | undefined
}

/** The one session-routing rule shared by every entry point: the caller's id wins. */
export const routeSession = <A>(
  domain: FeedDomain<A, any>,
  callerSessionId: string | undefined,
  event: A
): string | undefined => (callerSessionId !== undefined ? callerSessionId : domain.sessionId(event))
