/**
 * What each frame of the stream carries as its `data:`, as Schemas: the server encodes its
 * frames with them and the typed client decodes them with them, so the two cannot drift. A
 * change's frame carries the `ChangeEvent` itself (its Schema is `ChangeEvent`); the others are
 * here: the reset (also the `reset` of a polled page), caught-up, progress, and the failure that
 * ends a stream the feed cannot go on serving.
 */
import { Schema } from "effect"
import { BadRequest, InternalError, JournalCorrupt, NotFound, Unavailable } from "./Errors.js"
import { type Reset, ResetReason } from "./FeedItem.js"

/** A seq or a cursor's seq: 0 is "before the first event". */
export const NonNegative = Schema.Int.pipe(Schema.nonNegative())

/** A reset, as the original's clients expect it (with more fields): `data:` of a frame with no `event:`. */
export const ResetData = Schema.Struct({
  type: Schema.Literal("feed_reset"),
  from_seq: NonNegative,
  reason: ResetReason,
  oldest_seq: NonNegative,
  head_seq: NonNegative
}).annotations({ identifier: "FeedReset" })

/** `event: caught_up`: replay has reached the head. */
export const CaughtUpData = Schema.Struct({ type: Schema.Literal("caught_up"), seq: NonNegative })

/** `event: progress`: filtered events up to `seq` were passed over. */
export const ProgressData = Schema.Struct({ type: Schema.Literal("progress"), seq: NonNegative })

/**
 * `event: feed_error`: why a stream ended, as the API answers such a failure (`_tag`, `message`,
 * and `file` and `offset` for a corrupt line), with `type: "feed_error"` beside it.
 */
export const StreamFailure = Schema.Union(JournalCorrupt, InternalError, BadRequest, NotFound, Unavailable)

/** A reset as its frame's data. */
export const resetData = (reset: Reset): typeof ResetData.Type => ({
  type: "feed_reset",
  from_seq: reset.fromSeq,
  reason: reset.reason,
  oldest_seq: reset.oldestSeq,
  head_seq: reset.headSeq
})

/** A reset read from its frame's data; the stream continues after `continueFrom` (the frame's id). */
export const resetOfData = (data: typeof ResetData.Type, continueFrom: number): Reset => ({
  _tag: "Reset",
  reason: data.reason,
  fromSeq: data.from_seq,
  oldestSeq: data.oldest_seq,
  headSeq: data.head_seq,
  continueFrom
})

const encodeReset = Schema.encodeSync(ResetData)
const encodeCaughtUp = Schema.encodeSync(CaughtUpData)
const encodeProgress = Schema.encodeSync(ProgressData)
const encodeFailure = Schema.encodeSync(StreamFailure)

/** The `data:` text of a reset's frame. */
export const resetText = (reset: Reset): string => JSON.stringify(encodeReset(resetData(reset)))

/** The `data:` text of a caught-up frame. */
export const caughtUpText = (seq: number): string => JSON.stringify(encodeCaughtUp({ type: "caught_up", seq }))

/** The `data:` text of a progress frame. */
export const progressText = (seq: number): string => JSON.stringify(encodeProgress({ type: "progress", seq }))

/** The `data:` text of a `feed_error` frame. */
export const failureText = (failure: typeof StreamFailure.Type): string =>
  JSON.stringify({ type: "feed_error", ...encodeFailure(failure) })
