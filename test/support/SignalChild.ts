/**
 * A process that shuts down gracefully as the service does (`NodeRuntime.runMain`, with
 * `tolerateRepeatedSignals`), whose shutdown takes `argv[2]` ms: prints `ready`, then `stopping`
 * when a signal starts the shutdown and `stopped` when it is done. Run by `Signals.test.ts`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { tolerateRepeatedSignals } from "../../src/Signals.js"

const shutdownMs = Number(process.argv[2] ?? "2000")
const say = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))

tolerateRepeatedSignals()
NodeRuntime.runMain(
  Effect.scoped(
    Effect.gen(function* () {
      yield* Effect.addFinalizer(() =>
        say("stopping").pipe(Effect.zipRight(Effect.sleep(shutdownMs)), Effect.zipRight(say("stopped")))
      )
      yield* say("ready")
      return yield* Effect.never
    })
  )
)
