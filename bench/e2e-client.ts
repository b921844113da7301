/**
 * The client processes of the headline section (`e2e.ts`) and of the Redis baselines of the
 * library sections: each mode runs in a Node process of its own, so no client shares an event
 * loop with the server it measures, and each side gets the same kind of client. HTTP clients use
 * plain `node:http` with keep-alive and pre-encoded bodies; Redis clients use the plain pipelined
 * RESP client (`resp.ts`), which counts replies without decoding them. Neither side's readers
 * parse JSON: they scan bytes for what they count.
 *
 * Protocol: a client prints `ready` once set up (connected, subscribed, load clients after a few
 * unmeasured requests that warm the connection and the server), waits for a line
 * `{"t0": <clock ms>}` on stdin, runs, and prints its result as one JSON line last. A producer's
 * `t0` is the go of its warm-up, a subscriber's the measured start after it: subscribers count
 * only events sent from then on. Subscribers then wait for a second line, `{"expect": <events>,
 * "deadline": <clock ms>}`, and stop once every connection has that many events or at the deadline.
 *
 *   post <port> <events> <batch> <inFlight>             POST /api/v1/events, `batch` events each
 *   xadd <port> <key> <events> <batch> <connections>    pipelined XADD, `batch` per round trip
 *   sse-replay <port>                                   GET /api/v1/stream?since=0 to caught_up
 *   sse-recorded <port>                                 not a client: records one replay of the service
 *       at `port`, then serves its bytes from memory to any GET (the replay client's own ceiling)
 *   xread-replay <port> <key> <events>                  XREAD COUNT 10000 from the start
 *   xload <port> <key> <dir>                            XADD every line of a journal (ids 1..N)
 *   sse-sub <port> <connections>                        live SSE subscribers
 *   xread-sub <port> <key> <connections>                XREAD BLOCK subscribers
 *   produce-http <port> <rate> <seconds> <maxInFlight> <warmSeconds>  a fixed-rate producer, a POST
 *       per 10 ms, after a warm-up of the same shape whose events subscribers do not count
 *   produce-redis <port> <key> <rate> <seconds> <maxInFlight> <warmSeconds>  the same as MULTI,
 *       XADD..., EXEC
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import { encodeCommand, encodeCommands, RespClient } from "./resp.js"
import { stamped, stampScanner } from "./stamps.js"
import {
  changeLine,
  clock,
  durableEvent,
  finish,
  Histogram,
  nextLine,
  ready,
  runMode,
  segmentFiles,
  sessionOf
} from "./common.js"

const TICK_MS = 10
/** The writes of `sse-recorded`. */
const PIECE = 1024 * 1024
const XREAD_COUNT = 10_000
const WINDOW_MS = 1_000
/** Requests each load client sends before its `ready` (not measured). */
const WARM_REQUESTS = 5

export interface LoadResult {
  /** Events acknowledged. */
  readonly acked: number
  /** `clock()` at the first send and at the last acknowledgement. */
  readonly startedAt: number
  readonly endedAt: number
  readonly failures: number
  readonly firstFailure?: string | undefined
}

export interface ReplayResult {
  readonly events: number
  readonly startedAt: number
  readonly endedAt: number
}

export type SparseHistogram = ReturnType<Histogram["toSparse"]>

export interface SubscribeResult {
  readonly connections: number
  readonly deliveries: number
  /** Send-to-receipt latency of every delivery. */
  readonly latency: SparseHistogram
  /** The same, by the 1 s window (from `t0`) the delivery arrived in. */
  readonly windows: Array<SparseHistogram>
}

export interface ProduceResult {
  readonly sent: number
  readonly acked: number
  readonly failures: number
  readonly firstFailure?: string | undefined
  readonly startedAt: number
  readonly endedAt: number
  /** Send-to-acknowledgement latency of each request (or pipeline). */
  readonly ack: SparseHistogram
}

// ---------------------------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------------------------

/** The POST body of `count` bench events. */
const postBody = (events: ReadonlyArray<{ readonly session_id: string; readonly event: unknown }>): Buffer =>
  Buffer.from(JSON.stringify({ events }))

/** The journal line of a stamped event, as the feed writes it (`seq` is `i + 1`). */
const stampedLine = (i: number, micros: number, ts: string): string =>
  JSON.stringify({ seq: i + 1, ts, session_id: sessionOf(i), event: stamped(i, micros) })

// ---------------------------------------------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------------------------------------------

