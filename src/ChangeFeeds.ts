/**
 * The feeds of many accounts in one service. Each account has a feed of its own (its own
 * journal directory, gapless seq, epoch, retention and readers); `get` opens it on first use,
 * and it closes, draining what it accepted, once no one has held it for the idle time.
 *
 * The feeds live in an `RcMap` keyed by account: whoever holds a feed (a request, an open
 * stream) holds it through a scope, and the map closes it when the last holder is gone and
 * the idle time has passed. Requests of one account served together share one hold (`use`),
 * so that each costs no scope and map lookup of its own. At most `maxOpen` feeds are open:
 * past that the longest-idle feed is closed to make room, and when every open feed is in use
 * the caller gets `FeedsBusy`, to retry later.
 *
 * The journals come from a `JournalStore`: directories under a root (`Journal/File.ts`, where
 * the `default` account is the root itself), or a database shared by replicas.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import {
  Cause,
  Clock,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  RcMap,
  Runtime,
  Scope
} from "effect"
import * as ChangeFeed from "./ChangeFeed.js"
import { type AccountId, DEFAULT_ACCOUNT, parseAccountId } from "./Domain/Account.js"
import { AgentDomain, type AgentEvent } from "./Domain/AgentEvent.js"
import type { FeedDomain } from "./Domain/FeedDomain.js"
import type * as Journal from "./Journal.js"
import * as FileJournal from "./Journal/File.js"
import * as Finalizer from "./Finalizer.js"

/** The text is not an account id; nothing touched a path. */
export class InvalidAccount extends Data.TaggedError("InvalidAccount")<{ readonly reason: string }> {
  override get message() {
    return `invalid account id: ${this.reason}`
  }
}

/** Every open feed is in use and no more may open; retry after `retryAfterSeconds`. */
export class FeedsBusy extends Data.TaggedError("FeedsBusy")<{
  readonly account: string
  readonly open: number
  readonly retryAfterSeconds: number
}> {
  override get message() {
    return (
      `account '${this.account}' cannot be opened now: all ${this.open} open feeds are in use; ` +
      `retry in ${this.retryAfterSeconds} s`
    )
  }
}

/** The account's journal could not be opened (locked, corrupt, or the disk failed): this account only. */
export class AccountUnavailable extends Data.TaggedError("AccountUnavailable")<{
  readonly account: string
  readonly cause: Journal.JournalOpenError
}> {
  override get message() {
    return `account '${this.account}' is unavailable: ${this.cause.message}`
  }
}

/** This service does not host the account (it serves one feed, as the default account). */
export class UnknownAccount extends Data.TaggedError("UnknownAccount")<{ readonly account: string }> {
  override get message() {
    return `this service hosts only the '${DEFAULT_ACCOUNT}' account, not '${this.account}'`
  }
}

export type AccountError = InvalidAccount | FeedsBusy | AccountUnavailable | UnknownAccount

const accountErrorTags: ReadonlySet<unknown> = new Set([
  "InvalidAccount",
  "FeedsBusy",
  "AccountUnavailable",
  "UnknownAccount"
])

export const isAccountError = (error: unknown): error is AccountError =>
  typeof error === "object" && error !== null && accountErrorTags.has((error as { _tag?: unknown })._tag)

export interface ChangeFeedsOptions extends ChangeFeed.ChangeFeedOptions {
  /** How long a feed no one holds stays open (default 5 minutes). */
  readonly idleTimeToLive?: Duration.DurationInput | undefined
  /** At most this many feeds open at once (default 1000). */
  readonly maxOpen?: number | undefined
}

/** The options of feeds on file journals under one root directory. */
export interface FileFeedsOptions extends ChangeFeedsOptions, Journal.JournalOptions {}

/** An account the service knows of, open or only on disk. */
export interface AccountSummary {
  readonly account: AccountId
  readonly open: boolean
  /** The head while the feed is open. */
  readonly status: ChangeFeed.FeedStatus | undefined
}

