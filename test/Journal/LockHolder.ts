/**
 * A child process for the lock tests: opens the journal in the directory given as its argument,
 * writes `open` on stdout, and holds the journal until it is killed.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Schema } from "effect"
import * as FileJournal from "../../src/Journal/File.js"

Effect.gen(function* () {
  yield* FileJournal.make(Schema.Unknown, { directory: process.argv[2]! })
  process.stdout.write("open\n")
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(NodeContext.layer), Effect.runPromise)