const agentFor = (sockets: number) => new Http.Agent({ keepAlive: true, maxSockets: sockets })

/** POSTs `body`; answers the status, or the error's message. */
const post = (agent: Http.Agent, port: number, body: Buffer): Promise<number | string> =>
  new Promise((resolve) => {
    const request = Http.request(
      {
        host: "127.0.0.1",
        port,
        path: "/api/v1/events",
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": body.length }
      },
      (response) => {
        response.on("data", () => {})
        response.once("end", () => resolve(response.statusCode ?? 0))
        response.once("error", (error) => resolve(error.message))
      }
    )
    request.once("error", (error) => resolve(error.message))
    request.end(body)
  })

/** Runs `loops` loops, each awaiting `step()` until it answers false. */
const loops = (count: number, step: () => Promise<boolean>): Promise<void> =>
  Promise.all(
    Array.from({ length: count }, async () => {
      while (await step()) {
        // next
      }
    })
  ).then(() => undefined)

const windowOf = (windows: Array<Histogram>, t0: number, at: number): Histogram => {
  const w = Math.max(0, Math.floor((at - t0) / WINDOW_MS))
  while (windows.length <= w) windows.push(new Histogram())
  return windows[w]!
}

// ---------------------------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------------------------

const postLoad = async (port: number, events: number, batch: number, inFlight: number): Promise<void> => {
  const body = postBody(Array.from({ length: batch }, (_, i) => ({ session_id: sessionOf(i), event: durableEvent(i) })))
  const agent = agentFor(inFlight)
  // A few requests first, so the connections are up and the server's code warm before the go.
  for (let k = 0; k < WARM_REQUESTS; k++) await post(agent, port, body)
  await ready()
  let toSend = Math.ceil(events / batch)
  let acked = 0
  let failures = 0
  let firstFailure: string | undefined
  const startedAt = clock()
  await loops(inFlight, async () => {
    if (toSend <= 0) return false
    toSend--
    const status = await post(agent, port, body)
    if (status === 200) acked += batch
    else if (failures++ === 0) firstFailure = String(status)
    return true
  })
  finish({ acked, startedAt, endedAt: clock(), failures, firstFailure } satisfies LoadResult)
}

const xaddLoad = async (port: number, key: string, events: number, batch: number, connections: number) => {
  const pipeline = encodeCommands(
    Array.from({ length: batch }, (_, i) => ["XADD", key, "*", "d", changeLine(i + 1, i)])
  )
  const clients = await Promise.all(Array.from({ length: connections }, () => RespClient.connect(port)))
  for (let k = 0; k < WARM_REQUESTS; k++) await Promise.all(clients.map((c) => c.send(pipeline, batch)))
  await ready()
  let toSend = Math.ceil(events / batch)
  let acked = 0
  const startedAt = clock()
  let next = 0
  await loops(connections, async () => {
    if (toSend <= 0) return false
    toSend--
    await clients[next++ % connections]!.send(pipeline, batch)
    acked += batch
    return true
  })
  const errors = clients.reduce((n, c) => n + c.errors.count, 0)
  finish({
    acked: acked - errors,
    startedAt,
    endedAt: clock(),
    failures: errors,
    firstFailure: clients.find((c) => c.errors.first !== undefined)?.errors.first
  } satisfies LoadResult)
}

const DATA = "\ndata: "
const CAUGHT_UP = "event: caught_up\n"

/**
 * Counts change frames (`data:` lines after an `id:` line) until the `caught_up` frame. Each
 * chunk is searched as latin1 text (byte for character) with the engine's own string search: a
 * native `Buffer.indexOf` call per frame cost this client more than the server spent on the
 * frame, and the client shares the machine's cores with the server.
 */
const sseReplay = async (port: number): Promise<void> => {
  await ready()
  const startedAt = clock()
  const events = await new Promise<number>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/api/v1/stream?since=0", agent: false }, (response) => {
      let frames = 0
      // The end of the last chunk, where a marker cut by the chunk's end may begin.
      let tail = ""
      response.on("data", (chunk: Buffer) => {
        const text = tail + chunk.toString("latin1")
        const end = text.indexOf(CAUGHT_UP)
        const upTo = end < 0 ? text.length : end
        let last = -1
        for (let at = text.indexOf(DATA); at >= 0 && at < upTo; at = text.indexOf(DATA, at + DATA.length)) {
          frames++
          last = at
        }
        if (end >= 0) {
          response.destroy()
          return resolve(frames)
        }
        // Not a `data:` already counted.
        tail = text.slice(Math.max(text.length - (CAUGHT_UP.length - 1), last < 0 ? 0 : last + DATA.length))
      })
      response.once("error", reject)
    })
    request.once("error", reject)
  })
  finish({ events, startedAt, endedAt: clock() } satisfies ReplayResult)
}

