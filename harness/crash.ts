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
 *
 * On PostgreSQL (a throwaway server from the machine's binaries, as the tests start):
 *
 *   npm run crash -- --journal postgres --replicas 2 --kills 100 --db-stops 10
 *
 *   --journal file|postgres   the files (default) or a database shared by replicas (--fsync is then ignored)
 *   --replicas N         replicas of the service on the database (default 2)
 *   --db-stops N         `pg_ctl stop -m immediate` under load, then start again (default 0)
 *   --min-down MS, --max-down MS   how long the database stays down (default 200..2000)
 *   --route any|sticky   a retry goes to any replica (default) or to the one the request first went to
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { postgresUnavailable } from "../test/support/Postgres.js"
import { type CrashReport, formatReports, type JournalKind, type Route, runCrash } from "./CrashRun.js"
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
    quiet: { type: "boolean", default: false },
    journal: { type: "string", default: "file" },
    replicas: { type: "string", default: "2" },
    "db-stops": { type: "string", default: "0" },
    "min-down": { type: "string", default: "200" },
    "max-down": { type: "string", default: "2000" },
    route: { type: "string", default: "any" }
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

const journal = values.journal as JournalKind
if (journal !== "file" && journal !== "postgres") {
  console.error(`--journal must be file or postgres, got '${journal}'`)
  process.exit(2)
}
const route = values.route as Route
if (route !== "any" && route !== "sticky") {
  console.error(`--route must be any or sticky, got '${route}'`)
  process.exit(2)
}
if (journal === "postgres") {
  const reason = postgresUnavailable()
  if (reason !== undefined) {
    console.error(reason)
    process.exit(2)
  }
}
// On PostgreSQL the fsync mode is the database's: one run.
const modes: Array<FsyncMode> =
  journal === "postgres"
    ? ["always"]
    : values.fsync === "all"
      ? ["always", "interval", "never"]
      : [values.fsync as FsyncMode]
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
  console.log(
    journal === "postgres"
      ? `crash: ${values.kills} kills, ${values["db-stops"]} database stops, ${values.replicas} replicas on PostgreSQL, ` +
          `retries to ${route} replica, server via ${launcher}, seed ${seed + i}`
      : `crash: ${values.kills} kills, fsync ${mode}, server via ${launcher}, seed ${seed + i}`
  )
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
      progress: values.quiet ? undefined : (line) => console.log(`  ${line}`),
      journal,
      replicas: integer("replicas", values.replicas, 1),
      dbStops: integer("db-stops", values["db-stops"], 0),
      minDownMs: integer("min-down", values["min-down"], 0),
      maxDownMs: integer("max-down", values["max-down"], 0),
      route
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
