/**
 * Many accounts in one service: separate feeds side by side, opening on demand and closing
 * when idle, the bound on open feeds, account ids that try to leave the root, a corrupt
 * account next to a healthy one, and a single-account directory read as the default account.
 */
import { FileSystem, Path } from "@effect/platform"
import { describe, it, assert } from "@effect/vitest"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import { Context, Deferred, Effect, Exit, Fiber, Option, Queue, Scope } from "effect"
import * as ChangeFeed from "../src/ChangeFeed.js"
import * as ChangeFeeds from "../src/ChangeFeeds.js"
import * as FileJournal from "../src/Journal/File.js"
import { AgentDomain } from "../src/Domain/AgentEvent.js"
import { deleted, Env, eventually, follow, journaled, seen, tempDir } from "./support/FeedTesting.js"

const feedsIn = (directory: string, options: Partial<ChangeFeeds.FileFeedsOptions> = {}) =>
  Effect.flatMap(FileJournal.store({ directory, fsync: "never", ...options }), (store) =>
    ChangeFeeds.make(AgentDomain, store, options)
  )

/** A full collection on demand (V8's `gc`, exposed at run time). */
const collector = (): (() => void) => {
  V8.setFlagsFromString("--expose-gc")
  return Vm.runInNewContext("gc") as () => void
}

const publish = (feeds: ChangeFeeds.ChangeFeedsService<any>, account: string, session: string) =>
  feeds.use(account, (feed) => feed.publish(session, deleted(session)))