/**
 * Not a client: a stand-in for the service that does no work per event, to measure what the SSE
 * replay client itself can take on this machine. It records one replay of the service at `port`
 * (its bytes, up to and with the `caught_up` frame), then serves those bytes to every `GET` as
 * they were sent, from memory, in writes of 1 MiB that wait for the socket to drain; it prints
 * its address the way the service does and runs until it is killed.
 */
const recordedReplay = async (port: number): Promise<void> => {
  const pieces: Array<Buffer> = []
  // The recording ends with the `caught_up` frame (its lines and the blank line): what follows is live.
  const length = await new Promise<number>((resolve, reject) => {
    const request = Http.get({ host: "127.0.0.1", port, path: "/api/v1/stream?since=0", agent: false }, (response) => {
      let received = 0
      // The text from the marker on, once seen (a chunk may end inside the frame).
      let marked: { readonly at: number; text: string } | undefined
      let tail = ""
      response.on("data", (chunk: Buffer) => {
        pieces.push(Buffer.from(chunk))
        received += chunk.length
        const text = chunk.toString("latin1")
        if (marked === undefined) {
          const seen = tail + text
          const found = seen.indexOf(CAUGHT_UP)
          tail = seen.slice(-(CAUGHT_UP.length - 1))
          if (found < 0) return
          marked = { at: received - seen.length + found, text: seen.slice(found) }
        } else {
          marked.text += text
        }
        const end = marked.text.indexOf("\n\n")
        if (end < 0) return
        response.destroy()
        resolve(marked.at + end + 2)
      })
      response.once("end", () => reject(new Error("the replay ended before its caught_up frame")))
      response.once("error", reject)
    })
    request.once("error", reject)
  })
  const body = Buffer.concat(pieces).subarray(0, length)
  pieces.length = 0
  const server = Http.createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
    let at = 0
    const write = (): void => {
      while (at < body.length) {
        const piece = body.subarray(at, at + PIECE)
        at += piece.length
        if (!response.write(piece)) return void response.once("drain", write)
      }
    }
    write()
  })
  server.listen(0, "127.0.0.1", () => {
    const address = server.address() as { port: number }
    process.stdout.write(`recorded ${body.length} bytes, at http://127.0.0.1:${address.port}/api/v1/stream\n`)
  })
}

/**
 * `XREAD COUNT 10000` over a stream of ids `1..events` (as `xload` writes it): each reply's
 * entries are counted from its bytes (the array of entries), the next read starts after them.
 */
const xreadReplay = async (port: number, key: string, events: number): Promise<void> => {
  const client = await RespClient.connect(port)
  await ready()
  const startedAt = clock()
  let read = 0
  while (read < events) {
    let entries = 0
    const counter = client.arrays((depth, length) => {
      // [[key, [entry, ...]]]: the entries are the array at depth 2.
      if (depth === 2) entries = length
    })
    await client.call(encodeCommand(["XREAD", "COUNT", String(XREAD_COUNT), "STREAMS", key, String(read)]), 1)
    counter()
    if (entries === 0) throw new Error(`XREAD from ${read} answered no entry: the stream holds fewer than ${events}`)
    read += entries
  }
  finish({ events: read, startedAt, endedAt: clock() } satisfies ReplayResult)
}

const xload = async (port: number, key: string, dir: string): Promise<void> => {
  const client = await RespClient.connect(port)
  let id = 0
  let commands: Array<Array<string>> = []
  const flush = async () => {
    if (commands.length > 0) await client.call(encodeCommands(commands), commands.length)
    commands = []
  }
  for (const file of segmentFiles(dir)) {
    for (const line of Fs.readFileSync(file, "utf8").split("\n")) {
      if (line === "") continue
      commands.push(["XADD", key, String(++id), "d", line])
      if (commands.length === 1000) await flush()
    }
  }
  await flush()
  await ready()
  finish({ events: id, startedAt: clock(), endedAt: clock() } satisfies ReplayResult)
}

