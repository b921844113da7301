/**
 * The subscribers' side of section 5 (fan-out): the tally every transport counts deliveries into,
 * and the SSE clients, which run on a worker thread of their own (this module is its entry).
 *
 * The tally lives in shared memory, so a producer on the main thread and subscribers on another
 * thread keep one record: the producer notes when it publishes each event, the subscribers how
 * often each event arrived, plus a running total the main thread polls to know when a run is
 * done. Times are absolute (`clock`), which every thread of the process reads alike.
 *
 * The SSE clients stand for browsers and services on other machines: a thread of their own gives
 * them the second core, as a client machine would, and they do only what telling deliveries apart
 * needs. They scan each chunk's bytes for two markers, the `event: caught_up` frame and the
 * `"message_id":"m<i>"` a bench event carries, and neither decode text nor parse JSON. A real
 * client parses on its own machine; 100 clients parsing every frame on one thread would be a
 * million `JSON.parse` calls a second at 10,000 ev/s, which measures the bench, not the feed.
 */
import { Effect, type Scope } from "effect"
import * as NodeHttp from "node:http"
import * as Path from "node:path"
import { pathToFileURL } from "node:url"
import {
  isMainThread,
  MessageChannel,
  type MessagePort,
  parentPort,
  receiveMessageOnPort,
  Worker,
  workerData
} from "node:worker_threads"
import { benchDir, clock, Histogram } from "./support.js"

export { clock } from "./support.js"

// ---------------------------------------------------------------------------------------------------------------
// The tally
// ---------------------------------------------------------------------------------------------------------------

/** Slots of `TallyMemory.control`. */
const DELIVERED = 0
const STOPPED = 1
const ANSWERED = 2

/** The shared part of a tally, plain enough to hand to a worker. */
export interface TallyMemory {
  /** When each event was published (`clock`). */
  readonly sentAt: Float64Array
  /** How many subscribers received each event; written by the counting thread only. */
  readonly received: Uint32Array
  /** Deliveries counted so far, whether counting has stopped, whether the worker has answered. */
  readonly control: Int32Array
}

/** Counts deliveries into shared memory; the latencies go to a histogram of the counting thread's own. */
export class Tally {
  /** The latency of every delivery counted through this instance. */
  readonly latency = new Histogram()

  constructor(readonly memory: TallyMemory) {}