export interface ChangeFeedsService<A> {
  /** The account's feed, opened if needed and held open for the scope's lifetime. */
  readonly get: (account: string) => Effect.Effect<ChangeFeed.ChangeFeedService<A>, AccountError, Scope.Scope>
  /** Runs `f` with the account's feed held open. */
  readonly use: <X, E, R>(
    account: string,
    f: (feed: ChangeFeed.ChangeFeedService<A>) => Effect.Effect<X, E, R>
  ) => Effect.Effect<X, E | AccountError, R>
  /** The open accounts and those with a journal on disk, in id order. */
  readonly accounts: Effect.Effect<Array<AccountSummary>>
}

export { accountDirectory } from "./Journal/File.js"

/**
 * How long a hold of an account's feed outlives its last request (`use`): long enough for a busy
 * account's next request, short next to any idle time worth setting.
 */
const LEASE_LINGER_MS = 100

/** A hold of an account's feed that concurrent requests share (`use`). */
interface Lease<A> {
  readonly account: AccountId
  readonly feed: ChangeFeed.ChangeFeedService<A>
  /** Where the hold is: closing it lets go of the feed. */
  readonly scope: Scope.CloseableScope
  /** The requests holding the feed through this lease. */
  count: number
  /** When the last of them let go (`performance.now()`). */
  since: number
}

