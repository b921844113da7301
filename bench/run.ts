/**
 * The benchmark suite (`npm run bench`): runs the sections, each figure side by side with its
 * baselines, and prints one table of figures, ratios and goals; `--json FILE` writes the same
 * figures as JSON.
 *
 *   npm run bench -- [--quick] [--json FILE] [--only http,ingest,replay,record,memory,fanout,accounts]
 *
 * `--quick` is a reduced run (under two minutes on a quiet 2-core machine); the full run takes
 * several minutes. The headline table is section `http` (e2e.ts: the service and every client
 * in processes of their own, against Redis); the second table holds the library measured in
 * process (ingest.ts, replay.ts, record.ts, memory.ts, fanout.ts) and the service at scale
 * (accounts.ts). Shared helpers in support.ts, processes.ts, redis.ts and resp.ts (the plain
 * RESP client); e2e-client.ts is every client process; profile.ts profiles a section.
 * Nothing is installed: without `redis-server` the Redis baselines are skipped with a note.
 *
 * Section `pg` (pg.ts, pg-client.ts: the service on PostgreSQL, replicas and clients in
 * processes of their own, against the same SQL from a bare script and `COPY`) runs only when
 * named: `npm run bench -- --only pg`; without PostgreSQL's binaries it is skipped with a note.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { redisVersion } from "./redis.js"
import {
  type BenchConfig,
  formatRatio,
  formatValue,
  log,
  machine,
  renderTable,
  Report,
  runCleanups
} from "./support.js"

type Run = (config: BenchConfig, report: Report) => Promise<void>

/** Loaded when run, so `--only` does not load (and compile) the other sections. */
const SECTIONS: Record<string, () => Promise<Run>> = {
  http: async () => (await import("./e2e.js")).run,
  ingest: async () => (await import("./ingest.js")).run,
  replay: async () => (await import("./replay.js")).run,
  record: async () => (await import("./record.js")).run,
  memory: async () => (await import("./memory.js")).run,
  fanout: async () => (await import("./fanout.js")).run,
  accounts: async () => (await import("./accounts.js")).run,
  pg: async () => (await import("./pg.js")).run
}

/** Sections run only when named in `--only` (they start servers of their own and take minutes). */
const OPT_IN = new Set(["pg"])

const usage = `usage: npm run bench -- [--quick] [--json FILE] [--only ${Object.keys(SECTIONS).join(",")}]`

const parseArgs = (argv: ReadonlyArray<string>): BenchConfig & { readonly json: string | undefined } => {
  let quick = false
  let json: string | undefined
  const only = new Set<string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--quick") quick = true
    else if (arg === "--json") json = argv[++i]
    else if (arg.startsWith("--json=")) json = arg.slice("--json=".length)
    else if (arg === "--only") for (const s of (argv[++i] ?? "").split(",")) only.add(s.trim())
    else if (arg.startsWith("--only=")) for (const s of arg.slice("--only=".length).split(",")) only.add(s.trim())
    else if (arg === "--help" || arg === "-h") {
      console.log(usage)
      process.exit(0)
    } else {
      console.error(`unknown argument ${arg}\n${usage}`)
      process.exit(2)
    }
  }
  if (json === "") {
    console.error(`--json needs a file name\n${usage}`)
    process.exit(2)
  }
  for (const s of only) {
    if (!(s in SECTIONS)) {
      console.error(`unknown section ${s}\n${usage}`)
      process.exit(2)
    }
  }
  return { quick, json, only }
}

/** Sections measured end to end (the service and its clients in processes of their own): the headline table. */
const HEADLINE = new Set(["http"])

