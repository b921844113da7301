/**
 * Cursors: where a reader resumes. On the wire a cursor is a plain seq (`"42"`, what the
 * original handed out) or `<epoch>:<seq>` (what this feed hands out, so a cursor from a
 * journal that was wiped or rolled back is recognised and answered with a reset).
 */
import { Either } from "effect"

export interface Cursor {
  readonly seq: number
  readonly epoch?: string | undefined
}

const epochPattern = /^[0-9a-f]{1,64}$/

/** Parses a cursor, or says what is wrong with it. */
export const parseCursor = (text: string): Either.Either<Cursor, string> => {
  const trimmed = text.trim()
  const colon = trimmed.indexOf(":")
  const seqText = colon < 0 ? trimmed : trimmed.slice(colon + 1)
  if (!/^\d{1,16}$/.test(seqText)) {
    return Either.left(`cursor '${text}' must be a non-negative integer seq, or <epoch>:<seq>`)
  }
  const seq = Number(seqText)
  if (!Number.isSafeInteger(seq)) return Either.left(`cursor '${text}' is too large`)
  if (colon < 0) return Either.right({ seq })
  const epoch = trimmed.slice(0, colon)
  if (!epochPattern.test(epoch)) {
    return Either.left(`cursor '${text}' has an epoch that is not lowercase hex (expected <epoch>:<seq>)`)
  }
  return Either.right({ seq, epoch })
}

/** What precedes the seq in a cursor of `epoch`: for writers that append the seq themselves. */
export const cursorPrefix = (epoch: string): string => `${epoch}:`

export const formatCursor = (epoch: string, seq: number): string => `${cursorPrefix(epoch)}${seq}`

/** A cursor as text: `<epoch>:<seq>`, or the bare seq when it names no epoch. */
export const showCursor = (cursor: Cursor): string =>
  cursor.epoch === undefined ? String(cursor.seq) : formatCursor(cursor.epoch, cursor.seq)
