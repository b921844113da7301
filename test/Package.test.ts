/**
 * The package as npm publishes it: `npm pack` (which builds), installed from its tarball into a
 * fresh project with nothing else, as a user would from the registry. Its files are the build,
 * the command and the README, not the sources or the tests; the library's types check in the
 * user's TypeScript; the library runs on plain Node without the project's dev dependencies (no
 * TypeScript loader); the command runs.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { projectRoot } from "../harness/ServerProcess.js"
import { copyOfProject } from "./support/BuiltCopy.js"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to its end (ten minutes at most): its exit status and what it wrote. */
const run = (command: string, args: ReadonlyArray<string>, cwd: string): Promise<Ran> =>
  new Promise((resolve) =>
    execFile(command, [...args], { cwd, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr })
    )
  )

const succeeded = (ran: Ran, what: string) =>
  assert.strictEqual(ran.code, 0, `${what} failed:\n${ran.stdout.slice(-4000)}\n${ran.stderr.slice(-4000)}`)

const made: Array<string> = []
const temporary = (prefix: string) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))
  made.push(dir)
  return dir
}
afterAll(() => {
  for (const dir of made) Fs.rmSync(dir, { recursive: true, force: true })
})

const ourPackage = JSON.parse(Fs.readFileSync(Path.join(projectRoot, "package.json"), "utf8")) as {
  readonly name: string
  readonly devDependencies: Record<string, string>
}

/** A user's TypeScript: the library's layer and tag, a domain type, the client; and a misuse. */
const consumerTs = `
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { Effect, Option, Stream } from "effect"
import { AgentEvent, ChangeFeed, Client } from "effect-change-feed"
import { layer } from "effect-change-feed/ChangeFeed"
import type { ChangeEvent } from "effect-change-feed/Domain/ChangeEvent"

const created: AgentEvent.AgentEvent = { type: "session_created", session_id: "s1", title: "hello" }
// @ts-expect-error: the catalog has no such event, which only precise types can tell
export const unknown: AgentEvent.AgentEvent = { type: "no_such_event" }

export const published: Effect.Effect<Array<ChangeEvent<AgentEvent.AgentEvent>>, unknown, never> = Effect.gen(
  function* () {
    const feed = yield* ChangeFeed.ChangeFeed
    const seq: Option.Option<number> = yield* feed.publish("s1", created)
    // @ts-expect-error: a seq is a number
    const wrong: Option.Option<string> = seq
    void wrong
    const read: Array<ChangeEvent<AgentEvent.AgentEvent>> = []
    yield* feed.read(0).pipe(Stream.runForEach((change) => Effect.sync(() => read.push(change))))
    return read
  }
).pipe(Effect.provide(layer({ directory: "./feed" })), Effect.provide(NodeContext.layer))

export const followed = Effect.gen(function* () {
  const client = yield* Client.FeedClient
  return yield* client.follow({ since: "0" }).pipe(Stream.take(1), Stream.runCollect)
}).pipe(Effect.provide(Client.layer({ baseUrl: "http://127.0.0.1:8787" })), Effect.provide(NodeHttpClient.layerUndici))
`

const consumerTsconfig = {
  compilerOptions: {
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    noEmit: true,
    // Third-party declarations are not ours to check (some lack types of their own dependencies).
    skipLibCheck: true,
    types: ["node"]
  },
  files: ["consumer.ts"]
}

/** A user's script on plain Node: opens a feed on the directory given, publishes, reads back. */
const consumerMjs = `
import { NodeContext } from "@effect/platform-node"
import { Chunk, Effect, Option, Stream } from "effect"
import { ChangeFeed } from "effect-change-feed"

const program = Effect.gen(function* () {
  const feed = yield* ChangeFeed.ChangeFeed
  const seq = yield* feed.publish("s1", { type: "session_created", session_id: "s1", title: "from the package" })
  const items = yield* feed.changes({ since: 0 }).pipe(Stream.take(1), Stream.runCollect)
  return { seq: Option.getOrNull(seq), items: Chunk.toArray(items) }
})
const result = await program.pipe(
  Effect.provide(ChangeFeed.layer({ directory: process.argv[2] })),
  Effect.provide(NodeContext.layer),
  Effect.runPromise
)
console.log(JSON.stringify(result))
`

