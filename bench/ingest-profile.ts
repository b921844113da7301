/**
 * HTTP ingest under load, for profiling the append path: the built server (`node dist/main.js`,
 * `npm run build` first) in its own process with `FEED_FSYNC=always`, and client processes that
 * each POST 500-event batches (pre-encoded bodies, one request in flight per client, keep-alive)
 * to `/api/v1/accounts/{account}/events`. Prints acked events/s and the server's CPU time per
 * event (user + system, from /proc, over the measured window only). With `--redis`, the same
 * events through Redis `XADD` with `appendfsync always`, pipelined by a plain RESP client per
 * process (pre-encoded commands, replies counted, not decoded), measured the same way.
 *
 *   npx tsx bench/ingest-profile.ts [--events 200000] [--clients 4] [--batch 500] [--redis] [--prof DIR]
 *       [--server dist/main.js]
 *
 * `--prof DIR` runs the server with `--cpu-prof --cpu-prof-dir DIR` (the profile is written when
 * it exits).
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Net from "node:net"
import { fileURLToPath } from "node:url"
import { freePort, listening, sleep } from "./common.js"

const SELF = fileURLToPath(import.meta.url)
const ROOT = Path.resolve(Path.dirname(SELF), "..")
const TS = "2026-11-29T17:00:00.000Z"

const arg = (name: string, fallback: string): string => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1]! : fallback
}
const flag = (name: string) => process.argv.includes(`--${name}`)

const content = (i: number) => `The quick brown fox jumps over the lazy dog #${i} `.padEnd(250, ".").slice(0, 250)
const sessionOf = (i: number) => `sess-${String(i % 64).padStart(4, "0")}`
const event = (i: number) => ({
  type: "message_appended",
  session_id: sessionOf(i),
  message_id: `m${i}`,
  role: "assistant",
  content: content(i)
})

/** User and system CPU of a process, in microseconds (clock ticks of 10 ms). */
const cpuMicros = (pid: number): { readonly user: number; readonly system: number } => {
  const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
  return { user: Number(fields[11]) * (1e6 / 100), system: Number(fields[12]) * (1e6 / 100) }
}

const waitForPort = async (port: number) => {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    if (await listening(port)) return
    await sleep(100)
  }
  throw new Error(`nothing listens on ${port}`)
}

// ---- clients (child processes) ----------------------------------------------------------------

interface ClientResult {
  readonly events: number
  readonly ms: number
}

/** POSTs `batches` bodies of `batch` events, one at a time, on one keep-alive connection. */
const httpClient = async (port: number, client: number, batches: number, batch: number): Promise<ClientResult> => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
  const bodies: Array<Buffer> = []
  for (let b = 0; b < 8; b++) {
    const events = []
    for (let k = 0; k < batch; k++) {
      const i = (client * 8 + b) * batch + k
      events.push({ session_id: sessionOf(i), event: event(i) })
    }
    bodies.push(Buffer.from(JSON.stringify({ events })))
  }
  const post = (body: Buffer) =>
    new Promise<number>((resolve, reject) => {
      const request = Http.request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/api/v1/accounts/bench/events",
          agent,
          headers: { "content-type": "application/json", "content-length": body.length }
        },
        (response) => {
          const chunks: Array<Buffer> = []
          response.on("data", (c: Buffer) => chunks.push(c))
          response.on("end", () => {
            if (response.statusCode !== 200) reject(new Error(`${response.statusCode}: ${Buffer.concat(chunks)}`))
            else resolve(batch)
          })
        }
      )
      request.on("error", reject)
      request.end(body)
    })
  const t0 = performance.now()
  let events = 0
  for (let b = 0; b < batches; b++) events += await post(bodies[b % bodies.length]!)
  agent.destroy()
  return { events, ms: performance.now() - t0 }
}

const resp = (...args: Array<string>) => {
  let out = `*${args.length}\r\n`
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return out
}

/** Pipelines `batch` XADDs per round trip, `batches` times; replies are counted by their line ends. */
const redisClient = async (port: number, client: number, batches: number, batch: number): Promise<ClientResult> => {
  const commands: Array<Buffer> = []
  for (let b = 0; b < 8; b++) {
    let text = ""
    for (let k = 0; k < batch; k++) {
      const i = (client * 8 + b) * batch + k
      text += resp(
        "XADD",
        "bench",
        "*",
        "d",
        JSON.stringify({ seq: i + 1, ts: TS, session_id: sessionOf(i), event: event(i) })
      )
    }
    commands.push(Buffer.from(text))
  }
  const socket = Net.connect(port, "127.0.0.1")
  await new Promise((resolve) => socket.once("connect", resolve))
  let waiting: (() => void) | undefined
  let lineEnds = 0
  socket.on("data", (chunk: Buffer) => {
    // A bulk-string reply (the new id) is two CRLF-terminated lines; an error would be one.
    if (chunk[0] === 0x2d /* - */) throw new Error(`redis: ${chunk.toString()}`)
    for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) lineEnds++
    if (lineEnds >= 2 * batch && waiting !== undefined) {
      lineEnds -= 2 * batch
      const w = waiting
      waiting = undefined
      w()
    }
  })
  const t0 = performance.now()
  for (let b = 0; b < batches; b++) {
    await new Promise<void>((resolve) => {
      waiting = resolve
      socket.write(commands[b % commands.length]!)
    })
  }
  socket.destroy()
  return { events: batches * batch, ms: performance.now() - t0 }
}

