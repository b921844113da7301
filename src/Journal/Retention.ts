/**
 * Retention: which whole segments to delete, oldest first, so the journal stays within its
 * segment count, and optionally its total bytes and age. The active (newest) segment is
 * never removed, so the head is always readable.
 */
import { Duration } from "effect"
import type { Segment } from "./Segment.js"

export interface RetentionPolicy {
  /** Keep at most this many segments (default 64). */
  readonly segments: number
  /** Keep at most this many bytes in all, when set. */
  readonly bytes?: number | undefined
  /** Remove segments whose last write is older than this, when set. */
  readonly maxAge?: Duration.DurationInput | undefined
}

export const defaultRetention: RetentionPolicy = { segments: 64 }

/**
 * How many of the oldest segments to delete. `lastWriteMs(i)` is asked only when an age
 * limit is set, and only for the segments that count and size would keep.
 */
export const segmentsToPrune = (
  segments: ReadonlyArray<Segment>,
  policy: RetentionPolicy,
  nowMs: number,
  lastWriteMs: (index: number) => number
): number => {
  const removable = segments.length - 1
  if (removable <= 0) return 0
  let prune = Math.max(0, segments.length - Math.max(1, policy.segments))
  if (policy.bytes !== undefined) {
    let total = 0
    for (const s of segments) total += s.bytes
    for (let i = 0; i < prune; i++) total -= segments[i]!.bytes
    while (prune < removable && total > policy.bytes) {
      total -= segments[prune]!.bytes
      prune++
    }
  }
  if (policy.maxAge !== undefined) {
    const maxAgeMs = Duration.toMillis(Duration.decode(policy.maxAge))
    while (prune < removable && nowMs - lastWriteMs(prune) > maxAgeMs) prune++
  }
  return Math.min(prune, removable)
}
