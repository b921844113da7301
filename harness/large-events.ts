/**
 * `npx tsx harness/large-events.ts [--events N] [--chars N] [--heap MiB] [--concurrency N]`:
 * thousands of ~1 MB events through the real server in a child process with a fixed heap;
 * prints its peak resident memory. Exits 1 if an event was refused or the server died.
 */
import { parseArgs } from "node:util"
import { formatLargeEvents, runLargeEvents } from "./LargeEvents.js"

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "4061" },
    chars: { type: "string", default: "1000000" },
    heap: { type: "string", default: "256" },
    concurrency: { type: "string", default: "4" }
  }
})

const report = await runLargeEvents({
  events: Number(values.events),
  eventChars: Number(values.chars),
  heapMiB: Number(values.heap),
  concurrency: Number(values.concurrency),
  progress: (line) => console.error(line)
})
console.log(formatLargeEvents(report))
if (report.failure !== undefined || report.exit.duringRun) process.exitCode = 1
