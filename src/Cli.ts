/**
 * The `change-feed` command line: run the service, follow a feed, append events, show a
 * server's status, and verify (or repair the damaged end of) a journal directory offline.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Path from "@effect/platform/Path"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import {
  Chunk,
  Config,
  Console,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  Redacted,
  Stream
} from "effect"
import { ChangeFeed } from "./ChangeFeed.js"
import { accountDirectory, ChangeFeeds, DEFAULT_ACCOUNT } from "./ChangeFeeds.js"
import * as Access from "./Access.js"
import * as Client from "./Client.js"
import { parseAccountId } from "./Domain/Account.js"
import { AgentEvent, decodeAgentEvent } from "./Domain/AgentEvent.js"
import { produce } from "./Demo.js"
import { resetText } from "./Domain/FeedFrame.js"
import * as Settings from "./Config.js"
import { layerFromSettings, listeningUrl } from "./Http.js"
import { jwtSecretProblem } from "./Http/Auth.js"
import { fsyncModes } from "./Journal.js"
import { inspect, repair } from "./Journal/Inspect.js"

const url = Options.text("url").pipe(
  Options.withDescription("Feed server base URL (default $FEED_URL or http://127.0.0.1:8787)"),
  Options.withFallbackConfig(Settings.feedUrl)
)
const token = Options.redacted("token").pipe(
  Options.withDescription("Bearer token (default $FEED_TOKEN)"),
  Options.optional,
  Options.withFallbackConfig(Config.option(Settings.clientToken))
)

const account = Options.text("account").pipe(
  Options.withDescription("The account whose feed to use (default: the service's default account)"),
  Options.optional
)

const clientLayer = (
  baseUrl: string,
  tokenOption: Option.Option<Redacted.Redacted>,
  accountOption: Option.Option<string>
) =>
  Client.layer({
    baseUrl,
    account: Option.getOrUndefined(accountOption),
    token: Option.getOrUndefined(tokenOption)
  }).pipe(Layer.provide(NodeHttpClient.layerUndici))

// ---- serve ------------------------------------------------------------------------------

const serve = Command.make(
  "serve",
  {
    host: Options.text("host").pipe(
      Options.withDescription("Listen address (default $HOST or 127.0.0.1)"),
      Options.withFallbackConfig(Settings.host)
    ),
    port: Options.integer("port").pipe(
      Options.withDescription("Listen port (default $PORT or 8787)"),
      Options.withFallbackConfig(Settings.port)
    ),
    dir: Options.directory("dir").pipe(
      Options.withDescription("Journal directory (default $FEED_DIR or ./data/feed)"),
      Options.withFallbackConfig(Settings.directory)
    ),
    databaseUrl: Options.redacted("database-url").pipe(
      Options.withDescription(
        "Keep the journals in this PostgreSQL database, shared by replicas (default $FEED_DATABASE_URL; " +
          "without it, files under --dir)"
      ),
      Options.optional,
      Options.withFallbackConfig(Settings.databaseUrl)
    ),
    fsync: Options.choice("fsync", fsyncModes).pipe(
      Options.withDescription("When appends reach the disk (default $FEED_FSYNC or always)"),
      Options.withFallbackConfig(Settings.fsync)
    ),
    token: Options.redacted("token").pipe(
      Options.withDescription("The admin token clients must send (default $FEED_TOKEN)"),
      Options.optional,
      Options.withFallbackConfig(Settings.token)
    ),
    demo: Options.boolean("demo").pipe(Options.withDescription("Also run a producer of demo agent sessions"))
  },
  (flags) =>
    Effect.gen(function* () {
      const env = yield* Settings.ServerConfig
      const settings: Settings.ServerSettings = {
        ...env,
        host: flags.host,
        port: flags.port,
        directory: flags.dir,
        databaseUrl: flags.databaseUrl,
        fsync: flags.fsync,
        token: flags.token
      }
      const service = layerFromSettings(settings)
      // The demo produces into the default account, which it holds open while it runs.
      const demo = Layer.scopedDiscard(Effect.flatMap(listeningUrl, (url) => Effect.forkScoped(produce(url)))).pipe(
        Layer.provide(
          Layer.scoped(
            ChangeFeed,
            Effect.flatMap(ChangeFeeds, (feeds) => Effect.orDie(feeds.get(DEFAULT_ACCOUNT)))
          )
        )
      )
      const app = flags.demo ? demo.pipe(Layer.provideMerge(service)) : service
      return yield* Layer.launch(app)
    })
).pipe(
  Command.withDescription(
    "Run the feed service (HTTP API, SSE stream, docs at /docs) on a journal directory or a PostgreSQL database"
  )
)

// ---- tail -------------------------------------------------------------------------------

const describeEvent = (event: AgentEvent): string => {
  const { type, ...rest } = event as { type: string } & Record<string, unknown>
  const text = JSON.stringify(rest)
  return `${type} ${text.length > 100 ? text.slice(0, 97) + "..." : text}`
}

const tail = Command.make(
  "tail",
  {
    url,
    token,
    account,
    since: Options.text("since").pipe(
      Options.withDescription("Resume after this cursor (seq or epoch:seq)"),
      Options.withDefault("0")
    ),
    session: Options.text("session").pipe(Options.withDescription("Only this session's events"), Options.optional),
    json: Options.boolean("json").pipe(Options.withDescription("Print each ChangeEvent as one JSON line"))
  },
  (flags) =>
    Effect.gen(function* () {
      const client = yield* Client.FeedClient
      yield* client.follow({ since: flags.since, sessionId: Option.getOrUndefined(flags.session) }).pipe(
        Stream.runForEach((item) => {
          switch (item._tag) {
            case "Change":
              return flags.json
                ? Console.log(JSON.stringify(item.change))
                : Console.log(
                    `#${item.change.seq} ${item.change.ts} ${item.change.session_id ?? "-"} ${describeEvent(item.change.event)}`
                  )
            case "Reset":
              return flags.json
                ? Console.log(resetText(item))
                : Console.error(
                    `reset (${item.reason}): cursor ${item.fromSeq} cannot be served (retained ${item.oldestSeq}..${item.headSeq}); resync, continuing after ${item.continueFrom}`
                  )
            case "CaughtUp":
              return flags.json ? Effect.void : Console.error(`-- caught up at seq ${item.seq}; following live --`)
            case "Progress":
              return Effect.void
          }
        })
      )
    }).pipe(Effect.provide(clientLayer(flags.url, flags.token, flags.account)))
).pipe(Command.withDescription("Follow a feed: replay after --since, then live; survives server restarts"))

// ---- append -----------------------------------------------------------------------------

/** A line is a bare event (it has a `type`) or `{"session_id":..,"event":..}`. */
const parseAppendLine = (
  text: string,
  defaultSession: string | undefined
): Either.Either<Client.AppendEntry, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    return Either.left(`not JSON (${(error as Error).message})`)
  }
  const object = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>
  const bare = typeof object["type"] === "string"
  const sessionId = bare ? defaultSession : object["session_id"]
  if (sessionId !== undefined && typeof sessionId !== "string") return Either.left("session_id must be a string")
  return Either.mapBoth(decodeAgentEvent("event", bare ? json : object["event"]), {
    onLeft: (invalid) => invalid.message,
    onRight: (event) => ({ sessionId: sessionId ?? defaultSession, event })
  })
}

