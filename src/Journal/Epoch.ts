/**
 * The journal's epoch and its open marker, and when a new epoch starts.
 *
 * `EPOCH` holds a random id; cursors carry it, so a reader whose cursor is from another epoch
 * resyncs. A new epoch starts only when events that readers may have seen can be gone: the OS
 * restarted while the journal was open in a mode that does not sync every batch (the kernel's
 * unflushed pages went with it), or the tail was cut (`inspect --repair`, or recovery after such
 * a restart). A process crash alone loses nothing the kernel already holds, and keeps the epoch.
 *
 * `OPEN` exists while a process has the journal open and records its fsync mode and the boot it
 * ran in (`/proc/sys/kernel/random/boot_id`), so the next open can tell which of these happened.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Effect, Option } from "effect"
import * as Crypto from "node:crypto"
import * as Path from "node:path"
import type { FsyncMode } from "../Journal.js"
import { JournalIoError } from "./Errors.js"

export const EPOCH_FILE = "EPOCH"
export const OPEN_FILE = "OPEN"
const BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

export const newEpochId = (): string => Crypto.randomBytes(8).toString("hex")

/** The epoch in `directory`, or `undefined` when there is none yet. */
export const readEpoch = (fs: FileSystem.FileSystem, directory: string): Effect.Effect<string | undefined> =>
  fs.readFileString(Path.join(directory, EPOCH_FILE)).pipe(
    Effect.map((text) => (text.trim() === "" ? undefined : text.trim())),
    Effect.orElseSucceed(() => undefined)
  )

/**
 * Writes `text` as `name` in `directory` so that an OS crash leaves either the old file or the
 * new one, whole: aside, synced, renamed into place, and the directory synced. The markers must
 * outlast the events written after them: an OPEN lost with the tail it covered would make a
 * lost tail look like a clean stop, and hand its seqs out again in the same epoch.
 */
const writeDurably = (
  fs: FileSystem.FileSystem,
  directory: string,
  name: string,
  text: string,
  operation: string
): Effect.Effect<void, JournalIoError> =>
  Effect.scoped(
    Effect.gen(function* () {
      const file = Path.join(directory, name)
      const tmp = `${file}.tmp`
      const io = (path: string) => (cause: unknown) => new JournalIoError({ operation, path, cause })
      const handle = yield* fs.open(tmp, { flag: "w" }).pipe(Effect.mapError(io(tmp)))
      yield* handle
        .writeAll(new TextEncoder().encode(text))
        .pipe(Effect.zipRight(handle.sync), Effect.mapError(io(tmp)))
      yield* fs.rename(tmp, file).pipe(Effect.mapError(io(file)))
      const dir = yield* fs.open(directory, { flag: "r" }).pipe(Effect.mapError(io(directory)))
      yield* dir.sync.pipe(Effect.mapError(io(directory)))
    })
  )

/** Writes a new epoch and answers it. */
export const startEpoch = (fs: FileSystem.FileSystem, directory: string): Effect.Effect<string, JournalIoError> => {
  const epoch = newEpochId()
  return Effect.as(writeDurably(fs, directory, EPOCH_FILE, epoch + "\n", "write epoch"), epoch)
}

/** This boot's id, or `undefined` where the system does not tell. */
export const currentBootId = (fs: FileSystem.FileSystem): Effect.Effect<string | undefined> =>
  fs.readFileString(BOOT_ID_FILE).pipe(
    Effect.map((text) => (text.trim() === "" ? undefined : text.trim())),
    Effect.orElseSucceed(() => undefined)
  )

/** What the `OPEN` marker of a process that did not close the journal says. */
export interface OpenMarker {
  /** Its fsync mode; `undefined` when the marker is unreadable. */
  readonly fsync: FsyncMode | undefined
  /** The boot it ran in; `undefined` when unknown (an earlier version's marker, or no boot id then). */
  readonly bootId: string | undefined
}

const isMode = (value: unknown): value is FsyncMode => value === "always" || value === "interval" || value === "never"

/** The marker left in `directory` (an unclean stop), or none (a clean one, or a new journal). */
export const readOpenMarker = (
  fs: FileSystem.FileSystem,
  directory: string
): Effect.Effect<Option.Option<OpenMarker>> =>
  fs.readFileString(Path.join(directory, OPEN_FILE)).pipe(
    Effect.map((text): Option.Option<OpenMarker> => {
      const trimmed = text.trim()
      // An earlier version wrote the mode alone.
      if (isMode(trimmed)) return Option.some({ fsync: trimmed, bootId: undefined })
      try {
        const parsed = JSON.parse(trimmed) as { fsync?: unknown; boot_id?: unknown }
        return Option.some({
          fsync: isMode(parsed.fsync) ? parsed.fsync : undefined,
          bootId: typeof parsed.boot_id === "string" ? parsed.boot_id : undefined
        })
      } catch {
        return Option.some({ fsync: undefined, bootId: undefined })
      }
    }),
    Effect.orElseSucceed(() => Option.none())
  )

export const writeOpenMarker = (
  fs: FileSystem.FileSystem,
  directory: string,
  fsync: FsyncMode,
  bootId: string | undefined
): Effect.Effect<void, JournalIoError> => {
  const marker = bootId === undefined ? { fsync } : { fsync, boot_id: bootId }
  return writeDurably(fs, directory, OPEN_FILE, JSON.stringify(marker) + "\n", "mark open")
}

/**
 * Whether events readers may have seen can be gone after the stop `marker` records: the process
 * was in a mode that leaves written batches to the OS (or its mode is unknown), and the OS
 * restarted since (or either boot is unknown, which counts as a restart).
 */
export const mayHaveLostEvents = (marker: OpenMarker, bootId: string | undefined): boolean =>
  marker.fsync !== "always" && (marker.bootId === undefined || bootId === undefined || marker.bootId !== bootId)
