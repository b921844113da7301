/**
 * Processes for the end-to-end measurements: the service in a process of its own, run as
 * `npm start` runs it (`node dist/main.js` after `npm run build`, or `BENCH_SERVER`'s build: see
 * `serviceArgs`), client processes of `e2e-client.ts` started together and released by one `go`,
 * and the Redis baselines' loads run through those same client processes.
 */
import * as ChildProcess from "node:child_process"
import * as Readline from "node:readline"
import type { LoadResult, ReplayResult } from "./e2e-client.js"
import type { RedisServer } from "./redis.js"
import {
  nodeArgs,
  serviceArgs,
  clock,
  onExit,
  processCpuMs,
  processMemory,
  profileDir,
  projectDir,
  serviceStop,
  tempDir
} from "./support.js"

const CLIENT = "e2e-client.ts"

export interface Service {
  readonly pid: number
  readonly port: number
  readonly dir: string
  /** CPU time so far, user + system, every thread, ms. */
  readonly cpuMs: () => number
  /** `VmRSS` now, bytes. */
  readonly rss: () => number
  /** `VmHWM`, the peak RSS so far, bytes. */
  readonly peakRss: () => number
  readonly stop: () => Promise<void>
}

/**
 * The service on `dir` (a fresh temp folder when not given), any free port, no credentials,
 * `env` on top; answers once its startup line names the port. Profiled whole (`--cpu-prof`) when
 * `BENCH_CPU_PROFILE` is set, under `name`.
 */
export const startService = async (
  name: string,
  env: Record<string, string>,
  dir: string = tempDir(`service-${name}`)
): Promise<Service> => {
  const profiles = profileDir()
  const profiling =
    profiles === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${profiles}`, `--cpu-prof-name=server-${name}.cpuprofile`]
  const { FEED_TOKEN: _token, FEED_JWT_SECRET: _secret, ...inherited } = process.env
  const child = ChildProcess.spawn(process.execPath, [...profiling, ...(await serviceArgs())], {
    cwd: projectDir,
    env: {
      ...inherited,
      HOST: "127.0.0.1",
      PORT: "0",
      FEED_DIR: dir,
      FEED_FSYNC: "always",
      FEED_RETAIN_SEGMENTS: "100000",
      ...env
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const kill = () => child.kill("SIGKILL")
  onExit(kill)
  const stop = serviceStop(child, kill, dir)
  const port = await listening(child, "the service", kill)
  const pid = child.pid!
  return {
    pid,
    port,
    dir,
    cpuMs: () => processCpuMs(pid),
    rss: () => processMemory(pid, "VmRSS"),
    peakRss: () => processMemory(pid, "VmHWM"),
    stop
  }
}

/**
 * The port of a process that prints its stream's address (`http://127.0.0.1:<port>/api/v1/stream`)
 * once it listens, as the service does at start; killed if it has not within 60 s.
 */
const listening = (child: ChildProcess.ChildProcess, what: string, kill: () => void): Promise<number> => {
  let output = ""
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill()
      reject(new Error(`${what} did not start within 60 s: ${output}`))
    }, 60_000)
    const watch = (data: Buffer) => {
      output = (output + data.toString()).slice(-4000)
      const found = /http:\/\/127\.0\.0\.1:(\d+)\/api\/v1\/stream/.exec(output)
      if (found !== null) {
        clearTimeout(timer)
        resolve(Number(found[1]))
      }
    }
    child.stdout?.on("data", watch)
    child.stderr?.on("data", watch)
    child.once("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`${what} exited with ${code} at start: ${output}`))
    })
  })
}

/** What a replay client needs of the process it replays from: its port and CPU time (ms). */
export type ReplaySource = Pick<Service, "port" | "cpuMs">

/** The `sse-recorded` stand-in, running. */
export interface RecordedReplay extends ReplaySource {
  readonly stop: () => Promise<void>
}

/**
 * The `sse-recorded` stand-in (`e2e-client.ts`): records one replay of `service`, then serves its
 * bytes from memory, doing no work per event; the replay client's ceiling on this machine.
 */
export const startRecordedReplay = async (service: Service): Promise<RecordedReplay> => {
  const child = ChildProcess.spawn(
    process.execPath,
    [...(await nodeArgs(CLIENT)), "sse-recorded", String(service.port)],
    {
      cwd: projectDir,
      stdio: ["ignore", "pipe", "pipe"]
    }
  )
  const kill = () => child.kill("SIGKILL")
  onExit(kill)
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const port = await listening(child, "the recorded replay", kill)
  const pid = child.pid!
  return {
    port,
    cpuMs: () => processCpuMs(pid),
    stop: async () => {
      kill()
      await exited
    }
  }
}

export interface Client<A> {
  /** Sends one JSON line to the client (its `t0`, then for subscribers what to expect). */
  readonly send: (message: object) => void
  readonly result: Promise<A>
}

