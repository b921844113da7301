/**
 * `npm run crash -- --kills 100 --fsync always`: the crash harness from the command line.
 * Runs the real server as a child process, SIGKILLs it at random moments under load, and
 * prints one column of figures per fsync mode; exits 1 on any violation.
 *
 *   --kills N            kills per mode (default 100)
 *   --fsync MODE         always | interval | never | all (default always; all runs the three in turn)
 *   --producers N        concurrent producers (default 4)
 *   --readers N          SSE readers (default 3)
 *   --seed N             the PRNG seed (default: from the clock; printed)
 *   --server tsx|bundle  `node --import tsx src/main.ts` (default) or the same sources bundled once
 *   --min-delay MS, --max-delay MS   the kill comes this long after the server is up (default 50..500)
 *   --segment-bytes N    segment size (default 16384)
 *   --keep               keep the journal directories
 *   --json FILE          also write the reports as JSON
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { type CrashReport, formatReports, runCrash } from "./CrashRun.js"
import { type FsyncMode, type Launcher, serverCommand } from "./ServerProcess.js"

const { values } = parseArgs({
  options: {
    kills: { type: "string", default: "100" },
    fsync: { type: "string", default: "always" },
    producers: { type: "string", default: "4" },
    readers: { type: "string", default: "3" },
    seed: { type: "string" },
    server: { type: "string", default: "tsx" },
    "min-delay": { type: "string", default: "50" },
    "max-delay": { type: "string", default: "500" },
    "segment-bytes": { type: "string", default: "16384" },
    keep: { type: "boolean", default: false },
    json: { type: "string" },
    quiet: { type: "boolean", default: false }
  }
})

const integer = (name: string, text: string | undefined, min: number): number => {
  const value = Number(text)
  if (!Number.isSafeInteger(value) || value < min) {
    console.error(`--${name} must be an integer >= ${min}, got '${text}'`)
    process.exit(2)
  }
  return value
}

const modes: Array<FsyncMode> = values.fsync === "all" ? ["always", "interval", "never"] : [values.fsync as FsyncMode]
for (const mode of modes) {
  if (!["always", "interval", "never"].includes(mode)) {
    console.error(`--fsync must be always, interval, never or all, got '${mode}'`)
    process.exit(2)
  }
}
const launcher = values.server as Launcher
if (launcher !== "tsx" && launcher !== "bundle") {
  console.error(`--server must be tsx or bundle, got '${launcher}'`)
  process.exit(2)
}
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : integer("seed", values.seed, 0)

// One build serves every mode.
const buildDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "crash-build-"))
const command = await serverCommand(launcher, buildDir)

const reports: Array<CrashReport> = []
let failed = false
for (const [i, mode] of modes.entries()) {
  console.log(`crash: ${values.kills} kills, fsync ${mode}, server via ${launcher}, seed ${seed + i}`)
  try {
    const report = await runCrash({
      kills: integer("kills", values.kills, 0),
      fsync: mode,
      producers: integer("producers", values.producers, 1),
      readers: integer("readers", values.readers, 0),
      seed: seed + i,
      command,
      minDelayMs: integer("min-delay", values["min-delay"], 0),
      maxDelayMs: integer("max-delay", values["max-delay"], 0),
      segmentBytes: integer("segment-bytes", values["segment-bytes"], 1024),
      keepDirectory: values.keep,
      progress: values.quiet ? undefined : (line) => console.log(`  ${line}`)
    })
    reports.push(Object.assign(report, { launcher }))
    for (const violation of report.violations) console.log(`  VIOLATION: ${violation}`)
    if (report.directory !== undefined) console.log(`  files kept in ${report.directory}`)
    if (report.violations.length > 0) failed = true
  } catch (error) {
    failed = true
    const violations = (error as { violations?: Array<string> }).violations ?? []
    for (const violation of violations) console.log(`  VIOLATION: ${violation}`)
    console.error(error)
  }
}
Fs.rmSync(buildDir, { recursive: true, force: true })

console.log()
console.log(`crash harness, ${new Date().toISOString()}, ${Os.cpus().length} CPUs, node ${process.version}`)
if (reports.length > 0) console.log(formatReports(reports))
if (values.json !== undefined) Fs.writeFileSync(values.json, JSON.stringify(reports, null, 2) + "\n")
console.log(failed ? "\nFAILED: see the violations above" : "\nno violations")
process.exit(failed ? 1 : 0)
