/**
 * What the tests expect a feed to deliver, written out independently of the code under test
 * (a reset built by `ChangeFeed/Reset` itself could not catch a mistake in it).
 */
import type { Reset } from "../../src/Domain/FeedItem.js"

/** The seqs `from`..`to`, both included (none when `to < from`). */
export const range = (from: number, to: number): Array<number> =>
  Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)

/** The reset a reader at `fromSeq` is owed when the feed holds `oldestSeq`..`headSeq`: it continues from the head. */
export const reset = (
  reason: Reset["reason"],
  fromSeq: number,
  window: { readonly oldestSeq: number; readonly headSeq: number }
): Reset => ({
  _tag: "Reset",
  reason,
  fromSeq,
  oldestSeq: window.oldestSeq,
  headSeq: window.headSeq,
  continueFrom: window.headSeq
})

/** The same reset as the wire carries it: a stream frame's data, a polled page's `reset`. */
export const resetData = (
  reason: Reset["reason"],
  fromSeq: number,
  window: { readonly oldestSeq: number; readonly headSeq: number }
) => ({
  type: "feed_reset" as const,
  from_seq: fromSeq,
  reason,
  oldest_seq: window.oldestSeq,
  head_seq: window.headSeq
})
