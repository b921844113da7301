/** Journals on real files: a temp directory for each test, removed with the test's scope. */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { Effect } from "effect"

/** A scoped temp directory, made and removed through the real file system whatever the test provides. */
export const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) =>
  fs.makeTempDirectoryScoped({ prefix: "feed-test-" })
).pipe(Effect.provide(NodeContext.layer))
