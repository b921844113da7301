/**
 * The crash harness: the real server as a child process, killed with SIGKILL at random
 * moments while producers append with durable acks and readers follow the SSE stream, then
 * started again on the same directory and port. Everything is checked from the outside:
 *
 * - every acknowledged event is in the journal, at the acknowledged seq, with the content sent;
 * - a request whose answer was lost (a kill) or that answered 503 is sent again, with the same body
 *   and `Idempotency-Key`, until it is answered; no event is journaled twice (each has an id of its
 *   own), and each is journaled with its request's key;
 * - the journal's seqs are 1..head with no hole; no seq ever names two different events (acks,
 *   frames readers saw live, the final journal);
 * - the journal read over HTTP equals the segment files on disk, which end on whole lines;
 * - every reader resumes (`Last-Event-ID`, or `?since=` with a plain seq) with no gap, no
 *   duplicate and no reset, in every fsync mode;
 * - after a restart the head is not below anything acknowledged or seen, and the epoch is the
 *   same, in every mode: a SIGKILL is a process crash, and the kernel keeps every write the
 *   server made before it (a new epoch is for an OS restart, which this harness does not cause);
 * - a final SIGTERM shuts down cleanly (exit 0, the journal marked closed, the lock released).
 *
 * On PostgreSQL (`journal: "postgres"`) the same load runs against one or more replicas sharing
 * a throwaway database: each kill takes a replica at random, producers send each attempt to any
 * replica that answers (or, `route: "sticky"`, a retry to the replica of the first attempt), and
 * readers follow another replica than the first producers' one; `dbStops` times the database is
 * stopped with `pg_ctl stop -m immediate` under load and started again. The journal is read back
 * from the database's rows (in place of the segment files) and through every replica, and a
 * clean stop must leave no connection behind.
 *
 * It is written against HTTP and the files only, not the library, so the code under test
 * cannot mask its own bugs. Each event is a `message_appended` whose `message_id` is
 * `p<producer>-<n>` and whose content is derived from that id, so any line can be checked alone.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Zlib from "node:zlib"
import * as Pg from "pg"
import { isDeepStrictEqual } from "node:util"
import { makeSseParser, type SseFrame } from "../src/Sse.js"
import { startPostgres } from "../test/support/Postgres.js"
import { hashString, makeRandom, type Random } from "./Random.js"
import {
  freePort,
  type FsyncMode,
  type Launcher,
  type ServerCommand,
  serverCommand,
  ServerProcess,
  type ServerStatus,
  sleep
} from "./ServerProcess.js"
import { feedPath } from "../src/Api/Routes.js"

export interface CrashOptions {
  readonly kills: number
  readonly fsync: FsyncMode
  readonly producers?: number | undefined
  readonly readers?: number | undefined
  readonly seed?: number | undefined
  /** How the server is run (default `tsx`, as `npm start` does). */
  readonly launcher?: Launcher | undefined
  /** A command built beforehand (e.g. one bundle shared by several runs); wins over `launcher`. */
  readonly command?: ServerCommand | undefined
  /** The kill comes this long after the server is up: uniform in [min, max] ms (default 50..500). */
  readonly minDelayMs?: number | undefined
  readonly maxDelayMs?: number | undefined
  /** Segment size, small so that rotation happens often (default 16 KiB). */
  readonly segmentBytes?: number | undefined
  /** Most events in one POST (default 8). */
  readonly maxBatch?: number | undefined
  /** Keep the journal directory even when the run passes. */
  readonly keepDirectory?: boolean | undefined
  /** Progress lines (one per kill). */
  readonly progress?: ((line: string) => void) | undefined
  /** The files (default) or a PostgreSQL database started for the run. */
  readonly journal?: JournalKind | undefined
  /** Replicas of the service on the database (PostgreSQL only; default 2). */
  readonly replicas?: number | undefined
  /** Times the database is stopped with `-m immediate` under load and started again (PostgreSQL only). */
  readonly dbStops?: number | undefined
  /** How long the database stays down: uniform in [min, max] ms (default 200..2000). */
  readonly minDownMs?: number | undefined
  readonly maxDownMs?: number | undefined
  /** Where a producer sends a request again: any replica (default), or the one it first sent it to. */
  readonly route?: Route | undefined
}

export type JournalKind = "file" | "postgres"
export type Route = "any" | "sticky"

