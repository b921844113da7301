/**
 * The feed service from the environment (defaults: 127.0.0.1:8787, journal in ./data/feed).
 * In production run the compiled file, `node dist/main.js` (after `npm run build`), so that the
 * process a supervisor signals is the server itself: SIGTERM or SIGINT ends open streams,
 * journals everything accepted, releases the port and the journal's lock, and exits 0.
 * `npm start` builds and then replaces its shell with that same command.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { layerFromConfig } from "./Http.js"
import { tolerateRepeatedSignals } from "./Signals.js"

tolerateRepeatedSignals()
NodeRuntime.runMain(Layer.launch(layerFromConfig))