// ---- the run --------------------------------------------------------------------------------

const runClients = (kind: "http" | "redis", port: number, clients: number, batches: number, batch: number) =>
  Promise.all(
    Array.from(
      { length: clients },
      (_, c) =>
        new Promise<ClientResult>((resolve, reject) => {
          const child = ChildProcess.fork(SELF, [
            "client",
            kind,
            String(port),
            String(c),
            String(batches),
            String(batch)
          ])
          child.once("message", (m) => resolve(m as ClientResult))
          child.once("exit", (code) => (code === 0 ? undefined : reject(new Error(`client exited with ${code}`))))
        })
    )
  )

interface Figure {
  readonly rate: number
  /** Server CPU per event, user + system, in microseconds. */
  readonly cpuPerEvent: number
  readonly userPerEvent: number
}

const describe = (f: Figure) =>
  `${Math.round(f.rate)} ev/s, server CPU ${f.cpuPerEvent.toFixed(2)} us/event (user ${f.userPerEvent.toFixed(2)})`

/** Warm-up round, then the measured round: events/s acked and server CPU us per event. */
const measure = async (
  kind: "http" | "redis",
  pid: number,
  port: number,
  clients: number,
  events: number,
  batch: number
): Promise<Figure> => {
  const perClient = Math.max(1, Math.round(events / clients / batch))
  await runClients(kind, port, clients, Math.max(4, Math.round(perClient / 5)), batch)
  const cpu0 = cpuMicros(pid)
  const t0 = performance.now()
  const results = await runClients(kind, port, clients, perClient, batch)
  const ms = performance.now() - t0
  const cpu = cpuMicros(pid)
  const total = results.reduce((n, r) => n + r.events, 0)
  const user = cpu.user - cpu0.user
  return {
    rate: total / (ms / 1000),
    cpuPerEvent: (user + cpu.system - cpu0.system) / total,
    userPerEvent: user / total
  }
}

const stop = (child: ChildProcess.ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

const main = async () => {
  const events = Number(arg("events", "200000"))
  const clients = Number(arg("clients", "4"))
  const batch = Number(arg("batch", "500"))
  const prof = process.argv.includes("--prof") ? Path.resolve(arg("prof", "prof")) : undefined
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "ingest-profile-"))
  try {
    const port = await freePort()
    const server = ChildProcess.spawn(
      process.execPath,
      [
        ...(prof === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", prof]),
        Path.resolve(arg("server", Path.join(ROOT, "dist/main.js")))
      ],
      {
        env: { ...process.env, PORT: String(port), FEED_DIR: Path.join(dir, "feed"), FEED_FSYNC: "always" },
        stdio: ["ignore", "ignore", "inherit"]
      }
    )
    // Stopped whatever happens: a client's failure (a batch over the server's limit) must not leave it running.
    const ours = await waitForPort(port)
      .then(() => measure("http", server.pid!, port, clients, events, batch))
      .finally(() => stop(server))
    console.log(`ours  HTTP POST ${batch}/batch, ${clients} clients, fsync always: ${describe(ours)}`)
    if (flag("redis")) {
      const redisPort = await freePort()
      const redis = ChildProcess.spawn(
        "redis-server",
        ["--port", String(redisPort), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes"]
          .concat(["--appendfsync", "always", "--auto-aof-rewrite-percentage", "0", "--logfile", ""])
          .concat(["--loglevel", "warning"]),
        { stdio: ["ignore", "ignore", "inherit"] }
      )
      const theirs = await waitForPort(redisPort)
        .then(() => measure("redis", redis.pid!, redisPort, clients, events, batch))
        .finally(() => stop(redis))
      console.log(
        `redis XADD pipelined ${batch}, ${clients} clients, appendfsync always: ${describe(theirs)}; ` +
          `ours/redis ${(ours.rate / theirs.rate).toFixed(2)}x`
      )
    }
  } finally {
    Fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === "client") {
  const [kind, port, client, batches, batch] = process.argv.slice(3)
  const run = kind === "redis" ? redisClient : httpClient
  run(Number(port), Number(client), Number(batches), Number(batch)).then(
    (result) => process.send!(result, () => process.exit(0)),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
} else {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
