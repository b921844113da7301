/**
 * A child process for the lock tests: opens the journal in the directory given as its argument,
 * writes `open` on stdout, and holds the journal until it is killed.
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, Schema } from "effect"
import * as Journal from "../../src/Journal.js"

Effect.gen(function* () {
  yield* Journal.make(Schema.Unknown, { directory: process.argv[2]! })
  process.stdout.write("open\n")
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.provide(NodeContext.layer), Effect.runPromise)
