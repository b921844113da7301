/**
 * One writer per directory: an exclusive flock(2) on `LOCK`, which the kernel releases when
 * its holder's descriptor closes, whatever ends the process (SIGKILL, a crash, PID 1 in a
 * container): a dead holder never blocks a restart, and no stale file needs deleting. A second
 * opener, in this process or another, fails naming the holder, whose pid, host and start time
 * the file holds.
 *
 * Node cannot call flock(2) itself and native addons are not built here, so util-linux's
 * `flock` takes the lock on our descriptor: the child gets that descriptor as its fd 3, and a
 * flock belongs to the open file description the child shares with us, so the lock stays ours
 * after the child exits. `LOCK` is never removed: a process that opened the old file would lock
 * a file no one else sees.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { Effect, Exit, Scope } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { JournalIoError, JournalLocked } from "./Errors.js"

interface Holder {
  readonly pid: number
  readonly hostname: string
  readonly started_at: string
}

const describe = (holder: Holder) => `pid ${holder.pid} on ${holder.hostname} (since ${holder.started_at})`

/** The holder a `LOCK` file names, in this format or the earlier one (the same fields). */
const holderOf = (text: string): Holder | undefined => {
  try {
    const holder = JSON.parse(text) as Holder
    return Number.isSafeInteger(holder.pid) && typeof holder.hostname === "string" ? holder : undefined
  } catch {
    return undefined
  }
}

/** `flock` exits with this when the lock is held elsewhere (set with `--conflict-exit-code`). */
const CONFLICT = 75

/** Where util-linux's `flock` is: `/usr/bin/flock`, or the first one on `PATH`. */
export const findFlock = (): string | undefined => {
  const candidates = [
    "/usr/bin/flock",
    ...(process.env.PATH ?? "")
      .split(Path.delimiter)
      .filter((dir) => dir !== "")
      .map((dir) => Path.join(dir, "flock"))
  ]
  return candidates.find((file) => {
    try {
      Fs.accessSync(file, Fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** The error when there is no `flock` to run. */
const flockMissing = (path: string, where: string) =>
  new JournalIoError({
    operation: "lock",
    path,
    cause:
      `util-linux's 'flock' was not found (${where}); the journal locks its directory with it: install ` +
      `util-linux (e.g. 'apt-get install util-linux') or put flock on PATH`
  })

/** Runs `flock --nonblock --exclusive 3` on `fd`: `true` once locked, `false` when another holds it. */
const flockNonblocking = (tool: string, fd: number, path: string): Effect.Effect<boolean, JournalIoError> =>
  Effect.async<boolean, JournalIoError>((resume) => {
    const failed = (detail: string) =>
      resume(Effect.fail(new JournalIoError({ operation: "lock", path, cause: `${tool}: ${detail}` })))
    let child: ChildProcess.ChildProcess
    try {
      child = ChildProcess.spawn(tool, ["--nonblock", "--exclusive", "--conflict-exit-code", String(CONFLICT), "3"], {
        stdio: ["ignore", "ignore", "pipe", fd]
      })
    } catch (error) {
      failed(error instanceof Error ? error.message : String(error))
      return
    }
    let stderr = ""
    child.stderr?.setEncoding("utf8").on("data", (text: string) => (stderr += text))
    child.once("error", (error) =>
      (error as NodeJS.ErrnoException).code === "ENOENT"
        ? resume(Effect.fail(flockMissing(path, `no ${tool}`)))
        : failed(error.message)
    )
    child.once("close", (code, signal) => {
      if (code === 0) resume(Effect.succeed(true))
      else if (code === CONFLICT) resume(Effect.succeed(false))
      else failed(`exited with ${code ?? signal}${stderr.trim() === "" ? "" : `: ${stderr.trim()}`}`)
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

export interface LockOptions {
  /** The `flock` to run; found on the system when unset. */
  readonly flock?: string | undefined
}

/**
 * Takes the lock for the scope's lifetime. Answers who held it before, when that process ended
 * without releasing it (a crash: its name is still in the file).
 */
export const acquireLock = (
  fs: FileSystem.FileSystem,
  directory: string,
  path: string,
  options: LockOptions = {}
): Effect.Effect<{ readonly tookOverFrom: string | undefined }, JournalLocked | JournalIoError, Scope.Scope> =>
  Effect.gen(function* () {
    const tool = options.flock ?? findFlock()
    if (tool === undefined) return yield* flockMissing(path, "looked for /usr/bin/flock and on PATH")
    const io = (operation: string) => (cause: unknown) => new JournalIoError({ operation, path, cause })
    // The descriptor lives in a scope of its own: closed at once when the lock is refused, and
    // otherwise when the caller's scope closes, which is what releases the lock.
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, { _tag: "Sequential" })
    const locked = Effect.gen(function* () {
      // "a+" creates the file if needed and never truncates it: the holder's name stays readable.
      const file = yield* fs.open(path, { flag: "a+" }).pipe(Effect.mapError(io("open lock file")))
      if (!(yield* flockNonblocking(tool, file.fd, path))) {
        const text = yield* fs.readFileString(path).pipe(Effect.orElseSucceed(() => ""))
        const holder = holderOf(text)
        return yield* new JournalLocked({
          directory,
          holder: holder === undefined ? "another process (which has not written its name yet)" : describe(holder)
        })
      }
      // A name left in the file is that of a holder that ended without releasing the lock.
      const previous = holderOf(yield* fs.readFileString(path).pipe(Effect.orElseSucceed(() => "")))
      const me: Holder = { pid: process.pid, hostname: Os.hostname(), started_at: new Date().toISOString() }
      yield* file.truncate(0).pipe(Effect.mapError(io("write lock holder")))
      yield* file
        .writeAll(new TextEncoder().encode(JSON.stringify(me) + "\n"))
        .pipe(Effect.mapError(io("write lock holder")))
      // Runs before the descriptor closes: a clean release leaves the file empty, so the next
      // holder can tell a crash (a name left behind) from a clean stop.
      yield* Scope.addFinalizer(scope, file.truncate(0).pipe(Effect.ignore))
      return { tookOverFrom: previous === undefined ? undefined : describe(previous) }
    })
    return yield* locked.pipe(
      Scope.extend(scope),
      Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void))
    )
  })
