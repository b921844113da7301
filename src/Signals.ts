/**
 * Signals for a process that shuts down gracefully on SIGINT or SIGTERM (`NodeRuntime.runMain`
 * starts the shutdown on the first one, then stops listening, so a second one would kill the
 * process on the spot, mid-drain).
 *
 * A repeat within a second of the first is the same request delivered twice: Ctrl-C in a
 * terminal signals the whole process group, and npm forwards the signal to its child as well.
 * It is ignored, so that the shutdown it started finishes. A later one means "stop now" and
 * ends the process at once (the journal recovers at the next start, as after a crash).
 */

const REPEAT_WINDOW_MS = 1000
const signalNumbers = { SIGINT: 2, SIGTERM: 15 } as const

export const tolerateRepeatedSignals = (): void => {
  let first: number | undefined
  const onSignal = (signal: keyof typeof signalNumbers) => {
    const now = Date.now()
    if (first === undefined) {
      first = now
      return
    }
    if (now - first < REPEAT_WINDOW_MS) return
    process.stderr.write(`${signal} again while shutting down: stopping now, without finishing the shutdown\n`)
    process.exit(128 + signalNumbers[signal])
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
}
