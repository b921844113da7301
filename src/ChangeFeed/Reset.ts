/**
 * Where a reset is decided: whether a reader's cursor can be served from the journal, or
 * must be told to resync. A cursor `c` is exclusive (the reader has everything up to `c`),
 * so it is servable when `oldest - 1 <= c <= head` and its epoch, if it names one, is ours.
 */
import type { Cursor } from "../Domain/Cursor.js"
import type { Reset } from "../Domain/FeedItem.js"

export interface Window {
  readonly epoch: string
  readonly oldestSeq: number
  readonly headSeq: number
}

/** `undefined` when the cursor can be served; otherwise the reset to send, continuing from the head. */
export const decideReset = (cursor: Cursor, window: Window): Reset | undefined => {
  const reason =
    cursor.epoch !== undefined && cursor.epoch !== window.epoch
      ? ("epoch_mismatch" as const)
      : cursor.seq > window.headSeq
        ? ("ahead_of_head" as const)
        : cursor.seq < window.oldestSeq - 1
          ? ("below_retention" as const)
          : undefined
  return reason === undefined ? undefined : resetTo(reason, cursor.seq, window)
}

export const resetTo = (reason: Reset["reason"], fromSeq: number, window: Window): Reset => ({
  _tag: "Reset",
  reason,
  fromSeq,
  oldestSeq: window.oldestSeq,
  headSeq: window.headSeq,
  continueFrom: window.headSeq
})