/** Builds the service for any event domain; every feed is closed (drained) with the scope. */
export const make = <A, I>(
  domain: FeedDomain<A, I>,
  store: Journal.JournalStore,
  options: ChangeFeedsOptions = {}
): Effect.Effect<ChangeFeedsService<A>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const maxOpen = Math.max(1, options.maxOpen ?? 1000)
    /** Runs effects as fibers of their own, with what the feeds were made with. */
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const idle = Duration.decode(options.idleTimeToLive ?? Duration.minutes(5))

    /** How many holders each open feed has, and since when an unheld one is idle: to pick whom to close. */
    const holders = new Map<AccountId, number>()
    const idleSince = new Map<AccountId, number>()
    /** The feeds open now, for listing them without opening or holding one. */
    const opened = new Map<AccountId, ChangeFeed.ChangeFeedService<A>>()
    /** Resolved once an account's feed has closed: a reopen waits for it, since the journal lock is still held until then. */
    const closed = new Map<AccountId, Deferred.Deferred<void>>()

    const openIn = (account: AccountId) =>
      Effect.gen(function* () {
        const previous = closed.get(account)
        if (previous !== undefined) yield* Deferred.await(previous)
        const done = yield* Deferred.make<void>()
        closed.set(account, done)
        // Added first, so it runs last: after the feed drained and the journal closed.
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            if (closed.get(account) === done) closed.delete(account)
            // A request may already hold the account again (waiting for this close to reopen it).
            if ((holders.get(account) ?? 0) === 0) idleSince.delete(account)
          }).pipe(Effect.zipRight(Deferred.succeed(done, undefined)))
        )
        const feed = yield* ChangeFeed.makeOn(domain, store.open(domain.schema, account), { ...options, account })
        opened.set(account, feed)
        // Runs first at close: a closing feed is no longer listed as open.
        yield* Effect.addFinalizer(() => Effect.sync(() => opened.delete(account)))
        return feed
      })

    /**
     * An account's feed, opened in the entry's scope by a fiber of its own, not by the request's
     * that asked first: the fibers an open feed forks (its writer, its sweepers) keep what the
     * fiber that forked them had (its context, and the values its own parents had before it), as
     * long as the feed is open, and a feed opened by a request's fiber kept that request (its
     * socket, its answer: ~8 KiB of heap an open account) and its span.
     */
    const open = (account: AccountId) =>
      Effect.flatMap(Effect.scope, (scope) => {
        const opening = runFork(Scope.extend(openIn(account), scope))
        return Effect.onInterrupt(Fiber.join(opening), () => Fiber.interrupt(opening))
      }).pipe(
        Effect.mapError((cause) => new AccountUnavailable({ account, cause })),
        Effect.withSpan("ChangeFeeds.open", { attributes: { account } })
      )

    const feeds = yield* RcMap.make({ lookup: open, idleTimeToLive: idle, capacity: maxOpen })

    /** Closes the feed idle the longest, if any: true when room was made. */
    const closeLongestIdle = Effect.gen(function* () {
      let victim: AccountId | undefined
      let since = Infinity
      for (const account of yield* RcMap.keys(feeds)) {
        const at = idleSince.get(account)
        if ((holders.get(account) ?? 0) === 0 && at !== undefined && at < since) {
          victim = account
          since = at
        }
      }
      if (victim === undefined) return false
      yield* Effect.logDebug(`change feeds: closing idle account '${victim}' to make room`)
      yield* RcMap.invalidate(feeds, victim)
      return true
    })

    const unhold = (account: AccountId) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const left = (holders.get(account) ?? 1) - 1
        if (left > 0) return holders.set(account, left)
        holders.delete(account)
        idleSince.set(account, now)
      })

    const hold = (account: AccountId) =>
      Finalizer.acquireSync(
        () => {
          holders.set(account, (holders.get(account) ?? 0) + 1)
          idleSince.delete(account)
        },
        () => unhold(account)
      )

    const acquire = (
      account: AccountId,
      attempts: number
    ): Effect.Effect<ChangeFeed.ChangeFeedService<A>, FeedsBusy | AccountUnavailable, Scope.Scope> =>
      RcMap.get(feeds, account).pipe(
        Effect.catchIf(
          (error): error is Cause.ExceededCapacityException => Cause.isExceededCapacityException(error),
          () =>
            Effect.flatMap(Effect.zipRight(letGo(true), closeLongestIdle), (closedOne) =>
              closedOne && attempts > 0
                ? acquire(account, attempts - 1)
                : Effect.fail(new FeedsBusy({ account, open: maxOpen, retryAfterSeconds: 1 }))
            )
        ),
        // A failed open is not kept: the next request tries again (the disk may be back).
        Effect.tapError((error) =>
          error._tag === "AccountUnavailable" ? RcMap.invalidate(feeds, account) : Effect.void
        )
      )

    const held = (account: AccountId) => Effect.zipRight(hold(account), acquire(account, 3))

    const get = (text: string) =>
      Either.match(parseAccountId(text), {
        onLeft: (reason) => Effect.fail(new InvalidAccount({ reason })),
        onRight: held
      })

    /**
     * The holds `use` shares: while one request of an account runs, the next ones of the same
     * account take its hold of the feed instead of taking (and then releasing) one each. A hold
     * no request holds any more is let go of `lingerMs` later (the next request of a busy account
     * takes it over: taking a hold afresh costs a request several times what the rest of a small
     * append does), or at once when room must be made for another account. It lingers no longer
     * than the idle time, so an idle account still closes when it should.
     */
    const leases = new Map<AccountId, Lease<A>>()
    const unheld = new Set<Lease<A>>()
    const lingerMs = Math.min(LEASE_LINGER_MS, Duration.toMillis(idle))
    let sweep: ReturnType<typeof setTimeout> | undefined

    /** Lets go of the unheld holds: all of them, or those unheld for `lingerMs` (then looks again later for the rest). */
    const letGo = (all: boolean) =>
      Effect.suspend(() => {
        const closing: Array<Scope.CloseableScope> = []
        const now = performance.now()
        for (const lease of unheld) {
          // One taken again meanwhile is left for its last holder to put back.
          if (lease.count > 0 || leases.get(lease.account) !== lease) unheld.delete(lease)
          else if (all || now - lease.since >= lingerMs) {
            unheld.delete(lease)
            leases.delete(lease.account)
            closing.push(lease.scope)
          }
        }
        if (!all && unheld.size > 0) sweepLater()
        return Effect.forEach(closing, (scope) => Scope.close(scope, Exit.void), { discard: true })
      })

    const sweepLater = () => {
      if (sweep !== undefined) return
      sweep = setTimeout(() => {
        sweep = undefined
        runFork(letGo(false))
      }, lingerMs)
      // Never what keeps a process up: the service's own close lets go of every hold.
      sweep.unref()
    }

    const leave = (lease: Lease<A>) =>
      Effect.suspend(() => {
        lease.count -= 1
        if (lease.count > 0) return Effect.void
        if (leases.get(lease.account) !== lease) return Scope.close(lease.scope, Exit.void)
        lease.since = performance.now()
        unheld.add(lease)
        sweepLater()
        return Effect.void
      })

    // Runs before the map closes: no hold outlives the service.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Effect.sync(() => {
          if (sweep !== undefined) clearTimeout(sweep)
          sweep = undefined
        }),
        letGo(true)
      )
    )

    const use = <X, E, R>(
      text: string,
      f: (feed: ChangeFeed.ChangeFeedService<A>) => Effect.Effect<X, E, R>
    ): Effect.Effect<X, E | AccountError, R> =>
      Effect.uninterruptibleMask((restore): Effect.Effect<X, E | AccountError, R> => {
        const parsed = parseAccountId(text)
        if (Either.isLeft(parsed)) return Effect.fail(new InvalidAccount({ reason: parsed.left }))
        const account = parsed.right
        const shared = leases.get(account)
        if (shared !== undefined) {
          shared.count += 1
          return Effect.ensuring(restore(f(shared.feed)), leave(shared))
        }
        return Effect.flatMap(Scope.make(), (scope) =>
          Effect.matchCauseEffect(restore(Scope.extend(held(account), scope)), {
            onFailure: (cause) => Effect.zipRight(Scope.close(scope, Exit.void), Effect.failCause(cause)),
            onSuccess: (feed) => {
              const lease: Lease<A> = { account, feed, scope, count: 1, since: 0 }
              // Another request may have opened one meanwhile: this one then stays its own.
              if (!leases.has(account)) leases.set(account, lease)
              return Effect.ensuring(restore(f(feed)), leave(lease))
            }
          })
        )
      })

    // Only feeds already open report a status: listing never opens, locks or holds a journal.
    const accounts = Effect.gen(function* () {
      const all = new Set([...opened.keys(), ...(yield* store.accounts)])
      const summaries: Array<AccountSummary> = []
      for (const account of [...all].sort()) {
        const feed = opened.get(account)
        // A feed that starts closing meanwhile has no status (its queue is shut down): listed as closed.
        const status = feed === undefined ? undefined : Exit.getOrElse(yield* Effect.exit(feed.status), () => undefined)
        summaries.push({ account, open: status !== undefined, status })
      }
      return summaries
    })

    return {
      get,
      use,
      accounts
    } satisfies ChangeFeedsService<A>
  })

