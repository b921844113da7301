/**
 * Durable appends to the PostgreSQL journal: events per second at batches of 1, 50 and 200, with
 * 1 and 3 writer processes, each figure next to the same append statement driven by a bare
 * script (one `pg` connection, no Effect, no committer) in the same run. A throwaway server
 * (`fsync=on`) is started from the machine's binaries, as the tests do.
 *
 *   npx tsx bench/pg-append.ts [--seconds N] [--rounds N]
 *
 * Each figure is the best of `--rounds` (default 2) windows of `--seconds` (default 5), the
 * journal and the bare script alternating.
 *
 * Every writer process appends to its own account and to one account all share (the hot one),
 * ~200-byte events, one batch in flight per process.
 */
import { spawn } from "node:child_process"
import * as Crypto from "node:crypto"
import * as Os from "node:os"
import { Effect } from "effect"
import * as Pg from "pg"
import type { AccountId } from "../src/Domain/Account.js"
import * as Postgres from "../src/Journal/Postgres.js"
import { appendStatement } from "../src/Journal/Postgres/Append.js"
import { Note } from "../test/support/Notes.js"
import { startPostgres } from "../test/support/Postgres.js"

interface ChildArgs {
  readonly mode: "journal" | "bare"
  readonly url: string
  readonly batch: number
  readonly seconds: number
  readonly index: number
}

const TEXT = "x".repeat(150)
const entry = (i: number) => ({ ts: new Date().toISOString(), event: { type: "note" as const, text: `${TEXT}${i}` } })

/** One writer: appends batches until the window closes, answers the events appended inside it. */
const child = async (args: ChildArgs): Promise<number> => {
  const accounts = [`own-${args.index}`, "hot"]
  // Ready once connected; the window opens when the parent says so (every writer ready).
  const waitForStart = () =>
    new Promise<number>((resolve) => {
      process.stdin.once("data", () => resolve(Date.now() + args.seconds * 1000))
      process.stdout.write("ready\n")
    })
  if (args.mode === "bare") {
    const client = new Pg.Client({ connectionString: args.url })
    await client.connect()
    const end = await waitForStart()
    let count = 0
    for (let round = 0; Date.now() < end; round++) {
      const account = accounts[round % 2]!
      const payloads = Array.from({ length: args.batch }, (_, i) => `,${JSON.stringify(entry(i)).slice(1, -1)}`)
      await client.query(appendStatement(Crypto.randomUUID()), [
        payloads.map(() => account),
        payloads,
        payloads.map(() => null),
        payloads.map(() => null)
      ])
      count += args.batch
    }
    await client.end()
    return count
  }
  return Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* Postgres.store({ url: args.url, maxConnections: 2 })
        const journals = yield* Effect.forEach(accounts, (a) => store.open(Note, a as AccountId))
        const end = yield* Effect.promise(waitForStart)
        let count = 0
        for (let round = 0; Date.now() < end; round++) {
          const batch = Array.from({ length: args.batch }, (_, i) => entry(i))
          yield* journals[round % 2]!.append(batch)
          count += args.batch
        }
        return count
      })
    )
  )
}

const runChildren = async (mode: ChildArgs["mode"], url: string, batch: number, processes: number, seconds: number) => {
  let ready = 0
  let go: () => void = () => undefined
  const allReady = new Promise<void>((resolve) => (go = resolve))
  const counts = Array.from(
    { length: processes },
    (_, index) =>
      new Promise<number>((resolve, reject) => {
        const args: ChildArgs = { mode, url, batch, seconds, index }
        const proc = spawn("node_modules/.bin/tsx", [import.meta.filename, "child", JSON.stringify(args)], {
          stdio: ["pipe", "pipe", "inherit"]
        })
        let out = ""
        proc.stdout.on("data", (d) => {
          out += d
          if (out === "ready\n" && ++ready === processes) go()
        })
        void allReady.then(() => proc.stdin.end("go\n"))
        proc.on("exit", (code) =>
          code === 0
            ? resolve(Number(out.replace("ready\n", "").trim()))
            : reject(new Error(`${mode} writer exited ${code}`))
        )
      })
  )
  const total = (await Promise.all(counts)).reduce((a, b) => a + b, 0)
  return total / seconds
}

const main = async () => {
  const secondsAt = process.argv.indexOf("--seconds")
  const seconds = secondsAt > 0 ? Number(process.argv[secondsAt + 1]) : 5
  const roundsAt = process.argv.indexOf("--rounds")
  const rounds = roundsAt > 0 ? Number(process.argv[roundsAt + 1]) : 2
  const server = await startPostgres()
  try {
    const rows: Array<[string, string, string, string]> = []
    let db = 0
    for (const processes of [1, 3]) {
      for (const batch of [1, 50, 200]) {
        // Alternated, best of `rounds` each: on a shared machine the load moves between runs.
        let journal = 0
        let bare = 0
        for (let round = 0; round < rounds; round++) {
          journal = Math.max(
            journal,
            await runChildren("journal", server.createDatabase(`j${++db}`), batch, processes, seconds)
          )
          const bareUrl = server.createDatabase(`b${++db}`)
          // The schema for the bare script, through a store.
          await Effect.runPromise(Effect.scoped(Postgres.store({ url: bareUrl })))
          bare = Math.max(bare, await runChildren("bare", bareUrl, batch, processes, seconds))
        }
        rows.push([
          `${processes} writer${processes > 1 ? "s" : ""}, batch ${batch}`,
          journal.toFixed(0),
          bare.toFixed(0),
          `${((journal / bare) * 100).toFixed(0)}%`
        ])
        console.error(rows[rows.length - 1]!.join("  "))
      }
    }
    console.log(
      `\nload average ${Os.loadavg()
        .map((l) => l.toFixed(1))
        .join(" ")} on ${Os.cpus().length} cores`
    )
    console.log("\n| writers, batch | journal ev/s | bare script ev/s | journal / bare |\n| --- | ---: | ---: | ---: |")
    for (const r of rows) console.log(`| ${r.join(" | ")} |`)
  } finally {
    server.destroy()
  }
}

if (process.argv[2] === "child") {
  child(JSON.parse(process.argv[3]!) as ChildArgs).then(
    (count) => process.stdout.write(`${count}\n`),
    (error) => {
      process.stderr.write(`${error}\n`)
      process.exit(1)
    }
  )
} else {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
