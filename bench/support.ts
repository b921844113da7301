/**
 * Shared helpers of the benchmark suite: the run configuration, the report (figures, ratios,
 * goals, notes) that `run.ts` prints and writes as JSON, temp directories that are removed at
 * exit, the ~300-byte benchmark events, a feed on a counting journal (so a run knows the batch
 * sizes the writer really committed), a latency histogram, Redis server processes on loopback,
 * child processes that answer one JSON line, and the service's command line (built and run as
 * `npm start` does, or `BENCH_SERVER`).
 */
import { NodeContext } from "@effect/platform-node"
import { Effect, ExecutionStrategy, Logger, LogLevel, Scope, Stream } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import * as ChangeFeed from "../src/ChangeFeed.js"
import { AgentDomain, type AgentEvent } from "../src/Domain/AgentEvent.js"
import type { ChangeEvent } from "../src/Domain/ChangeEvent.js"
import * as Journal from "../src/Journal.js"
import * as FileJournal from "../src/Journal/File.js"

export {
  changeLine,
  clock,
  content,
  durableEvent,
  ephemeralEvent,
  Histogram,
  indexOf,
  segmentFiles,
  sessionOf,
  sleep
} from "./common.js"
import { changeLine, durableEvent, segmentFiles, sessionOf } from "./common.js"

// ---------------------------------------------------------------------------------------------------------------
// Configuration and report
// ---------------------------------------------------------------------------------------------------------------

export interface BenchConfig {
  readonly quick: boolean
  /** Sections to run (all when empty). */
  readonly only: ReadonlySet<string>
}

export type GoalStatus = "PASS" | "MISS" | "SKIP"

export interface Figure {
  /** Stable key, e.g. `ingest.always.publish.durable`; ratios refer to figures by it. */
  readonly id: string
  readonly section: string
  readonly label: string
  readonly value: number
  readonly unit: string
  /** A baseline (Redis, raw disk, plain JS) rather than this library. */
  readonly baseline: boolean
  readonly detail?: string | undefined
}

export interface Ratio {
  readonly figure: string
  readonly against: string
  readonly label: string
  readonly value: number
}

export interface Goal {
  readonly section: string
  readonly figure: string
  readonly text: string
  readonly status: GoalStatus
  readonly detail: string
}

export interface Note {
  readonly section: string
  readonly text: string
}

/** Everything a run measured, in the order it was measured. */
export class Report {
  readonly figures: Array<Figure> = []
  readonly ratios: Array<Ratio> = []
  readonly goals: Array<Goal> = []
  readonly notes: Array<Note> = []

  figure(
    section: string,
    id: string,
    label: string,
    value: number,
    unit: string,
    options: { baseline?: boolean; detail?: string | undefined } = {}
  ): Figure {
    const figure: Figure = {
      id,
      section,
      label,
      value,
      unit,
      baseline: options.baseline ?? false,
      detail: options.detail
    }
    this.figures.push(figure)
    return figure
  }

  get(id: string): Figure | undefined {
    return this.figures.find((f) => f.id === id)
  }

  /** `figure / against` (or the inverse when lower is better), when both were measured. */
  ratio(figure: string, against: string, label: string, lowerIsBetter = false): Ratio | undefined {
    const a = this.get(figure)
    const b = this.get(against)
    if (a === undefined || b === undefined || a.value <= 0 || b.value <= 0) return undefined
    const ratio: Ratio = { figure, against, label, value: lowerIsBetter ? b.value / a.value : a.value / b.value }
    this.ratios.push(ratio)
    return ratio
  }

  goal(section: string, figure: string, text: string, status: GoalStatus, detail: string): void {
    this.goals.push({ section, figure, text, status, detail })
  }

  note(section: string, text: string): void {
    this.notes.push({ section, text })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------------------------

const grouped = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 })

export const formatValue = (value: number, unit: string): string => {
  if (!Number.isFinite(value)) return `${value} ${unit}`
  if (unit === "ms") return `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`
  if (unit === "MB" || unit === "s") return `${value.toFixed(1)} ${unit}`
  if (unit === "x" || unit === "%") return `${value.toFixed(2)}${unit === "x" ? "x" : " %"}`
  if (Math.abs(value) < 100 && !Number.isInteger(value)) return `${value.toFixed(1)} ${unit}`
  return `${grouped.format(value)} ${unit}`
}