/** What every subscriber process does with the events it receives, and how it stops. */
const subscribers = (connections: number) => {
  const latency = new Histogram()
  const windows: Array<Histogram> = []
  let t0 = Number.POSITIVE_INFINITY
  let deliveries = 0
  let expected = Number.POSITIVE_INFINITY
  const report = () =>
    finish({
      connections,
      deliveries,
      latency: latency.toSparse(),
      windows: windows.map((w) => w.toSparse())
    } satisfies SubscribeResult)
  return {
    onEvent: (_index: number, sentMicros: number, at: number) => {
      // Events sent before the measured start (the producer's warm-up) are not counted.
      if (sentMicros < t0 * 1000) return
      const ms = at - sentMicros / 1000
      latency.recordMs(ms)
      if (at >= t0) windowOf(windows, t0, at).recordMs(ms)
      if (++deliveries >= expected) report()
    },
    /** Ready, then counts until every connection has the events expected or the deadline. */
    run: async () => {
      t0 = await ready()
      const { expect, deadline } = JSON.parse(await nextLine()) as { expect: number; deadline: number }
      expected = expect * connections
      if (deliveries >= expected) report()
      setTimeout(report, Math.max(0, deadline - clock()))
    }
  }
}

const sseSubscribe = async (port: number, connections: number): Promise<void> => {
  const subs = subscribers(connections)
  let live = 0
  await new Promise<void>((resolve, reject) => {
    for (let c = 0; c < connections; c++) {
      const scan = stampScanner(subs.onEvent)
      let caughtUp = false
      const request = Http.get(
        { host: "127.0.0.1", port, path: "/api/v1/stream?since=0", agent: false },
        (response) => {
          if (response.statusCode !== 200) return reject(new Error(`GET /api/v1/stream: ${response.statusCode}`))
          response.on("data", (chunk: Buffer) => {
            if (!caughtUp && chunk.indexOf(CAUGHT_UP) >= 0) {
              caughtUp = true
              if (++live === connections) resolve()
            }
            scan(chunk)
          })
        }
      )
      request.once("error", reject)
    }
  })
  await subs.run()
}

const xreadSubscribe = async (port: number, key: string, connections: number): Promise<void> => {
  const subs = subscribers(connections)
  const clients = await Promise.all(Array.from({ length: connections }, () => RespClient.connect(port)))
  for (const client of clients) {
    let last = -1
    client.onChunk = stampScanner((index, sentMicros, at) => {
      last = index
      subs.onEvent(index, sentMicros, at)
    })
    // Entry ids are `index + 1` (`produce-redis`): the next read starts after the last one seen.
    void (async () => {
      for (;;) {
        await client.call(
          encodeCommand(["XREAD", "BLOCK", "0", "COUNT", String(XREAD_COUNT), "STREAMS", key, String(last + 1)]),
          1
        )
      }
    })()
  }
  // Every connection's first XREAD BLOCK is on the wire; let Redis register them before the go.
  await new Promise((resolve) => setTimeout(resolve, 200))
  await subs.run()
}

/**
 * A fixed-rate producer: every 10 ms a request (a POST, or a pipeline of XADDs) of
 * `rate / 100` events stamped with the time it is sent, at most `maxInFlight` awaiting their
 * acknowledgement; a tick that finds them all busy waits, and ticks due after `seconds` are not
 * sent, so a server that cannot keep up shows as fewer events sent and acknowledged.
 */
const produce = async (
  send: (from: number, to: number) => Promise<number | string>,
  rate: number,
  seconds: number,
  maxInFlight: number,
  warmSeconds: number
): Promise<void> => {
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000))
  const go = await ready()
  // The warm-up: the same shape for `warmSeconds` (its events stamped before the measured start,
  // which subscribers do not count), indices going on from it so that entry ids keep growing.
  const warm = await ticking(send, perTick, 0, go, warmSeconds, maxInFlight)
  const result = await ticking(send, perTick, warm.sent, go + warmSeconds * 1000, seconds, maxInFlight)
  finish(result satisfies ProduceResult)
}