export interface CrashReport {
  /** `always`, `interval`, `never`, or `postgres` with its replicas and route. */
  readonly fsync: string
  readonly replicas: number
  /** Immediate stops of the database, and how long it was down in all. */
  readonly dbStops: number
  readonly dbDownMs: number
  /** Requests whose key names more rows than the request had durable events (each also a violation). */
  readonly keysDuplicated: number
  /** `GET .../events` pages (no `wait`) that came back empty below the head, then filled by a long poll. */
  readonly shortPages: number
  readonly seed: number
  readonly launcher: string
  readonly kills: number
  readonly elapsedMs: number
  readonly meanStartupMs: number
  readonly maxStartupMs: number
  /** Events acknowledged with a seq (requests answered 200). */
  readonly ackedEvents: number
  readonly ackedRequests: number
  /** Ephemeral events answered `null`, as they must be. */
  readonly ephemeralNulls: number
  /** Requests sent again (same body, same key) because their answer was lost to a kill or was a 503, and their events. */
  readonly retriedRequests: number
  readonly retriedEvents: number
  /**
   * Retried events the journal already held when their first answer failed (their `ts` is older):
   * each would have been appended twice without the key, and was answered with its original seq.
   */
  readonly retriedLanded: number
  /** Retried requests answered with seqs that are not consecutive: a kill cut the write short, the retry added the rest. */
  readonly retriesCompleted: number
  /** Events of requests never answered (the run ended first): each may or may not be journaled. */
  readonly unansweredEvents: number
  /** Events found more than once in the final journal (each is also a violation). */
  readonly duplicates: number
  /** Events of the final journal, each checked against the content its id implies. */
  readonly journalEvents: number
  /** Acknowledged events found at their acknowledged seq. */
  readonly ackedVerified: number
  /** Frames readers received live and checked (order, content, seq). */
  readonly readerEvents: number
  readonly readerReconnects: number
  readonly resets: Readonly<Record<string, number>>
  /** Restarts whose head was below a seq already acknowledged or seen (each one a violation). */
  readonly rollbacks: number
  readonly epochs: number
  readonly segments: number
  /** From the server's log: torn tails cut at open, stale locks taken over. */
  readonly tornTailsCut: number
  readonly lockTakeovers: number
  readonly violations: ReadonlyArray<string>
  /** Kept when the run failed (or when asked). */
  readonly directory: string | undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Events: everything about an event follows from its id
// ---------------------------------------------------------------------------------------------------------------

// Multi-byte characters, so line splitting and offsets see more than ASCII.
const contentUnits = ["a", "b", "é", "→", "😀", " ", "z", '"', "\\", "ß"]

const contentFor = (id: string): string => {
  const h = hashString(id)
  const length = 20 + (h % 300)
  let text = `${id} `
  for (let i = 0; i < length; i++) text += contentUnits[(h + i * 7) % contentUnits.length]
  return text
}

const sessionOf = (id: string) => id.slice(0, id.indexOf("-"))

/** The event a producer sends for `id`, in the order the server encodes its fields. */
export const eventFor = (id: string) => ({
  type: "message_appended",
  session_id: sessionOf(id),
  message_id: id,
  role: "user",
  content: contentFor(id)
})

interface WireChange {
  readonly seq: number
  readonly ts: string
  readonly session_id?: string
  readonly event: { readonly type: string; readonly message_id?: string }
  /** On disk only: the idempotency key of the request that appended it. */
  key?: string
}

// ---------------------------------------------------------------------------------------------------------------
// The ledger: what was acknowledged, what was seen, and every violation
// ---------------------------------------------------------------------------------------------------------------

class Ledger {
  readonly violations: Array<string> = []
  /** id -> seq it was acknowledged with. */
  readonly acked = new Map<string, number>()
  /** Ids of requests sent but not answered yet (their answer lost, or a 503): sent again until they are. */
  readonly inDoubt = new Set<string>()
  /** id -> the idempotency key of the request that carries it. */
  readonly keyOf = new Map<string, string>()
  /** id -> when its request's first answer failed (ms), for the events of retried requests. */
  readonly failedAt = new Map<string, number>()
  /** Every id a producer has put on the wire (a reader may see an event before its producer sees the ack). */
  readonly sent = new Set<string>()
  /** seq -> id, from every observation (acks, readers, journal). */
  private readonly idAt = new Map<number, string>()
  private readonly seqOf = new Map<string, number>()
  maxSeq = 0

  constructor(
    private readonly onViolation: (text: string) => void,
    private readonly limit = 200
  ) {}

  violation(text: string): void {
    this.onViolation(text)
    if (this.violations.length < this.limit) this.violations.push(text)
    else if (this.violations.length === this.limit) this.violations.push("(more violations not shown)")
  }

  /** One more observation that seq `seq` holds event `id`; any other event at that seq, or that event elsewhere, is a violation. */
  observe(seq: number, id: string, source: string): void {
    const prior = this.idAt.get(seq)
    if (prior === undefined) {
      this.idAt.set(seq, id)
      if (seq > this.maxSeq) this.maxSeq = seq
    } else if (prior !== id) {
      this.violation(`seq ${seq} names two events: ${prior} and, per ${source}, ${id} (a reused seq)`)
    }
    const priorSeq = this.seqOf.get(id)
    if (priorSeq === undefined) this.seqOf.set(id, seq)
    else if (priorSeq !== seq) this.violation(`event ${id} appears at seq ${priorSeq} and, per ${source}, at ${seq}`)
  }