/** What `append` reads its JSON lines from when no --event is given. */
export class AppendInput extends Context.Reference<AppendInput>()("change-feed/AppendInput", {
  defaultValue: (): NodeJS.ReadableStream => process.stdin
}) {}

/** Input `append` refuses before it appends anything. */
class InvalidInput extends Data.TaggedError("InvalidInput")<{ readonly message: string }> {}

/**
 * The most `append` reads from stdin. It checks every line before it appends any, so it holds
 * them all; a larger input is refused, whole, rather than half appended.
 */
export const maxAppendInputBytes = 32 * 1024 * 1024

/** Every line of the input, checked; any bad line is reported (by number) and nothing is kept. */
const readAppendLines = (defaultSession: string | undefined) =>
  Effect.gen(function* () {
    const input = yield* AppendInput
    const entries: Array<Client.AppendEntry> = []
    const bad: Array<string> = []
    let bytes = 0
    let lineNo = 0
    const tooLarge = new InvalidInput({
      message:
        `stdin holds more than ${maxAppendInputBytes / 1024 / 1024} MiB; nothing appended: split it into ` +
        `smaller runs (each run appends all of its lines or none)`
    })
    // Counted as it arrives, before it is split into lines: one endless line is refused too.
    yield* Stream.fromAsyncIterable(
      input,
      (cause) => new InvalidInput({ message: `stdin could not be read (${String(cause)}); nothing appended` })
    ).pipe(
      Stream.map((chunk) => (typeof chunk === "string" ? Buffer.from(chunk) : chunk)),
      Stream.tap((chunk) => ((bytes += chunk.length) > maxAppendInputBytes ? tooLarge : Effect.void)),
      Stream.decodeText(),
      Stream.splitLines,
      Stream.runForEach((line) => {
        lineNo++
        if (line.trim() === "") return Effect.void
        return Either.match(parseAppendLine(line, defaultSession), {
          onLeft: (reason) => Effect.sync(() => bad.push(`line ${lineNo}: ${reason}`)),
          onRight: (entry) => Effect.sync(() => entries.push(entry))
        })
      })
    )
    if (bad.length > 0) {
      for (const problem of bad) yield* Console.error(problem)
      return yield* new InvalidInput({
        message: `${bad.length} bad line(s) on stdin; nothing appended: fix them and run again`
      })
    }
    return entries
  })

