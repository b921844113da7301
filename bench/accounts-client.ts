/**
 * The clients of section `accounts`, each run by `accounts.ts` as a Node process of its own, so
 * that no client shares a process (or an event loop) with the server it measures. Plain
 * `node:http` with keep-alive connections and pre-encoded bodies: the client should cost less
 * than the server it measures.
 *
 * - `ingest <port> <prefix> <accounts> <offset> <inFlight> <batch>`: prints `ready`, waits for
 *   a line `{"from":<epoch ms>,"to":<epoch ms>}` on stdin, then keeps `inFlight` POSTs of
 *   `batch` events in flight, round-robin over the accounts `<prefix>0 ..` from `offset`, until
 *   `to`; counts the events acknowledged (and the request latencies) between `from` and `to`.
 * - `raw <dir> <files> <inFlight> <batch>`: the same protocol and load, straight to files with
 *   no HTTP and no feed: per file, the batches waiting are written together and fsynced (group
 *   commit), through `fs.promises` on libuv's thread pool as the service's journal does.
 * - `cold <port> <prefix> <count> <warm> <unmeasured>`: one request at a time: the first POST to
 *   `<prefix><i>` (never opened), then the same POST to the account `warm` (open), `count` times
 *   after `unmeasured` rounds that warm the server's code; answers both sets of latencies.
 * - `open <port> <prefix> <from> <to> <concurrency>`: one POST of one event to each account
 *   `<prefix><from> .. <prefix><to - 1>`, `concurrency` at a time.
 *
 * Each prints one JSON line with its result last.
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import * as Readline from "node:readline"
import { durableEvent, now, sessionOf } from "./support.js"

/** What `ingest` and `raw` measured between `from` and `to`. */
export interface LoadResult {
  /** Events acknowledged (durable) between `from` and `to`. */
  readonly acked: number
  /** Requests that completed between `from` and `to`. */
  readonly requests: number
  /** Answers other than 200, by status (`error` for a failed connection), whenever they came. */
  readonly failures: Record<string, number>
  /** Latencies of the requests completed in the window: `[ms, how many]`, ms to 0.01. */
  readonly latencies: Array<readonly [number, number]>
  /** How long after `from` the client got the go (0 when it had it before). */
  readonly lateMs: number
  /** This client's own CPU time (user + system) from `from` to `to`, ms. */
  readonly cpuMs: number
}

export interface ColdResult {
  readonly cold: Array<number>
  readonly warm: Array<number>
  readonly failures: Record<string, number>
}

export interface OpenResult {
  readonly opened: number
  readonly ms: number
  readonly failures: Record<string, number>
}

/** A request body of `count` ~300-byte events, encoded once and sent as often as needed. */
const eventsBody = (count: number): Buffer =>
  Buffer.from(
    JSON.stringify({
      events: Array.from({ length: count }, (_, i) => ({ session_id: sessionOf(i), event: durableEvent(i) }))
    })
  )

interface Answer {
  readonly status: number
  readonly text: string
}

const post = (agent: Http.Agent, port: number, path: string, body: Buffer): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const request = Http.request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": body.length }
      },
      (response) => {
        let text = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (text += chunk))
        response.once("end", () => resolve({ status: response.statusCode ?? 0, text }))
        response.once("error", reject)
      }
    )
    request.once("error", reject)
    request.end(body)
  })

const eventsPath = (account: string) => `/api/v1/accounts/${account}/events`

/** Events the answer acknowledges, or the failure to count it under. */
const outcome = (answer: Answer | Error, expected: number): number | string => {
  if (answer instanceof Error) return "error"
  if (answer.status !== 200) return String(answer.status)
  const seqs = (JSON.parse(answer.text) as { seqs?: Array<number> }).seqs
  return seqs?.length === expected ? expected : "short ack"
}

const tryPost = (agent: Http.Agent, port: number, path: string, body: Buffer): Promise<Answer | Error> =>
  post(agent, port, path, body).catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))))

const count = (failures: Record<string, number>, key: string) => (failures[key] = (failures[key] ?? 0) + 1)

/** Announces `ready` and answers the window the parent then sends on stdin. */
const awaitGo = async (): Promise<{ readonly from: number; readonly to: number }> => {
  process.stdout.write("ready\n")
  const lines = Readline.createInterface({ input: process.stdin })
  for await (const line of lines) {
    lines.close()
    return JSON.parse(line) as { from: number; to: number }
  }
  throw new Error("stdin closed before the go")
}

/**
 * `inFlight` loops, each sending `send()` and awaiting it, until `to`; what completes between
 * `from` and `to` counts. `send` answers the events acknowledged or the failure's name.
 */