describe("the npm package", () => {
  it.live(
    "npm_pack_installs_in_a_fresh_project_whose_typescript_checks_the_library_and_whose_node_runs_it",
    () =>
      Effect.promise(async () => {
        const project = copyOfProject("package-")
        made.push(project)
        const out = temporary("package-tgz-")
        const packed = await run("npm", ["pack", "--json", "--pack-destination", out], project)
        succeeded(packed, "npm pack")
        const [tarball] = JSON.parse(packed.stdout) as Array<{
          readonly filename: string
          readonly files: Array<{ readonly path: string }>
        }>
        const files = tarball!.files.map((file) => file.path)
        for (const expected of ["package.json", "README.md", "bin/change-feed.js", "dist/index.js", "dist/index.d.ts"])
          assert.include(files, expected)
        assert.deepStrictEqual(
          files.filter((file) => !/^(dist|bin)\//.test(file) && file !== "package.json" && file !== "README.md"),
          []
        )
        assert.deepStrictEqual(
          files.filter((file) => /\.test\.|tsbuildinfo|(^|\/)main\.ts$/.test(file)),
          []
        )

        const user = temporary("package-user-")
        Fs.writeFileSync(
          Path.join(user, "package.json"),
          JSON.stringify({ name: "user-project", private: true, type: "module" })
        )
        // From npm's cache where it can (CI's `npm ci` filled it), else the registry.
        const installed = await run(
          "npm",
          [
            "install",
            "--prefer-offline",
            "--no-audit",
            "--no-fund",
            Path.join(out, tarball!.filename),
            `@types/node@${ourPackage.devDependencies["@types/node"]}`
          ],
          user
        )
        succeeded(installed, "npm install of the tarball")
        // What runs below runs without the project's dev dependencies: no tsx, no TypeScript.
        for (const devOnly of ["tsx", "typescript", "vitest"])
          assert.isFalse(Fs.existsSync(Path.join(user, "node_modules", devOnly)), `${devOnly} was installed`)

        Fs.writeFileSync(Path.join(user, "consumer.ts"), consumerTs)
        Fs.writeFileSync(Path.join(user, "tsconfig.json"), JSON.stringify(consumerTsconfig, null, 2))
        const tsc = Path.join(projectRoot, "node_modules", "typescript", "bin", "tsc")
        succeeded(await run(process.execPath, [tsc, "-p", "."], user), "tsc on the user's TypeScript")

        Fs.writeFileSync(Path.join(user, "consumer.mjs"), consumerMjs)
        const directory = Path.join(user, "feed")
        const ran = await run(process.execPath, ["consumer.mjs", directory], user)
        succeeded(ran, "node consumer.mjs")
        const result = JSON.parse(ran.stdout) as {
          seq: number | null
          items: Array<{ _tag: string; change: { seq: number; session_id: string; event: { title: string } } }>
        }
        assert.strictEqual(result.seq, 1)
        assert.strictEqual(result.items[0]?._tag, "Change")
        assert.strictEqual(result.items[0]?.change.seq, 1)
        assert.strictEqual(result.items[0]?.change.event.title, "from the package")
        assert.isTrue(
          Fs.readdirSync(directory).some((file) => file.startsWith("events-")),
          "the event is in a journal segment"
        )

        const command = await run(process.execPath, [Path.join("node_modules", ".bin", "change-feed"), "--help"], user)
        succeeded(command, "change-feed --help")
        assert.include(command.stdout, "change-feed")
      }),
    1_200_000
  )
})