const append = Command.make(
  "append",
  {
    url,
    token,
    account,
    session: Options.text("session").pipe(
      Options.withDescription("Session id to record the event(s) under"),
      Options.optional
    ),
    event: Options.text("event").pipe(
      Options.withDescription(
        'One event as JSON, e.g. \'{"type":"session_deleted","session_id":"s1"}\'; without it, JSON lines from stdin'
      ),
      Options.optional
    ),
    idempotencyKey: Options.text("idempotency-key").pipe(
      Options.withDescription(
        "Key of this append, so that running the same command again appends nothing (within the server's window); " +
          "from stdin, each batch of 500 lines is sent as <key>:1, <key>:2, ... Default: a new key per request. " +
          "Lost answers, 5xx and 503 are retried under the same key either way"
      ),
      Options.optional
    )
  },
  (flags) =>
    Effect.gen(function* () {
      const client = yield* Client.FeedClient
      const defaultSession = Option.getOrUndefined(flags.session)
      const key = Option.getOrUndefined(flags.idempotencyKey)
      if (Option.isSome(flags.event)) {
        const entry = parseAppendLine(flags.event.value, defaultSession)
        if (Either.isLeft(entry)) return yield* new InvalidInput({ message: `--event: ${entry.left}` })
        const seqs = yield* client.append([entry.right], { idempotencyKey: key })
        return yield* Console.log(JSON.stringify({ seqs }))
      }
      const entries = yield* readAppendLines(defaultSession)
      let total = 0
      let batches = 0
      for (const chunk of Chunk.chunksOf(Chunk.unsafeFromArray(entries), 500)) {
        batches++
        const seqs = yield* client.append(Chunk.toReadonlyArray(chunk), {
          idempotencyKey: key === undefined ? undefined : `${key}:${batches}`
        })
        for (const seq of seqs) yield* Console.log(seq === null ? "null" : String(seq))
        total += seqs.length
        if (total >= 1000) yield* Console.error(`appended ${total} event(s)`)
      }
      yield* Console.error(`appended ${total} event(s) in all`)
    }).pipe(Effect.provide(clientLayer(flags.url, flags.token, flags.account)), Effect.withSpan("change-feed append"))
).pipe(
  Command.withDescription(
    "Append one event (--event) or JSON lines from stdin (all checked first: if any is bad, none is appended; " +
      "32 MiB at most); prints each seq once durable (null: ephemeral)"
  )
)

// ---- status -----------------------------------------------------------------------------

const status = Command.make("status", { url, token, account }, (flags) =>
  Effect.gen(function* () {
    const client = yield* Client.FeedClient
    yield* Console.log(JSON.stringify(yield* client.status, null, 2))
  }).pipe(Effect.provide(clientLayer(flags.url, flags.token, flags.account)), Effect.withSpan("change-feed status"))
).pipe(Command.withDescription("Show a server's head, retention window, epoch, subscribers and health"))

// ---- inspect ----------------------------------------------------------------------------

/** `inspect` found damage it did not (or could not) repair: the command exits non-zero. */
class JournalDamaged extends Data.TaggedError("JournalDamaged")<{ readonly message: string }> {}