  /** Checks a change event's content against its id; answers the id when it is one of ours. */
  checkChange(change: WireChange, source: string): string | undefined {
    const id = change.event?.message_id
    if (change.event?.type !== "message_appended" || typeof id !== "string") {
      this.violation(
        `${source}: seq ${change.seq} is not an event the producers sent: ${JSON.stringify(change).slice(0, 200)}`
      )
      return undefined
    }
    if (!this.sent.has(id)) {
      this.violation(`${source}: seq ${change.seq} holds ${id}, which no producer had sent yet`)
    }
    if (change.session_id !== sessionOf(id) || !isDeepStrictEqual(change.event, eventFor(id))) {
      this.violation(
        `${source}: seq ${change.seq} (${id}) does not have the content sent: ${JSON.stringify(change).slice(0, 300)}`
      )
    }
    if (typeof change.ts !== "string" || Number.isNaN(Date.parse(change.ts))) {
      this.violation(`${source}: seq ${change.seq} has no valid ts: ${JSON.stringify(change.ts)}`)
    }
    this.observe(change.seq, id, source)
    return id
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------------------------

const isRefused = (error: unknown): boolean => {
  const cause = (error as { cause?: { code?: string } } | undefined)?.cause
  return cause?.code === "ECONNREFUSED"
}

const countMatches = (text: string, pattern: RegExp) => (text.match(pattern) ?? []).length

export const runCrash = async (options: CrashOptions): Promise<CrashReport> => {
  const onPostgres = options.journal === "postgres"
  const replicaCount = onPostgres ? (options.replicas ?? 2) : 1
  const route = options.route ?? "any"
  const dbStops = onPostgres ? (options.dbStops ?? 0) : 0
  // What the messages and the report call the run.
  const mode = onPostgres ? `postgres, ${replicaCount} replica${replicaCount > 1 ? "s" : ""}, ${route}` : options.fsync
  const seed = options.seed ?? Date.now() % 2 ** 31
  const random = makeRandom(seed)
  const producerCount = options.producers ?? 4
  const readerCount = options.readers ?? 3
  const minDelay = options.minDelayMs ?? 50
  const maxDelay = options.maxDelayMs ?? 500
  const maxBatch = options.maxBatch ?? 8
  const progress = options.progress ?? (() => {})
  const started = Date.now()

  const workDir = Fs.mkdtempSync(Path.join(Os.tmpdir(), `crash-${onPostgres ? "postgres" : mode}-`))
  const directory = Path.join(workDir, "journal")
  const command = options.command ?? (await serverCommand(options.launcher ?? "tsx", workDir))
  const database = onPostgres ? await startPostgres() : undefined
  const databaseUrl = database?.createDatabase("crash")
  const replicas: Array<ServerProcess> = []
  for (let i = 0; i < replicaCount; i++) {
    replicas.push(
      new ServerProcess({
        command,
        directory: replicaCount === 1 ? directory : `${directory}-${i}`,
        port: await freePort(),
        fsync: options.fsync,
        segmentBytes: options.segmentBytes ?? 16384,
        // Nothing is pruned: every event ever acknowledged must still be readable at the end.
        retainSegments: 1_000_000,
        logFile: Path.join(workDir, replicaCount === 1 ? "server.log" : `server-${i}.log`),
        env: databaseUrl === undefined ? undefined : { FEED_DATABASE_URL: databaseUrl }
      })
    )
  }
  const server = replicas[0]!
  const nameOf = (replica: ServerProcess) =>
    replicaCount === 1 ? "restart" : `replica ${replicas.indexOf(replica)} restart`

  const ledger = new Ledger((text) => progress(`VIOLATION: ${text}`))
  const stats = {
    ackedEvents: 0,
    ackedRequests: 0,
    ephemeralNulls: 0,
    retriedRequests: 0,
    retriedEvents: 0,
    retriesCompleted: 0,
    readerEvents: 0,
    readerReconnects: 0,
    rollbacks: 0,
    resets: {} as Record<string, number>
  }
  const startups: Array<number> = []
  const epochs = new Set<string>()
  let epoch: string | undefined
  let stopProducers = false
  let stopReaders = false

  /**
   * Starts the server and checks what it recovered against what the previous generation
   * acknowledged or showed. That is measured before the start: once up, the new server answers
   * producers before the harness reads its status, and those seqs may already be above it.
   */
  const startAndCheck = async (replica: ServerProcess = server): Promise<ServerStatus> => {
    // Let answers that arrived before the kill be handled first.
    await sleep(20)
    const previousMax = ledger.maxSeq
    const { status, startupMs } = await replica.start()
    startups.push(startupMs)
    const name = `${nameOf(replica)} ${replica.generation}`
    const previous = epoch
    epoch = status.epoch
    epochs.add(status.epoch)
    // A process crash loses nothing the kernel holds, whatever the fsync mode: same epoch, no rollback.
    // Nor does an immediate stop of the database: what it acknowledged is in its WAL.
    if (previous !== undefined && status.epoch !== previous) {
      ledger.violation(`${name}: the epoch changed (${previous} -> ${status.epoch}) after a SIGKILL in ${mode} mode`)
    }
    if (status.head_seq < previousMax) {
      stats.rollbacks++
      ledger.violation(`${name}: head ${status.head_seq} is below seq ${previousMax}, already acknowledged or seen`)
    }
    if (status.degraded) ledger.violation(`${name}: the feed reports itself degraded at start`)
    return status
  }

  /** Where a producer sends an attempt: any replica at random, or (sticky) a retry where its first attempt went. */
  const targetFor = (rng: Random, previous: ServerProcess | undefined): ServerProcess =>
    previous !== undefined && route === "sticky" ? previous : rng.pick(replicas)

  // ---- producers ---------------------------------------------------------------------------------------------

  /** Set when the run ends early: producers stop, even with requests not yet answered. */
  let abandonProducers = false

  const noteRetry = (ids: ReadonlyArray<string>) => {
    stats.retriedRequests++
    stats.retriedEvents += ids.length
    const now = Date.now()
    for (const id of ids) ledger.failedAt.set(id, now)
  }

  const producer = async (index: number) => {
    const rng = random.fork(1000 + index)
    let counter = 0
    let requests = 0
    /** A request not answered yet: sent again, the same bytes under the same key, until it is. */
    let pending: { entries: Array<{ id: string | undefined; body: unknown }>; body: string; key: string } | undefined
    let retried = false
    /** The replica the pending request was last sent to. */
    let target: ServerProcess | undefined
    // Once told to stop, a producer still sees its last request answered by the last server.
    while (!abandonProducers && (!stopProducers || pending !== undefined)) {
      if (pending === undefined) {
        const entries = Array.from({ length: rng.int(1, maxBatch) }, () => {
          // Now and then an ephemeral event, which must come back as `null` and never be journaled.
          if (rng.chance(0.1)) return { id: undefined, body: { event: { type: "token", content: "tok" } } }
          const id = `p${index}-${++counter}`
          const event = eventFor(id)
          return { id, body: rng.chance(0.5) ? { session_id: event.session_id, event } : { event } }
        })
        const body = entries.length === 1 && rng.chance(0.5) ? entries[0]!.body : { events: entries.map((e) => e.body) }
        pending = { entries, body: JSON.stringify(body), key: `p${index}-r${++requests}` }
        retried = false
        target = undefined
        for (const entry of entries) {
          if (entry.id === undefined) continue
          ledger.sent.add(entry.id)
          ledger.keyOf.set(entry.id, pending.key)
          ledger.inDoubt.add(entry.id)
        }
      }
      const { entries, key } = pending
      const ids = entries.flatMap((entry) => (entry.id === undefined ? [] : [entry.id]))
      let status: number
      let text: string
      target = targetFor(rng, target)
      try {
        const response = await fetch(`${target.url}${feedPath("events")}`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": key },
          body: pending.body,
          signal: AbortSignal.timeout(60_000)
        })
        status = response.status
        text = await response.text()
      } catch (error) {
        // Never reached a server (refused), or sent and the answer lost (killed mid-request):
        // journaled or not, the same request under the same key settles it.
        if (!isRefused(error) && !retried) {
          retried = true
          noteRetry(ids)
        }
        await sleep(25)
        continue
      }
      if (status === 503) {
        if (!retried) {
          retried = true
          noteRetry(ids)
        }
        await sleep(25)
        continue
      }
      pending = undefined
      for (const id of ids) ledger.inDoubt.delete(id)
      if (status !== 200) {
        ledger.violation(`producer ${index}: POST (key ${key}) answered ${status}: ${text.slice(0, 300)}`)
        await sleep(100)
        continue
      }
      let seqs: Array<number | null>
      try {
        seqs = (JSON.parse(text) as { seqs: Array<number | null> }).seqs
      } catch {
        ledger.violation(`producer ${index}: POST answered 200 with a body that is not JSON: ${text.slice(0, 300)}`)
        continue
      }
      if (!Array.isArray(seqs) || seqs.length !== entries.length) {
        ledger.violation(`producer ${index}: ${entries.length} events answered with seqs ${JSON.stringify(seqs)}`)
        continue
      }
      stats.ackedRequests++
      let previous: number | undefined
      let consecutive = true
      for (let i = 0; i < entries.length; i++) {
        const id = entries[i]!.id
        const seq = seqs[i]
        if (id === undefined) {
          if (seq === null) stats.ephemeralNulls++
          else ledger.violation(`producer ${index}: an ephemeral event was answered with seq ${seq}`)
          continue
        }
        if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) {
          ledger.violation(`producer ${index}: ${id} was answered with ${JSON.stringify(seq)}`)
          continue
        }
        if (previous !== undefined && seq !== previous + 1) consecutive = false
        previous = seq
        ledger.acked.set(id, seq)
        ledger.observe(seq, id, `the ack to producer ${index}`)
        stats.ackedEvents++
      }
      // One request is accepted as a whole: its durable events get consecutive seqs, unless a kill
      // cut its write short and its retry added the rest.
      if (!consecutive) {
        if (retried) stats.retriesCompleted++
        else ledger.violation(`producer ${index}: the batch's seqs are not consecutive: ${JSON.stringify(seqs)}`)
      }
    }
  }