/** One run of ticks from `startAt` for `seconds`, event indices from `first`. */
const ticking = async (
  send: (from: number, to: number) => Promise<number | string>,
  perTick: number,
  first: number,
  startAt: number,
  seconds: number,
  maxInFlight: number
): Promise<ProduceResult> => {
  const ticks = Math.round((seconds * 1000) / TICK_MS)
  const ack = new Histogram()
  let tick = 0
  let inFlight = 0
  let acked = 0
  let failures = 0
  let firstFailure: string | undefined
  let endedAt = 0
  if (ticks === 0) return { sent: 0, acked, failures, firstFailure, startedAt: startAt, endedAt, ack: ack.toSparse() }
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAt - clock())))
  const startedAt = Math.max(startAt, clock())
  await new Promise<void>((resolve) => {
    let over = false
    let timer: ReturnType<typeof setTimeout> | undefined
    const pump = () => {
      clearTimeout(timer)
      const now = clock()
      // Ends when due even after a late start: a warm-up's last events are stamped before the measured start.
      if (now >= startAt + seconds * 1000) over = true
      const due = over ? tick : Math.min(ticks, Math.floor((now - startedAt) / TICK_MS) + 1)
      while (tick < due && inFlight < maxInFlight) {
        const from = first + tick * perTick
        tick++
        inFlight++
        const sentAt = clock()
        void send(from, from + perTick).then((outcome) => {
          inFlight--
          endedAt = clock()
          ack.recordMs(endedAt - sentAt)
          if (outcome === 200) acked += perTick
          else if (failures++ === 0) firstFailure = String(outcome)
          pump()
        })
      }
      if ((over || tick >= ticks) && inFlight === 0) return resolve()
      if (!over && tick < ticks && inFlight < maxInFlight) {
        timer = setTimeout(pump, Math.max(0, startedAt + tick * TICK_MS - clock()))
      } else if (!over) timer = setTimeout(pump, Math.max(0, startAt + seconds * 1000 - clock()))
    }
    pump()
  })
  return { sent: tick * perTick, acked, failures, firstFailure, startedAt, endedAt, ack: ack.toSparse() }
}

const produceHttp = async (port: number, rate: number, seconds: number, maxInFlight: number, warmSeconds: number) => {
  const agent = agentFor(maxInFlight)
  await post(agent, port, postBody([{ session_id: sessionOf(0), event: durableEvent(0) }]))
  // The warm-up event above is not stamped: subscribers do not count it.
  return produce(
    (from, to) => {
      const micros = Math.round(clock() * 1000)
      const events = []
      for (let i = from; i < to; i++) events.push({ session_id: sessionOf(i), event: stamped(i, micros) })
      return post(agent, port, postBody(events))
    },
    rate,
    seconds,
    maxInFlight,
    warmSeconds
  )
}

const produceRedis = async (
  port: number,
  key: string,
  rate: number,
  seconds: number,
  maxInFlight: number,
  warmSeconds: number
) => {
  const client = await RespClient.connect(port)
  return produce(
    async (from, to) => {
      const micros = Math.round(clock() * 1000)
      const ts = new Date().toISOString()
      // One transaction per tick, as one POST is one batch: Redis serves its blocked readers once
      // the EXEC has run, not once per XADD.
      const commands: Array<Array<string>> = [["MULTI"]]
      for (let i = from; i < to; i++) commands.push(["XADD", key, String(i + 1), "d", stampedLine(i, micros, ts)])
      commands.push(["EXEC"])
      const before = client.errors.count
      await client.send(encodeCommands(commands), commands.length)
      return client.errors.count === before ? 200 : (client.errors.first ?? "error")
    },
    rate,
    seconds,
    maxInFlight,
    warmSeconds
  )
}

/** The argument `i` after the mode, as a number. */
const n = (args: ReadonlyArray<string>, i: number) => Number(args[i])
runMode("e2e-client", {
  post: (a) => postLoad(n(a, 0), n(a, 1), n(a, 2), n(a, 3)),
  xadd: (a) => xaddLoad(n(a, 0), a[1]!, n(a, 2), n(a, 3), n(a, 4)),
  "sse-replay": (a) => sseReplay(n(a, 0)),
  "sse-recorded": (a) => recordedReplay(n(a, 0)),
  "xread-replay": (a) => xreadReplay(n(a, 0), a[1]!, n(a, 2)),
  xload: (a) => xload(n(a, 0), a[1]!, a[2]!),
  "sse-sub": (a) => sseSubscribe(n(a, 0), n(a, 1)),
  "xread-sub": (a) => xreadSubscribe(n(a, 0), a[1]!, n(a, 2)),
  "produce-http": (a) => produceHttp(n(a, 0), n(a, 1), n(a, 2), n(a, 3), n(a, 4)),
  "produce-redis": (a) => produceRedis(n(a, 0), a[1]!, n(a, 2), n(a, 3), n(a, 4), n(a, 5))
})
