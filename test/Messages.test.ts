/**
 * What a user reads: the startup line (printed once the port is bound, with the port taken),
 * the demo's hint, a busy port, `--help` in a pipe, and `append` refusing bad stdin whole.
 * The command line runs in-process where it can, and as the real process where what is checked
 * is the process itself (its exit status, what reaches its stdout and stderr).
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Console, Effect, Exit, Fiber, Logger, Queue } from "effect"
import { execFile } from "node:child_process"
import * as Net from "node:net"
import * as Path from "node:path"
import { Readable } from "node:stream"
import { promisify } from "node:util"
import { projectRoot } from "../harness/ServerProcess.js"
import * as Cli from "../src/Cli.js"
import { start, status } from "./support/Server.js"
import { tempDir } from "./support/TempDir.js"

const execFileAsync = promisify(execFile)

/** Runs a command of the project to its end: its exit status and what it wrote. */
const runProcess = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  execFileAsync(process.execPath, [...args], {
    cwd: projectRoot,
    env: { ...process.env, ...env, FORCE_COLOR: "1" },
    timeout: 120_000
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code?: number; stdout: string; stderr: string }) => ({
      code: error.code ?? -1,
      stdout: error.stdout,
      stderr: error.stderr
    })
  )

/** A port some other process listens on, for as long as the scope lasts. */
const takenPort = Effect.acquireRelease(
  Effect.async<Net.Server>((resume) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map((server) => (server.address() as Net.AddressInfo).port))

const stackFrame = /^\s+at /m

/** The errors a command prints, kept. */
const keptErrors = Effect.map(Effect.console, (console) => {
  const errors: Array<string> = []
  const kept: Console.Console = {
    ...console,
    log: () => Effect.void,
    error: (...args) => Effect.sync(() => void errors.push(args.join(" ")))
  }
  return { errors, console: kept }
})

const event = (n: number) => JSON.stringify({ type: "session_deleted", session_id: `s${n}` })

describe("Messages", () => {
  it.scopedLive("serve_prints_its_startup_line_once_bound_with_the_port_taken_and_the_demo_names_it_too", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const logged = yield* Queue.unbounded<string>()
      const logger = Logger.make(({ message }) =>
        Queue.unsafeOffer(logged, (Array.isArray(message) ? message : [message]).map(String).join(" "))
      )
      const serving = yield* Cli.run([
        "node",
        "change-feed",
        "serve",
        "--demo",
        "--port",
        "0",
        "--dir",
        directory
      ]).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), Effect.fork)
      const startup = yield* Queue.take(logged)
      const url = /stream at (http:\/\/127\.0\.0\.1:(\d+))\/api\/v1\/stream/.exec(startup)
      assert.isNotNull(url, startup)
      assert.notStrictEqual(url![2], "0")
      assert.include(startup, `journals in ${directory}`)
      // Said once bound: the service answers at the address it names.
      const answer = yield* Effect.promise(() => fetch(`${url![1]}/api/v1/status`))
      assert.strictEqual(answer.status, 200)
      let demo = yield* Queue.take(logged)
      while (!demo.startsWith("demo:")) demo = yield* Queue.take(logged)
      assert.include(demo, `curl -N ${url![1]}/api/v1/stream`)
      yield* Fiber.interrupt(serving)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive(
    "a_busy_port_says_port_n_is_in_use_and_exits_1_for_the_service_and_the_command",
    () =>
      Effect.gen(function* () {
        const port = yield* takenPort
        const directory = yield* tempDir
        const env = { HOST: "127.0.0.1", PORT: String(port), FEED_DIR: directory }
        const [service, command] = yield* Effect.promise(() =>
          Promise.all([
            runProcess([Path.join("dist", "main.js")], env),
            runProcess([Path.join("bin", "change-feed.js"), "serve", "--dir", directory], env)
          ])
        )
        for (const ran of [service, command]) {
          assert.strictEqual(ran.code, 1, ran.stderr)
          assert.include(ran.stderr, `port ${port} is in use`)
          assert.include(ran.stderr, "set another PORT")
          assert.notMatch(ran.stderr, stackFrame)
        }
      }),
    { timeout: 240_000 }
  )

  it.live(
    "help_in_a_pipe_has_no_colour_codes",
    () =>
      Effect.gen(function* () {
        for (const args of [["--help"], ["serve", "--help"]]) {
          const ran = yield* Effect.promise(() => runProcess([Path.join("bin", "change-feed.js"), ...args]))
          assert.strictEqual(ran.code, 0, ran.stderr)
          assert.include(ran.stdout, "change-feed")
          assert.notInclude(ran.stdout, "\u001b[")
        }
      }),
    { timeout: 240_000 }
  )

  it.scopedLive("append_from_stdin_names_every_bad_line_and_appends_none_of_the_others", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const lines = Array.from({ length: 1000 }, (_, i) => event(i + 1))
      lines[699] = "{not json"
      lines[949] = JSON.stringify({ type: "no_such_event" })
      const { errors, console } = yield* keptErrors
      const exit = yield* Cli.run(["node", "change-feed", "append", "--url", server.url]).pipe(
        Effect.provideService(Cli.AppendInput, Readable.from([lines.join("\n") + "\n"])),
        Effect.withConsole(console),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.strictEqual(errors.filter((e) => e.startsWith("line ")).length, 2, errors.join("\n"))
      assert.match(errors.join("\n"), /^line 700: not JSON/m)
      assert.match(errors.join("\n"), /^line 950: .*no_such_event/m)
      assert.strictEqual((yield* status(server)).head_seq, 0)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scopedLive("append_refuses_a_stdin_larger_than_its_bound_in_many_lines_or_in_one_and_appends_nothing", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      /** `text` repeated until the input is past the bound, in chunks as a pipe delivers them. */
      const pastTheBound = (text: string) =>
        Readable.from(
          (function* () {
            const chunk = text.repeat(Math.ceil((1024 * 1024) / text.length))
            for (let sent = 0; sent <= Cli.maxAppendInputBytes; sent += chunk.length) yield chunk
          })()
        )
      const { console } = yield* keptErrors
      for (const input of [pastTheBound(event(1) + "\n"), pastTheBound("x")]) {
        const refused = yield* Cli.run(["node", "change-feed", "append", "--url", server.url]).pipe(
          Effect.provideService(Cli.AppendInput, input),
          Effect.withConsole(console),
          Effect.flip
        )
        assert.include(String((refused as { message?: unknown }).message), "MiB; nothing appended")
      }
      assert.strictEqual((yield* status(server)).head_seq, 0)
    }).pipe(Effect.provide(NodeContext.layer))
  )
})