  // ---- readers -----------------------------------------------------------------------------------------------

  interface ReaderState {
    /** The seq the reader has everything up to (its cursor's seq). */
    last: number
    /** The cursor as the server wrote it (`<epoch>:<seq>`), sent back as `Last-Event-ID`. */
    cursor: string | undefined
    abort: AbortController | undefined
  }
  const readerStates: Array<ReaderState> = []

  const reader = async (index: number) => {
    // Even readers resume the way browsers do (`Last-Event-ID`, epoch-checked); odd ones with a plain `?since=`.
    const byHeader = index % 2 === 0
    const state: ReaderState = { last: 0, cursor: undefined, abort: undefined }
    readerStates.push(state)
    const name = `reader ${index} (${byHeader ? "Last-Event-ID" : "?since="})`
    const seqOfId = (id: string | undefined) => (id === undefined ? undefined : Number(id.slice(id.indexOf(":") + 1)))

    const onFrame = (frame: SseFrame) => {
      let data: any
      try {
        data = JSON.parse(frame.data)
      } catch {
        ledger.violation(`${name}: a frame's data is not JSON: ${frame.data.slice(0, 200)}`)
        return
      }
      if (frame.event === "message" && data?.type === "feed_reset") {
        stats.resets[data.reason] = (stats.resets[data.reason] ?? 0) + 1
        // Nothing a reader saw is lost to a process crash, so no reader is ever told to resync.
        ledger.violation(`${name}: reset in ${mode} mode after seq ${state.last}: ${frame.data}`)
        if (data.from_seq !== state.last) {
          ledger.violation(`${name}: a reset names cursor ${data.from_seq}, but the reader was at ${state.last}`)
        }
        const next = seqOfId(frame.id)
        if (next === undefined || !Number.isSafeInteger(next)) {
          ledger.violation(`${name}: a reset without a usable id: ${JSON.stringify(frame)}`)
          return
        }
        state.last = next
        state.cursor = frame.id
        return
      }
      if (frame.event === "message") {
        const change = data as WireChange
        stats.readerEvents++
        if (change.seq !== state.last + 1) {
          ledger.violation(
            change.seq <= state.last
              ? `${name}: duplicate: seq ${change.seq} after ${state.last}`
              : `${name}: gap: seq ${change.seq} after ${state.last} (missed ${state.last + 1}..${change.seq - 1})`
          )
        }
        ledger.checkChange(change, name)
        if (seqOfId(frame.id) !== change.seq) ledger.violation(`${name}: frame id ${frame.id} for seq ${change.seq}`)
        state.last = Math.max(state.last, change.seq)
        state.cursor = frame.id
        return
      }
      if (frame.event === "caught_up") {
        if (data.seq !== state.last)
          ledger.violation(`${name}: caught_up at ${data.seq}, but the reader is at ${state.last}`)
        state.cursor = frame.id
        return
      }
      ledger.violation(`${name}: unexpected frame: ${JSON.stringify(frame).slice(0, 300)}`)
    }

    // With replicas, a reader starts on another one than the first (where producers' first
    // attempts often go) and, refused, resumes on the next, as behind a load balancer.
    let followed = (index + 1) % replicaCount
    while (!stopReaders) {
      const abort = new AbortController()
      state.abort = abort
      try {
        const headers: Record<string, string> = { accept: "text/event-stream" }
        let url = `${replicas[followed]!.url}${feedPath("stream")}`
        if (byHeader) {
          if (state.cursor !== undefined) headers["last-event-id"] = state.cursor
        } else {
          url += `?since=${state.last}`
        }
        const response = await fetch(url, { headers, signal: abort.signal })
        if (response.status !== 200) {
          const text = await response.text()
          if (response.status < 500) ledger.violation(`${name}: the stream answered ${response.status}: ${text}`)
          await sleep(50)
          continue
        }
        const body = response.body!.getReader()
        const decoder = new TextDecoder()
        const parse = makeSseParser(onFrame)
        while (true) {
          const { done, value } = await body.read()
          if (done) break
          parse(decoder.decode(value, { stream: true }))
        }
      } catch (error) {
        if (isRefused(error)) {
          followed = (followed + 1) % replicaCount
          await sleep(25)
          continue
        }
      }
      if (!stopReaders) stats.readerReconnects++
    }
  }

