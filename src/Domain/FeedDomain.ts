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

/** What `sessionPath` found a routing rule reads for one tag. */
export type SessionPath =
  /** The rule answers the value at this field path, as it is. */
  | { readonly _tag: "Field"; readonly path: ReadonlyArray<string> }
  /** The rule answers no session for the tag, whatever else the event holds. */
  | { readonly _tag: "None" }
  /** Anything else (it computes, compares, reads more than one path or throws): the event must be read. */
  | { readonly _tag: "Unknown" }

/**
 * What a session rule (`FeedDomain.sessionId`) reads for events whose `key` field is `tag`,
 * found by running it once on a stand-in event that notes every field read: the rule of a
 * tagged catalog returns one field of the event (or none) by its tag, and a reader of the event's
 * JSON can then take that field from the text, by the rule itself rather than a copy of it. A
 * rule that reads anything but the tag and the one path it returns, or returns what it did not
 * read, is `Unknown`. Every field of the stand-in is present and an object, so a rule that looks
 * past a present field (`a || b`, for an empty `a`) is read as returning it: the path is for a
 * rule that returns a field as it is (the catalog's, which a property test holds to its paths).
 */
export const sessionPath = (sessionId: (event: any) => unknown, key: string, tag: string): SessionPath => {
  const reads: Array<ReadonlyArray<string>> = []
  const standIns = new Map<object, ReadonlyArray<string>>()
  const standIn = (path: ReadonlyArray<string>): object => {
    const target = {}
    const proxy = new Proxy(target, {
      get: (_, property) => {
        if (typeof property !== "string") return undefined
        const next = [...path, property]
        if (path.length === 0 && property === key) return tag
        reads.push(next)
        return standIn(next)
      }
    })
    standIns.set(proxy, path)
    return proxy
  }
  let answer: unknown
  try {
    answer = sessionId(standIn([]))
  } catch {
    return { _tag: "Unknown" }
  }
  if (answer === undefined) return reads.length === 0 ? { _tag: "None" } : { _tag: "Unknown" }
  const path = typeof answer === "object" && answer !== null ? standIns.get(answer) : undefined
  // Only the path returned, and the fields on the way to it, were read.
  if (path === undefined || path.length === 0) return { _tag: "Unknown" }
  const onTheWay = reads.every((read) => read.length <= path.length && read.every((p, i) => p === path[i]))
  return onTheWay ? { _tag: "Field", path } : { _tag: "Unknown" }
}
