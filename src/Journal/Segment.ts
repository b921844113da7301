/**
 * Segment files: `events-<start seq, 20 digits zero-padded>.jsonl`. Name order is seq order,
 * so a read from a cursor picks its first segment by name alone.
 */

export interface Segment {
  /** Seq of the first event the segment holds (or will hold, when empty). */
  readonly start: number
  readonly name: string
  /** Bytes of complete, committed lines. */
  bytes: number
}

const pattern = /^events-(\d{20})\.jsonl$/

export const segmentName = (start: number): string => `events-${String(start).padStart(20, "0")}.jsonl`

/** The start seq a file name encodes, or `undefined` for files that are not segments. */
export const parseSegmentName = (name: string): number | undefined => {
  const match = pattern.exec(name)
  if (match === null) return undefined
  const start = Number(match[1])
  return Number.isSafeInteger(start) && start >= 1 ? start : undefined
}

/** Index of the segment that holds `seq`: the last one starting at or before it (-1 if none). */
export const segmentIndexFor = (segments: ReadonlyArray<Segment>, seq: number): number => {
  let lo = 0
  let hi = segments.length - 1
  let found = -1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    if (segments[mid]!.start <= seq) {
      found = mid
      lo = mid + 1
    } else {
      hi = mid - 1
    }
  }
  return found
}
