/**
 * What can go wrong in the journal. Each error names the file (and byte offset where
 * there is one) and says what to do about it.
 */
import type { PlatformError } from "@effect/platform/Error"
import { Data } from "effect"
import * as Path from "node:path"

/** Another live process holds the journal directory. */
export class JournalLocked extends Data.TaggedError("JournalLocked")<{
  readonly directory: string
  readonly holder: string
}> {
  override get message() {
    return (
      `journal directory ${this.directory} is locked by ${this.holder}, a process that still runs: stop it, or ` +
      `point FEED_DIR elsewhere (the lock is the kernel's: it is released as soon as its holder exits, and LOCK ` +
      `needs no deleting)`
    )
  }
}

/** A line that is not a valid change event, anywhere but a torn tail. Never skipped silently. */
export class JournalCorrupt extends Data.TaggedError("JournalCorrupt")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
  /** Found at open, at the end of the newest segment: `inspect --repair` can cut it. */
  readonly atOpen?: boolean | undefined
}> {
  override get message() {
    const directory = Path.dirname(this.file)
    const remedy = this.atOpen
      ? `the journal was not opened, so that no acknowledged seq is handed out again. Run ` +
        `'change-feed inspect ${directory} --repair' to cut the journal from there (it starts a new epoch, so ` +
        `readers resync), or restore the file from a backup`
      : `run 'change-feed inspect ${directory}' to list every damaged place`
    return `journal corrupt in ${this.file} at byte ${this.offset}: ${this.reason}; ${remedy}`
  }
}

/** An idempotency key the journal cannot store as it is (a defect: keys are checked where they enter). */
export class JournalKeyInvalid extends Data.TaggedError("JournalKeyInvalid")<{
  readonly key: string
}> {
  override get message() {
    return `idempotency key ${JSON.stringify(this.key.slice(0, 200))} cannot be journaled: a key is 1 to 128 of A-Z a-z 0-9 . _ : -`
  }
}

/** A file operation failed (disk full, permissions, I/O error). */
export class JournalIoError extends Data.TaggedError("JournalIoError")<{
  readonly operation: string
  readonly path: string
  readonly cause: PlatformError | unknown
}> {
  override get message() {
    const detail = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `journal ${this.operation} failed on ${this.path}: ${detail}`
  }
}

/** The requested events are older than what the journal still keeps. */
export class JournalPruned extends Data.TaggedError("JournalPruned")<{
  readonly requested: number
  readonly oldest: number
}> {
  override get message() {
    return `events from seq ${this.requested} are no longer retained (oldest is ${this.oldest}); resync from the head`
  }
}

export type JournalReadError = JournalCorrupt | JournalIoError | JournalPruned
export type JournalOpenError = JournalCorrupt | JournalIoError | JournalLocked