describe("ChangeFeeds", () => {
  it.scopedLive("two_accounts_have_separate_seqs_epochs_and_journals", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root)
      const a = yield* feeds.get("acme")
      const b = yield* feeds.get("globex")
      const readerB = yield* follow(b.changes())

      assert.deepStrictEqual(yield* a.publish("a1", deleted("a1")), Option.some(1))
      assert.deepStrictEqual(yield* a.publish("a2", deleted("a2")), Option.some(2))
      assert.deepStrictEqual(yield* b.publish("b1", deleted("b1")), Option.some(1))
      yield* seen(readerB, 1)

      assert.notStrictEqual(a.epoch, b.epoch)
      assert.deepStrictEqual(
        (yield* journaled(a)).map((e) => e.session_id),
        ["a1", "a2"]
      )
      assert.deepStrictEqual(
        readerB.changes().map((e) => e.session_id),
        ["b1"]
      )
      const path = yield* Path.Path
      const fs = yield* FileSystem.FileSystem
      assert.isTrue(yield* fs.exists(path.join(root, "accounts", "acme", "EPOCH")))
      assert.isTrue(yield* fs.exists(path.join(root, "accounts", "globex", "EPOCH")))
      const listed = yield* feeds.accounts
      assert.deepStrictEqual(
        listed.map((s) => [s.account as string, s.open, s.status?.headSeq]),
        [
          ["acme", true, 2],
          ["globex", true, 1]
        ]
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("an_open_feed_keeps_nothing_of_the_fiber_that_opened_it", () =>
    Effect.gen(function* () {
      // What a request's fiber has in context (its request, its answer, its socket), here 1 MiB.
      class Caller extends Context.Tag("test/Caller")<Caller, { readonly payload: Uint8Array }>() {}
      const collect = collector()
      const feeds = yield* feedsIn(yield* tempDir, { idleTimeToLive: "1 hour" })
      // Nothing here keeps the caller or the effect that opened the feed with it: only this.
      const gone = yield* Effect.suspend(() => {
        const caller = { payload: new Uint8Array(1024 * 1024) }
        const gone = new WeakRef(caller)
        return Effect.provideService(publish(feeds, "acme", "s1"), Caller, caller).pipe(
          Effect.tap((seq) => assert.deepStrictEqual(seq, Option.some(1))),
          Effect.as(gone)
        )
      })
      const open = yield* feeds.accounts
      assert.isTrue(
        open.some((account) => account.account === "acme" && account.open),
        "the feed stays open"
      )
      yield* eventually("what the opening fiber had is collected", () => {
        collect()
        return gone.deref() === undefined
      })
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("an_idle_feed_closes_and_reopens_with_its_seq_and_epoch", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root, { idleTimeToLive: "20 millis" })
      const epoch = yield* feeds.use("acme", (feed) => Effect.succeed(feed.epoch))
      yield* publish(feeds, "acme", "s1")
      yield* eventually(
        "the idle feed closed",
        Effect.map(feeds.accounts, (all) => !all[0]!.open)
      )
      assert.deepStrictEqual(
        (yield* feeds.accounts).map((s) => [s.account, s.open]),
        [["acme", false]]
      )
      assert.deepStrictEqual(yield* publish(feeds, "acme", "s2"), Option.some(2))
      assert.strictEqual(yield* feeds.use("acme", (feed) => Effect.succeed(feed.epoch)), epoch)
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_reader_holds_its_account_open", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root, { idleTimeToLive: "1 millis" })
      const readerScope = yield* Scope.make()
      const feed = yield* feeds.get("acme").pipe(Scope.extend(readerScope))
      const reader = yield* follow(feed.changes())
      for (let i = 1; i <= 3; i++) yield* publish(feeds, "acme", `s${i}`)
      yield* seen(reader, 3)
      assert.isTrue((yield* feeds.accounts)[0]!.open)
      yield* Scope.close(readerScope, Exit.void)
      yield* eventually(
        "the released feed closed",
        Effect.map(feeds.accounts, (all) => !all[0]!.open)
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("past_the_bound_an_idle_feed_is_closed_and_a_busy_service_answers_FeedsBusy", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root, { maxOpen: 2, idleTimeToLive: "1 hour" })
      yield* publish(feeds, "a", "s1") // a is open and idle
      const holdB = yield* Scope.make()
      yield* feeds.get("b").pipe(Scope.extend(holdB))

      // c takes a's place: a was idle.
      assert.deepStrictEqual(yield* publish(feeds, "c", "s1"), Option.some(1))
      const open = (yield* feeds.accounts).filter((s) => s.open).map((s) => s.account)
      assert.deepStrictEqual(open, ["b", "c"])

      // Both open feeds in use: a third account is refused, and nothing is opened for it.
      const holdC = yield* Scope.make()
      yield* feeds.get("c").pipe(Scope.extend(holdC))
      const busy = yield* feeds.get("d").pipe(Effect.scoped, Effect.flip)
      assert.strictEqual(busy._tag, "FeedsBusy")
      assert.match(busy.message, /retry in 1 s/)
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      assert.isFalse(yield* fs.exists(path.join(root, "accounts", "d")))

      yield* Scope.close(holdB, Exit.void)
      assert.deepStrictEqual(yield* publish(feeds, "d", "s1"), Option.some(1))
      // a reopens where it left off.
      yield* Scope.close(holdC, Exit.void)
      assert.deepStrictEqual(yield* publish(feeds, "a", "s2"), Option.some(2))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("requests_of_one_account_running_together_share_its_feed_and_it_closes_after_the_last", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root, { idleTimeToLive: "1 millis" })
      const gate = yield* Deferred.make<void>()
      const started = yield* Queue.unbounded<void>()
      const users = yield* Effect.forkAll(
        Array.from({ length: 3 }, () =>
          feeds.use("acme", (feed) =>
            Effect.as(Effect.zipRight(Queue.offer(started, undefined), Deferred.await(gate)), feed)
          )
        )
      )
      for (let i = 0; i < 3; i++) yield* Queue.take(started)
      assert.isTrue((yield* feeds.accounts)[0]!.open)
      // The first one done leaves the feed open for the others.
      yield* Deferred.succeed(gate, undefined)
      const [first, ...rest] = yield* Fiber.join(users)
      for (const feed of rest) assert.strictEqual(feed, first)
      yield* eventually(
        "the feed closed once no request held it",
        Effect.map(feeds.accounts, (all) => !all[0]!.open)
      )
      assert.deepStrictEqual(yield* publish(feeds, "acme", "s1"), Option.some(1))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("an_account_a_request_has_just_let_go_of_makes_room_for_another_at_once", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const feeds = yield* feedsIn(root, { maxOpen: 1, idleTimeToLive: "1 hour" })
      // Two requests in a row, with nothing between them to let the first's account go idle.
      const both = yield* Effect.zip(
        feeds.use("a", (feed) => Effect.succeed(feed.epoch)),
        feeds.use("b", (feed) => Effect.succeed(feed.epoch))
      )
      assert.notStrictEqual(both[0], both[1])
      assert.deepStrictEqual(
        (yield* feeds.accounts).filter((s) => s.open).map((s) => s.account),
        ["b"]
      )
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("account_ids_that_could_leave_the_root_are_refused_before_touching_a_path", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      const feeds = yield* feedsIn(root)
      const attempts = [
        "..",
        ".",
        "../x",
        "a/b",
        "a\\b",
        "/etc",
        ".hidden",
        "-flag",
        "",
        "a".repeat(65),
        "a\u0000b",
        "%2e%2e",
        "acc%2F..",
        "ä"
      ]
      for (const account of attempts) {
        const error = yield* feeds.get(account).pipe(Effect.scoped, Effect.flip)
        assert.strictEqual(error._tag, "InvalidAccount", account)
        assert.match(error.message, /invalid account id/)
      }
      assert.deepStrictEqual(yield* fs.readDirectory(root), [])
      assert.strictEqual((yield* feeds.get("a".repeat(64)).pipe(Effect.scoped, Effect.exit))._tag, "Success")
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_corrupt_account_fails_alone_and_its_neighbour_keeps_serving", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const feeds = yield* feedsIn(root, { idleTimeToLive: "1 millis" })
      yield* publish(feeds, "bad", "s1")
      yield* publish(feeds, "good", "s1")
      yield* eventually(
        "both closed",
        Effect.map(feeds.accounts, (all) => all.every((s) => !s.open))
      )
      // The segment's directory is replaced by a file: the journal cannot open.
      const bad = ChangeFeeds.accountDirectory(path, root, "bad" as ChangeFeeds.AccountId)
      yield* fs.remove(bad, { recursive: true })
      yield* fs.writeFileString(bad, "not a directory")

      const error = yield* publish(feeds, "bad", "s2").pipe(Effect.flip)
      assert.strictEqual(error._tag, "AccountUnavailable")
      assert.match(error.message, /account 'bad' is unavailable/)
      assert.deepStrictEqual(yield* publish(feeds, "good", "s2"), Option.some(2))
      // Not cached: once the disk is mended the account opens again.
      yield* fs.remove(bad)
      assert.deepStrictEqual(yield* publish(feeds, "bad", "s3"), Option.some(1))
      assert.isTrue(yield* fs.exists(path.join(root, "accounts", "good", "EPOCH")))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_single_account_directory_is_the_default_account_with_nothing_lost", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const epoch = yield* Effect.scoped(
        Effect.gen(function* () {
          const single = yield* ChangeFeed.makeFiles(AgentDomain, { directory: root })
          yield* single.publish("s1", deleted("s1"))
          yield* single.publish("s2", deleted("s2"))
          return single.epoch
        })
      )
      const feeds = yield* feedsIn(root)
      assert.deepStrictEqual(
        (yield* feeds.accounts).map((s) => [s.account, s.open]),
        [["default", false]]
      )
      const feed = yield* feeds.get(ChangeFeeds.DEFAULT_ACCOUNT)
      assert.strictEqual(feed.epoch, epoch)
      assert.deepStrictEqual(
        (yield* journaled(feed)).map((e) => [e.seq, e.session_id]),
        [
          [1, "s1"],
          [2, "s2"]
        ]
      )
      assert.deepStrictEqual(yield* feed.publish("s3", deleted("s3")), Option.some(3))
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("closing_the_service_drains_every_open_feed", () =>
    Effect.gen(function* () {
      const root = yield* tempDir
      const scope = yield* Scope.make()
      const feeds = yield* feedsIn(root).pipe(Scope.extend(scope))
      const accounts = ["a", "b", "c"]
      for (const account of accounts) {
        const feed = yield* feeds.get(account).pipe(Scope.extend(scope))
        for (let i = 0; i < 50; i++) feed.unsafeRecord(`s${i}`, deleted(`s${i}`))
      }
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* Fiber.join(closing)
      const reopened = yield* feedsIn(root)
      for (const account of accounts) {
        assert.strictEqual(yield* reopened.use(account, (feed) => feed.headSeq), 50, account)
      }
    }).pipe(Effect.provide(Env))
  )
})
