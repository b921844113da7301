/**
 * The child process of section 5 (fan-out): runs one fan-out configuration in a fresh Node
 * process and prints its `RunResult` as one JSON line. Run by `fanout.ts` as
 * `node bench/fanout-child.ts <transport> <producer> <subscribers> <rate> <seconds> <waitMs>`.
 *
 * A process of its own keeps runs apart, and bounds them: when the machine cannot keep up (1000
 * subscribers catching up from the journal), the run is cut at a hard time cap and the process
 * exits at once instead of waiting for its teardown.
 */
import { CAP_MARGIN_MS, type Producer, start, type TransportName, transports } from "./fanout.js"

const [transportName, producer, subscribers, rate, seconds, waitMs] = process.argv.slice(2)
const transport =
  transportName === "inprocess" || transportName === "sse" ? transports[transportName as TransportName] : undefined
if (transport === undefined || (producer !== "publish" && producer !== "publishAll")) {
  process.stderr.write(
    "usage: fanout-child.ts inprocess|sse publish|publishAll <subscribers> <rate> <seconds> <waitMs>\n"
  )
  process.exit(2)
}
const wait = Number(waitMs)
const measurement = start(transport, producer as Producer, Number(subscribers), Number(rate), Number(seconds), wait)
const finish = (capped: boolean) => {
  process.stdout.write(JSON.stringify(measurement.snapshot(capped)) + "\n")
  process.exit(0)
}
// The cap: the publishing time, the wait, and room for setting up the subscribers.
setTimeout(() => finish(true), Number(seconds) * 2000 + wait + CAP_MARGIN_MS)
measurement.done.then(
  () => finish(false),
  (error) => {
    process.stderr.write(`fanout-child: ${String(error?.stack ?? error)}\n`)
    process.exit(1)
  }
)