/** A table: one row per figure, its ratios against baselines, and the goals it is judged by. */
const table = (report: Report, headline: boolean): string => {
  const rows: Array<Array<string>> = []
  let section = ""
  for (const f of report.figures) {
    if (HEADLINE.has(f.section) !== headline) continue
    const ratios = report.ratios
      .filter((r) => r.figure === f.id)
      .map((r) => `${formatRatio(r.value)} ${r.label}`)
      .join(", ")
    const goals = report.goals
      .filter((g) => g.figure === f.id)
      .map((g) => `${g.status}: ${g.text.replace(/^\S+ /, (w) => (w === f.section + " " ? "" : w))}`)
      .join("; ")
    rows.push([
      f.section === section ? "" : f.section,
      `${f.baseline ? "  " : ""}${f.label}`,
      formatValue(f.value, f.unit),
      ratios,
      goals,
      f.detail ?? ""
    ])
    section = f.section
  }
  return renderTable(["section", "figure", "value", "vs baselines", "goal", "detail"], rows)
}

const main = async () => {
  const config = parseArgs(process.argv.slice(2))
  const selected = Object.keys(SECTIONS).filter((s) => (config.only.size === 0 ? !OPT_IN.has(s) : config.only.has(s)))
  const started = new Date()
  const host = machine()
  const loadBefore = Os.loadavg()
  log(
    `${config.quick ? "quick" : "full"} run of ${selected.join(", ")} on ${host.cores} x ${host.cpu}, ` +
      `node ${host.node}, load average ${loadBefore.map((l) => l.toFixed(1)).join(" ")}`
  )
  if (loadBefore[0]! > host.cores) {
    log(
      `warning: the machine is busy (load ${loadBefore[0]!.toFixed(1)} on ${host.cores} cores); figures will be noisy`
    )
  }
  const report = new Report()
  const failures: Array<string> = []
  for (const section of selected) {
    const t0 = performance.now()
    try {
      const run = await SECTIONS[section]!()
      await run(config, report)
    } catch (error) {
      const message = `section ${section} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`
      log(message)
      failures.push(message)
      report.note(section, `FAILED: ${error instanceof Error ? error.message : String(error)}`)
    }
    log(`${section}: ${((performance.now() - t0) / 1000).toFixed(0)} s`)
  }
  const seconds = (Date.now() - started.getTime()) / 1000
  const loadAfter = Os.loadavg()

  const lines = [
    "",
    `effect-change-feed benchmarks, ${config.quick ? "quick" : "full"} run, ${started.toISOString()} (${seconds.toFixed(0)} s)`,
    `machine: ${host.cores} x ${host.cpu}, ${host.memoryGiB} GiB, ${host.os}, node ${host.node}, redis-server ${redisVersion() ?? "not installed"}`,
    `load average at start ${loadBefore.map((l) => l.toFixed(1)).join(" ")}, at end ${loadAfter.map((l) => l.toFixed(1)).join(" ")}`,
    "",
    "headline: the service end to end over HTTP (server and every client in processes of their own) against Redis Streams",
    "",
    table(report, true),
    "",
    "library (in process) and service-scale figures",
    "",
    table(report, false),
    "",
    "goals:",
    ...report.goals.map((g) => `  ${g.status.padEnd(4)}  ${g.text}: ${g.detail}`),
    ...(report.notes.length > 0 ? ["", "notes:", ...report.notes.map((n) => `  ${n.section}: ${n.text}`)] : []),
    ""
  ]
  console.log(lines.join("\n"))

  if (config.json !== undefined) {
    const file = Path.resolve(config.json)
    Fs.mkdirSync(Path.dirname(file), { recursive: true })
    const json = {
      date: started.toISOString(),
      seconds,
      mode: config.quick ? "quick" : "full",
      sections: selected,
      machine: { ...host, redis: redisVersion() ?? null, loadBefore, loadAfter },
      figures: report.figures,
      ratios: report.ratios,
      goals: report.goals,
      notes: report.notes
    }
    Fs.writeFileSync(file, JSON.stringify(json, null, 2) + "\n")
    log(`figures written to ${file}`)
  }
  runCleanups()
  process.exit(failures.length > 0 ? 1 : 0)
}

void main()
