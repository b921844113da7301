/**
 * Section 6, accounts: one service hosting many accounts, measured end to end. The server is
 * the service as `npm start` runs it (`node dist/main.js` after `npm run build`, configured by
 * its environment) in a process of its own; every client is another process
 * (`accounts-client.ts`); this process only starts them and reads the server's `/proc` entries.
 *
 * 1. Aggregate durable ingest, `FEED_FSYNC=always`, over 1, 10, 100 and 1,000 active accounts:
 *    a fresh server per count, the accounts opened first, then client processes keep POSTs of
 *    `batch` events in flight round-robin across the accounts; events acknowledged per second
 *    over a common window, and the server's CPU time (utime + stime) per event over it.
 *    Baseline: the same load on plain files (write + fsync per file, with group commit, no HTTP).
 * 2. The first POST to an account never opened, p50/p99, one request at a time, each followed
 *    by the same POST to an open account (the baseline).
 * 3. The server's RSS per open idle account: after opening 1,000 more accounts, minus before.
 * 4. 10,000 accounts opened in waves and closed again (`FEED_ACCOUNT_IDLE=1 second`): the RSS
 *    before, at the peak and once `GET /api/v1/accounts` shows none open. `/metrics` is scraped
 *    as a Prometheus server would, once before, every 5 s during the churn and twice after it
 *    (a closed account's series go at the scrape after its close).
 *
 * RSS is read as it is (`VmRSS`), with no GC forced: the service exposes no heap figure. For
 * parts 3 and 4 the server also runs with `--expose-gc` and a preload (`accounts-heap.ts`) that
 * collects on SIGUSR2: after each plain reading, a forced GC tells the heap still live apart
 * from what V8 and the allocator keep. Figures taken that way say so.
 */
import * as ChildProcess from "node:child_process"
import * as Os from "node:os"
import * as Readline from "node:readline"
import type { ColdResult, LoadResult, OpenResult } from "./accounts-client.js"
import { freePort, getJson, getText } from "./common.js"
import {
  type BenchConfig,
  nodeArgs,
  serviceArgs,
  Histogram,
  log,
  MB,
  onExit,
  processCpu,
  processMemory,
  profileDir,
  projectDir,
  removeDir,
  serviceStop,
  type Report,
  rounds,
  runChild,
  sleep,
  tempDir
} from "./support.js"

const SECTION = "accounts"
const CLIENT = "accounts-client.ts"
/** The goal's account count, judged against the single account. */
const GOAL_ACCOUNTS = 100
const GOAL_SHARE = 0.5
const GOAL_COLD_P99_MS = 20
const GOAL_IDLE_KIB = 64
/** How far above its start the RSS may end after the churn and still count as back. */
const CHURN_MARGIN = 0.1

interface Sizes {
  readonly counts: ReadonlyArray<number>
  /** Client processes, and requests each keeps in flight. */
  readonly clients: number
  readonly inFlight: number
  /** Events per POST. */
  readonly batch: number
  /** Load before the measured window starts, and the window. */
  readonly rampMs: number
  readonly windowMs: number
  /** Best of this many interleaved rounds per ingest figure (ours and baselines alike). */
  readonly rounds: number
  readonly cold: number
  readonly coldUnmeasured: number
  readonly idle: number
  /** Accounts opened and closed before the churn's first reading, and the churn itself. */
  readonly churnWarmup: number
  readonly churn: number
  readonly wave: number
  /** How long the server is left alone before an RSS reading. */
  readonly settleMs: number
}

