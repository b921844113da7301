/**
 * What can go wrong in the journal. Each error names the file (and byte offset where
 * there is one) and says what to do about it.
 */
import type { PlatformError } from "@effect/platform/Error"
import { Data } from "effect"

/** Another live process holds the journal directory. */
export class JournalLocked extends Data.TaggedError("JournalLocked")<{
  readonly directory: string
  readonly holder: string
}> {
  override get message() {
    return `journal directory ${this.directory} is locked by ${this.holder}; stop that process or point FEED_DIR elsewhere`
  }
}

/** A line that is not a valid change event, anywhere but a torn tail. Never skipped silently. */
export class JournalCorrupt extends Data.TaggedError("JournalCorrupt")<{
  readonly file: string
  readonly offset: number
  readonly reason: string
}> {
  override get message() {
    return `journal corrupt in ${this.file} at byte ${this.offset}: ${this.reason} (run 'change-feed inspect' on the directory)`
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
