/**
 * The real service as a child process, driven from the outside like any deployment: started
 * from the environment (`PORT`, `FEED_DIR`, `FEED_FSYNC`, ...), up once `GET /api/v1/status`
 * answers, killed with a signal, started again on the same directory and port.
 *
 * Two ways to run the same `src/main.ts`: `tsx` (`node --import tsx src/main.ts`, what
 * `npm start` does) and `bundle` (the same sources bundled once by esbuild, which tsx ships
 * with, and run by plain `node`): identical code, but a restart takes a fraction of the time,
 * which is what keeps the crash test in the suite short.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { feedPath } from "../src/Api/Routes.js"

export type Launcher = "tsx" | "bundle"
export type FsyncMode = "always" | "interval" | "never"

export const projectRoot = fileURLToPath(new URL("..", import.meta.url))

export interface ServerCommand {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly cwd: string
}

/**
 * The command that runs `src/main.ts`, on a snapshot of the sources taken now, so that every
 * restart of a run runs the same code even while the working tree changes. For `tsx`, `src/`
 * is copied to `<workDir>/app` (next to the project's `node_modules`, linked); for `bundle`, it
 * is bundled to `<workDir>/server.mjs` (esbuild is tsx's own dependency: nothing beyond `npm ci`).
 */
export const serverCommand = async (launcher: Launcher, workDir: string): Promise<ServerCommand> => {
  if (launcher === "tsx") {
    const app = Path.join(workDir, "app")
    Fs.mkdirSync(app, { recursive: true })
    Fs.cpSync(Path.join(projectRoot, "src"), Path.join(app, "src"), { recursive: true })
    for (const file of ["package.json", "tsconfig.json"])
      Fs.copyFileSync(Path.join(projectRoot, file), Path.join(app, file))
    Fs.symlinkSync(Path.join(projectRoot, "node_modules"), Path.join(app, "node_modules"), "dir")
    return { command: process.execPath, args: ["--import", "tsx", "src/main.ts"], cwd: app }
  }
  const esbuild = await import("esbuild")
  const outfile = Path.join(workDir, "server.mjs")
  await esbuild.build({
    entryPoints: [Path.join(projectRoot, "src/main.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    logLevel: "error",
    // Some dependencies `require` Node's built-ins; an ES module bundle has no `require` of its own.
    banner: {
      js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);"
    }
  })
  return { command: process.execPath, args: [outfile], cwd: workDir }
}

/** A TCP port on 127.0.0.1 that is free right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export interface ServerProcessOptions {
  readonly command: ServerCommand
  readonly directory: string
  readonly port: number
  readonly fsync: FsyncMode
  readonly segmentBytes?: number | undefined
  readonly retainSegments?: number | undefined
  /** Where the server's stdout and stderr go (appended, every generation). */
  readonly logFile: string
  /** How long a start may take before it counts as failed (default 120 s: a loaded machine is slow). */
  readonly startupTimeoutMs?: number | undefined
  /** More environment, e.g. `FEED_DATABASE_URL` for a replica on PostgreSQL. */
  readonly env?: Readonly<Record<string, string>> | undefined
}

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** The status fields the harness looks at. */
export interface ServerStatus {
  readonly head_seq: number
  readonly oldest_seq: number
  readonly epoch: string
  readonly segments: number
  readonly degraded: boolean
  readonly subscribers: number
}

const running = new Set<ChildProcess>()
// Never leave a server behind, whatever way the harness itself ends.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})

/** One server process at a time on a directory and port: `start`, `kill`, `start` again. */
export class ServerProcess {
  private child: ChildProcess | undefined
  private exited: Promise<Exited> | undefined
  /** How many times the server was started. */
  generation = 0
  readonly url: string

  constructor(readonly options: ServerProcessOptions) {
    this.url = `http://127.0.0.1:${options.port}`
  }

  get pid(): number | undefined {
    return this.child?.pid
  }

  get isRunning(): boolean {
    return this.child !== undefined
  }

  /** Starts the server and waits until it answers; answers its status and how long the start took. */
  async start(): Promise<{ readonly status: ServerStatus; readonly startupMs: number }> {
    if (this.child !== undefined) throw new Error("the server is already running")
    const started = Date.now()
    const log = Fs.openSync(this.options.logFile, "a")
    this.generation++
    Fs.writeSync(log, `\n===== generation ${this.generation} (${new Date().toISOString()}) =====\n`)
    const child = spawn(this.options.command.command, [...this.options.command.args], {
      cwd: this.options.command.cwd,
      env: {
        ...process.env,
        HOST: "127.0.0.1",
        PORT: String(this.options.port),
        FEED_DIR: this.options.directory,
        FEED_FSYNC: this.options.fsync,
        FEED_SEGMENT_BYTES: String(this.options.segmentBytes ?? 65536),
        FEED_RETAIN_SEGMENTS: String(this.options.retainSegments ?? 64),
        ...this.options.env
      },
      stdio: ["ignore", log, log]
    })
    Fs.closeSync(log)
    running.add(child)
    this.child = child
    this.exited = new Promise<Exited>((resolve) =>
      child.once("exit", (code, signal) => {
        running.delete(child)
        resolve({ code, signal })
      })
    )
    let gone: Exited | undefined
    void this.exited.then((exit) => (gone = exit))
    const deadline = started + (this.options.startupTimeoutMs ?? 120_000)
    while (true) {
      if (gone !== undefined) {
        this.child = undefined
        throw new Error(
          `the server exited during startup (code ${gone.code}, signal ${gone.signal}):\n${this.logTail()}`
        )
      }
      const status = await this.status(1_000)
      if (status !== undefined) return { status, startupMs: Date.now() - started }
      if (Date.now() > deadline) {
        await this.kill("SIGKILL")
        throw new Error(
          `the server did not answer within ${this.options.startupTimeoutMs ?? 120_000} ms:\n${this.logTail()}`
        )
      }
      await sleep(20)
    }
  }

  /** `GET /api/v1/status`, or `undefined` when the server does not answer in time. */
  async status(timeoutMs = 10_000): Promise<ServerStatus | undefined> {
    try {
      const response = await fetch(`${this.url}${feedPath("status")}`, { signal: AbortSignal.timeout(timeoutMs) })
      if (response.status !== 200) return undefined
      return (await response.json()) as ServerStatus
    } catch {
      return undefined
    }
  }

  /** Sends `signal` and waits for the process to exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL", timeoutMs = 30_000): Promise<Exited> {
    const child = this.child
    const exited = this.exited
    if (child === undefined || exited === undefined) throw new Error("the server is not running")
    child.kill(signal)
    const result = await Promise.race([exited, sleep(timeoutMs).then(() => undefined)])
    if (result === undefined) {
      child.kill("SIGKILL")
      const forced = await exited
      this.child = undefined
      throw new Error(
        `the server did not exit within ${timeoutMs} ms of ${signal} (killed: ${forced.signal}):\n${this.logTail()}`
      )
    }
    this.child = undefined
    return result
  }

  /** The end of the server's log, for error messages. */
  logTail(bytes = 4000): string {
    try {
      const text = Fs.readFileSync(this.options.logFile, "utf8")
      return text.slice(-bytes)
    } catch {
      return "(no log)"
    }
  }
}
