/**
 * The replica's hub: learns the heads other replicas reach for the accounts open here, and
 * hands them to those accounts' journals as `foreignHeads` hints.
 *
 * Three sources, since none suffices alone: a dedicated `LISTEN feed` connection (a hint as
 * soon as a batch commits, but NOTIFY is not replayed after a disconnect, so its stream fails
 * on `error`/`end` and is reconnected on a schedule), a poll of `feed_heads` for the open
 * accounts every `pollMs` (the backstop), and a poll after every (re)connect (what was
 * notified while no one listened). `@effect/sql-pg`'s own `listen` is not used: its stream
 * neither ends nor fails when its connection dies.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import { Data, Effect, PubSub, Schedule, Stream } from "effect"
import * as Pg from "pg"

/** The LISTEN connection failed or ended. */
export class ListenLost extends Data.TaggedError("ListenLost")<{ readonly cause: unknown }> {}

interface Watched {
  /** The highest head seen (or known at open): a head is passed on when it passes this. */
  known: number
  refs: number
  readonly heads: PubSub.PubSub<number>
}

export interface HubOptions {
  readonly url: string
  readonly pollMs: number
  /** Run after every LISTEN (re)connect, before the poll (the epoch check). */
  readonly onConnect: Effect.Effect<void>
}

export const makeHub = (sql: SqlClient, options: HubOptions) =>
  Effect.gen(function* () {
    const watched = new Map<string, Watched>()

    const seen = (account: string, head: number) =>
      Effect.suspend(() => {
        const w = watched.get(account)
        if (w === undefined || head <= w.known) return Effect.void
        w.known = head
        return PubSub.publish(w.heads, head)
      })

    const poll = Effect.suspend(() => {
      const accounts = [...watched.keys()]
      if (accounts.length === 0) return Effect.void
      return sql
        .unsafe<{ account_id: string; head: string }>(
          `SELECT account_id, head::text AS head FROM feed_heads WHERE account_id = ANY($1::text[])`,
          [accounts]
        )
        .pipe(
          Effect.flatMap((rows) => Effect.forEach(rows, (r) => seen(r.account_id, Number(r.head)), { discard: true }))
        )
    })

    const notified = (payload: string) =>
      payload === "*" || payload === ""
        ? poll
        : Effect.forEach(
            payload.split(","),
            (item) => {
              const colon = item.lastIndexOf(":")
              return seen(item.slice(0, colon), Number(item.slice(colon + 1)))
            },
            { discard: true }
          )

    /** One LISTEN session: its notifications, failing when the connection errs or ends. */
    const session = Stream.asyncPush<string, ListenLost>((emit) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const client = new Pg.Client({ connectionString: options.url, application_name: "feed-listen" })
            client.on("error", (cause) => emit.fail(new ListenLost({ cause })))
            client.on("end", () => emit.fail(new ListenLost({ cause: "connection ended" })))
            client.on("notification", (msg) => {
              if (msg.channel === "feed") emit.single(msg.payload ?? "")
            })
            await client.connect()
            await client.query("LISTEN feed")
            return client
          },
          catch: (cause) => new ListenLost({ cause })
        }),
        // A connection that died may never answer its goodbye.
        (client) => Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.timeoutOption("1 second"))
      ).pipe(Effect.tap(() => options.onConnect.pipe(Effect.zipRight(Effect.ignore(poll)))))
    )

    yield* session.pipe(
      Stream.runForEach((payload) => Effect.ignore(notified(payload))),
      Effect.tapError((error) => Effect.logDebug("feed LISTEN connection lost; reconnecting", error.cause)),
      Effect.retry(Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")))),
      Effect.forkScoped
    )
    yield* Effect.ignore(poll).pipe(Effect.repeat(Schedule.spaced(options.pollMs)), Effect.forkScoped)

    return {
      /** Watches `account` from `head` on, for the caller's scope: the heads past it, as they are seen. */
      watch: (account: string, head: number) =>
        Effect.acquireRelease(
          Effect.gen(function* () {
            let w = watched.get(account)
            if (w === undefined) {
              w = { known: head, refs: 0, heads: yield* PubSub.sliding<number>(16) }
              watched.set(account, w)
            }
            w.refs++
            return Stream.fromPubSub(w.heads)
          }),
          () =>
            Effect.suspend(() => {
              const w = watched.get(account)
              if (w === undefined || --w.refs > 0) return Effect.void
              watched.delete(account)
              return PubSub.shutdown(w.heads)
            })
        ),
      /**
       * This replica appended `first..last` to `account`: when that continues the known head
       * there is nothing for the hub to pass on (a gap before `first` is left for a poll to report).
       */
      appended: (account: string, first: number, last: number) =>
        Effect.sync(() => {
          const w = watched.get(account)
          if (w !== undefined && first === w.known + 1) w.known = last
        }),
      poll
    }
  })
