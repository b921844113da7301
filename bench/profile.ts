/**
 * Profiles benchmark sections: bundles `bench/run.ts` with esbuild (names kept, source map), runs
 * the bundle on plain `node` with `BENCH_CPU_PROFILE` set, so each section writes a V8 CPU profile
 * of its measured windows only, and prints the hottest functions of each profile mapped back to
 * their TypeScript source (self time, and inclusive time of the frames in `src/`).
 *
 *   tsx bench/profile.ts [--quick] [--out DIR] [--top N] <section>[,<section>...]
 *   tsx bench/profile.ts --summarize FILE.cpuprofile
 *
 * Child processes (memory, fan-out) are profiled whole with `node --cpu-prof`. The service's
 * processes run the tsc build (`dist/*.js`, as `npm start` runs it); their frames are mapped back
 * through the source maps tsc writes beside each file (`tsconfig.build.json`: `sourceMap`).
 */
import * as Fs from "node:fs"
import { SourceMap } from "node:module"
import * as Os from "node:os"
import * as Path from "node:path"
import * as ChildProcess from "node:child_process"
import { benchDir, projectDir } from "./support.js"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface HotFunction {
  readonly name: string
  readonly location: string
  readonly percent: number
  readonly ms: number
}

export interface ProfileSummary {
  readonly totalMs: number
  readonly self: ReadonlyArray<HotFunction>
  readonly inclusiveSrc: ReadonlyArray<HotFunction>
}

/**
 * Self and inclusive time per function, located through the source map of the frame's file when
 * there is one: a bundle's (`.mjs`) or a tsc build's (`.js` outside `node_modules`).
 */
export const summarize = (
  profile: Profile,
  mapFor: (url: string) => SourceMap | undefined,
  top = 25
): ProfileSummary => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const where = (frame: CallFrame): string => {
    if (frame.url === "" || frame.lineNumber < 0) return ""
    // Not the maps packages ship: theirs name `src/` files of their own, which would pass for ours.
    const mapped = frame.url.endsWith(".mjs") || (frame.url.endsWith(".js") && !frame.url.includes("/node_modules/"))
    const map = mapped ? mapFor(frame.url) : undefined
    if (map !== undefined) {
      const entry = map.findEntry(frame.lineNumber, frame.columnNumber)
      if ("originalSource" in entry && entry.originalSource !== undefined) {
        const source = entry.originalSource.replace(/^.*?((src|bench|node_modules)\/)/, "$1")
        return `${source}:${entry.originalLine + 1}`
      }
    }
    return `${frame.url.replace(/^.*\/(node_modules\/)?/, "")}:${frame.lineNumber + 1}`
  }
  const key = (n: ProfileNode) => `${n.callFrame.functionName || "(anonymous)"}\t${where(n.callFrame)}`
  const keys = new Map<number, string>()
  for (const n of profile.nodes) keys.set(n.id, key(n))
  const time = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    time.set(profile.samples[i]!, (time.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  let total = 0
  const self = new Map<string, number>()
  const inclusive = new Map<string, number>()
  for (const [id, t] of time) {
    total += t
    self.set(keys.get(id)!, (self.get(keys.get(id)!) ?? 0) + t)
    const seen = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = keys.get(cur)!
      if (seen.has(k)) continue
      seen.add(k)
      inclusive.set(k, (inclusive.get(k) ?? 0) + t)
    }
  }
  void byId
  const rank = (m: Map<string, number>, keep: (location: string) => boolean) =>
    [...m]
      .filter(([k]) => keep(k.split("\t")[1]!))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, t]) => {
        const [name, location] = k.split("\t")
        return { name: name!, location: location!, percent: (t / total) * 100, ms: t / 1000 }
      })
  return {
    totalMs: total / 1000,
    self: rank(self, () => true),
    inclusiveSrc: rank(inclusive, (location) => location.startsWith("src/"))
  }
}

export const printSummary = (title: string, summary: ProfileSummary): void => {
  const line = (f: HotFunction) =>
    `${f.percent.toFixed(1).padStart(5)} %  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name.padEnd(36)} ${f.location}`
  console.log(`\n== ${title}: ${summary.totalMs.toFixed(0)} ms sampled`)
  console.log("-- self time")
  for (const f of summary.self) console.log(line(f))
  console.log("-- inclusive time, frames in src/")
  for (const f of summary.inclusiveSrc) console.log(line(f))
}

const maps = new Map<string, SourceMap | undefined>()

/** The source map beside a file (`<file>.map`), for a frame's url (`file://...`). */
const mapFor = (url: string): SourceMap | undefined => {
  const file = `${url.replace(/^file:\/\//, "")}.map`
  if (!maps.has(file)) {
    maps.set(file, Fs.existsSync(file) ? new SourceMap(JSON.parse(Fs.readFileSync(file, "utf8"))) : undefined)
  }
  return maps.get(file)
}

const main = async () => {
  const args = process.argv.slice(2)
  const option = (name: string) => {
    const i = args.indexOf(name)
    if (i < 0) return undefined
    const value = args[i + 1]
    args.splice(i, 2)
    return value
  }
  const flag = (name: string) => {
    const i = args.indexOf(name)
    if (i >= 0) args.splice(i, 1)
    return i >= 0
  }
  const top = Number(option("--top") ?? 25)
  const summarizeFile = option("--summarize")
  if (summarizeFile !== undefined) {
    const profile = JSON.parse(Fs.readFileSync(summarizeFile, "utf8")) as Profile
    printSummary(Path.basename(summarizeFile), summarize(profile, mapFor, top))
    return
  }
  const quick = flag("--quick")
  const out = option("--out") ?? Fs.mkdtempSync(Path.join(Os.tmpdir(), "cfbench-profile-"))
  const sections = args[0]
  if (sections === undefined) {
    console.error("usage: tsx bench/profile.ts [--quick] [--out DIR] [--top N] <section>[,<section>...]")
    process.exit(2)
  }
  const esbuild = await import("esbuild")
  // Inside the project so the bundle's imports of packages resolve; removed when done.
  const build = Path.join(benchDir, ".build")
  const bundle = Path.join(build, "run.mjs")
  await esbuild.build({
    entryPoints: [Path.join(benchDir, "run.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile: bundle,
    sourcemap: true,
    packages: "external",
    logLevel: "error",
    banner: { js: 'import { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);' }
  })
  process.once("exit", () => Fs.rmSync(build, { recursive: true, force: true }))
  const result = ChildProcess.spawnSync(
    process.execPath,
    [bundle, "--only", sections, ...(quick ? ["--quick"] : []), "--json", Path.join(out, "figures.json")],
    { cwd: projectDir, stdio: "inherit", env: { ...process.env, BENCH_CPU_PROFILE: out } }
  )
  if (result.status !== 0) process.exit(result.status ?? 1)
  for (const file of Fs.readdirSync(out)
    .filter((f) => f.endsWith(".cpuprofile"))
    .sort()) {
    const profile = JSON.parse(Fs.readFileSync(Path.join(out, file), "utf8")) as Profile
    printSummary(file, summarize(profile, mapFor, top))
  }
  console.log(`\nprofiles and bundle in ${out}`)
}

if (process.argv[1] !== undefined && Path.resolve(process.argv[1]) === Path.join(benchDir, "profile.ts")) {
  void main()
}
