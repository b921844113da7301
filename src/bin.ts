/** Entry point of the `change-feed` command. */
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Console, Effect } from "effect"
import { run, withoutColourOffTerminal } from "./Cli.js"
import { tolerateRepeatedSignals } from "./Signals.js"

tolerateRepeatedSignals()
// A failed command prints its message (not a stack trace) and exits with status 1.
run(process.argv).pipe(
  withoutColourOffTerminal,
  Effect.catchAll((error) =>
    Effect.zipRight(
      // A usage error has been printed already, with the usage.
      ValidationError.isValidationError(error)
        ? Effect.void
        : Console.error(`change-feed: ${error instanceof Error ? error.message : String(error)}`),
      Effect.sync(() => (process.exitCode = 1))
    )
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