/**
 * One feed served as the default account, and no other: for an application that runs one feed
 * (`ChangeFeed`) and serves it over HTTP. The feed's lifetime is its own.
 */
export const single = <A>(feed: ChangeFeed.ChangeFeedService<A>): ChangeFeedsService<A> => {
  const get = (text: string) =>
    Either.match(parseAccountId(text), {
      onLeft: (reason) => Effect.fail<AccountError>(new InvalidAccount({ reason })),
      onRight: (account) =>
        account === DEFAULT_ACCOUNT ? Effect.succeed(feed) : Effect.fail<AccountError>(new UnknownAccount({ account }))
    })
  return {
    get,
    use: (account, f) => Effect.flatMap(get(account), f),
    accounts: Effect.map(feed.status, (status) => [{ account: DEFAULT_ACCOUNT as AccountId, open: true, status }])
  }
}

/** The agent platform's feeds, one per account. */
export class ChangeFeeds extends Context.Tag("effect-change-feed/ChangeFeeds")<
  ChangeFeeds,
  ChangeFeedsService<AgentEvent>
>() {}

/** The agent feeds of every account on the journals of a store. */
export const layerStore = <E, R>(
  store: Effect.Effect<Journal.JournalStore, E, R>,
  options: ChangeFeedsOptions = {}
): Layer.Layer<ChangeFeeds, E, Exclude<R, Scope.Scope>> =>
  Layer.scoped(
    ChangeFeeds,
    Effect.flatMap(store, (opened) => make(AgentDomain, opened, options))
  )

/** The agent feeds of every account, on file journals under one root directory. */
export const layer = (options: FileFeedsOptions): Layer.Layer<ChangeFeeds, never, FileSystem.FileSystem | Path.Path> =>
  layerStore(FileJournal.store(options), options)

export { type AccountId, DEFAULT_ACCOUNT } from "./Domain/Account.js"

/** One agent feed (the `ChangeFeed` in context) as the default account and no other. */
export const layerSingle: Layer.Layer<ChangeFeeds, never, ChangeFeed.ChangeFeed> = Layer.effect(
  ChangeFeeds,
  Effect.map(ChangeFeed.ChangeFeed, single)
)
