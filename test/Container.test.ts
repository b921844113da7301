/**
 * The image the Dockerfile builds, checked without a container engine: the Dockerfile itself
 * (its runtime stage runs `node` directly as PID 1, not through npm or a shell; the journal
 * directory is a volume; the service listens on every interface of the container, on the port
 * it exposes, as a user other than root; every file it copies gets past `.dockerignore`), and
 * that very command run the way a container runs it: as PID 1 of a new PID namespace, in the
 * image's environment, told to stop by SIGTERM from outside as `docker stop` does. It must
 * exit 0 by itself within `docker stop`'s grace period, the journal closed cleanly with what
 * it acknowledged, and the image's health check must tell it up from down.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { freePort, projectRoot, sleep } from "../harness/ServerProcess.js"

interface Instruction {
  readonly keyword: string
  readonly args: string
}

/**
 * The Dockerfile's instructions, stage by stage (each from its FROM), as Docker reads them:
 * comment lines dropped, continued lines joined.
 */
const parseDockerfile = (text: string): Array<Array<Instruction>> => {
  const stages: Array<Array<Instruction>> = []
  let pending = ""
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line)) continue
    pending += line.replace(/\\\s*$/, " ")
    if (/\\\s*$/.test(line)) continue
    const match = /^\s*(\w+)\s+(.*?)\s*$/.exec(pending)
    pending = ""
    if (match === null) continue
    const instruction = { keyword: match[1]!.toUpperCase(), args: match[2]! }
    if (instruction.keyword === "FROM") stages.push([])
    stages.at(-1)?.push(instruction)
  }
  return stages
}

/** An instruction's command in exec form (a JSON array); a shell form is refused, naming it. */
const execForm = (instruction: Instruction): Array<string> => {
  assert.match(instruction.args, /^\[/, `${instruction.keyword} ${instruction.args} is not in exec form`)
  return JSON.parse(instruction.args) as Array<string>
}

/** `ENV K=V K2="V 2"` as pairs (the `ENV K V` form is not used here, and refused). */
const envOf = (instruction: Instruction): Array<[string, string]> =>
  Array.from(instruction.args.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S+)|(\S+)/g), (match) => {
    assert.isUndefined(match[3], `ENV ${instruction.args}: write it as KEY=VALUE`)
    const value = match[2]!
    return [match[1]!, value.startsWith('"') ? (JSON.parse(value) as string) : value]
  })

const dockerfile = parseDockerfile(Fs.readFileSync(Path.join(projectRoot, "Dockerfile"), "utf8"))
/** The stage the image runs. */
const runtime = dockerfile.at(-1) ?? []
const all = (keyword: string) => runtime.filter((instruction) => instruction.keyword === keyword)
const last = (keyword: string) => all(keyword).at(-1)

const image = {
  command: execForm(last("CMD")!),
  workdir: last("WORKDIR")?.args,
  env: Object.fromEntries(all("ENV").flatMap(envOf)),
  volumes: all("VOLUME").flatMap((instruction) =>
    instruction.args.startsWith("[") ? (JSON.parse(instruction.args) as Array<string>) : instruction.args.split(/\s+/)
  ),
  ports: all("EXPOSE").flatMap((instruction) =>
    instruction.args.split(/\s+/).map((port) => port.replace(/\/tcp$/, ""))
  ),
  user: last("USER")?.args,
  healthcheck: (() => {
    const healthcheck = last("HEALTHCHECK")
    if (healthcheck === undefined) return undefined
    const command = /(?:^|\s)CMD\s+(.*)$/.exec(healthcheck.args)
    assert.isNotNull(command, `HEALTHCHECK ${healthcheck.args} has no CMD`)
    return execForm({ keyword: "HEALTHCHECK", args: command![1]! })
  })()
}

/** Whether this machine lets us make a PID namespace (root, or a kernel that allows it). */
const unshareArgs = ["--pid", "--fork", "--mount-proc", "--kill-child"]
const probe = spawnSync("unshare", [...unshareArgs, "true"], { encoding: "utf8" })
const canUnshare = probe.status === 0
const unshareProblem =
  `'unshare ${unshareArgs.join(" ")}' is not permitted here (${(probe.stderr ?? String(probe.error)).trim()}): ` +
  "it needs root or CAP_SYS_ADMIN (CI runs .ci/run as root); in a container, run it with --privileged"

const started = new Set<ChildProcess>()
afterEach(() => {
  for (const child of started) {
    try {
      // unshare runs the server with --kill-child: ending it ends the server.
      process.kill(-child.pid!, "SIGKILL")
    } catch {
      // gone
    }
  }
  started.clear()
})

/** `docker stop` sends SIGTERM, and SIGKILL this long after it (its default `--time`, 10 s). */
const STOP_GRACE_MS = 10_000

const commandLine = (pid: number): string =>
  Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ")

/** The pid, in our namespace, of the one child of `pid`, once it runs a program of its own. */
const execedChild = async (pid: number): Promise<number> => {
  for (;;) {
    const children = Fs.readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      Fs.readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number)
    )
    // Forked but not yet exec'd, the child still shows its parent's command.
    if (children.length === 1 && commandLine(children[0]!) !== commandLine(pid)) return children[0]!
    await sleep(20)
  }
}

/** The pids a process has, from ours to its own namespace's (`NSpid`). */
const namespacePids = (pid: number): Array<number> =>
  /^NSpid:\s+(.*)$/m
    .exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))![1]!
    .split(/\s+/)
    .map(Number)