const sizes = (config: BenchConfig): Sizes =>
  config.quick
    ? {
        counts: [1, GOAL_ACCOUNTS],
        clients: 2,
        inFlight: 32,
        batch: 20,
        rampMs: 1_000,
        windowMs: 1_000,
        rounds: 1,
        cold: 30,
        coldUnmeasured: 5,
        idle: 100,
        churnWarmup: 20,
        churn: 150,
        wave: 150,
        settleMs: 1_000
      }
    : {
        counts: [1, 10, 100, 1000],
        clients: 2,
        inFlight: 32,
        batch: 20,
        rampMs: 1_000,
        windowMs: 5_000,
        rounds: 2,
        cold: 200,
        coldUnmeasured: 20,
        idle: 1_000,
        churnWarmup: 200,
        churn: 10_000,
        wave: 1_000,
        settleMs: 3_000
      }

const load1 = () => Os.loadavg()[0]!.toFixed(1)

// ---------------------------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------------------------

interface CpuTime {
  readonly user: number
  readonly system: number
}

/** `process.memoryUsage()` of the server right after a forced full GC. */
interface HeapReading {
  readonly rss: number
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
}

interface Server {
  readonly pid: number
  readonly port: number
  /** `VmRSS`, bytes. */
  readonly rss: () => number
  /** CPU time so far (every thread), ms. */
  readonly cpu: () => CpuTime
  /** Accounts `GET /api/v1/accounts` lists as open, and all it lists. */
  readonly accounts: () => Promise<{ readonly open: number; readonly listed: number }>
  /** Forces a full GC in the server and reads its memory (only when started with `heap`). */
  readonly collect: () => Promise<HeapReading>
  /** `GET /metrics`, as a Prometheus server scrapes it: the lines of `account` labels it holds. */
  readonly scrape: () => Promise<number>
  readonly stop: () => Promise<void>
}

const HEAP_LINE = "accounts-heap "

/**
 * The service in a process of its own on a fresh `FEED_DIR`, with `env` on top of fsync
 * `always` and no credentials; answers once `GET /api/v1/accounts` does. With `heap`, it runs
 * with `--expose-gc` and the preload `accounts-heap.ts`, for `collect`.
 */
const startServer = async (name: string, env: Record<string, string>, heap = false): Promise<Server> => {
  const preload = heap ? ["--expose-gc", "--import", ...(await nodeArgs("accounts-heap.ts")).slice(-1)] : []
  const dir = tempDir(`accounts-${name}`)
  // Profiled whole when the suite profiles (`profile.ts`), as the other child processes are.
  const profiles = profileDir()
  const profiling =
    profiles === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${profiles}`, `--cpu-prof-name=accounts-server-${name}.cpuprofile`]
  const argv = [...profiling, ...preload, ...(await serviceArgs())]
  const port = await freePort()
  const { FEED_TOKEN: _token, FEED_JWT_SECRET: _secret, ...inherited } = process.env
  const child = ChildProcess.spawn(process.execPath, argv, {
    cwd: projectDir,
    env: { ...inherited, HOST: "127.0.0.1", PORT: String(port), FEED_DIR: dir, FEED_FSYNC: "always", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const kill = () => child.kill("SIGKILL")
  onExit(kill)
  let output = ""
  const keep = (data: Buffer) => (output = (output + data.toString()).slice(-4000))
  child.stdout.on("data", keep)
  child.stderr.on("data", keep)
  const collected: Array<(reading: HeapReading) => void> = []
  Readline.createInterface({ input: child.stderr }).on("line", (line) => {
    if (line.startsWith(HEAP_LINE)) collected.shift()?.(JSON.parse(line.slice(HEAP_LINE.length)) as HeapReading)
  })
  const stop = serviceStop(child, kill, dir)
  const pid = child.pid!
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}: ${output}`)
    if (Date.now() > deadline) {
      kill()
      throw new Error(`the server did not answer within 60 s: ${output}`)
    }
    const up = await getJson(port, "/api/v1/accounts").then(
      () => true,
      () => false
    )
    if (up) break
    await sleep(50)
  }
  return {
    pid,
    port,
    rss: () => processMemory(pid),
    cpu: () => processCpu(pid),
    accounts: async () => {
      const { accounts } = await getJson<{ accounts: Array<{ open: boolean }> }>(port, "/api/v1/accounts")
      return { open: accounts.filter((a) => a.open).length, listed: accounts.length }
    },
    scrape: () =>
      getText(port, "/metrics").then((text) => text.split("\n").filter((line) => line.includes('account="')).length),
    collect: () => {
      if (!heap) return Promise.reject(new Error("the server was started without the heap preload"))
      const reading = new Promise<HeapReading>((resolve) => collected.push(resolve))
      child.kill("SIGUSR2")
      return reading
    },
    stop
  }
}

