/**
 * What the benchmark's client processes share with the rest of the suite, kept free of the
 * library and of Effect so that a client process loads in a few milliseconds: the bench events
 * and their journal lines, the clock every process stamps and reads, the latency histogram, and
 * the segment files of a journal, ports, a JSON GET, and the command line and the protocol of a
 * client process (`ready`, then `{"t0": ...}` on stdin, then its result as the last line).
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import * as Path from "node:path"
import * as Readline from "node:readline"
import type { AgentEvent } from "../src/Domain/AgentEvent.js"
import type { ChangeEvent } from "../src/Domain/ChangeEvent.js"

/**
 * Milliseconds since the epoch, to a fraction of a microsecond: comparable between the threads
 * and processes of one machine, so a time one process stamps in an event another can subtract.
 */
export const clock = (): number => performance.timeOrigin + performance.now()

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Segment files of a journal directory in seq order. */
export const segmentFiles = (dir: string): Array<string> =>
  Fs.readdirSync(dir)
    .filter((name) => /^events-\d{20}\.jsonl$/.test(name))
    .sort()
    .map((name) => Path.join(dir, name))

const CONTENT =
  "The build finished with two warnings. I updated the retry policy in the ingest worker, added a test for " +
  "the torn-tail case and reran the suite; everything passes. Next I will look at the slow replay path and " +
  "the memory use of readers that fall behind."

/** A 250-character message body. */
export const content = (i: number): string => (CONTENT + ` #${i}`).padEnd(250, ".").slice(0, 250)

export const sessionOf = (i: number): string => `sess-${String(i % 64).padStart(4, "0")}`

/** A durable event of about 300 bytes of JSON (`message_appended` with a 250-character content). */
export const durableEvent = (i: number): AgentEvent => ({
  type: "message_appended",
  session_id: sessionOf(i),
  message_id: `m${i}`,
  role: "assistant",
  content: content(i)
})

/** An ephemeral event (filtered by the feed before any copy). */
export const ephemeralEvent = (i: number): AgentEvent => ({ type: "token", content: `tok${i % 100}` })

/** The index a bench event carries in its `message_id` (`m<i>`), or -1. */
export const indexOf = (event: AgentEvent): number =>
  event.type === "message_appended" && event.message_id.startsWith("m") ? Number(event.message_id.slice(1)) : -1

const TS = "2026-11-27T10:00:00.123Z"

/** The journal line of event `i` at `seq`: the same bytes the feed writes (`JSON.stringify` of the ChangeEvent). */
export const changeLine = (seq: number, i: number): string => {
  const event = durableEvent(i)
  const change: ChangeEvent<AgentEvent> = { seq, ts: TS, session_id: sessionOf(i), event }
  return JSON.stringify(change)
}

/**
 * Latencies in microseconds: exact below 2048 µs, then 1024 sub-buckets per power of two
 * (about 0.1 % precision), so millions of samples cost a fixed 33k counters.
 */
export class Histogram {
  private readonly counts = new Float64Array(2048 + 40 * 1024)
  count = 0
  max = 0

  recordMs(ms: number): void {
    const us = Math.max(0, Math.round(ms * 1000))
    this.counts[Histogram.index(us)]!++
    this.count++
    if (ms > this.max) this.max = ms
  }

  recordManyMs(ms: number, times: number): void {
    if (times <= 0) return
    const us = Math.max(0, Math.round(ms * 1000))
    this.counts[Histogram.index(us)]! += times
    this.count += times
    if (ms > this.max) this.max = ms
  }