  // ---- the faults --------------------------------------------------------------------------------------------

  let dbDownMs = 0
  let dbStopsDone = 0

  /**
   * Every replica answers and says it is not degraded (after the database came back), with a
   * head not below `previousMax`, what was acknowledged or seen before the stop.
   */
  const awaitRecovered = async (after: string, previousMax: number) => {
    const deadline = Date.now() + 120_000
    for (const replica of replicas) {
      while (true) {
        const status = await replica.status(2_000)
        if (status !== undefined && !status.degraded) {
          if (status.head_seq < previousMax) {
            stats.rollbacks++
            ledger.violation(
              `${after}: replica ${replicas.indexOf(replica)} reports head ${status.head_seq}, below seq ${previousMax}, already acknowledged or seen`
            )
          }
          if (status.epoch !== epoch) {
            ledger.violation(`${after}: the epoch changed (${epoch} -> ${status.epoch})`)
          }
          break
        }
        if (Date.now() > deadline) {
          ledger.violation(`${after}: replica ${replicas.indexOf(replica)} still degraded or silent after 120 s`)
          return
        }
        await sleep(50)
      }
    }
  }

  /** The database stopped as a crash would (`-m immediate`), under load, down a while, started again. */
  const stopDatabase = async (n: number) => {
    const db = database!
    const down = random.int(options.minDownMs ?? 200, options.maxDownMs ?? 2000)
    const previousMax = ledger.maxSeq
    const stoppedAt = Date.now()
    await db.stopAsync("immediate")
    await sleep(down)
    await db.startAsync()
    dbDownMs += Date.now() - stoppedAt
    dbStopsDone++
    const recoveredAt = Date.now()
    await awaitRecovered(`database stop ${n}`, previousMax)
    progress(
      `${mode} database stop ${n}/${dbStops}: down ${Date.now() - stoppedAt - (Date.now() - recoveredAt)} ms, ` +
        `replicas recovered in ${Date.now() - recoveredAt} ms, acked ${stats.ackedEvents}, ` +
        `in doubt ${ledger.inDoubt.size}, violations ${ledger.violations.length}`
    )
  }

  /** Kills and database stops in a random order, from the seed. */
  const faults: Array<"kill" | "stop"> = [
    ...Array.from({ length: options.kills }, () => "kill" as const),
    ...Array.from({ length: dbStops }, () => "stop" as const)
  ]
  for (let i = faults.length - 1; i > 0; i--) {
    const j = random.int(0, i)
    ;[faults[i], faults[j]] = [faults[j]!, faults[i]!]
  }