/** The RSS after `ms` with no request made, sampled every 250 ms: the last reading. */
const settledRss = async (server: Server, ms: number): Promise<number> => {
  const end = Date.now() + ms
  while (Date.now() < end) await sleep(250)
  return server.rss()
}

/** How often the churn's scraper scrapes `/metrics`, as a Prometheus server would (commonly every 15 s to 1 min). */
const SCRAPE_EVERY_MS = 5_000

/**
 * A Prometheus server's part: `GET /metrics`, then a pause of `everyMs`, until stopped; answers
 * how many scrapes it made and the most lines with an account label one of them had.
 */
const scraper = (server: Server, everyMs: number) => {
  let stopped = false
  let failure: { readonly error: unknown } | undefined
  const seen = { scrapes: 0, largest: 0 }
  // A failed scrape stops the scraper; `stop` then throws it (held until then, never unhandled).
  const loop = (async () => {
    while (!stopped) {
      const lines = await server.scrape()
      seen.scrapes++
      seen.largest = Math.max(seen.largest, lines)
      const end = Date.now() + everyMs
      while (!stopped && Date.now() < end) await sleep(100)
    }
  })().catch((error: unknown) => {
    failure = { error }
  })
  return {
    stop: async () => {
      stopped = true
      await loop
      if (failure !== undefined) throw failure.error
      return seen
    }
  }
}

