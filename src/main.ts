/** `npm start`: the feed service from the environment (defaults: 127.0.0.1:8787, journal in ./data/feed). */
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { layerFromConfig } from "./Http.js"

NodeRuntime.runMain(Layer.launch(layerFromConfig))
