/**
 * Every setting of the service and the command line, read from the environment in one place:
 * the server's (`ServerConfig`, what `npm start` and `change-feed serve` run with) and the
 * client commands' (`FEED_URL`, `FEED_TOKEN`, `FEED_JWT_SECRET`). The command line's flags fall
 * back to these same entries, so a flag and its variable are checked alike.
 */
import { Config, ConfigError, Duration, Either, Redacted } from "effect"
import { fileURLToPath } from "node:url"
import { jwtSecretProblem, tokenProblem } from "./Http/Auth.js"
import * as Cors from "./Http/Cors.js"
import { DEFAULT_SEGMENT_BYTES, defaultRetention, type FsyncMode, fsyncModes } from "./Journal.js"
import { DEFAULT_SEGMENT_INDEX_BYTES } from "./Journal/SegmentIndex.js"
import * as Tracing from "./Tracing.js"

/** A secret from the environment, refused (naming the variable) when `problem` finds one. */
const secretConfig = (name: string, problem: (secret: string) => string | undefined, what: string) =>
  Config.redacted(name).pipe(
    Config.mapOrFail((secret) => {
      const found = problem(Redacted.value(secret))
      return found === undefined
        ? Either.right(secret)
        : Either.left(ConfigError.InvalidData([name], `${name} ${found}: set it to ${what}, or unset it`))
    })
  )

/** Where `npm start` keeps its journal: a folder inside the project. */
export const defaultDirectory = fileURLToPath(new URL("../data/feed", import.meta.url))

export const host = Config.string("HOST").pipe(Config.withDefault("127.0.0.1"))

// 0 asks the system for any free port; the startup line names the one taken.
export const port = Config.integer("PORT").pipe(
  Config.validate({
    message: "PORT must be a port number from 0 (any free port) to 65535",
    validation: (n) => n >= 0 && n <= 65535
  }),
  Config.withDefault(8787)
)

export const directory = Config.string("FEED_DIR").pipe(Config.withDefault(defaultDirectory))

export const fsync = Config.literal(...fsyncModes)("FEED_FSYNC").pipe(Config.withDefault<FsyncMode>("always"))

/** The PostgreSQL database the journals live in, shared by replicas; without it, files under `directory`. */
export const databaseUrl = Config.option(
  Config.redacted("FEED_DATABASE_URL").pipe(
    Config.mapOrFail((url) => {
      const text = Redacted.value(url)
      return /^postgres(ql)?:\/\/./.test(text)
        ? Either.right(url)
        : Either.left(
            ConfigError.InvalidData(
              ["FEED_DATABASE_URL"],
              "FEED_DATABASE_URL must be a postgres://user:password@host:port/database URL"
            )
          )
    })
  )
)

/** Partitions of `feed_events` a PostgreSQL journal keeps (unset: all). */
export const retainPartitions = Config.option(
  Config.integer("FEED_RETAIN_PARTITIONS").pipe(
    Config.validate({ message: "FEED_RETAIN_PARTITIONS must be at least 1", validation: (n) => n >= 1 })
  )
)

/** The admin token the service requires, when set. */
export const token = Config.option(secretConfig("FEED_TOKEN", tokenProblem, "the bearer token clients must send"))

/** The secret account tokens are signed with, when set. */
export const jwtSecret = Config.option(
  secretConfig("FEED_JWT_SECRET", jwtSecretProblem, "the secret the platform signs account tokens with")
)

/** Server configuration from the environment, with defaults. */
export const ServerConfig = Config.all({
  host,
  port,
  directory,
  databaseUrl,
  retainPartitions,
  fsync,
  token,
  jwtSecret,
  segmentBytes: Config.integer("FEED_SEGMENT_BYTES").pipe(
    Config.validate({ message: "FEED_SEGMENT_BYTES must be at least 1024", validation: (n) => n >= 1024 }),
    Config.withDefault(DEFAULT_SEGMENT_BYTES)
  ),
  retainSegments: Config.integer("FEED_RETAIN_SEGMENTS").pipe(
    Config.validate({ message: "FEED_RETAIN_SEGMENTS must be at least 1", validation: (n) => n >= 1 }),
    Config.withDefault(defaultRetention.segments)
  ),
  segmentIndexBytes: Config.integer("FEED_SEGMENT_INDEX_BYTES").pipe(
    Config.validate({ message: "FEED_SEGMENT_INDEX_BYTES must be 0 or more", validation: (n) => n >= 0 }),
    Config.withDefault(DEFAULT_SEGMENT_INDEX_BYTES)
  ),
  maxOpenAccounts: Config.integer("FEED_MAX_OPEN_ACCOUNTS").pipe(
    Config.validate({ message: "FEED_MAX_OPEN_ACCOUNTS must be at least 1", validation: (n) => n >= 1 }),
    Config.withDefault(1000)
  ),
  accountIdle: Config.duration("FEED_ACCOUNT_IDLE").pipe(Config.withDefault(Duration.minutes(5))),
  corsOrigins: Cors.CorsConfig,
  tracing: Tracing.OtlpConfig
})

export type ServerSettings = Config.Config.Success<typeof ServerConfig>

/** The server the client commands talk to. */
export const feedUrl = Config.string("FEED_URL").pipe(Config.withDefault("http://127.0.0.1:8787"))

/** The bearer token the client commands send, as given (the server is the judge of it). */
export const clientToken = Config.redacted("FEED_TOKEN")

/** The secret `change-feed token` signs with. */
export const signingSecret = Config.redacted("FEED_JWT_SECRET")