const inspectCommand = Command.make(
  "inspect",
  {
    dir: Args.directory({ name: "DIR", exists: "yes" }).pipe(
      Args.withDescription("Journal directory (with --account: the service's FEED_DIR)")
    ),
    account: Options.text("account").pipe(
      Options.withDescription("Inspect this account's journal under DIR (default: DIR itself, the default account)"),
      Options.optional
    ),
    repair: Options.boolean("repair").pipe(
      Options.withDescription(
        "Cut the newest segment from its first damaged line (or its incomplete last line) and start a new " +
          "epoch, so readers resync; needs the journal closed"
      )
    ),
    json: Options.boolean("json").pipe(Options.withDescription("Print the report as JSON"))
  },
  (flags) =>
    Effect.gen(function* () {
      const path = yield* Path.Path
      let dir = flags.dir
      if (Option.isSome(flags.account)) {
        const account = parseAccountId(flags.account.value)
        if (Either.isLeft(account)) return yield* new InvalidInput({ message: `--account: ${account.left}` })
        dir = accountDirectory(path, path.resolve(flags.dir), account.right)
      }
      let lastShown = 0
      const report = yield* inspect(AgentEvent, dir, (read, total) => {
        if (total < 64 * 1024 * 1024 || read - lastShown < total / 20) return Effect.void
        lastShown = read
        return Console.error(`verifying: ${Math.round((read / total) * 100)}%`)
      })
      const cut = report.repairable
      if (flags.json) {
        yield* Console.log(JSON.stringify(report, null, 2))
      } else {
        yield* Console.log(`journal ${report.directory} (epoch ${report.epoch ?? "none"})`)
        for (const s of report.segments) {
          yield* Console.log(
            `  ${s.name}  ${s.bytes} bytes  ${s.lines} lines  seqs ${s.firstSeq ?? "-"}..${s.lastSeq ?? "-"}`
          )
        }
        const lines = report.segments.reduce((sum, s) => sum + s.lines, 0)
        yield* Console.log(
          `${report.events} event(s) in ${report.segments.length} segment(s); ` +
            `${lines - report.linesWithoutChecksum} line checksum(s) checked` +
            (report.linesWithoutChecksum > 0
              ? `, ${report.linesWithoutChecksum} line(s) without one (written before checksums: damage inside them can go unseen)`
              : "")
        )
        for (const p of report.problems) yield* Console.log(`CORRUPT ${p.file} at byte ${p.offset}: ${p.reason}`)
        if (report.tornTail !== undefined) {
          yield* Console.log(
            `incomplete last line: ${report.tornTail.bytes} byte(s) at ${report.tornTail.file}:${report.tornTail.offset}` +
              (report.unclean
                ? " (a torn write: the journal was not closed cleanly, and the next open cuts it)"
                : " (the journal was closed cleanly, so this is damage: the next open refuses it)")
          )
        }
        if (cut !== undefined && !flags.repair) {
          yield* Console.log(
            `--repair would cut ${cut.bytes} byte(s) from ${cut.file} at byte ${cut.offset} and start a new epoch`
          )
        }
      }
      let repaired = false
      if (flags.repair && cut !== undefined) {
        const epoch = yield* repair(dir, cut)
        repaired = true
        yield* Console.log(
          `cut ${cut.bytes} byte(s) from ${cut.file} at byte ${cut.offset}; started the new epoch ${epoch}, so ` +
            `readers resync (seqs from the cut on will be handed to new events)`
        )
      }
      // What a repair cuts is no longer a problem; what it cannot reach still is.
      const beyondRepair = report.problems.filter(
        (p) => cut === undefined || p.file !== cut.file || p.offset < cut.offset
      ).length
      const restore =
        "--repair cuts only the end of the newest segment (and lines whose event this version does not know, it keeps): " +
        "restore the other segments from a backup, or upgrade"
      if (repaired && beyondRepair > 0) {
        return yield* new JournalDamaged({ message: `${beyondRepair} corrupt place(s) left; ${restore}` })
      }
      if (!repaired && report.problems.length > 0) {
        return yield* new JournalDamaged({
          message:
            `${report.problems.length} corrupt place(s) found; ` +
            (beyondRepair === 0
              ? "run with --repair to cut them (it starts a new epoch)"
              : `${beyondRepair} of them: ${restore}`)
        })
      }
      if (!repaired && report.tornTail !== undefined && !report.unclean) {
        return yield* new JournalDamaged({ message: "the journal ends in damage; run with --repair to cut it" })
      }
    }).pipe(Effect.withSpan("change-feed inspect"))
).pipe(
  Command.withDescription(
    "Verify a journal offline: segments, seq ranges, every line and checksum; report corruption by file and " +
      "offset; --repair cuts damage at the end of the journal and starts a new epoch"
  )
)