  static make(events: number): Tally {
    return new Tally({
      sentAt: new Float64Array(new SharedArrayBuffer(events * Float64Array.BYTES_PER_ELEMENT)),
      received: new Uint32Array(new SharedArrayBuffer(events * Uint32Array.BYTES_PER_ELEMENT)),
      control: new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT))
    })
  }

  get deliveries(): number {
    return Atomics.load(this.memory.control, DELIVERED)
  }

  /** From now on deliveries are not counted: the run is over, what is missing counts as late. */
  stop(): void {
    Atomics.store(this.memory.control, STOPPED, 1)
  }

  /** One delivery of event `index`, received at `at` (`clock`). */
  count(index: number, at: number): void {
    const { control, received, sentAt } = this.memory
    if (index < 0 || index >= received.length || Atomics.load(control, STOPPED) === 1) return
    this.latency.recordMs(at - sentAt[index]!)
    received[index]!++
    Atomics.add(control, DELIVERED, 1)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading an SSE stream by its bytes
// ---------------------------------------------------------------------------------------------------------------

const CAUGHT_UP = Buffer.from("event: caught_up\n")
// Without the key's opening quote: a search is about twice as fast when its first byte is rare
// in a frame (a quote comes 32 times in each). No other key of a bench event ends so.
const CHANGE = Buffer.from('message_id":"m')
const LONGEST_MARKER = Math.max(CAUGHT_UP.length, CHANGE.length)
const DIGIT_0 = 0x30

/** Whether `bytes` end, from `start` on, with the beginning of `marker` (but not all of it). */
const endsWithStartOf = (bytes: Buffer, start: number, marker: Buffer): boolean => {
  if (bytes.length - start >= marker.length) return false
  for (let i = start; i < bytes.length; i++) if (bytes[i] !== marker[i - start]) return false
  return true
}

/**
 * The longest end of `bytes` (from `from` on) that begins one of `markers`: kept for the next
 * chunk, so a marker split between two chunks is still found. Compared here byte by byte: a
 * `Buffer.compare` per candidate costs more than the search of the whole chunk.
 */
const partialMarker = (bytes: Buffer, from: number, markers: ReadonlyArray<Buffer>): Buffer | undefined => {
  for (let start = Math.max(from, bytes.length - LONGEST_MARKER + 1); start < bytes.length; start++) {
    for (const marker of markers) {
      if (endsWithStartOf(bytes, start, marker)) return Buffer.from(bytes.subarray(start))
    }
  }
  return undefined
}

/**
 * Reads one subscriber's response body, chunk by chunk: calls `onCaughtUp` at its caught-up frame
 * and `onChange(index, at)` for each change frame, with the index its event carries and the time
 * the chunk arrived. Frames are found by their markers alone; the bench's events are the only
 * ones on the feed, and their content cannot hold a quote unescaped.
 */
export const makeFrameScanner = (onCaughtUp: () => void, onChange: (index: number, at: number) => void) => {
  let caughtUp = false
  let carry: Buffer | undefined
  return (chunk: Buffer): void => {
    const at = clock()
    const bytes = carry === undefined ? chunk : Buffer.concat([carry, chunk])
    carry = undefined
    if (!caughtUp && bytes.indexOf(CAUGHT_UP) >= 0) {
      caughtUp = true
      onCaughtUp()
    }
    let from = 0
    for (;;) {
      const found = bytes.indexOf(CHANGE, from)
      if (found < 0) break
      const digits = found + CHANGE.length
      let end = digits
      let index = 0
      for (; end < bytes.length; end++) {
        const digit = bytes[end]! - DIGIT_0
        if (digit < 0 || digit > 9) break
        index = index * 10 + digit
      }
      if (end === bytes.length) {
        // The index may go on in the next chunk.
        carry = Buffer.from(bytes.subarray(found))
        return
      }
      if (end > digits) onChange(index, at)
      from = end
    }
    carry = partialMarker(bytes, from, caughtUp ? [CHANGE] : [CAUGHT_UP, CHANGE])
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------------------------

interface ClientsData {
  readonly port: number
  readonly since: number
  readonly subscribers: number
  readonly tally: TallyMemory
  /** Where the worker answers `collect` with its latency histogram. */
  readonly answers: MessagePort
}

type ClientsMessage = { readonly _tag: "Live" } | { readonly _tag: "Failed"; readonly message: string }

/** How long `collect` waits for the worker's histogram. */
const COLLECT_TIMEOUT_MS = 10_000

/**
 * Starts `subscribers` SSE clients on a worker thread, each a `GET /api/v1/stream?since=<since>`
 * to 127.0.0.1:`port` over its own connection, counting deliveries into `tally`. Completes once
 * every one of them is live; the worker is terminated, its connections with it, when the scope
 * closes. Answers `collect`, to call once, before the scope closes: it stops the counting and
 * answers the latencies the clients measured.
 */
export const spawnSseClients = (
  options: { readonly port: number; readonly since: number; readonly subscribers: number },
  tally: Tally
): Effect.Effect<() => Histogram, Error, Scope.Scope> =>
  Effect.gen(function* () {
    const { port1: answers, port2 } = new MessageChannel()
    const data: ClientsData = { ...options, tally: tally.memory, answers: port2 }
    // Node 20 ignores loader flags in a Worker's `execArgv` (nodejs/node#47747), so the worker
    // registers tsx itself before it imports this module. `tsx` resolves from the working
    // directory: the project's, as `npm run bench` and `runChild` run.
    const entry = pathToFileURL(Path.join(benchDir, "fanout-clients.ts")).href
    const source = `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}) })`
    const worker = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new Worker(source, {
            eval: true,
            // None of the process's flags: a Worker refuses per-process ones (`--v8-pool-size`), and
            // under the `--cpu-prof-name` of `BENCH_CPU_PROFILE` this thread's profile, or its
            // loader thread's, would overwrite the feed's.
            execArgv: [],
            workerData: data,
            transferList: [port2]
          })
      ),
      (worker) => Effect.promise(() => worker.terminate())
    )
    yield* Effect.async<void, Error>((resume) => {
      worker.on("message", (message: ClientsMessage) =>
        resume(message._tag === "Live" ? Effect.void : Effect.fail(new Error(message.message)))
      )
      worker.on("error", (error) => resume(Effect.fail(error)))
      worker.on("exit", (code) => resume(Effect.fail(new Error(`the SSE client thread exited with code ${code}`))))
    })
    return (): Histogram => {
      tally.stop()
      // Synchronous, as a run cut at its cap reports without returning to the event loop.
      answers.postMessage("collect")
      const answered = Atomics.wait(tally.memory.control, ANSWERED, 0, COLLECT_TIMEOUT_MS)
      const reply = receiveMessageOnPort(answers)
      if (answered === "timed-out" || reply === undefined) {
        throw new Error(`the SSE client thread did not send its latencies within ${COLLECT_TIMEOUT_MS / 1000} s`)
      }
      // A structured clone keeps a Histogram's fields (its counts, count and max), not its class.
      return Object.setPrototypeOf(reply.message, Histogram.prototype) as Histogram
    }
  })

/** The worker's body: opens the connections and counts what arrives until the main thread collects. */
const runClients = (data: ClientsData, post: (message: ClientsMessage) => void): void => {
  const tally = new Tally(data.tally)
  let live = 0
  const fail = (message: string) => {
    if (live < data.subscribers) post({ _tag: "Failed", message })
  }
  for (let s = 0; s < data.subscribers; s++) {
    const request = NodeHttp.get(
      { host: "127.0.0.1", port: data.port, path: `/api/v1/stream?since=${data.since}`, agent: false },
      (response) => {
        if (response.statusCode !== 200) return fail(`GET /api/v1/stream answered ${response.statusCode}`)
        response.on(
          "data",
          makeFrameScanner(
            () => {
              if (++live === data.subscribers) post({ _tag: "Live" })
            },
            (index, at) => tally.count(index, at)
          )
        )
      }
    )
    request.on("error", (error) => fail(`GET /api/v1/stream failed: ${error.message}`))
  }
  data.answers.on("message", () => {
    tally.stop()
    data.answers.postMessage(tally.latency)
    Atomics.store(data.tally.control, ANSWERED, 1)
    Atomics.notify(data.tally.control, ANSWERED)
  })
}

if (!isMainThread && parentPort !== null && (workerData as Partial<ClientsData> | null)?.answers !== undefined) {
  const toMain = parentPort
  runClients(workerData as ClientsData, (message) => toMain.postMessage(message))
}