const load = async (inFlight: number, send: () => Promise<number | string>): Promise<LoadResult> => {
  const { from, to } = await awaitGo()
  const lateMs = Math.max(0, Date.now() - from)
  const failures: Record<string, number> = {}
  const latencies = new Map<number, number>()
  let acked = 0
  let requests = 0
  const until = (at: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, at - Date.now())))
  const cpu = (async () => {
    await until(from)
    const start = process.cpuUsage()
    await until(to)
    const used = process.cpuUsage(start)
    return (used.user + used.system) / 1000
  })()
  const loop = async () => {
    while (Date.now() < to) {
      const t0 = now()
      const result = await send()
      const ms = now() - t0
      const at = Date.now()
      if (typeof result === "string") count(failures, result)
      else if (at >= from && at <= to) {
        acked += result
        requests++
        const rounded = Math.round(ms * 100) / 100
        latencies.set(rounded, (latencies.get(rounded) ?? 0) + 1)
      }
    }
  }
  await Promise.all(Array.from({ length: inFlight }, loop))
  return { acked, requests, failures, latencies: [...latencies], lateMs, cpuMs: await cpu }
}

const ingest = (port: number, prefix: string, accounts: number, offset: number, inFlight: number, batch: number) => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: inFlight })
  const body = eventsBody(batch)
  const paths = Array.from({ length: accounts }, (_, i) => eventsPath(`${prefix}${i}`))
  let next = offset
  return load(inFlight, async () => outcome(await tryPost(agent, port, paths[next++ % accounts]!, body), batch))
}

/** Per file, the batches waiting while a write is under way go together in the next write and fsync. */
const raw = async (dir: string, files: number, inFlight: number, batch: number) => {
  const ts = new Date().toISOString()
  let lines = ""
  for (let i = 0; i < batch; i++) {
    lines += JSON.stringify({ seq: i + 1, ts, session_id: sessionOf(i), event: durableEvent(i) }) + "\n"
  }
  const bytes = Buffer.from(lines)
  const handles = await Promise.all(
    Array.from({ length: files }, (_, i) => Fs.promises.open(Path.join(dir, `file-${i}.jsonl`), "a"))
  )
  const waiting: Array<Array<() => void>> = handles.map(() => [])
  const busy: Array<boolean> = handles.map(() => false)
  const commit = async (file: number) => {
    busy[file] = true
    while (waiting[file]!.length > 0) {
      const done = waiting[file]!.splice(0)
      await handles[file]!.write(done.length === 1 ? bytes : Buffer.concat(done.map(() => bytes)))
      await handles[file]!.sync()
      for (const resolve of done) resolve()
    }
    busy[file] = false
  }
  let next = 0
  const result = await load(inFlight, async () => {
    const file = next++ % files
    const acked = new Promise<void>((resolve) => waiting[file]!.push(resolve))
    if (!busy[file]) void commit(file)
    await acked
    return batch
  })
  await Promise.all(handles.map((h) => h.close()))
  return result
}

const cold = async (port: number, prefix: string, rounds: number, warm: string, unmeasured: number) => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: 1 })
  const body = eventsBody(1)
  const failures: Record<string, number> = {}
  const timed = async (path: string) => {
    const t0 = now()
    const result = outcome(await tryPost(agent, port, path, body), 1)
    const ms = now() - t0
    if (typeof result === "string") count(failures, result)
    return Math.round(ms * 100) / 100
  }
  const coldMs: Array<number> = []
  const warmMs: Array<number> = []
  for (let i = 0; i < unmeasured + rounds; i++) {
    const c = await timed(eventsPath(`${prefix}${i}`))
    const w = await timed(eventsPath(warm))
    if (i >= unmeasured) {
      coldMs.push(c)
      warmMs.push(w)
    }
  }
  return { cold: coldMs, warm: warmMs, failures } satisfies ColdResult
}

const open = async (port: number, prefix: string, from: number, to: number, concurrency: number) => {
  const agent = new Http.Agent({ keepAlive: true, maxSockets: concurrency })
  const body = eventsBody(1)
  const failures: Record<string, number> = {}
  let next = from
  let opened = 0
  const t0 = now()
  const loop = async () => {
    while (next < to) {
      const result = outcome(await tryPost(agent, port, eventsPath(`${prefix}${next++}`), body), 1)
      if (typeof result === "string") count(failures, result)
      else opened++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  return { opened, ms: now() - t0, failures } satisfies OpenResult
}

const main = async (): Promise<unknown> => {
  const [mode, ...args] = process.argv.slice(2)
  const n = (i: number) => Number(args[i])
  switch (mode) {
    case "ingest":
      return ingest(n(0), args[1]!, n(2), n(3), n(4), n(5))
    case "raw":
      return raw(args[0]!, n(1), n(2), n(3))
    case "cold":
      return cold(n(0), args[1]!, n(2), args[3]!, n(4))
    case "open":
      return open(n(0), args[1]!, n(2), n(3), n(4))
    default:
      throw new Error(`unknown mode ${mode}: ingest, raw, cold or open`)
  }
}

main().then(
  // Exits once the result is written: a pipe may still hold part of it when `write` returns.
  (result) => process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0)),
  (error: unknown) => {
    process.stderr.write(
      `accounts-client: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`
    )
    process.exit(1)
  }
)
