/**
 * A real PostgreSQL server for the tests: the machine's binaries (Debian's `/usr/lib/postgresql/N/bin`,
 * or `initdb`/`pg_ctl` on PATH), a cluster initialised in a temp directory, started on a free
 * loopback port with `fsync=on`, one database per test file, stopped and deleted at the end. As
 * root the cluster belongs to the `postgres` user (initdb refuses root). `.ci/run` installs
 * Debian's `postgresql` where the binaries are missing; where `CI` is set a missing server fails
 * the tests (see `postgresUnavailable`), elsewhere they are skipped with the reason printed.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Pg from "pg"
import { freePort } from "../../harness/ServerProcess.js"

export interface PgServer {
  readonly port: number
  readonly dataDir: string
  /** `postgres://postgres@127.0.0.1:PORT/DATABASE` */
  readonly url: (database: string) => string
  /** Creates an empty database and answers its url. */
  readonly createDatabase: (name: string) => string
  /** Runs one SQL statement through `psql` (as the superuser, in `database`) and answers its output. */
  readonly psql: (database: string, sql: string) => string
  /** Stops the server (`fast`, or `immediate`: a crash, recovered from WAL at the next start). */
  readonly stop: (mode?: "fast" | "immediate") => void
  /** Starts it again on the same port and data directory. */
  readonly start: () => void
  /**
   * `stop` and `start` without blocking this process (a harness keeps its load running while
   * the server goes down and comes back).
   */
  readonly stopAsync: (mode?: "fast" | "immediate") => Promise<void>
  readonly startAsync: () => Promise<void>
  /** Stops it and deletes its directory. */
  readonly destroy: () => void
}

const candidates = (): Array<string> => {
  const dirs: Array<string> = []
  try {
    const versions = Fs.readdirSync("/usr/lib/postgresql")
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
    for (const v of versions) dirs.push(`/usr/lib/postgresql/${v}/bin`)
  } catch {
    // No Debian layout; PATH below.
  }
  for (const dir of (process.env.PATH ?? "").split(":")) if (dir !== "") dirs.push(dir)
  return dirs
}

/** The directory holding `initdb`, `pg_ctl` and `postgres`, or undefined. */
const findBinaries = (): string | undefined =>
  candidates().find((dir) => ["initdb", "pg_ctl", "postgres"].every((b) => Fs.existsSync(Path.join(dir, b))))

/**
 * Why no server can be started here, or undefined when one can. With `CI` set the tests must
 * fail with this reason rather than skip.
 */
export const postgresUnavailable = (): string | undefined =>
  findBinaries() === undefined
    ? "PostgreSQL's initdb, pg_ctl and postgres were not found (looked in /usr/lib/postgresql/*/bin and PATH): " +
      "install them (`apt-get install postgresql`, which `.ci/run` does on a fresh Debian machine)"
    : undefined

/** Whether the PostgreSQL tests run: a server can be started, or `CI` is set (so that they fail, not skip). */
export const runPostgresTests = (): boolean => {
  const reason = postgresUnavailable()
  if (reason !== undefined && !process.env.CI) console.warn(`PostgreSQL tests skipped: ${reason}`)
  return reason === undefined || Boolean(process.env.CI)
}

const isRoot = () => typeof process.getuid === "function" && process.getuid() === 0

/** The command that runs a PostgreSQL binary, as the `postgres` user when this process is root. */
const commandFor = (bin: string, args: ReadonlyArray<string>): [string, Array<string>] =>
  isRoot() ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, [...args]]

const failure = (bin: string, args: ReadonlyArray<string>, status: unknown, output: string) =>
  new Error(`${Path.basename(bin)} ${args.join(" ")} failed (status ${status}): ${output}`)

/** Runs a PostgreSQL binary, as the `postgres` user when this process is root. */
const run = (bin: string, args: ReadonlyArray<string>): string => {
  const [file, argv] = commandFor(bin, args)
  const result = spawnSync(file, argv, { encoding: "utf8" })
  if (result.status !== 0) throw failure(bin, args, result.status, result.stderr || result.stdout)
  return result.stdout
}

/** `run` without blocking the event loop. */
const runAsync = (bin: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    const [file, argv] = commandFor(bin, args)
    execFile(file, argv, { encoding: "utf8" }, (error, stdout, stderr) =>
      error === null ? resolve(stdout) : reject(failure(bin, args, error.code, stderr || stdout))
    )
  })

/** Initialises and starts a server; throws the reason when it cannot. */
export const startPostgres = async (): Promise<PgServer> => {
  const reason = postgresUnavailable()
  if (reason !== undefined) throw new Error(reason)
  const bin = findBinaries()!
  const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "feed-pg-"))
  const dataDir = Path.join(root, "data")
  Fs.mkdirSync(dataDir, { mode: 0o700 })
  if (isRoot()) execFileSync("chown", ["-R", "postgres:postgres", root])
  run(Path.join(bin, "initdb"), ["-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
  const port = await freePort()
  const log = Path.join(root, "server.log")
  const pgCtl = Path.join(bin, "pg_ctl")
  const startArgs = [
    "-D",
    dataDir,
    "-l",
    log,
    "-o",
    `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200`,
    "-w",
    "start"
  ]
  const stopArgs = (mode: "fast" | "immediate") => ["-D", dataDir, "-m", mode, "-w", "stop"]
  const start = () => {
    run(pgCtl, startArgs)
  }
  let running = false
  const stop = (mode: "fast" | "immediate" = "fast") => {
    if (!running) return
    run(pgCtl, stopArgs(mode))
    running = false
  }
  start()
  running = true
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`
  const psql = (database: string, sql: string) =>
    run(Path.join(bin, "psql"), ["-h", root, "-p", String(port), "-U", "postgres", "-d", database, "-XAtqc", sql])
  return {
    port,
    dataDir,
    url,
    psql,
    createDatabase: (name) => {
      psql("postgres", `CREATE DATABASE "${name}"`)
      return url(name)
    },
    stop,
    start: () => {
      if (running) return
      start()
      running = true
    },
    stopAsync: async (mode = "fast") => {
      if (!running) return
      await runAsync(pgCtl, stopArgs(mode))
      running = false
    },
    startAsync: async () => {
      if (running) return
      await runAsync(pgCtl, startArgs)
      running = true
    },
    destroy: () => {
      try {
        stop("immediate")
      } finally {
        Fs.rmSync(root, { recursive: true, force: true })
      }
    }
  }
}

/** Runs one statement on its own connection to `url` and answers its rows. */
export const query = async <R>(url: string, text: string, params: Array<unknown> = []): Promise<Array<R>> => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query(text, params)).rows as Array<R>
  } finally {
    await client.end()
  }
}