/** A client process (`script`, `e2e-client.ts` by default) in `mode`, once it has said `ready`. */
export const startClient = async <A>(
  mode: string,
  args: ReadonlyArray<string | number>,
  script: string = CLIENT
): Promise<Client<A>> => {
  const child = ChildProcess.spawn(process.execPath, [...(await nodeArgs(script)), mode, ...args.map(String)], {
    cwd: projectDir,
    stdio: ["pipe", "pipe", "inherit"]
  })
  const kill = () => child.kill("SIGKILL")
  onExit(kill)
  const lines = Readline.createInterface({ input: child.stdout })
  let last = ""
  const ready = new Promise<void>((resolve, reject) => {
    lines.on("line", (line) => {
      if (line === "ready") resolve()
      last = line
    })
    child.once("exit", (code) => reject(new Error(`${script} ${mode} exited with ${code} before it was ready`)))
  })
  const result = new Promise<A>((resolve, reject) => {
    // `close`, not `exit`: by then its stdout has been read to the end (a subscriber's last line,
    // its latency histogram, can run to hundreds of KiB).
    child.once("close", (code) => {
      if (code !== 0) return reject(new Error(`${script} ${mode} ${args.join(" ")} exited with ${code}: ${last}`))
      try {
        resolve(JSON.parse(last) as A)
      } catch {
        reject(new Error(`${script} ${mode} printed no JSON result: ${last}`))
      }
    })
  })
  result.catch(() => undefined)
  await ready
  return { send: (message) => child.stdin.write(JSON.stringify(message) + "\n"), result }
}

/** Starts clients, releases them together and answers their results. */
export const runClients = async <A>(
  clients: ReadonlyArray<readonly [string, ReadonlyArray<string | number>]>
): Promise<Array<A>> => {
  const started = await Promise.all(clients.map(([mode, args]) => startClient<A>(mode, args)))
  const t0 = clock()
  for (const c of started) c.send({ t0 })
  return Promise.all(started.map((c) => c.result))
}

export interface Load {
  /** Events acknowledged per second, from the first send of any client to the last ack of all. */
  readonly rate: number
  readonly acked: number
  /** The server's CPU time over the run per event acknowledged, µs. */
  readonly cpuPerEventUs: number
}

/** `processes` load clients at once (`post` or `xadd`), with the server's CPU time around them. */
export const runLoad = async (
  clients: ReadonlyArray<readonly [string, ReadonlyArray<string | number>]>,
  cpuMs: () => number
): Promise<Load> => {
  const started = await Promise.all(clients.map(([mode, args]) => startClient<LoadResult>(mode, args)))
  const cpu0 = cpuMs()
  const t0 = clock()
  for (const c of started) c.send({ t0 })
  const results = await Promise.all(started.map((c) => c.result))
  const cpu1 = cpuMs()
  const failed = results.find((r) => r.failures > 0)
  if (failed !== undefined) throw new Error(`a load client saw ${failed.failures} failures: ${failed.firstFailure}`)
  const acked = results.reduce((n, r) => n + r.acked, 0)
  const ms = Math.max(...results.map((r) => r.endedAt)) - Math.min(...results.map((r) => r.startedAt))
  return { rate: acked / (ms / 1000), acked, cpuPerEventUs: ((cpu1 - cpu0) * 1000) / acked }
}

/**
 * Redis `XADD` load on a fresh stream: `processes` client processes, each with `connections`
 * connections sending pipelines of `batch` XADDs (the journal line of each event, ~300 bytes),
 * `events` in all.
 */
export const redisLoad = (
  server: RedisServer,
  key: string,
  events: number,
  batch: number,
  processes: number,
  connections: number
): Promise<Load> =>
  runLoad(
    Array.from(
      { length: processes },
      () => ["xadd", [server.port, key, Math.ceil(events / processes), batch, connections]] as const
    ),
    server.cpuMs
  )

/** Loads a journal's lines into the stream `key` (ids 1..N); answers N. */
export const redisLoadJournal = async (server: RedisServer, key: string, dir: string): Promise<number> => {
  const [loaded] = await runClients<ReplayResult>([["xload", [server.port, key, dir]]])
  return loaded!.events
}

export interface Replay {
  readonly events: number
  readonly rate: number
  readonly cpuPerEventUs: number
}

/** `XREAD COUNT 10000` of the whole stream `key` (ids 1..events) from a client process. */
export const redisReplay = async (server: RedisServer, key: string, events: number): Promise<Replay> => {
  const cpu0 = server.cpuMs()
  const [r] = await runClients<ReplayResult>([["xread-replay", [server.port, key, events]]])
  const cpu1 = server.cpuMs()
  return {
    events: r!.events,
    rate: r!.events / ((r!.endedAt - r!.startedAt) / 1000),
    cpuPerEventUs: ((cpu1 - cpu0) * 1000) / r!.events
  }
}

/** `GET /api/v1/stream?since=0` until `caught_up` from a client process. */
export const sseReplay = async (service: ReplaySource): Promise<Replay> => {
  const cpu0 = service.cpuMs()
  const [r] = await runClients<ReplayResult>([["sse-replay", [service.port]]])
  const cpu1 = service.cpuMs()
  return {
    events: r!.events,
    rate: r!.events / ((r!.endedAt - r!.startedAt) / 1000),
    cpuPerEventUs: ((cpu1 - cpu0) * 1000) / r!.events
  }
}
