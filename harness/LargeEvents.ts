/**
 * Large events through the real server: the service as a child process with a fixed V8 heap,
 * thousands of events of about 1 MB each POSTed to it (each under the body limit), one SSE
 * client reading everything and one that never reads. Measures the server's resident memory
 * from the outside (`/proc/<pid>/status`: `VmHWM` is the peak, so a short spike counts too),
 * and checks that every acknowledged event reached the reading client and that SIGTERM, with
 * both clients still connected, stops the server cleanly.
 *
 * The heap is fixed (`--max-old-space-size`) so that the figure does not depend on the machine:
 * V8 otherwise sizes its heap from the machine's memory and collects garbage later on a larger
 * one. A server that kept events in memory would die of heap exhaustion or show it in its peak.
 */
import * as Fs from "node:fs"
import * as NodeHttp from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"
import { makeSseParser } from "../src/Sse.js"
import { freePort, type FsyncMode, type Launcher, serverCommand, ServerProcess } from "./ServerProcess.js"
import { feedPath } from "../src/Api/Routes.js"

export interface LargeEventsOptions {
  /** Events to append (default 4061, as in the report of the fault). */
  readonly events?: number | undefined
  /** Characters of content per event (default 1,000,000; the body limit is 1 MiB). */
  readonly eventChars?: number | undefined
  /** Concurrent POSTs (default 4). */
  readonly concurrency?: number | undefined
  /** The server's `--max-old-space-size`, in MiB (default 256). */
  readonly heapMiB?: number | undefined
  readonly fsync?: FsyncMode | undefined
  readonly launcher?: Launcher | undefined
  readonly progress?: ((line: string) => void) | undefined
}

export interface LargeEventsReport {
  readonly events: number
  readonly eventChars: number
  readonly heapMiB: number
  /** Events acknowledged with a seq. */
  readonly acked: number
  /**
   * Events the reading client was told it missed, by resets: one that falls behind what the
   * journal keeps (a few segments here) is told to resync, as the contract says.
   */
  readonly skipped: number
  /** Events missing from what the reading client got with no reset saying so: always 0. */
  readonly unannounced: number
  /** Events the reading client received before the end. */
  readonly read: number
  /** The server's resident memory once up, before any event, and its peak over the run (MiB). */
  readonly startRssMiB: number
  readonly peakRssMiB: number
  readonly elapsedMs: number
  /** How the server ended: after SIGTERM, or on its own during the run (e.g. out of memory). */
  readonly exit: { readonly code: number | null; readonly signal: string | null; readonly duringRun: boolean }
  /** The first failed request, if any, and the end of the server's log then. */
  readonly failure: string | undefined
}

const MiB = 1024 * 1024

