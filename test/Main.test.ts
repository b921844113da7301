/**
 * The ways the service is started, as real processes on a copy of the project (sources,
 * package files, a link to `node_modules`: what a fresh clone has after `npm ci`): the
 * production command `node dist/main.js` after `npm run build`, and `npm start`. Signalled,
 * the server shuts down cleanly: it exits 0, frees its port and the journal's lock (a new
 * server starts on the same directory and port), and what it acknowledged is there after the
 * restart. The command runs the build only, and refuses one older than the sources beside it.
 */
import { afterAll, afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { freePort, sleep } from "../harness/ServerProcess.js"
import { builtCopy } from "./support/BuiltCopy.js"

/** A copy of the project as a fresh clone has it, built once with `npm run build`. */
let built: Promise<string> | undefined
const app = () => (built ??= builtCopy("start-path-"))
afterAll(async () => {
  if (built !== undefined) Fs.rmSync(await built, { recursive: true, force: true })
})

interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A started service: its process (the one a supervisor would signal), its URL, and its exit. */
interface Service {
  readonly pid: number
  readonly url: string
  readonly exited: Promise<Exit>
  readonly log: () => string
}

const launched = new Set<Service>()
// Never leave a process behind, whatever way a test ends: each service has a process group of
// its own, which also holds whatever it started (a server that outlived its parent included).
afterEach(() => {
  for (const service of launched) {
    try {
      process.kill(-service.pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  launched.clear()
})

/**
 * Starts `command` in `dir` with the service's configuration in its environment, in a process
 * group of its own (as a terminal's foreground job has), and waits until it answers.
 */
const launch = async (
  dir: string,
  command: string,
  args: ReadonlyArray<string>,
  where: { readonly directory: string; readonly port: number }
): Promise<Service> => {
  const logFile = `${where.directory}.log`
  const log = Fs.openSync(logFile, "a")
  const child = spawn(command, args, {
    cwd: dir,
    env: { ...process.env, HOST: "127.0.0.1", PORT: String(where.port), FEED_DIR: where.directory },
    stdio: ["ignore", log, log],
    detached: true
  })
  Fs.closeSync(log)
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })))
  const service: Service = {
    pid: child.pid!,
    url: `http://127.0.0.1:${where.port}`,
    exited,
    log: () => Fs.readFileSync(logFile, "utf8").slice(-4000)
  }
  launched.add(service)
  let ended: Exit | undefined
  void exited.then((exit) => (ended = exit))
  const deadline = Date.now() + 240_000
  while (true) {
    if (ended !== undefined)
      throw new Error(`${command} ${args.join(" ")} exited before it answered:\n${service.log()}`)
    if (Date.now() > deadline) throw new Error(`${command} ${args.join(" ")} did not answer:\n${service.log()}`)
    try {
      const response = await fetch(`${service.url}/api/v1/status`, { signal: AbortSignal.timeout(1000) })
      if (response.status === 200) return service
    } catch {
      // not up yet
    }
    await sleep(50)
  }
}

/** Waits for the process to exit, for 60 s at most. */
const exitOf = async (service: Service): Promise<Exit> => {
  const exit = await Promise.race([service.exited, sleep(60_000).then(() => undefined)])
  if (exit === undefined) throw new Error(`pid ${service.pid} still runs 60 s after the signal:\n${service.log()}`)
  launched.delete(service)
  return exit
}

const production = (dir: string, where: { readonly directory: string; readonly port: number }) =>
  launch(dir, process.execPath, [Path.join("dist", "main.js")], where)

