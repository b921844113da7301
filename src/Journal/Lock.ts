/**
 * One writer per directory: an exclusive `LOCK` file naming its holder (pid, host, start time).
 * A second process fails at start with the holder's name; a lock whose process is gone is
 * taken over.
 */
import { FileSystem } from "@effect/platform"
import { Effect } from "effect"
import * as Os from "node:os"
import { JournalIoError, JournalLocked } from "./Errors.js"

interface Holder {
  readonly pid: number
  readonly hostname: string
  readonly started_at: string
}

const describe = (holder: Holder) => `pid ${holder.pid} on ${holder.hostname} (since ${holder.started_at})`

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Takes the lock for the scope's lifetime. */
export const acquireLock = (
  fs: FileSystem.FileSystem,
  directory: string,
  path: string
): Effect.Effect<
  { readonly tookOverFrom: string | undefined },
  JournalLocked | JournalIoError,
  import("effect/Scope").Scope
> => {
  const me: Holder = { pid: process.pid, hostname: Os.hostname(), started_at: new Date().toISOString() }
  const text = JSON.stringify(me) + "\n"
  // Written aside, then linked into place: the lock never exists without its holder's name.
  const tmp = `${path}.${process.pid}.tmp`
  const create = fs
    .writeFileString(tmp, text)
    .pipe(Effect.zipRight(fs.link(tmp, path)), Effect.ensuring(fs.remove(tmp).pipe(Effect.ignore)))
  const attempt = (
    tookOverFrom: string | undefined,
    retries: number
  ): Effect.Effect<string | undefined, JournalLocked | JournalIoError> =>
    create.pipe(
      Effect.as(tookOverFrom),
      Effect.catchAll((error) => {
        if (error._tag !== "SystemError" || error.reason !== "AlreadyExists") {
          return new JournalIoError({ operation: "lock", path, cause: error })
        }
        return Effect.gen(function* () {
          const text = yield* fs.readFileString(path).pipe(Effect.orElseSucceed(() => ""))
          let holder: Holder | undefined
          try {
            holder = JSON.parse(text) as Holder
          } catch {
            holder = undefined
          }
          const valid = holder !== undefined && Number.isSafeInteger(holder.pid) && typeof holder.hostname === "string"
          if (valid && (holder!.hostname !== me.hostname || isAlive(holder!.pid))) {
            return yield* new JournalLocked({ directory, holder: describe(holder!) })
          }
          if (retries === 0) {
            return yield* new JournalLocked({
              directory,
              holder: valid ? describe(holder!) : "an unreadable LOCK file"
            })
          }
          // The holder is gone (or the file was left half-written by a crash): take the lock over.
          yield* fs.remove(path).pipe(Effect.ignore)
          return yield* attempt(valid ? describe(holder!) : "an unreadable LOCK file", retries - 1)
        })
      })
    )
  return Effect.acquireRelease(attempt(undefined, 1).pipe(Effect.map((tookOverFrom) => ({ tookOverFrom }))), () =>
    fs.remove(path).pipe(Effect.ignore)
  )
}