export const formatRatio = (value: number): string => `${value >= 10 ? value.toFixed(1) : value.toFixed(2)}x`

/** A plain-text table: columns padded to their widest cell. */
export const renderTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

export const log = (text: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`)
}

// ---------------------------------------------------------------------------------------------------------------
// Time, temp directories, cleanup
// ---------------------------------------------------------------------------------------------------------------

export const now = (): number => performance.now()

const cleanups: Array<() => void> = []

/** Runs at exit (also on SIGINT/SIGTERM): kills what the bench started and removes its temp directories. */
export const onExit = (cleanup: () => void): void => {
  cleanups.push(cleanup)
}

export const runCleanups = (): void => {
  while (cleanups.length > 0) {
    try {
      cleanups.pop()!()
    } catch {
      // best effort at exit
    }
  }
}

process.once("exit", runCleanups)
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    runCleanups()
    process.exit(130)
  })
}

/** A fresh directory under the OS temp folder, removed at exit (or earlier with `removeDir`). */
export const tempDir = (prefix: string): string => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), `cfbench-${prefix}-`))
  onExit(() => Fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

export const removeDir = (dir: string): void => Fs.rmSync(dir, { recursive: true, force: true })

/**
 * How a service process the bench started stops, made as soon as it is spawned (so that an exit
 * before the stop is seen): SIGTERM, on which the service ends its streams, drains every open feed
 * and exits (writing its CPU profile); `kill` if it has not within 30 s; then its folder goes.
 */
export const serviceStop = (child: ChildProcess.ChildProcess, kill: () => void, dir: string) => {
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  return async (): Promise<void> => {
    child.kill("SIGTERM")
    const timer = setTimeout(kill, 30_000)
    await exited
    clearTimeout(timer)
    removeDir(dir)
  }
}

/**
 * Flushes dirty pages machine-wide (`sync`), so a measurement that syncs is not slowed by the
 * writeback of what an earlier one left in the page cache.
 */
export const flushDisk = (): void => {
  ChildProcess.spawnSync("sync", [], { stdio: "ignore" })
}

/**
 * Runs every contender once per round, in order, for `times` rounds, and keeps each one's best
 * (highest `score`) result: interleaving keeps a shift in machine load from favouring one side.
 * A contender that answers `undefined` is skipped.
 */
export const rounds = async <K extends string, A>(
  times: number,
  score: (a: A) => number,
  contenders: ReadonlyArray<readonly [K, () => Promise<A | undefined> | A | undefined]>
): Promise<Partial<Record<K, A>>> => {
  const best: Partial<Record<K, A>> = {}
  for (let round = 0; round < Math.max(1, times); round++) {
    for (const [key, measure] of contenders) {
      const result = await measure()
      if (result === undefined) continue
      const previous = best[key]
      if (previous === undefined || score(result) > score(previous)) best[key] = result
    }
  }
  return best
}

export const directoryBytes = (dir: string): number => {
  let total = 0
  for (const name of Fs.readdirSync(dir)) total += Fs.statSync(Path.join(dir, name)).size
  return total
}

/** `bench/` (also when this module runs bundled elsewhere, as `profile.ts` does: then from the cwd). */
export const benchDir = ((here: string) =>
  Fs.existsSync(Path.join(here, "support.ts")) ? here : Path.join(process.cwd(), "bench"))(
  Path.dirname(fileURLToPath(import.meta.url))
)
export const projectDir = Path.dirname(benchDir)

// ---------------------------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------------------
// Running the feed
// ---------------------------------------------------------------------------------------------------------------

/** Runs an Effect program with Node's FileSystem/Path, logging warnings and worse only. */
export const runEffect = <A, E>(
  effect: Effect.Effect<A, E, NodeContext.NodeContext | Scope.Scope>,
  level: LogLevel.LogLevel = LogLevel.Warning,
  signal?: AbortSignal
): Promise<A> =>
  Effect.runPromise(
    effect.pipe(Effect.scoped, Effect.provide(NodeContext.layer), Logger.withMinimumLogLevel(level)),
    signal === undefined ? undefined : { signal }
  )

export interface BatchCounter {
  batches: number
  events: number
  /** `performance.now()` when the latest append completed. */
  lastAppendAt: number
}

export interface BenchFeed {
  readonly feed: ChangeFeed.ChangeFeedService<AgentEvent>
  readonly journal: Journal.Journal<AgentEvent>
  /** Batches the writer appended to the journal since the feed opened. */
  readonly counter: BatchCounter
}

/**
 * The agent feed on a file journal in `directory`, with `append` wrapped to count the batches
 * the writer commits. Retention is lifted so bench journals of any size stay whole.
 */
/** Replays the feed from 0 until it has caught up with the head; answers how many events came. */
export const replayToHead = <A>(
  feed: ChangeFeed.ChangeFeedService<A>,
  as: "decoded" | "lines" = "decoded"
): Effect.Effect<number, unknown> =>
  Effect.suspend(() => {
    let events = 0
    const items: Stream.Stream<{ readonly _tag: string }, unknown> =
      as === "lines" ? feed.changeLines({ since: 0 }) : feed.changes({ since: 0 })
    return items.pipe(
      Stream.takeUntil((item) => item._tag === "CaughtUp"),
      Stream.runForEachChunk((chunk) =>
        Effect.sync(() => {
          for (const item of chunk) if (item._tag === "Change") events++
        })
      ),
      Effect.map(() => events)
    )
  })

export const openFeed = (
  directory: string,
  options: Omit<ChangeFeed.FeedOptions, "directory"> = {}
): Effect.Effect<BenchFeed, Journal.JournalOpenError, NodeContext.NodeContext | Scope.Scope> =>
  Effect.gen(function* () {
    // The journal in a scope of its own, closed after the feed's drain (as `ChangeFeed.makeFiles` wires it).
    const journalScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const journal = yield* Scope.extend(
      FileJournal.make(AgentDomain.schema, { retention: { segments: 100_000 }, ...options, directory }),
      journalScope
    )
    const counter: BatchCounter = { batches: 0, events: 0, lastAppendAt: 0 }
    const counted: Journal.Journal<AgentEvent> = {
      ...journal,
      append: (batch) =>
        Effect.tap(journal.append(batch), () =>
          Effect.sync(() => {
            counter.batches++
            counter.events += batch.length
            counter.lastAppendAt = now()
          })
        )
    }
    const feed = yield* ChangeFeed.make(AgentDomain, counted, options)
    return { feed, journal, counter }
  })

/**
 * Writes a journal of `count` durable bench events to `directory` through the library's own
 * journal (fsync `never`, big batches), so every layout detail (segments, rotation) is real.
 */
export const writeJournal = (directory: string, count: number, batch = 2000): Promise<void> =>
  runEffect(
    Effect.gen(function* () {
      const journal = yield* FileJournal.make(AgentDomain.schema, {
        directory,
        fsync: "never",
        retention: { segments: 100_000 }
      })
      const ts = new Date().toISOString()
      let seq = (yield* journal.headSeq) + 1
      while (seq <= count) {
        const events: Array<ChangeEvent<AgentEvent>> = []
        for (let k = 0; k < batch && seq <= count; k++, seq++) {
          events.push({ seq, ts, session_id: sessionOf(seq), event: durableEvent(seq) })
        }
        yield* journal.append(events)
      }
    })
  )

/**
 * The raw replay baseline: reads a journal's segment files with `fs.createReadStream` in chunks
 * of `chunkBytes`, splits lines and `JSON.parse`s each; answers the number of events.
 */
export const rawRead = async (dir: string, chunkBytes = 256 * 1024): Promise<number> => {
  let events = 0
  for (const file of segmentFiles(dir)) {
    let carry = ""
    for await (const chunk of Fs.createReadStream(file, { highWaterMark: chunkBytes, encoding: "utf8" })) {
      const text = carry + (chunk as string)
      let start = 0
      for (;;) {
        const end = text.indexOf("\n", start)
        if (end < 0) break
        const event = JSON.parse(text.slice(start, end))
        if (event.seq > 0) events++
        start = end + 1
      }
      carry = text.slice(start)
    }
    if (carry.length > 0) throw new Error(`${file} ends without a line break`)
  }
  return events
}

/** Events in a journal of `bytes` bytes of bench events (measured from one encoded line). */
export const eventsForBytes = (bytes: number): number =>
  Math.ceil(bytes / (changeLine(1_000_000, 1_000_000).length + 1))

// ---------------------------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------------------------

const bundles = new Map<string, Promise<string | undefined>>()

/**
 * Bundles `bench/<script>` with esbuild into one `.mjs` file in a temp folder, so a child runs
 * on plain `node` as a deployed service would: the tsx loader alone adds ~150 MB of RSS (its
 * hooks thread and transform caches), which is not the library's. Undefined if esbuild fails.
 */
export const bundle = (script: string): Promise<string | undefined> => {
  let built = bundles.get(script)
  if (built === undefined) {
    built = (async () => {
      try {
        const esbuild = await import("esbuild")
        const outfile = Path.join(profileDir() ?? tempDir("child"), script.replace(/\.ts$/, ".mjs"))
        await esbuild.build({
          entryPoints: [Path.join(benchDir, script)],
          bundle: true,
          platform: "node",
          format: "esm",
          target: "node20",
          outfile,
          // With a source map when profiling, so profile.ts can name the TypeScript functions.
          sourcemap: profileDir() !== undefined,
          logLevel: "error",
          // CommonJS dependencies in an ESM bundle still call `require` for Node's built-ins.
          banner: { js: 'import { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);' }
        })
        return outfile
      } catch (error) {
        log(`could not bundle ${script} (${String(error)}); running it through tsx instead`)
        return undefined
      }
    })()
    bundles.set(script, built)
  }
  return built
}

/** `node <bundle>` for a bench script, or through tsx when it could not be bundled. */
export const nodeArgs = async (script: string): Promise<Array<string>> => {
  const bundled = await bundle(script)
  return bundled === undefined ? ["--import", "tsx", Path.join(benchDir, script)] : [bundled]
}

let built: Promise<string> | undefined

/**
 * The project built as `npm start` builds it (`npm run build`: tsc into `dist/`), once per run;
 * answers `dist/main.js`. The build's output goes to stderr, which keeps stdout for the report.
 */
const buildService = (): Promise<string> =>
  (built ??= new Promise<string>((resolve, reject) => {
    log("building the service as npm start does (npm run build)")
    const child = ChildProcess.spawn("npm", ["run", "-s", "build"], { cwd: projectDir, stdio: ["ignore", 2, 2] })
    child.once("error", (error) =>
      reject(new Error(`could not run npm run build (${error.message}): is npm on the PATH?`))
    )
    child.once("exit", (code, signal) =>
      code === 0
        ? resolve(Path.join(projectDir, "dist", "main.js"))
        : reject(
            new Error(
              `npm run build exited with ${code ?? signal}: fix the build (its errors are above), ` +
                "or set BENCH_SERVER to the dist/main.js of a build that works"
            )
          )
    )
  }))

/**
 * How to run the service as its users do: `node dist/main.js` after `npm run build`, which is
 * what `npm start` runs, or `BENCH_SERVER`, another build's `dist/main.js` (an earlier commit's),
 * run the same way for before/after figures from the same clients.
 */
export const serviceArgs = async (): Promise<Array<string>> => {
  const entry = process.env.BENCH_SERVER
  return [entry === undefined || entry === "" ? await buildService() : entry]
}

export interface ChildRun<A> {
  readonly result: A
  /** How the child ran: `node <bundle>.mjs`, or `node --import tsx` when bundling failed. */
  readonly loader: "bundle" | "tsx"
}

/**
 * Runs `bench/<script>` in a fresh Node process (bundled, see `bundle`, else through tsx) and
 * answers the JSON object it prints as its last stdout line. Its stderr is passed through.
 */
export const runChild = async <A>(
  script: string,
  args: ReadonlyArray<string>,
  timeoutMs = 600_000
): Promise<ChildRun<A>> => {
  const bundled = await bundle(script)
  const dir = profileDir()
  const profiling =
    dir === undefined
      ? []
      : [
          "--cpu-prof",
          `--cpu-prof-dir=${dir}`,
          `--cpu-prof-name=${[script.replace(/\.ts$/, ""), ...args.filter((a) => !a.startsWith("/"))].join("-")}.cpuprofile`
        ]
  const argv = [...profiling, ...(bundled === undefined ? ["--import", "tsx", Path.join(benchDir, script)] : [bundled])]
  const result = await new Promise<A>((resolve, reject) => {
    const child = ChildProcess.spawn(process.execPath, [...argv, ...args], {
      cwd: projectDir,
      stdio: ["ignore", "pipe", "inherit"]
    })
    const kill = () => child.kill("SIGKILL")
    onExit(kill)
    const timer = setTimeout(kill, timeoutMs)
    let stdout = ""
    child.stdout.on("data", (data: Buffer) => (stdout += data.toString()))
    child.once("error", reject)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      const last = stdout.trim().split("\n").pop() ?? ""
      if (code !== 0) return reject(new Error(`${script} ${args.join(" ")} exited with ${code ?? signal}: ${last}`))
      try {
        resolve(JSON.parse(last) as A)
      } catch {
        reject(new Error(`${script} printed no JSON result: ${stdout.slice(-500)}`))
      }
    })
  })
  return { result, loader: bundled === undefined ? "tsx" : "bundle" }
}

/** Samples `process.memoryUsage().rss` every `everyMs` and keeps the peak. */
export const rssSampler = (everyMs = 10) => {
  let peak = process.memoryUsage().rss
  const sample = () => {
    const rss = process.memoryUsage().rss
    if (rss > peak) peak = rss
  }
  const timer = setInterval(sample, everyMs)
  return {
    sample,
    reset: () => {
      peak = process.memoryUsage().rss
    },
    get peak() {
      sample()
      return peak
    },
    stop: () => clearInterval(timer)
  }
}

export const MB = 1024 * 1024

// ---------------------------------------------------------------------------------------------------------------
// Another process's resources, from /proc
// ---------------------------------------------------------------------------------------------------------------

const CLOCK_TICKS = Number(ChildProcess.spawnSync("getconf", ["CLK_TCK"]).stdout?.toString().trim()) || 100

/** CPU time of process `pid` so far, all its threads, user and system, in ms. */
export const processCpu = (pid: number): { readonly user: number; readonly system: number } => {
  // After the command name (in parentheses, which may hold spaces): utime and stime are fields 14 and 15.
  const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return { user: (Number(fields[11]) * 1000) / CLOCK_TICKS, system: (Number(fields[12]) * 1000) / CLOCK_TICKS }
}

/** The same, user and system together, ms. */
export const processCpuMs = (pid: number): number => {
  const { user, system } = processCpu(pid)
  return user + system
}

/** `VmRSS` (now) or `VmHWM` (the peak so far) of process `pid`, in bytes. */
export const processMemory = (pid: number, which: "VmRSS" | "VmHWM" = "VmRSS"): number => {
  const kib = new RegExp(`${which}:\\s+(\\d+)\\s+kB`).exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))
  return Number(kib![1]) * 1024
}

/** The machine, for the report header. */
export const machine = () => ({
  cpu: Os.cpus()[0]?.model ?? "unknown",
  cores: Os.cpus().length,
  memoryGiB: Math.round((Os.totalmem() / 1024 ** 3) * 10) / 10,
  node: process.version,
  os: `${Os.type()} ${Os.release()} ${Os.arch()}`,
  tmpdir: Os.tmpdir()
})

// ---------------------------------------------------------------------------------------------------------------
// Profiling
// ---------------------------------------------------------------------------------------------------------------

/** `BENCH_CPU_PROFILE`, when set: where CPU profiles go (child processes profile their whole run there). */
export const profileDir = (): string | undefined => {
  const dir = process.env.BENCH_CPU_PROFILE
  return dir === undefined || dir === "" ? undefined : dir
}

/**
 * With `BENCH_CPU_PROFILE=<dir>` set, records a V8 CPU profile of `measure` only (not of module
 * loading or set-up) to `<dir>/<name>.cpuprofile`; otherwise just runs it.
 */
export const profiled = async <A>(name: string, measure: () => Promise<A>): Promise<A> => {
  const dir = profileDir()
  if (dir === undefined) return measure()
  const Inspector = await import("node:inspector/promises")
  const session = new Inspector.Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 200 })
  await session.post("Profiler.start")
  try {
    return await measure()
  } finally {
    const { profile } = await session.post("Profiler.stop")
    Fs.mkdirSync(dir, { recursive: true })
    Fs.writeFileSync(Path.join(dir, `${name.replace(/[^\w.-]+/g, "_")}.cpuprofile`), JSON.stringify(profile))
    session.disconnect()
  }
}
