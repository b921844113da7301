/**
 * A second SIGINT or SIGTERM during a graceful shutdown, in a real process: within a second of
 * the first it is the same request delivered twice (Ctrl-C signals the process group, and npm
 * forwards it again) and the shutdown finishes; later, it stops the process at once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as Path from "node:path"
import { sleep } from "../harness/ServerProcess.js"

/** The child of `support/SignalChild.ts`, its output so far, and a wait for a line of it. */
const start = (shutdownMs: number) => {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", Path.join(import.meta.dirname, "support", "SignalChild.ts"), String(shutdownMs)],
    { stdio: ["ignore", "pipe", "pipe"] }
  )
  let output = ""
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  const said = async (line: string) => {
    const deadline = Date.now() + 60_000
    while (!output.split("\n").includes(line)) {
      if (Date.now() > deadline) throw new Error(`no '${line}' within 60 s; output:\n${output}`)
      await sleep(10)
    }
  }
  return { child, exited, said, output: () => output }
}

describe("signals during a graceful shutdown", () => {
  it.live("a_signal_repeated_within_a_second_does_not_cut_the_shutdown_short", () =>
    Effect.promise(async () => {
      const running = start(2000)
      await running.said("ready")
      running.child.kill("SIGINT")
      await running.said("stopping")
      running.child.kill("SIGINT")
      assert.deepStrictEqual(await running.exited, { code: 0, signal: null }, running.output())
      assert.include(running.output(), "stopped")
    })
  )

  it.live("a_signal_repeated_later_stops_the_process_at_once", () =>
    Effect.promise(async () => {
      const running = start(60_000)
      await running.said("ready")
      running.child.kill("SIGTERM")
      await running.said("stopping")
      await sleep(1200) // past the second in which a repeat counts as the same request
      running.child.kill("SIGTERM")
      assert.deepStrictEqual(await running.exited, { code: 143, signal: null }, running.output())
      assert.notInclude(running.output(), "stopped")
      assert.include(running.output(), "SIGTERM again while shutting down")
    })
  )
})