  let report: CrashReport | undefined
  try {
    for (const replica of replicas) await startAndCheck(replica)
    const producers = Array.from({ length: producerCount }, (_, i) => producer(i))
    const readers = Array.from({ length: readerCount }, (_, i) => reader(i))

    let kill = 0
    for (const fault of faults) {
      await sleep(random.int(minDelay, maxDelay))
      if (fault === "stop") {
        await stopDatabase(dbStopsDone + 1)
        continue
      }
      kill++
      const victim = random.pick(replicas)
      await victim.kill("SIGKILL")
      const status = await startAndCheck(victim)
      progress(
        `${mode} kill ${kill}/${options.kills}${replicaCount > 1 ? ` (replica ${replicas.indexOf(victim)})` : ""}: ` +
          `head ${status.head_seq}, acked ${stats.ackedEvents}, in doubt ${ledger.inDoubt.size}, ` +
          `violations ${ledger.violations.length}, startup ${startups[startups.length - 1]} ms`
      )
    }

    // The last generation runs to the end: quiesce, let every reader catch up, then read the journal back.
    stopProducers = true
    await Promise.all(producers)
    const finals: Array<ServerStatus> = []
    for (const replica of replicas) {
      const status = await replica.status()
      if (status === undefined) throw new Error(`a replica does not answer at the end:\n${replica.logTail()}`)
      finals.push(status)
    }
    const final = finals.reduce((a, b) => (b.head_seq > a.head_seq ? b : a))
    const catchUpDeadline = Date.now() + 120_000
    while (readerStates.some((state) => state.last < final.head_seq) && Date.now() < catchUpDeadline) await sleep(20)
    for (const [i, state] of readerStates.entries()) {
      if (state.last !== final.head_seq) {
        ledger.violation(`reader ${i} ended at seq ${state.last}, the head is ${final.head_seq}`)
      }
    }
    stopReaders = true
    for (const state of readerStates) state.abort?.abort()
    await Promise.all(readers)

    // Every replica serves the same journal (a replica's status may lag others' appends: its page reads do not).
    const pages = { shortPages: 0 }
    const journal = await readJournalOverHttp(server.url, final.head_seq, ledger, pages)
    for (const replica of replicas.slice(1)) {
      const other = await readJournalOverHttp(replica.url, final.head_seq, ledger, pages)
      if (!isDeepStrictEqual(other, journal)) {
        ledger.violation(`replica ${replicas.indexOf(replica)} serves another journal than replica 0`)
      }
    }
    const stored = onPostgres ? await readDatabaseRows(databaseUrl!, ledger) : readSegmentFiles(directory, ledger)
    const where = onPostgres ? "rows in the database" : "lines on disk"
    // The key is the journal's own: every event of ours carries its request's, and pages never show it.
    const rowsOfKey = new Map<string, number>()
    for (const change of stored) {
      const id = change.event?.message_id
      const sentWith = id === undefined ? undefined : ledger.keyOf.get(id)
      if (sentWith !== undefined && change.key !== sentWith) {
        ledger.violation(`seq ${change.seq} (${id}) is journaled with key ${change.key}, its request's is ${sentWith}`)
      }
      if (change.key !== undefined) rowsOfKey.set(change.key, (rowsOfKey.get(change.key) ?? 0) + 1)
      delete change.key
    }
    // Per idempotency key: never more events than its request had (a request appended twice has twice as many).
    const eventsOfKey = new Map<string, number>()
    for (const key of ledger.keyOf.values()) eventsOfKey.set(key, (eventsOfKey.get(key) ?? 0) + 1)
    let keysDuplicated = 0
    for (const [key, rows] of rowsOfKey) {
      if (rows > (eventsOfKey.get(key) ?? 0)) {
        keysDuplicated++
        ledger.violation(`key ${key} names ${rows} journaled events, its request had ${eventsOfKey.get(key) ?? 0}`)
      }
    }
    if (journal.length !== stored.length) {
      ledger.violation(`the journal has ${journal.length} events over HTTP but ${stored.length} ${where}`)
    }
    for (let i = 0; i < Math.min(journal.length, stored.length); i++) {
      if (!isDeepStrictEqual(journal[i], stored[i])) {
        ledger.violation(
          `event ${i + 1} differs between HTTP and the ${where}: ${JSON.stringify(journal[i])} vs ${JSON.stringify(stored[i])}`
        )
        break
      }
    }
    for (let i = 0; i < stored.length; i++) {
      if (stored[i]!.seq !== i + 1) {
        ledger.violation(`the journal's seqs are not 1..${stored.length}: event ${i + 1} has seq ${stored[i]!.seq}`)
        break
      }
    }
    if (stored.length !== final.head_seq) {
      ledger.violation(`the head is ${final.head_seq} but the ${where} hold ${stored.length} events`)
    }
    const journaledIds = new Map<string, number>()
    let duplicates = 0
    let retriedLanded = 0
    for (const change of stored) {
      const id = ledger.checkChange(change, "the final journal")
      if (id === undefined) continue
      const failedAt = ledger.failedAt.get(id)
      if (failedAt !== undefined && Date.parse(change.ts) <= failedAt) retriedLanded++
      if (journaledIds.has(id)) {
        duplicates++
        ledger.violation(`${id} is journaled twice: seqs ${journaledIds.get(id)} and ${change.seq}`)
      }
      journaledIds.set(id, change.seq)
    }
    let ackedVerified = 0
    for (const [id, seq] of ledger.acked) {
      const at = journaledIds.get(id)
      if (at === seq) ackedVerified++
      else
        ledger.violation(
          `acknowledged ${id} (seq ${seq}) is ${at === undefined ? "missing from" : `at seq ${at} in`} the journal`
        )
    }
    if (ledger.inDoubt.size > 0) {
      ledger.violation(`${ledger.inDoubt.size} event(s) of requests never answered, retried to the end`)
    }

    // A clean stop: exit 0 from every replica.
    for (const replica of replicas) {
      const exit = await replica.kill("SIGTERM")
      if (exit.code !== 0) {
        ledger.violation(`SIGTERM: ${nameOf(replica)} exited with code ${exit.code} (signal ${exit.signal})`)
      }
    }
    if (onPostgres) {
      // ... and, on the database, no connection left behind.
      const left = await connectionsLeft(databaseUrl!)
      if (left > 0) ledger.violation(`after a clean stop of every replica ${left} of their connections are still open`)
    } else {
      // ... and the journal marked closed (no OPEN file) and the lock released (LOCK stays, as a
      // file the kernel locks: free, and without a holder's name).
      if (Fs.existsSync(Path.join(directory, "OPEN"))) ledger.violation("after a clean stop the journal still has OPEN")
      const lockFile = Path.join(directory, "LOCK")
      if (Fs.existsSync(lockFile) && Fs.readFileSync(lockFile, "utf8") !== "") {
        ledger.violation(`after a clean stop LOCK still names a holder: ${Fs.readFileSync(lockFile, "utf8").trim()}`)
      }
      const probe = ChildProcess.spawnSync("flock", ["--nonblock", "--exclusive", lockFile, "true"])
      if (probe.status !== 0) ledger.violation(`after a clean stop LOCK is still locked (flock: ${probe.status})`)
    }

    const log = replicas.map((replica) => Fs.readFileSync(replica.options.logFile, "utf8")).join("\n")
    report = {
      fsync: mode,
      replicas: replicaCount,
      dbStops: dbStopsDone,
      dbDownMs,
      keysDuplicated,
      shortPages: pages.shortPages,
      seed,
      launcher: options.command !== undefined ? "prebuilt" : (options.launcher ?? "tsx"),
      kills: options.kills,
      elapsedMs: Date.now() - started,
      meanStartupMs: Math.round(startups.reduce((a, b) => a + b, 0) / startups.length),
      maxStartupMs: Math.max(...startups),
      ackedEvents: stats.ackedEvents,
      ackedRequests: stats.ackedRequests,
      ephemeralNulls: stats.ephemeralNulls,
      retriedRequests: stats.retriedRequests,
      retriedEvents: stats.retriedEvents,
      retriedLanded,
      retriesCompleted: stats.retriesCompleted,
      unansweredEvents: ledger.inDoubt.size,
      duplicates,
      journalEvents: stored.length,
      ackedVerified,
      readerEvents: stats.readerEvents,
      readerReconnects: stats.readerReconnects,
      resets: stats.resets,
      rollbacks: stats.rollbacks,
      epochs: epochs.size,
      segments: final.segments,
      tornTailsCut: countMatches(log, /cut a torn tail/g),
      lockTakeovers: countMatches(log, /journal lock in .* taken over/g),
      violations: ledger.violations,
      directory: undefined
    }
    return report
  } catch (error) {
    ledger.violation(`the run stopped: ${error instanceof Error ? error.message : String(error)}`)
    throw Object.assign(new Error(`crash run (${mode}, seed ${seed}) failed; files kept in ${workDir}`), {
      cause: error,
      violations: ledger.violations
    })
  } finally {
    stopProducers = true
    abandonProducers = true
    stopReaders = true
    for (const state of readerStates) state.abort?.abort()
    for (const replica of replicas) if (replica.isRunning) await replica.kill("SIGKILL").catch(() => undefined)
    const keep = options.keepDirectory === true || report === undefined || report.violations.length > 0
    if (keep) {
      // The database's files stay too, stopped, for a look with `pg_ctl start -D <dataDir>`.
      if (database !== undefined) {
        try {
          database.stop("fast")
        } catch {
          // Already down (the run stopped while it was).
        }
        Fs.writeFileSync(Path.join(workDir, "DATABASE"), `${database.dataDir}\n`)
      }
      if (report !== undefined) report = Object.assign(report, { directory: workDir })
    } else {
      database?.destroy()
      Fs.rmSync(workDir, { recursive: true, force: true })
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the journal back
// ---------------------------------------------------------------------------------------------------------------

/**
 * Every event 1..head through `GET /api/v1/events`, page by page. A page that comes back empty
 * below the head is asked again as a long poll (`wait`): a replica's page without it ends at
 * the last seq this replica appended or started with, not at the database's head (counted in
 * `shortPages`); empty again, it is a violation.
 */
const readJournalOverHttp = async (
  url: string,
  head: number,
  ledger: Ledger,
  counts: { shortPages: number }
): Promise<Array<WireChange>> => {
  const events: Array<WireChange> = []
  let since = 0
  let wait = 0
  while (since < head) {
    const response = await fetch(`${url}${feedPath("events")}?since=${since}&limit=1000&wait=${wait}`, {
      signal: AbortSignal.timeout(60_000)
    })
    const page = (await response.json()) as { events?: Array<WireChange>; reset?: unknown; next_since: number }
    if (response.status !== 200 || page.events === undefined) {
      ledger.violation(
        `GET /api/v1/events?since=${since} answered ${response.status}: ${JSON.stringify(page).slice(0, 300)}`
      )
      break
    }
    if (page.events.length === 0) {
      if (wait === 0) {
        counts.shortPages++
        wait = 5
        continue
      }
      ledger.violation(`GET /api/v1/events?since=${since}&wait=${wait} returned no events below the head ${head}`)
      break
    }
    wait = 0
    events.push(...page.events)
    since = page.next_since
  }
  return events
}

/**
 * Every event of the database's one account, in seq order, from its rows as stored (`payload` is
 * the wire JSON after `{"seq":N`); the account's head must equal its count.
 */
const readDatabaseRows = async (url: string, ledger: Ledger): Promise<Array<WireChange>> => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    const heads = await client.query<{ account_id: string; head: string; floor_seq: string }>(
      "SELECT account_id, head::text AS head, floor_seq::text AS floor_seq FROM feed_heads"
    )
    if (heads.rows.length !== 1) {
      ledger.violation(`the database holds ${heads.rows.length} accounts, not 1: ${JSON.stringify(heads.rows)}`)
    }
    const account = heads.rows[0]?.account_id
    if (account === undefined) return []
    const rows = await client.query<{ seq: string; key: string | null; payload: string }>(
      "SELECT seq::text AS seq, key, payload FROM feed_events WHERE account_id = $1 ORDER BY feed_events.seq, gpos",
      [account]
    )
    if (Number(heads.rows[0]!.head) !== rows.rows.length || heads.rows[0]!.floor_seq !== "1") {
      ledger.violation(
        `feed_heads says head ${heads.rows[0]!.head} (floor ${heads.rows[0]!.floor_seq}), the account has ${rows.rows.length} rows`
      )
    }
    const events: Array<WireChange> = []
    for (const row of rows.rows) {
      try {
        const change = JSON.parse(`{"seq":${row.seq}${row.payload}}`) as WireChange
        if (row.key !== null) change.key = row.key
        events.push(change)
      } catch {
        ledger.violation(`the row of seq ${row.seq} is not an event's JSON: ${row.payload.slice(0, 200)}`)
      }
    }
    return events
  } finally {
    await client.end()
  }
}

/** The service's connections still open on the database (waited for a while: a backend ends just after its client). */
const connectionsLeft = async (url: string): Promise<number> => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    const deadline = Date.now() + 10_000
    while (true) {
      const result = await client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'change-feed'"
      )
      const left = result.rows[0]!.n
      if (left === 0 || Date.now() > deadline) return left
      await sleep(100)
    }
  } finally {
    await client.end()
  }
}

