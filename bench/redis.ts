/**
 * Redis for the baselines: finds Debian's `redis-server`, starts it on a free loopback port in a
 * fresh temp folder per start (no RDB snapshots, AOF on with `appendfsync` as asked, automatic
 * AOF rewrite off, so no rewrite lands in a measurement), hands out plain pipelined RESP
 * connections (`resp.ts`), reads its CPU time, and kills it (also at exit). The bench never
 * installs it: when it is missing, the sections say how to get it and run without the Redis
 * figures.
 */
import * as ChildProcess from "node:child_process"
import { freePort, listening } from "./common.js"
import { encodeCommand, RespClient } from "./resp.js"
import { onExit, processCpuMs, removeDir, sleep, tempDir } from "./support.js"

/** `redis-server --version`, or undefined when Debian's redis-server is not installed. */
export const redisVersion = (): string | undefined => {
  const result = ChildProcess.spawnSync("redis-server", ["--version"], { encoding: "utf8" })
  if (result.error !== undefined || result.status !== 0) return undefined
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim()
}

export const REDIS_MISSING =
  "redis-server not found: the Redis Streams baselines are skipped. Install it with `apt-get install redis-server` (Debian) and rerun."

export interface RedisServer {
  readonly port: number
  readonly pid: number
  readonly appendfsync: string
  /** A new client connection (closed by `stop`). */
  readonly connect: () => Promise<RespClient>
  /** Its CPU time so far, user + system, every thread (the AOF fsync runs on one of its own), ms. */
  readonly cpuMs: () => number
  readonly stop: () => Promise<void>
}

const PING = encodeCommand(["PING"])

/**
 * Starts `redis-server` on a free loopback port in a temp folder, with no RDB snapshots and an
 * append-only file synced per `appendfsync` (`always` or `everysec`).
 */
export const startRedis = async (appendfsync: "always" | "everysec" | "no"): Promise<RedisServer> => {
  const dir = tempDir(`redis-${appendfsync}`)
  const port = await freePort()
  const child = ChildProcess.spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "yes",
      "--appendfsync",
      appendfsync,
      "--auto-aof-rewrite-percentage",
      "0",
      "--daemonize",
      "no",
      "--logfile",
      "",
      "--loglevel",
      "warning"
    ],
    { stdio: ["ignore", "ignore", "pipe"] }
  )
  let stderr = ""
  child.stderr.on("data", (data: Buffer) => (stderr += data.toString()))
  let exited = false
  child.once("exit", () => (exited = true))
  const kill = () => {
    if (!exited) child.kill("SIGKILL")
  }
  onExit(kill)
  const clients: Array<RespClient> = []
  const connect = async () => {
    const client = await RespClient.connect(port)
    clients.push(client)
    return client
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (exited) throw new Error(`redis-server exited at start: ${stderr.trim()}`)
    if (await listening(port)) break
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}: ${stderr.trim()}`)
    await sleep(20)
  }
  const probe = await connect()
  for (;;) {
    try {
      await probe.call(PING, 1)
      break
    } catch (error) {
      if (Date.now() > deadline) throw error
      await sleep(20)
    }
  }
  const stop = async () => {
    for (const client of clients) client.close()
    if (!exited) {
      const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()))
      child.kill("SIGKILL")
      await gone
    }
    removeDir(dir)
  }
  const pid = child.pid!
  return {
    port,
    pid,
    appendfsync,
    connect,
    cpuMs: () => processCpuMs(pid),
    stop
  }
}
