/**
 * The feed service from the environment (defaults: 127.0.0.1:8787, journal in ./data/feed).
 * In production run the compiled file, `node dist/main.js` (after `npm run build`), so that the
 * process a supervisor signals is the server itself: SIGTERM or SIGINT ends open streams,
 * journals everything accepted, releases the port and the journal's lock, and exits 0.
 * `npm start` builds and then replaces its shell with that same command.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Console, Effect, Layer } from "effect"
import { layerFromConfig, PortInUse } from "./Http.js"
import { tolerateRepeatedSignals } from "./Signals.js"

tolerateRepeatedSignals()
// A port already taken is the operator's to fix: say so plainly (no stack trace) and exit 1.
Layer.launch(layerFromConfig).pipe(
  Effect.catchIf(
    (error): error is PortInUse => error instanceof PortInUse,
    (error) =>
      Effect.zipRight(
        Console.error(`change feed: ${error.message}`),
        Effect.sync(() => (process.exitCode = 1))
      )
  ),
  NodeRuntime.runMain
)