/** POSTs one event and answers its seq. */
const append = async (url: string, sessionId: string): Promise<number> => {
  const response = await fetch(`${url}/api/v1/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ event: { type: "session_created", session_id: sessionId, title: "before the signal" } })
  })
  assert.strictEqual(response.status, 200, await response.clone().text())
  return ((await response.json()) as { seqs: Array<number> }).seqs[0]!
}

/** The journaled events' session ids, read back over HTTP. */
const sessions = async (url: string): Promise<Array<string | undefined>> => {
  const response = await fetch(`${url}/api/v1/events?since=0`)
  const page = (await response.json()) as { events: Array<{ session_id?: string }> }
  return page.events.map((event) => event.session_id)
}

/** The pids of a process's children (Linux). */
const childrenOf = (pid: number): Array<number> =>
  Fs.readdirSync(`/proc/${pid}/task`).flatMap((task) =>
    Fs.readFileSync(`/proc/${pid}/task/${task}/children`, "utf8")
      .split(" ")
      .filter((text) => text !== "")
      .map(Number)
  )

const commandLine = (pid: number): string =>
  Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim()

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Waits until `pid` is gone, for 60 s at most. */
const gone = async (pid: number, label: string) => {
  const deadline = Date.now() + 60_000
  while (isAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`${label} (pid ${pid}) still runs 60 s after the signal`)
    await sleep(20)
  }
}

/**
 * A new server on the same directory and port (it cannot start while the old one still holds
 * the port or the lock): answers what it finds journaled, and stops it.
 */
const restartAndRead = async (dir: string, where: { readonly directory: string; readonly port: number }) => {
  const server = await production(dir, where)
  const found = await sessions(server.url)
  process.kill(server.pid, "SIGTERM")
  assert.deepStrictEqual(await exitOf(server), { code: 0, signal: null }, server.log())
  return found
}

/** A journal directory (inside the copy, removed with it) and a free port. */
const place = async (dir: string) => ({
  directory: Fs.mkdtempSync(Path.join(dir, "feed-")),
  port: await freePort()
})

/** Sets the modification time of every file under `directory` to `time`. */
const setTimes = (directory: string, time: Date) => {
  for (const entry of Fs.readdirSync(directory, { recursive: true, encoding: "utf8" })) {
    Fs.utimesSync(Path.join(directory, entry), time, time)
  }
}

/** Runs `bin/change-feed.js --help` in the copy: its exit status and what it wrote to stderr. */
const help = (dir: string) => {
  const ran = spawnSync(process.execPath, [Path.join("bin", "change-feed.js"), "--help"], {
    cwd: dir,
    encoding: "utf8",
    timeout: 120_000
  })
  return { status: ran.status, stderr: ran.stderr }
}

describe("starting the service", () => {
  it.live(
    "sigterm_to_the_production_server_shuts_it_down_cleanly_frees_its_port_and_lock_and_keeps_what_it_acknowledged",
    () =>
      Effect.promise(async () => {
        const dir = await app()
        const where = await place(dir)
        const server = await production(dir, where)
        assert.strictEqual(await append(server.url, "acked"), 1)
        process.kill(server.pid, "SIGTERM")
        assert.deepStrictEqual(await exitOf(server), { code: 0, signal: null }, server.log())
        assert.deepStrictEqual(await restartAndRead(dir, where), ["acked"])
      }),
    300_000
  )

  it.live(
    "sigterm_to_npm_start_reaches_the_server_which_is_npms_own_child_and_stops_it_cleanly",
    () =>
      Effect.promise(async () => {
        const dir = await app()
        const where = await place(dir)
        const npm = await launch(dir, "npm", ["start"], where)
        // No shell or loader in between: the process npm signals is the server.
        const children = childrenOf(npm.pid)
        assert.strictEqual(children.length, 1)
        const server = children[0]!
        assert.strictEqual(commandLine(server), "node dist/main.js")
        assert.strictEqual(await append(npm.url, "acked"), 1)

        process.kill(npm.pid, "SIGTERM")
        assert.deepStrictEqual(await exitOf(npm), { code: 0, signal: null }, npm.log())
        await gone(server, "the server")
        assert.deepStrictEqual(await restartAndRead(dir, where), ["acked"])
      }),
    300_000
  )

  it.live(
    "ctrl_c_to_npm_start_which_signals_npm_and_the_server_together_still_shuts_down_cleanly",
    () =>
      Effect.promise(async () => {
        const dir = await app()
        const where = await place(dir)
        const npm = await launch(dir, "npm", ["start"], where)
        const [server] = childrenOf(npm.pid)
        assert.strictEqual(await append(npm.url, "acked"), 1)

        // Ctrl-C signals the whole group: the server gets SIGINT from the terminal and again from npm.
        process.kill(-npm.pid, "SIGINT")
        assert.deepStrictEqual(await exitOf(npm), { code: 0, signal: null }, npm.log())
        await gone(server!, "the server")
        assert.notInclude(npm.log(), "stopping now", "the repeated signal did not cut the shutdown short")
        assert.deepStrictEqual(await restartAndRead(dir, where), ["acked"])
      }),
    300_000
  )

  it.live(
    "the_command_in_a_clone_refuses_a_build_older_than_the_sources_and_runs_once_rebuilt",
    () =>
      Effect.promise(async () => {
        const dir = await app()
        assert.strictEqual(help(dir).status, 0, help(dir).stderr)
        // A build that predates the sources: as after a pull, or an edit since the last build.
        setTimes(Path.join(dir, "dist"), new Date(Date.now() - 3_600_000))
        const stale = help(dir)
        assert.strictEqual(stale.status, 1)
        assert.include(stale.stderr, "is older than")
        assert.include(stale.stderr, "run 'npm run build'")
        // A build with nothing to rewrite still makes the build current.
        spawnSync("npm", ["run", "-s", "build"], { cwd: dir })
        assert.strictEqual(help(dir).status, 0, help(dir).stderr)
      }),
    300_000
  )
})