  /** Adds another histogram's samples. */
  merge(other: Histogram): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!
    this.count += other.count
    if (other.max > this.max) this.max = other.max
  }

  private static index(us: number): number {
    if (us < 2048) return us
    if (us >= 2 ** 31) return 2048 + 40 * 1024 - 1
    const e = 31 - Math.clz32(us)
    return 2048 + (e - 11) * 1024 + ((us >>> (e - 10)) & 1023)
  }

  private static lowerBound(index: number): number {
    if (index < 2048) return index
    const e = Math.floor((index - 2048) / 1024) + 11
    const m = (index - 2048) % 1024
    return (1024 + m) * 2 ** (e - 10)
  }

  /** The non-empty buckets as `[index, count]` pairs, to send a histogram between processes. */
  toSparse(): { readonly buckets: Array<readonly [number, number]>; readonly max: number } {
    const buckets: Array<readonly [number, number]> = []
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!])
    return { buckets, max: this.max }
  }

  static fromSparse(sparse: {
    readonly buckets: ReadonlyArray<readonly [number, number]>
    readonly max: number
  }): Histogram {
    const histogram = new Histogram()
    for (const [i, n] of sparse.buckets) {
      histogram.counts[i]! += n
      histogram.count += n
    }
    histogram.max = sparse.max
    return histogram
  }

  /** The latency in ms at quantile `q` (0..1). */
  quantileMs(q: number): number {
    if (this.count === 0) return Number.NaN
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!
      if (seen >= rank) return Histogram.lowerBound(i) / 1000
    }
    return this.max
  }
}

/** A free TCP port on 127.0.0.1. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Whether something accepts connections on 127.0.0.1:`port` now. */
export const listening = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = Net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/** The body of `GET 127.0.0.1:<port><path>`, answered 200, as text; any other answer rejects with its status and body. */
export const getText = (port: number, path: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path, agent: false }, (response) => {
      let text = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (text += chunk))
      response.once("end", () =>
        response.statusCode === 200
          ? resolve(text)
          : reject(new Error(`GET ${path}: ${response.statusCode} ${text.slice(0, 300)}`))
      )
    })
    request.once("error", reject)
  })

/** `GET 127.0.0.1:<port><path>`, its JSON body; rejects on any status but 200. */
export const getJson = <A>(port: number, path: string): Promise<A> =>
  getText(port, path).then((text) => JSON.parse(text) as A)

/**
 * Runs the mode a client process was started in (`process.argv[2]`), its arguments after it;
 * exits 2 with the usage for an unknown mode, 1 with the error when the mode fails.
 */
export const runMode = (name: string, modes: Record<string, (args: ReadonlyArray<string>) => Promise<unknown>>) => {
  const [mode, ...args] = process.argv.slice(2)
  const run = mode === undefined ? undefined : modes[mode]
  if (run === undefined) {
    process.stderr.write(`usage: ${name} ${Object.keys(modes).join("|")} <args> (see the module header)\n`)
    process.exit(2)
  }
  run(args).catch((error: unknown) => {
    process.stderr.write(
      `${name} ${mode}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`
    )
    process.exit(1)
  })
}

/**
 * The next line the parent writes to a client process's stdin. Stdin is read from the first call
 * on (the parent process, which imports this module too, never reads it); lines that come before
 * they are asked for wait here.
 */
export const nextLine: () => Promise<string> = (() => {
  const queued: Array<string> = []
  const waiting: Array<(line: string) => void> = []
  let reading = false
  return (): Promise<string> => {
    if (!reading) {
      reading = true
      Readline.createInterface({ input: process.stdin }).on("line", (line) => {
        const w = waiting.shift()
        if (w === undefined) queued.push(line)
        else w(line)
      })
    }
    const q = queued.shift()
    return q !== undefined ? Promise.resolve(q) : new Promise((resolve) => waiting.push(resolve))
  }
})()

/** Says `ready` and answers the `t0` the parent then sends. */
export const ready = async (): Promise<number> => {
  process.stdout.write("ready\n")
  return (JSON.parse(await nextLine()) as { t0: number }).t0
}

let finished = false

/**
 * Writes a client's result as its last line and ends the process once the line is out: a pipe to
 * the parent takes it asynchronously, and exiting at once cut long lines (a subscriber's latency
 * histogram, hundreds of KiB). Only the first call counts.
 */
export const finish = (result: unknown): void => {
  if (finished) return
  finished = true
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0))
}