/** Runs the image's health check in the image's environment: its exit status and its complaint. */
const healthcheck = (env: Record<string, string>) => {
  const [command, ...args] = image.healthcheck!
  const ran = spawnSync(command!, args, { cwd: projectRoot, env, encoding: "utf8", timeout: 120_000 })
  return { status: ran.status, stderr: ran.stderr }
}

describe("the container image", () => {
  it("runs_node_on_the_compiled_service_as_pid_1_with_the_journal_on_a_volume_on_every_interface_not_as_root", () => {
    for (const stage of dockerfile) assert.match(stage[0]!.args, /^node:20-bookworm-slim(\s|$)/)
    assert.deepStrictEqual(all("ENTRYPOINT"), [], "no entrypoint wraps the command")
    assert.deepStrictEqual(image.command, ["node", "dist/main.js"])
    assert.include(image.volumes, image.env.FEED_DIR)
    assert.strictEqual(image.env.HOST, "0.0.0.0")
    assert.include(image.ports, image.env.PORT)
    assert.isDefined(image.user)
    assert.notInclude(["root", "0", "0:0"], image.user)
    assert.isDefined(image.healthcheck, "the image has a health check")
    assert.strictEqual(image.healthcheck![0], "node")
  })

  it("copies_only_what_dockerignore_lets_through", () => {
    // `.dockerignore` is an allow list: everything excluded, then each path the build copies let back.
    const ignore = Fs.readFileSync(Path.join(projectRoot, ".dockerignore"), "utf8")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"))
    assert.strictEqual(ignore[0], "*")
    const copied = dockerfile
      .flat()
      .filter((instruction) => instruction.keyword === "COPY" && !instruction.args.startsWith("--from"))
      .flatMap((instruction) => instruction.args.split(/\s+/).slice(0, -1))
    assert.isNotEmpty(copied)
    for (const source of copied) {
      assert.include(ignore, `!${source}`, `${source} is copied but .dockerignore keeps it out`)
      assert.isTrue(Fs.existsSync(Path.join(projectRoot, source)), `${source} does not exist`)
    }
  })

  it.live.skipIf(!canUnshare && process.env.CI === undefined)(
    "sigterm_from_outside_stops_the_image_command_running_as_pid_1_cleanly_within_docker_stops_grace",
    () =>
      Effect.promise(async () => {
        assert.isTrue(canUnshare, unshareProblem)
        const directory = Fs.mkdtempSync(Path.join(Os.tmpdir(), "container-feed-"))
        try {
          const port = await freePort()
          // The image's environment (a container inherits nothing else), its volume here a temp directory.
          const env = {
            PATH: process.env.PATH ?? "/usr/bin:/bin",
            ...image.env,
            PORT: String(port),
            FEED_DIR: directory
          }
          // The image's WORKDIR is the project's root: `dist/` there is the build of these sources.
          assert.strictEqual(image.workdir, "/app")
          const unshare = spawn("unshare", [...unshareArgs, ...image.command], {
            cwd: projectRoot,
            env,
            stdio: ["ignore", "pipe", "pipe"],
            detached: true
          })
          started.add(unshare)
          let log = ""
          unshare.stdout!.on("data", (chunk) => (log += chunk))
          unshare.stderr!.on("data", (chunk) => (log += chunk))
          const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
            unshare.once("exit", (code, signal) => resolve({ code, signal }))
          )

          const server = await execedChild(unshare.pid!)
          assert.strictEqual(namespacePids(server).at(-1), 1, "the server is PID 1 of its namespace")
          assert.strictEqual(commandLine(server), image.command.join(" "))

          // Up once the image's own health check says so.
          let check = healthcheck(env)
          while (check.status !== 0) {
            assert.include(check.stderr, "unhealthy", log)
            await sleep(200)
            check = healthcheck(env)
          }
          const url = `http://127.0.0.1:${port}`
          const stream = await fetch(`${url}/api/v1/stream`)
          const reader = stream.body!.getReader()
          const appended = await fetch(`${url}/api/v1/events`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ event: { type: "session_created", session_id: "acked", title: "before stop" } })
          })
          assert.strictEqual(appended.status, 200, await appended.clone().text())
          // The open stream has delivered it: the server is mid-conversation when the signal comes.
          let received = ""
          while (!received.includes('"acked"')) {
            const { value, done } = await reader.read()
            assert.isFalse(done, "the stream ended before the stop")
            received += new TextDecoder().decode(value)
          }

          // As `docker stop`: SIGTERM from outside the namespace, SIGKILL if it still runs after the grace.
          process.kill(server, "SIGTERM")
          const killer = setTimeout(() => process.kill(server, "SIGKILL"), STOP_GRACE_MS)
          const exit = await exited
          clearTimeout(killer)
          started.delete(unshare)
          assert.deepStrictEqual(exit, { code: 0, signal: null }, `it did not exit 0 by itself:\n${log}`)
          // The open stream was ended, not left hanging.
          for (;;) if ((await reader.read()).done) break
          // The journal was closed cleanly (no OPEN marker left) with what it acknowledged.
          const files = Fs.readdirSync(directory)
          assert.notInclude(files, "OPEN")
          const journaled = files
            .filter((file) => file.startsWith("events-"))
            .map((file) => Fs.readFileSync(Path.join(directory, file), "utf8"))
            .join("")
          assert.include(journaled, '"session_id":"acked"')
          const down = healthcheck(env)
          assert.strictEqual(down.status, 1)
          assert.include(down.stderr, `unhealthy: GET http://127.0.0.1:${port}/api/v1/status failed`)
        } finally {
          Fs.rmSync(directory, { recursive: true, force: true })
        }
      }),
    300_000
  )
})
