/**
 * What a reader of the feed receives: change events, and the markers that keep its cursor
 * honest (a reset instead of silent loss, caught-up once replay reaches the head, progress
 * while a session filter matches nothing).
 */
import { Schema } from "effect"
import type { ChangeEvent } from "./ChangeEvent.js"

/** Why a reader's cursor cannot be served. */
export const ResetReason = Schema.Literal("below_retention", "ahead_of_head", "epoch_mismatch")
export type ResetReason = typeof ResetReason.Type

export interface Change<A> {
  readonly _tag: "Change"
  readonly change: ChangeEvent<A>
}

/** The reader's cursor cannot be served; it must resync. The stream continues after `continueFrom`. */
export interface Reset {
  readonly _tag: "Reset"
  readonly reason: ResetReason
  /** The cursor that could not be served. */
  readonly fromSeq: number
  readonly oldestSeq: number
  readonly headSeq: number
  /** The seq the stream continues after (the new cursor). */
  readonly continueFrom: number
}

/** Replay has reached the head as of when the reader started (or last caught up). */
export interface CaughtUp {
  readonly _tag: "CaughtUp"
  readonly seq: number
}

/** Filtered events up to `seq` were passed over; the cursor may advance to it. */
export interface Progress {
  readonly _tag: "Progress"
  readonly seq: number
}

export type FeedItem<A> = Change<A> | Reset | CaughtUp | Progress

/**
 * A change as bytes of its journal line, for readers that pass events on without decoding them.
 * `body` is its wire JSON (the `ChangeEvent`) less the closing brace: the line up to the end of
 * its `event` object, a view of the line rather than a copy, since what the line holds after it
 * (the idempotency key, the checksum) is the journal's alone. Whoever copies it adds the `}`
 * (`wireJson` does).
 */
export interface LineChange {
  readonly _tag: "Change"
  readonly seq: number
  readonly sessionId: string | undefined
  readonly body: Uint8Array
  /** Set on a live event: every reader receives this same object, so what is made of it can be shared. */
  readonly live?: true
}

/** A line change's wire JSON, as a copy: its body and the closing brace. */
export const wireJson = (change: LineChange): Uint8Array => {
  const json = new Uint8Array(change.body.length + 1)
  json.set(change.body, 0)
  json[change.body.length] = 0x7d // }
  return json
}

/** What a reader of journal lines receives: `FeedItem` with changes as lines. */
export type LineItem = LineChange | Reset | CaughtUp | Progress

/** The seq a client should resume after once it has handled `item`. */
export const cursorAfter = (item: FeedItem<unknown> | LineItem): number => {
  switch (item._tag) {
    case "Change":
      return "change" in item ? item.change.seq : item.seq
    case "Reset":
      return item.continueFrom
    case "CaughtUp":
    case "Progress":
      return item.seq
  }
}