// ---- token ------------------------------------------------------------------------------

const tokenCommand = Command.make(
  "token",
  {
    account: Options.text("account").pipe(Options.withDescription("The account the token is for")),
    scope: Options.choice("scope", ["read", "append"]).pipe(
      Options.repeated,
      Options.withDescription("What the token allows: read, append (repeat for both; default both)")
    ),
    ttl: Options.text("ttl").pipe(
      Options.withDescription("How long the token is valid: e.g. 30m, 1h, 7d, or '2 hours' (default 1h)"),
      Options.withDefault("1h")
    ),
    secret: Options.redacted("secret").pipe(
      Options.withDescription("The signing secret (default $FEED_JWT_SECRET)"),
      Options.optional,
      Options.withFallbackConfig(Config.option(Settings.signingSecret))
    )
  },
  (flags) =>
    Effect.gen(function* () {
      const secret = flags.secret
      if (Option.isNone(secret)) {
        return yield* new InvalidInput({ message: "no signing secret: set FEED_JWT_SECRET or pass --secret" })
      }
      const weak = jwtSecretProblem(Redacted.value(secret.value))
      if (weak !== undefined) return yield* new InvalidInput({ message: `the signing secret ${weak}` })
      const parsedAccount = parseAccountId(flags.account)
      if (Either.isLeft(parsedAccount)) return yield* new InvalidInput({ message: `--account: ${parsedAccount.left}` })
      const ttl = parseTtl(flags.ttl)
      if (Either.isLeft(ttl)) return yield* new InvalidInput({ message: `--ttl: ${ttl.left}` })
      const permissions = flags.scope.length === 0 ? Access.accountPermissions : [...new Set(flags.scope)]
      yield* Console.log(
        yield* Access.mint(secret.value, { account: parsedAccount.right, permissions, ttl: ttl.right })
      )
    }).pipe(Effect.withSpan("change-feed token"))
).pipe(
  Command.withDescription(
    "Mint an account token (an HS256 JWT, as the platform issues them) for tests and operators; prints it"
  )
)

/** `30m`, `1h`, `7d`, `90s`, or any duration Effect reads (`2 hours`). */
const parseTtl = (text: string): Either.Either<Duration.Duration, string> => {
  const short = /^(\d+)\s*([smhd])$/.exec(text.trim())
  const units = { s: "seconds", m: "minutes", h: "hours", d: "days" } as const
  const decoded = Duration.decodeUnknown(
    short === null ? text.trim() : `${short[1]} ${units[short[2] as keyof typeof units]}`
  )
  return Option.match(decoded, {
    onNone: () => Either.left(`'${text}' is not a duration (e.g. 30m, 1h, 7d)`),
    onSome: (duration) =>
      Duration.greaterThan(duration, Duration.zero) && Duration.isFinite(duration)
        ? Either.right(duration)
        : Either.left(`'${text}' must be a positive, finite duration`)
  })
}

export const command = Command.make("change-feed").pipe(
  Command.withDescription("A durable, account-wide change feed for agent platforms"),
  Command.withSubcommands([serve, tail, append, status, inspectCommand, tokenCommand])
)

export const run = Command.run(command, { name: "change-feed", version: "0.1.0" })

// @effect/cli renders help and usage errors with ANSI colours whatever the output is.
const ansiCodes = /\u001b\[[0-9;]*m/g

const plainUnless =
  (terminal: boolean | undefined, write: (...args: ReadonlyArray<unknown>) => Effect.Effect<void>) =>
  (...args: ReadonlyArray<unknown>) =>
    terminal === true
      ? write(...args)
      : write(...args.map((a) => (typeof a === "string" ? a.replace(ansiCodes, "") : a)))

/** `effect` printing colours only to a terminal: a pipe or a file gets plain text. */
export const withoutColourOffTerminal = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.consoleWith((console) =>
    Effect.withConsole(effect, {
      ...console,
      log: plainUnless(process.stdout.isTTY, console.log),
      error: plainUnless(process.stderr.isTTY, console.error)
    })
  )
