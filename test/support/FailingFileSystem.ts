/**
 * A real `FileSystem` (Node's) whose opened files can be made to fail on demand, to test how
 * the journal and the feed behave when the disk does: `writeAll` and `sync` fail the next N
 * times with a given reason ("disk full"), and a failing `writeAll` first writes half of its
 * buffer, as a real short write would, so a test can see that nothing partial stays behind.
 * It also counts the writes and syncs that reached the disk.
 *
 * The controller is plain mutable state, readable synchronously, so a test can wait on it
 * (`eventually(() => faults.writeFailures >= 1)`) without going through a fiber.
 */
import { FileSystem, type Path } from "@effect/platform"
import { SystemError } from "@effect/platform/Error"
import { NodeFileSystem, NodePath } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"

export class Faults {
  /** Injected `writeAll` failures still to come. */
  pendingWriteFailures = 0
  /** Injected `sync` failures still to come. */
  pendingSyncFailures = 0
  reason = "disk full"
  /** Injected failures so far. */
  writeFailures = 0
  syncFailures = 0
  /** Calls that reached the real file and succeeded. */
  writes = 0
  syncs = 0

  /** The next `count` `writeAll` calls on any opened file write half their buffer, then fail. */
  failWrites(count: number, reason = "disk full"): void {
    this.pendingWriteFailures = count
    this.reason = reason
  }

  /** The next `count` `sync` calls fail without syncing. */
  failSyncs(count: number, reason = "disk full"): void {
    this.pendingSyncFailures = count
    this.reason = reason
  }

  /** Stops injecting failures. */
  heal(): void {
    this.pendingWriteFailures = 0
    this.pendingSyncFailures = 0
  }
}

/** The controller of the files the `layer`'s `FileSystem` opens. */
export class FaultInjector extends Context.Tag("test/FaultInjector")<FaultInjector, Faults>() {}

const injected = (faults: Faults, method: string, path: string) =>
  new SystemError({
    reason: "Unknown",
    module: "FileSystem",
    method,
    pathOrDescriptor: path,
    description: faults.reason
  })

const wrapFile = (file: FileSystem.File, path: string, faults: Faults): FileSystem.File => ({
  [FileSystem.FileTypeId]: FileSystem.FileTypeId,
  fd: file.fd,
  get stat() {
    return file.stat
  },
  seek: (offset, from) => file.seek(offset, from),
  read: (buffer) => file.read(buffer),
  readAlloc: (size) => file.readAlloc(size),
  truncate: (length) => file.truncate(length),
  write: (buffer) => file.write(buffer),
  writeAll: (buffer) =>
    Effect.suspend(() => {
      if (faults.pendingWriteFailures > 0) {
        faults.pendingWriteFailures--
        faults.writeFailures++
        return file
          .writeAll(buffer.subarray(0, Math.floor(buffer.length / 2)))
          .pipe(Effect.zipRight(Effect.fail(injected(faults, "writeAll", path))))
      }
      return Effect.tap(file.writeAll(buffer), () => {
        faults.writes++
      })
    }),
  get sync() {
    return Effect.suspend(() => {
      if (faults.pendingSyncFailures > 0) {
        faults.pendingSyncFailures--
        faults.syncFailures++
        return Effect.fail(injected(faults, "sync", path))
      }
      return Effect.tap(file.sync, () => {
        faults.syncs++
      })
    })
  }
})

/** Node's `FileSystem` with every opened file under `faults`' control. */
export const make = (real: FileSystem.FileSystem, faults: Faults): FileSystem.FileSystem => ({
  ...real,
  open: (path, options) => Effect.map(real.open(path, options), (file) => wrapFile(file, path, faults))
})

/** A failing `FileSystem`, its `FaultInjector`, and Node's `Path`: all a file journal needs. */
export const layer: Layer.Layer<FileSystem.FileSystem | FaultInjector | Path.Path> = Layer.effectContext(
  Effect.gen(function* () {
    const real = yield* FileSystem.FileSystem
    const faults = new Faults()
    return Context.make(FaultInjector, faults).pipe(Context.add(FileSystem.FileSystem, make(real, faults)))
  })
).pipe(Layer.provide(NodeFileSystem.layer), Layer.merge(NodePath.layer))