/** Every line of every segment file, in name order; each file must end on a whole line and start at its name's seq. */
const readSegmentFiles = (directory: string, ledger: Ledger): Array<WireChange> => {
  const names = Fs.readdirSync(directory)
    .filter((name) => /^events-\d{20}\.jsonl$/.test(name))
    .sort()
  const events: Array<WireChange> = []
  for (const name of names) {
    const text = Fs.readFileSync(Path.join(directory, name), "utf8")
    if (text !== "" && !text.endsWith("\n")) ledger.violation(`${name} ends with a partial line`)
    const lines = text.split("\n").filter((line) => line !== "")
    for (const [i, line] of lines.entries()) {
      let change: WireChange
      try {
        // The checksum is the journal's own field, never sent to readers (the key is checked, then dropped, by the caller).
        const { crc, ...stored } = JSON.parse(line) as WireChange & { crc?: string }
        change = stored
        // The checksum covers the line's bytes before its field.
        const checked = line.slice(0, line.lastIndexOf(',"crc":"'))
        if (crc !== undefined && crc !== Zlib.crc32(checked).toString(16).padStart(8, "0")) {
          ledger.violation(`${name} line ${i + 1} fails its checksum: ${line.slice(0, 200)}`)
        }
      } catch {
        ledger.violation(`${name} line ${i + 1} is not JSON: ${line.slice(0, 200)}`)
        continue
      }
      if (i === 0 && change.seq !== Number(name.slice(7, 27))) {
        ledger.violation(`${name} starts with seq ${change.seq}`)
      }
      events.push(change)
    }
  }
  return events
}