/** Polls the listing until no account is open; answers how long that took. */
const untilNoneOpen = async (server: Server, timeoutMs: number): Promise<number> => {
  const t0 = Date.now()
  for (;;) {
    const { open } = await server.accounts()
    if (open === 0) return Date.now() - t0
    if (Date.now() - t0 > timeoutMs) throw new Error(`${open} accounts still open after ${timeoutMs / 1000} s`)
    await sleep(1_000)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Client processes
// ---------------------------------------------------------------------------------------------------------------

const failuresText = (failures: Record<string, number>): string =>
  Object.entries(failures)
    .map(([what, n]) => `${n} x ${what}`)
    .join(", ")

/** One POST of one event to each of `<prefix><from> .. <prefix><to - 1>`, from a client process. */
const openAccounts = async (server: Server, prefix: string, from: number, to: number): Promise<OpenResult> => {
  const { result } = await runChild<OpenResult>(CLIENT, [
    "open",
    String(server.port),
    prefix,
    String(from),
    String(to),
    "16"
  ])
  if (result.opened !== to - from) {
    throw new Error(`opened ${result.opened} of ${to - from} accounts: ${failuresText(result.failures)}`)
  }
  return result
}

interface LoadClient {
  readonly go: (window: { readonly from: number; readonly to: number }) => void
  readonly result: Promise<LoadResult>
}

/** A client process in `ingest` or `raw` mode, once it has said `ready`. */
const startLoadClient = async (args: ReadonlyArray<string>): Promise<LoadClient> => {
  const argv = await nodeArgs(CLIENT)
  const child = ChildProcess.spawn(process.execPath, [...argv, ...args], {
    cwd: projectDir,
    stdio: ["pipe", "pipe", "inherit"]
  })
  const kill = () => child.kill("SIGKILL")
  onExit(kill)
  const lines = Readline.createInterface({ input: child.stdout })
  const ready = new Promise<void>((resolve, reject) => {
    lines.once("line", (line) => (line === "ready" ? resolve() : reject(new Error(`${CLIENT}: ${line}`))))
    child.once("exit", (code) => reject(new Error(`${CLIENT} ${args.join(" ")} exited with ${code}`)))
  })
  const result = new Promise<LoadResult>((resolve, reject) => {
    let last = ""
    lines.on("line", (line) => (last = line))
    // `close`, not `exit`: by then its stdout has been read to the end.
    child.once("close", (code) => {
      if (code !== 0) return reject(new Error(`${CLIENT} ${args.join(" ")} exited with ${code}: ${last}`))
      try {
        resolve(JSON.parse(last) as LoadResult)
      } catch {
        reject(new Error(`${CLIENT} printed no JSON result: ${last}`))
      }
    })
  })
  // The result's rejection is handled by whoever awaits it; until then it must not count as unhandled.
  result.catch(() => undefined)
  await ready
  return { go: (window) => child.stdin.end(JSON.stringify(window) + "\n"), result }
}

interface LoadRun {
  readonly rate: number
  readonly acked: number
  readonly latency: Histogram
  readonly failures: Record<string, number>
  /** Server CPU over the window (undefined without a server). */
  readonly cpu: CpuTime | undefined
  /** The clients' own CPU over the window, ms. */
  readonly clientCpuMs: number
  readonly lateMs: number
  /** The load average when the run ended. */
  readonly load: string
}

/**
 * Starts the clients, gives them one window (after a ramp) and sums what they measured in it,
 * with the server's CPU time over the same window.
 */
const runLoad = async (
  size: Sizes,
  clients: ReadonlyArray<ReadonlyArray<string>>,
  server: Server | undefined
): Promise<LoadRun> => {
  const started = await Promise.all(clients.map(startLoadClient))
  const from = Date.now() + size.rampMs
  const to = from + size.windowMs
  for (const client of started) client.go({ from, to })
  await sleep(from - Date.now())
  const cpu0 = server?.cpu()
  await sleep(to - Date.now())
  const cpu1 = server?.cpu()
  const results = await Promise.all(started.map((c) => c.result))
  const latency = new Histogram()
  const failures: Record<string, number> = {}
  let acked = 0
  for (const r of results) {
    acked += r.acked
    for (const [ms, times] of r.latencies) latency.recordManyMs(ms, times)
    for (const [what, n] of Object.entries(r.failures)) failures[what] = (failures[what] ?? 0) + n
  }
  return {
    rate: acked / (size.windowMs / 1000),
    acked,
    latency,
    failures,
    cpu:
      cpu0 === undefined || cpu1 === undefined
        ? undefined
        : { user: cpu1.user - cpu0.user, system: cpu1.system - cpu0.system },
    clientCpuMs: results.reduce((sum, r) => sum + r.cpuMs, 0),
    lateMs: Math.max(...results.map((r) => r.lateMs)),
    load: load1()
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------------------------------------------

const plural = (n: number, what: string) => `${n.toLocaleString("en-US")} ${what}${n === 1 ? "" : "s"}`

/** One run of the ingest load on a fresh server whose `accounts` accounts were opened first. */
const oursIngest = async (size: Sizes, accounts: number): Promise<LoadRun> => {
  log(`accounts: ingest over ${plural(accounts, "account")}`)
  const server = await startServer(`ingest-${accounts}`, {})
  try {
    await openAccounts(server, "acct-", 0, accounts)
    return await runLoad(
      size,
      Array.from({ length: size.clients }, (_, k) => [
        "ingest",
        String(server.port),
        "acct-",
        String(accounts),
        String(Math.floor((k * accounts) / size.clients)),
        String(size.inFlight),
        String(size.batch)
      ]),
      server
    )
  } finally {
    await server.stop()
  }
}

/** The same load on `files` plain files in a fresh directory, from one client process. */
const rawIngest = async (size: Sizes, files: number): Promise<LoadRun> => {
  log(`accounts: the same load on ${plural(files, "plain file")}`)
  const dir = tempDir(`accounts-raw-${files}`)
  try {
    return await runLoad(
      size,
      [["raw", dir, String(files), String(size.clients * size.inFlight), String(size.batch)]],
      undefined
    )
  } finally {
    removeDir(dir)
  }
}

const ingest = async (size: Sizes, report: Report): Promise<void> => {
  const load = `${size.clients} client processes x ${size.inFlight} POSTs in flight, ${size.batch} events (~300 B) per POST`
  log(
    `accounts: ingest over ${size.counts.join(", ")} accounts (a fresh server each, the accounts opened first), ` +
      `${load}; then the same load on plain files; best of ${size.rounds} interleaved rounds`
  )
  const best = await rounds<string, LoadRun>(
    size.rounds,
    (run) => run.rate,
    size.counts.flatMap((accounts) => [
      [`ours${accounts}`, () => oursIngest(size, accounts)] as const,
      [`raw${accounts}`, () => rawIngest(size, accounts)] as const
    ])
  )
  const first = size.counts[0]!
  for (const accounts of size.counts) {
    const run = best[`ours${accounts}`]!
    const raw = best[`raw${accounts}`]!
    const cpu = run.cpu ?? { user: 0, system: 0 }
    const cpuUs = ((cpu.user + cpu.system) * 1000) / Math.max(1, run.acked)
    const failed = failuresText(run.failures)
    report.figure(
      SECTION,
      `accounts.ingest.${accounts}`,
      `ours POST events, fsync=always, ${plural(accounts, "active account")}: acked`,
      run.rate,
      "ev/s",
      {
        detail:
          `${load}, round-robin over the accounts; ${(size.windowMs / 1000).toFixed(1)} s window after ` +
          `${(size.rampMs / 1000).toFixed(1)} s ramp, best of ${size.rounds}; request p50 ` +
          `${run.latency.quantileMs(0.5).toFixed(1)} ms, p99 ${run.latency.quantileMs(0.99).toFixed(1)} ms` +
          (failed === "" ? "" : `; failures: ${failed}`) +
          (run.lateMs > 0 ? `; a client started ${run.lateMs} ms into the window` : "") +
          `; load ${run.load}`
      }
    )
    report.figure(
      SECTION,
      `accounts.ingest.${accounts}.cpu`,
      `server CPU (user+sys) per event, ${plural(accounts, "account")}`,
      cpuUs,
      "µs",
      {
        detail:
          `${(cpu.user + cpu.system).toFixed(0)} ms of server CPU (${cpu.system.toFixed(0)} ms of it system) ` +
          `over the window for ${run.acked} events; the clients used ${run.clientCpuMs.toFixed(0)} ms`
      }
    )
    report.figure(
      SECTION,
      `accounts.raw.${accounts}`,
      `raw fs over ${plural(accounts, "file")}: write+fsync per file, group commit, same load`,
      raw.rate,
      "ev/s",
      {
        baseline: true,
        detail:
          `one process, ${size.clients * size.inFlight} batches of ${size.batch} in flight, fs.promises on ` +
          `libuv's pool; no HTTP, no feed; load ${raw.load}`
      }
    )
    report.ratio(`accounts.ingest.${accounts}`, `accounts.raw.${accounts}`, "raw fs")
    if (accounts !== first) {
      report.ratio(`accounts.ingest.${accounts}`, `accounts.ingest.${first}`, `${first} account`)
      report.ratio(`accounts.ingest.${accounts}.cpu`, `accounts.ingest.${first}.cpu`, `${first} account`, true)
    }
  }
  const at = report.get(`accounts.ingest.${GOAL_ACCOUNTS}`)
  const single = report.get(`accounts.ingest.1`)
  const text = `ingest at ${GOAL_ACCOUNTS} accounts >= ${GOAL_SHARE * 100} % of the single-account rate (fsync=always, over HTTP)`
  if (at === undefined || single === undefined) {
    report.goal(SECTION, `accounts.ingest.${GOAL_ACCOUNTS}`, text, "SKIP", "not measured")
  } else {
    const share = at.value / single.value
    report.goal(
      SECTION,
      at.id,
      text,
      share >= GOAL_SHARE ? "PASS" : "MISS",
      `${Math.round(at.value)} vs ${Math.round(single.value)} ev/s: ${(share * 100).toFixed(0)} %`
    )
  }
}

/** Parts 2 and 3 on one server: the first POST to cold accounts, then RSS per open idle account. */
const coldAndIdle = async (size: Sizes, report: Report): Promise<void> => {
  const maxOpen = 2 * (size.cold + size.coldUnmeasured + size.idle)
  const server = await startServer("cold", { FEED_MAX_OPEN_ACCOUNTS: String(maxOpen) }, true)
  try {
    log(
      `accounts: first POST to ${size.cold} cold accounts (after ${size.coldUnmeasured} unmeasured), ` +
        `each followed by the same POST to a warm one`
    )
    await openAccounts(server, "warm", 0, 1)
    const { result } = await runChild<ColdResult>(CLIENT, [
      "cold",
      String(server.port),
      "cold-",
      String(size.cold),
      "warm0",
      String(size.coldUnmeasured)
    ])
    const cold = new Histogram()
    const warm = new Histogram()
    for (const ms of result.cold) cold.recordMs(ms)
    for (const ms of result.warm) warm.recordMs(ms)
    const failed = failuresText(result.failures)
    const detail =
      `${size.cold} accounts never opened, one request at a time, 1 event each: opens the account ` +
      `(directory, epoch, segment) and appends durably` +
      (failed === "" ? "" : `; failures: ${failed}`) +
      `; max ${cold.max.toFixed(1)} ms; load ${load1()}`
    report.figure(SECTION, "accounts.cold.p50", "ours first POST to a cold account, p50", cold.quantileMs(0.5), "ms", {
      detail
    })
    report.figure(SECTION, "accounts.cold.p99", "ours first POST to a cold account, p99", cold.quantileMs(0.99), "ms")
    report.figure(SECTION, "accounts.warm.p50", "same POST to an open account, p50", warm.quantileMs(0.5), "ms", {
      baseline: true,
      detail: `interleaved with the cold ones; max ${warm.max.toFixed(1)} ms`
    })
    report.figure(SECTION, "accounts.warm.p99", "same POST to an open account, p99", warm.quantileMs(0.99), "ms", {
      baseline: true
    })
    report.ratio("accounts.cold.p50", "accounts.warm.p50", "open account", true)
    report.ratio("accounts.cold.p99", "accounts.warm.p99", "open account", true)
    const p99 = cold.quantileMs(0.99)
    report.goal(
      SECTION,
      "accounts.cold.p99",
      `first request to a cold account p99 < ${GOAL_COLD_P99_MS} ms`,
      failed === "" && p99 < GOAL_COLD_P99_MS ? "PASS" : "MISS",
      `p99 ${p99.toFixed(1)} ms over ${size.cold} accounts (open account p99 ${warm.quantileMs(0.99).toFixed(1)} ms)` +
        (failed === "" ? "" : `; failures: ${failed}`)
    )

    log(`accounts: RSS per open idle account: opening ${size.idle} more accounts`)
    const openBefore = (await server.accounts()).open
    const before = await settledRss(server, size.settleMs)
    const beforeGc = await server.collect()
    await openAccounts(server, "idle-", 0, size.idle)
    const after = await settledRss(server, size.settleMs)
    const afterGc = await server.collect()
    const openAfter = (await server.accounts()).open
    if (openAfter - openBefore !== size.idle) {
      throw new Error(`expected ${size.idle} more open accounts, the listing shows ${openAfter - openBefore}`)
    }
    const perAccount = (after - before) / 1024 / size.idle
    const perAccountGc = (afterGc.rss - beforeGc.rss) / 1024 / size.idle
    const heapPerAccount = (afterGc.heapUsed - beforeGc.heapUsed) / 1024 / size.idle
    report.figure(
      SECTION,
      "accounts.idle.perAccount",
      `server RSS per open idle account ((after - before) / ${size.idle})`,
      perAccount,
      "KiB",
      {
        detail:
          `each opened by one POST of one event, then idle; RSS read ${size.settleMs / 1000} s after the last ` +
          `request, no GC forced before it; ${openBefore} -> ${openAfter} open ` +
          `(FEED_MAX_OPEN_ACCOUNTS=${maxOpen}); load ${load1()}`
      }
    )
    report.figure(SECTION, "accounts.idle.before", `server RSS with ${openBefore} accounts open`, before / MB, "MB", {
      baseline: true
    })
    report.figure(SECTION, "accounts.idle.after", `server RSS with ${openAfter} accounts open`, after / MB, "MB")
    report.figure(
      SECTION,
      "accounts.idle.gc.perAccount",
      "same, each reading right after a forced full GC (--expose-gc)",
      perAccountGc,
      "KiB",
      { detail: `RSS ${(beforeGc.rss / MB).toFixed(1)} -> ${(afterGc.rss / MB).toFixed(1)} MB` }
    )
    report.figure(
      SECTION,
      "accounts.idle.gc.heapPerAccount",
      "live JS heap per open idle account, after a forced full GC (--expose-gc)",
      heapPerAccount,
      "KiB",
      {
        detail:
          `heapUsed ${(beforeGc.heapUsed / MB).toFixed(1)} -> ${(afterGc.heapUsed / MB).toFixed(1)} MB, ` +
          `external ${(beforeGc.external / MB).toFixed(1)} -> ${(afterGc.external / MB).toFixed(1)} MB`
      }
    )
    report.goal(
      SECTION,
      "accounts.idle.perAccount",
      `RSS per open idle account < ${GOAL_IDLE_KIB} KiB` +
        (size.idle === 1000 ? "" : ` (${size.idle} accounts, not 1,000)`),
      perAccount < GOAL_IDLE_KIB ? "PASS" : "MISS",
      `${perAccount.toFixed(1)} KiB (${(before / MB).toFixed(1)} -> ${(after / MB).toFixed(1)} MB); ` +
        `after a forced GC: ${perAccountGc.toFixed(1)} KiB of RSS, ${heapPerAccount.toFixed(1)} KiB of live heap`
    )
  } finally {
    await server.stop()
  }
}

/** Part 4: `churn` accounts opened in waves of `wave` and closed by the idle timeout. */
const churn = async (size: Sizes, report: Report): Promise<void> => {
  const server = await startServer(
    "churn",
    { FEED_ACCOUNT_IDLE: "1 second", FEED_MAX_OPEN_ACCOUNTS: String(size.churn) },
    true
  )
  try {
    log(
      `accounts: churn: ${size.churnWarmup} accounts opened and closed to warm up, ` +
        `then ${size.churn} in waves of ${size.wave}`
    )
    await openAccounts(server, "warmup-", 0, size.churnWarmup)
    await untilNoneOpen(server, 60_000)
    // A service is scraped: the series of its closed accounts go at the scrape after they close.
    await server.scrape()
    const before = await settledRss(server, size.settleMs)
    const beforeGc = await server.collect()
    let peak = before
    const sampler = setInterval(() => (peak = Math.max(peak, server.rss())), 100)
    let peakOpen = 0
    let openMs = 0
    const t0 = Date.now()
    const scraping = scraper(server, SCRAPE_EVERY_MS)
    let scraped = { scrapes: 0, largest: 0 }
    try {
      for (let from = 0; from < size.churn; from += size.wave) {
        openMs += (await openAccounts(server, "churn-", from, Math.min(size.churn, from + size.wave))).ms
        peakOpen = Math.max(peakOpen, (await server.accounts()).open)
      }
      await untilNoneOpen(server, 120_000)
    } finally {
      clearInterval(sampler)
      scraped = await scraping.stop()
    }
    const seconds = (Date.now() - t0) / 1000
    const finalLines = await server.scrape()
    const leftLines = await server.scrape()
    const after = await settledRss(server, size.settleMs)
    const afterGc = await server.collect()
    const { listed } = await server.accounts()
    const back = after <= before * (1 + CHURN_MARGIN)
    const count = size.churn.toLocaleString("en-US")
    const scale = size.churn === 10_000 ? "" : ` (${count} accounts, not 10,000)`
    const what = `${count} accounts opened (one POST each, waves of ${size.wave}) and closed`
    const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`
    report.figure(SECTION, "accounts.churn.before", "server RSS before the churn", before / MB, "MB", {
      baseline: true,
      detail:
        `after ${size.churnWarmup} accounts opened and closed, and a scrape of /metrics; read ` +
        `${size.settleMs / 1000} s after the last request, no GC forced before it`
    })
    report.figure(SECTION, "accounts.churn.peak", `server RSS at the peak, ${what}`, peak / MB, "MB", {
      detail:
        `FEED_ACCOUNT_IDLE=1 second, FEED_MAX_OPEN_ACCOUNTS=${size.churn}; 16 first POSTs in flight opened ` +
        `${((size.churn / openMs) * 1000).toFixed(0)} accounts/s; at most ${peakOpen} open at a wave's end; ` +
        `${seconds.toFixed(0)} s until none open; load ${load1()}`
    })
    report.figure(SECTION, "accounts.churn.after", "server RSS once none is open", after / MB, "MB", {
      detail:
        `${listed} accounts on disk, none open; /metrics scraped every ${SCRAPE_EVERY_MS / 1000} s during ` +
        `the churn (${scraped.scrapes} scrapes, at most ${scraped.largest} lines with an account label), then ` +
        `twice (${finalLines} and ${leftLines} such lines); read ${size.settleMs / 1000} s later, no GC forced before it`
    })
    report.figure(
      SECTION,
      "accounts.churn.gc.heapBefore",
      "live JS heap before the churn, after a forced full GC (--expose-gc)",
      beforeGc.heapUsed / MB,
      "MB",
      { baseline: true, detail: `RSS then ${mb(beforeGc.rss)}` }
    )
    report.figure(
      SECTION,
      "accounts.churn.gc.heapAfter",
      "live JS heap once none is open, after a forced full GC (--expose-gc)",
      afterGc.heapUsed / MB,
      "MB",
      { detail: `RSS then ${mb(afterGc.rss)}; V8 heap reserved ${mb(beforeGc.heapTotal)} -> ${mb(afterGc.heapTotal)}` }
    )
    report.goal(
      SECTION,
      "accounts.churn.after",
      `RSS back within ${CHURN_MARGIN * 100} % of its start after ${what}${scale}`,
      back ? "PASS" : "MISS",
      `${mb(before)} before, ${mb(peak)} peak, ${mb(after)} after ` +
        `(${after >= before ? "+" : ""}${(((after - before) / before) * 100).toFixed(1)} %); after a forced GC ` +
        `the live heap went ${mb(beforeGc.heapUsed)} -> ${mb(afterGc.heapUsed)}, RSS ${mb(beforeGc.rss)} -> ${mb(afterGc.rss)}`
    )
  } finally {
    await server.stop()
  }
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)
  if (config.quick) {
    report.note(
      SECTION,
      `quick: ingest over ${size.counts.join(" and ")} accounts in ${size.windowMs / 1000} s windows, ` +
        `${size.cold} cold accounts, ${size.idle} idle accounts, ${size.churn} accounts churned ` +
        `(the full run: 1, 10, 100 and 1,000 accounts in 5 s windows, best of 2, then 200, 1,000 and 10,000)`
    )
  }
  await ingest(size, report)
  await coldAndIdle(size, report)
  await churn(size, report)
}