/** A figure of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`); Linux only. */
export const procStatusMiB = (pid: number, field: "VmRSS" | "VmHWM"): number => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`)
  return Number(match[1]) / 1024
}

/**
 * An SSE client counting the events it receives, by their `id:`s, and the ones resets say it
 * missed; any other seq missing is counted as unannounced.
 */
const readingClient = (url: string) => {
  const state = { received: 0, skipped: 0, unannounced: 0, lastSeq: 0 }
  const decoder = new TextDecoder()
  const parse = makeSseParser((frame) => {
    if (frame.event !== "message" || frame.id === undefined) return
    const seq = Number(frame.id.slice(frame.id.lastIndexOf(":") + 1))
    // A reset's frame carries no event: its id is where the stream goes on from.
    if (frame.data.startsWith(`{"type":"feed_reset"`)) {
      const reset = JSON.parse(frame.data) as { readonly from_seq: number; readonly head_seq: number }
      state.unannounced += Math.max(0, reset.from_seq - state.lastSeq)
      state.skipped += reset.head_seq - reset.from_seq
    } else {
      state.received++
      state.unannounced += Math.max(0, seq - state.lastSeq - 1)
    }
    state.lastSeq = seq
  })
  const request = NodeHttp.get(url, { agent: false }, (response) => {
    response.on("data", (chunk: Buffer) => parse(decoder.decode(chunk, { stream: true })))
    response.on("error", () => {})
  })
  request.on("error", () => {})
  return { state, close: () => request.destroy() }
}

/** An SSE client that never reads: its socket's buffers fill and stay full. */
const stalledClient = (url: string) => {
  const request = NodeHttp.get(url, { agent: false }, (response) => response.pause())
  request.on("error", () => {})
  return { close: () => request.destroy() }
}

export const runLargeEvents = async (options: LargeEventsOptions = {}): Promise<LargeEventsReport> => {
  const events = options.events ?? 4061
  const eventChars = options.eventChars ?? 1_000_000
  const concurrency = options.concurrency ?? 4
  const heapMiB = options.heapMiB ?? 256
  const progress = options.progress ?? (() => {})
  const workDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "large-events-"))
  const built = await serverCommand(options.launcher ?? "bundle", workDir)
  const server = new ServerProcess({
    command: { ...built, args: [`--max-old-space-size=${heapMiB}`, ...built.args] },
    directory: Path.join(workDir, "feed"),
    port: await freePort(),
    fsync: options.fsync ?? "never",
    // A few segments on disk: the run writes gigabytes.
    segmentBytes: 8 * MiB,
    retainSegments: 4,
    logFile: Path.join(workDir, "server.log")
  })
  const clients: Array<{ close: () => void }> = []
  try {
    await server.start()
    const pid = server.pid!
    const startRssMiB = procStatusMiB(pid, "VmRSS")
    const reader = readingClient(`${server.url}${feedPath("stream")}`)
    clients.push(reader, stalledClient(`${server.url}${feedPath("stream")}`))

    const content = "x".repeat(eventChars)
    const started = Date.now()
    let next = 0
    let acked = 0
    let lastAcked = 0
    let failure: string | undefined
    let peakRssMiB = startRssMiB
    /** Reads the peak so far; the process may be gone (killed by the kernel, out of memory). */
    const samplePeak = () => {
      try {
        peakRssMiB = Math.max(peakRssMiB, procStatusMiB(pid, "VmHWM"))
      } catch {
        // gone: the run ends with `failure`, and `exit` says how it ended
      }
    }
    const producer = async () => {
      while (failure === undefined && next < events) {
        const i = next++
        const body = JSON.stringify({
          session_id: "s1",
          event: { type: "message_appended", session_id: "s1", message_id: `m${i}`, role: "user", content }
        })
        try {
          const response = await fetch(`${server.url}${feedPath("events")}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body
          })
          const text = await response.text()
          if (response.status !== 200) throw new Error(`POST answered ${response.status}: ${text.slice(0, 300)}`)
          const seq = (JSON.parse(text) as { seqs: Array<number> }).seqs[0]!
          acked++
          lastAcked = Math.max(lastAcked, seq)
        } catch (error) {
          failure ??= `event ${i}: ${String(error)}\n${server.logTail(2000)}`
        }
        samplePeak()
        if (acked % 250 === 0) progress(`${acked} acked, peak RSS ${peakRssMiB.toFixed(0)} MiB`)
      }
    }
    await Promise.all(Array.from({ length: concurrency }, producer))
    // The reading client gets everything acknowledged, unless the server died.
    const deadline = Date.now() + 120_000
    while (failure === undefined && reader.state.lastSeq < lastAcked && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const alive = (await server.status(5_000)) !== undefined
    samplePeak()
    const elapsedMs = Date.now() - started
    // With both clients still connected: the stalled one must not hold up the shutdown.
    const exit = alive ? await server.kill("SIGTERM") : await server.kill("SIGKILL")
    return {
      events,
      eventChars,
      heapMiB,
      acked,
      read: reader.state.received,
      skipped: reader.state.skipped,
      unannounced: reader.state.unannounced,
      startRssMiB,
      peakRssMiB,
      elapsedMs,
      exit: { code: exit.code, signal: exit.signal, duringRun: !alive },
      failure
    }
  } finally {
    for (const client of clients) client.close()
    if (server.isRunning) await server.kill("SIGKILL").catch(() => undefined)
    Fs.rmSync(workDir, { recursive: true, force: true })
  }
}

/** One line for a report. */
export const formatLargeEvents = (report: LargeEventsReport): string =>
  `${report.acked}/${report.events} events of ${(report.eventChars / 1e6).toFixed(1)} MB acked, ` +
  `${report.read} read, ${report.skipped} skipped by resets, ${report.unannounced} missing unannounced; server RSS ${report.startRssMiB.toFixed(0)} MiB at start, peak ${report.peakRssMiB.toFixed(0)} MiB ` +
  `(heap limit ${report.heapMiB} MiB); ${(report.elapsedMs / 1000).toFixed(1)} s; exit ${report.exit.code ?? report.exit.signal}` +
  `${report.exit.duringRun ? " (died during the run)" : ""}${report.failure === undefined ? "" : `\n${report.failure}`}`