// ---------------------------------------------------------------------------------------------------------------
// The summary table
// ---------------------------------------------------------------------------------------------------------------

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`

/** One row per run: the figures the harness reports. */
export const formatReports = (reports: ReadonlyArray<CrashReport>): string => {
  const rows: Array<[string, (r: CrashReport) => string]> = [
    ["replicas", (r) => String(r.replicas)],
    ["kills (SIGKILL)", (r) => String(r.kills)],
    ["database stops (-m immediate), down", (r) => `${r.dbStops}, ${seconds(r.dbDownMs)}`],
    ["elapsed", (r) => seconds(r.elapsedMs)],
    ["startup mean / max", (r) => `${r.meanStartupMs} / ${r.maxStartupMs} ms`],
    ["events acked", (r) => String(r.ackedEvents)],
    ["requests acked", (r) => String(r.ackedRequests)],
    ["ephemeral -> null", (r) => String(r.ephemeralNulls)],
    ["requests retried, same key (events)", (r) => `${r.retriedRequests} (${r.retriedEvents})`],
    ["retried events already journaled", (r) => String(r.retriedLanded)],
    ["retries completing a cut write", (r) => String(r.retriesCompleted)],
    ["events never answered", (r) => String(r.unansweredEvents)],
    ["events journaled twice", (r) => String(r.duplicates)],
    ["keys with more events than sent", (r) => String(r.keysDuplicated)],
    ["pages empty below the head (no wait)", (r) => String(r.shortPages)],
    ["journal events checked", (r) => String(r.journalEvents)],
    ["acked found at their seq", (r) => `${r.ackedVerified}/${r.ackedEvents}`],
    ["reader frames checked", (r) => String(r.readerEvents)],
    ["reader reconnects", (r) => String(r.readerReconnects)],
    [
      "resets",
      (r) =>
        Object.entries(r.resets)
          .map(([k, v]) => `${k} ${v}`)
          .join(", ") || "0"
    ],
    ["rollbacks", (r) => String(r.rollbacks)],
    ["epochs", (r) => String(r.epochs)],
    ["segments", (r) => String(r.segments)],
    ["torn tails cut", (r) => String(r.tornTailsCut)],
    ["stale locks taken over", (r) => String(r.lockTakeovers)],
    ["seed", (r) => String(r.seed)],
    ["VIOLATIONS", (r) => String(r.violations.length)]
  ]
  const header = ["journal", ...reports.map((r) => r.fsync)]
  const table = [header, ...rows.map(([label, cell]) => [label, ...reports.map(cell)])]
  const widths = header.map((_, c) => Math.max(...table.map((row) => row[c]!.length)))
  const line = (row: Array<string>) =>
    row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")
  const rule = widths.map((w) => "-".repeat(w)).join("  ")
  return [line(table[0]!), rule, ...table.slice(1).map(line)].join("\n")
}
