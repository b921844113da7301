/**
 * Redis for the baselines: finds Debian's `redis-server`, starts it on a free loopback port in a
 * temp folder (no RDB snapshots, AOF on, `appendfsync` as asked), hands out ioredis connections,
 * and kills it (also at exit). The bench never installs it: when it is missing, the sections say
 * how to get it and run without the Redis figures.
 */
import { Redis } from "ioredis"
import * as ChildProcess from "node:child_process"
import * as Net from "node:net"
import { onExit, removeDir, sleep, tempDir } from "./support.js"

/** `redis-server --version`, or undefined when Debian's redis-server is not installed. */
export const redisVersion = (): string | undefined => {
  const result = ChildProcess.spawnSync("redis-server", ["--version"], { encoding: "utf8" })
  if (result.error !== undefined || result.status !== 0) return undefined
  return /v=(\S+)/.exec(result.stdout)?.[1] ?? result.stdout.trim()
}

export const REDIS_MISSING =
  "redis-server not found: the Redis Streams baselines are skipped. Install it with `apt-get install redis-server` (Debian) and rerun."

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

export interface RedisServer {
  readonly port: number
  readonly appendfsync: string
  /** A new client connection (closed by `stop`). */
  readonly connect: () => Promise<Redis>
  readonly stop: () => Promise<void>
}

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
  const clients: Array<Redis> = []
  const connect = async () => {
    const client = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1 })
    client.on("error", () => {})
    await client.connect()
    clients.push(client)
    return client
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (exited) throw new Error(`redis-server exited at start: ${stderr.trim()}`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = Net.connect(port, "127.0.0.1")
      socket.once("connect", () => {
        socket.destroy()
        resolve(true)
      })
      socket.once("error", () => resolve(false))
    })
    if (ok) break
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}: ${stderr.trim()}`)
    await sleep(20)
  }
  const probe = await connect()
  for (;;) {
    try {
      await probe.ping()
      break
    } catch (error) {
      if (Date.now() > deadline) throw error
      await sleep(20)
    }
  }
  const stop = async () => {
    for (const client of clients) client.disconnect()
    if (!exited) {
      const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()))
      child.kill("SIGKILL")
      await gone
    }
    removeDir(dir)
  }
  return { port, appendfsync, connect, stop }
}
