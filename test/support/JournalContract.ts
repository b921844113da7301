/**
 * The contract every journal backend keeps, as a suite any backend's test file runs on its own
 * `JournalStore`: the journal gives gapless seqs per account, reads are exclusive of the cursor
 * and inclusive of the target, lines are the exact wire JSON the append answered, keys stay off
 * the wire, accounts are independent, and a reopened journal continues where it was. Then the
 * feed on top of it: concurrent publishers, readers from any cursor, resets, session filters.
 * The file, in-memory and PostgreSQL backends all run it.
 */
import { describe, it, assert } from "@effect/vitest"
import { Chunk, Effect, Exit, type Layer, Scope, Stream } from "effect"
import * as fc from "fast-check"
import * as ChangeFeed from "../../src/ChangeFeed.js"
import type { AccountId } from "../../src/Domain/Account.js"
import { AgentDomain, type AgentEvent } from "../../src/Domain/AgentEvent.js"
import { wireJson } from "../../src/Domain/FeedItem.js"
import * as Journal from "../../src/Journal.js"
import { delivered, follow, numbered, range, reset, seen } from "./FeedTesting.js"

export interface Backend<R> {
  /** A fresh, empty store (its own directory or database), released with the scope. */
  readonly store: Effect.Effect<Journal.JournalStore, unknown, R | Scope.Scope>
  /** What the store needs (real files, a database). */
  readonly layer: Layer.Layer<R, unknown>
}

const account = (id: string) => id as AccountId
const decoder = new TextDecoder()

/** Entries for `sessions`, in order, stamped at one time. */
const entries = (sessions: ReadonlyArray<string>, key?: string): Array<Journal.JournalEntry<AgentEvent>> =>
  sessions.map((session) => ({
    ts: "2026-11-29T12:00:00.000Z",
    session_id: session,
    event: { type: "session_deleted", session_id: session },
    ...(key === undefined ? {} : { key })
  }))

const seqsOf = <A extends { readonly seq: number }, E>(stream: Stream.Stream<A, E>) =>
  Effect.map(Stream.runCollect(stream), (items) => Chunk.toArray(items).map((item) => item.seq))

/** Opens an account's journal in a scope the test closes to reopen it. */
const openIn = (store: Journal.JournalStore, id: string) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const journal = yield* Scope.extend(store.open(AgentDomain.schema, account(id)), scope)
    return { journal, close: Scope.close(scope, Exit.void) }
  })

export const journalContract = <R>(name: string, backend: Backend<R>) =>
  describe(`journal contract: ${name}`, () => {
    const run = <A, E>(test: (store: Journal.JournalStore) => Effect.Effect<A, E, R | Scope.Scope>) =>
      Effect.scoped(Effect.flatMap(backend.store, test)).pipe(Effect.provide(backend.layer))

    it.live("appends_take_gapless_seqs_from_one_and_answer_their_lines", () =>
      run((store) =>
        Effect.gen(function* () {
          const { journal } = yield* openIn(store, "a")
          assert.strictEqual(yield* journal.headSeq, 0)
          const first = yield* journal.append(entries(["s1", "s2"]))
          const empty = yield* journal.append([])
          const second = yield* journal.append(entries(["s3"], "req-1"))
          assert.deepStrictEqual(
            first.events.map((e) => e.seq),
            [1, 2]
          )
          assert.deepStrictEqual(empty.events, [])
          assert.deepStrictEqual(
            second.events.map((e) => e.seq),
            [3]
          )
          assert.strictEqual(yield* journal.headSeq, 3)
          const info = yield* journal.info
          assert.strictEqual(info.headSeq, 3)
          assert.strictEqual(info.oldestSeq, 1)
          assert.strictEqual(info.epoch, journal.epoch)

          // What a reader of lines gets is byte for byte what the append answered.
          const answered = [...first.events.keys()]
            .map((i) => Journal.bodyAt(first.lines, i))
            .concat([Journal.bodyAt(second.lines, 0)])
            .map((body) => decoder.decode(body))
          const lines = Chunk.toArray(yield* Stream.runCollect(journal.readLines(0)))
          assert.deepStrictEqual(
            lines.map((line) => decoder.decode(line.body)),
            answered
          )
          assert.deepStrictEqual(
            lines.map((line) => line.key),
            [undefined, undefined, "req-1"]
          )
          // The body is the change's wire JSON: no key, no checksum.
          const wire = lines.map((line) => JSON.parse(decoder.decode(wireJson(line))))
          assert.deepStrictEqual(wire[2], {
            seq: 3,
            ts: "2026-11-29T12:00:00.000Z",
            session_id: "s3",
            event: { type: "session_deleted", session_id: "s3" }
          })
          const events = Chunk.toArray(yield* Stream.runCollect(journal.read(0)))
          assert.deepStrictEqual(events[2], { ...wire[2], key: "req-1" })
        })
      )
    )

    it.live("reads_hold_exactly_the_seqs_after_the_cursor_up_to_the_target", () =>
      run((store) =>
        Effect.gen(function* () {
          const { journal } = yield* openIn(store, "a")
          for (const size of [3, 1, 4, 2]) yield* journal.append(entries(range(1, size).map((i) => `s${i}`)))
          assert.deepStrictEqual(yield* seqsOf(journal.read(0)), range(1, 10))
          assert.deepStrictEqual(yield* seqsOf(journal.read(3, 7)), range(4, 7))
          assert.deepStrictEqual(yield* seqsOf(journal.readLines(9)), [10])
          assert.deepStrictEqual(yield* seqsOf(journal.read(10)), [])
          assert.deepStrictEqual(yield* seqsOf(journal.read(12)), [])
          assert.deepStrictEqual(yield* seqsOf(journal.readLines(5, 5)), [])
        })
      )
    )

    it.live("accounts_are_independent_and_listed", () =>
      run((store) =>
        Effect.gen(function* () {
          const a = (yield* openIn(store, "acct-a")).journal
          const b = (yield* openIn(store, "acct-b")).journal
          yield* a.append(entries(["x", "y"]))
          const onB = yield* b.append(entries(["z"]))
          yield* a.append(entries(["w"]))
          assert.deepStrictEqual(
            onB.events.map((e) => e.seq),
            [1]
          )
          assert.deepStrictEqual(yield* seqsOf(a.read(0)), [1, 2, 3])
          assert.deepStrictEqual(yield* seqsOf(b.read(0)), [1])
          const listed = yield* store.accounts
          assert.includeMembers([...listed], ["acct-a", "acct-b"])
        })
      )
    )

    it.live("a_reopened_journal_keeps_its_events_epoch_and_continues_the_seq", () =>
      run((store) =>
        Effect.gen(function* () {
          const before = yield* openIn(store, "a")
          yield* before.journal.append(entries(["s1", "s2", "s3"]))
          const epoch = before.journal.epoch
          yield* before.close
          const after = yield* openIn(store, "a")
          assert.strictEqual(after.journal.epoch, epoch)
          assert.strictEqual(yield* after.journal.headSeq, 3)
          const next = yield* after.journal.append(entries(["s4"]))
          assert.deepStrictEqual(
            next.events.map((e) => e.seq),
            [4]
          )
          assert.deepStrictEqual(yield* seqsOf(after.journal.read(0)), [1, 2, 3, 4])
        })
      )
    )

    it.live("any_batch_sizes_and_any_cursor_read_back_exactly_the_events_after_it", () =>
      run((store) =>
        Effect.gen(function* () {
          let n = 0
          yield* Effect.promise(() =>
            fc.assert(
              fc.asyncProperty(
                fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 12 }),
                fc.nat(),
                (sizes, pick) =>
                  Effect.runPromise(
                    Effect.scoped(
                      Effect.gen(function* () {
                        const { journal } = yield* openIn(store, `prop-${n++}`)
                        let expected = 0
                        for (const size of sizes) {
                          const appended = yield* journal.append(entries(range(1, size).map((i) => `s${i}`)))
                          assert.deepStrictEqual(
                            appended.events.map((e) => e.seq),
                            range(expected + 1, expected + size)
                          )
                          expected += size
                        }
                        const since = expected === 0 ? 0 : pick % (expected + 1)
                        assert.deepStrictEqual(yield* seqsOf(journal.read(since)), range(since + 1, expected))
                        assert.deepStrictEqual(yield* seqsOf(journal.readLines(since)), range(since + 1, expected))
                      })
                    )
                  )
              ),
              { numRuns: 25 }
            )
          )
        })
      )
    )
  })

export const feedContract = <R>(name: string, backend: Backend<R>) =>
  describe(`feed contract: ${name}`, () => {
    const withFeed = <A, E>(
      test: (feed: ChangeFeed.ChangeFeedService<AgentEvent>) => Effect.Effect<A, E, Scope.Scope>
    ) =>
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* backend.store
          const feed = yield* ChangeFeed.makeOn(AgentDomain, store.open(AgentDomain.schema, account("feed")), {
            account: "feed"
          })
          return yield* test(feed)
        })
      ).pipe(Effect.provide(backend.layer))

    it.live("concurrent_publishers_get_unique_gapless_seqs_that_every_reader_sees_in_order", () =>
      withFeed((feed) =>
        Effect.gen(function* () {
          const early = yield* follow(feed.changes())
          const answered = yield* Effect.forEach(
            range(0, 9),
            (p) => feed.publishAll(numbered(p * 10 + 1, 10).map((event) => ({ event }))),
            { concurrency: "unbounded" }
          )
          const seqs = answered.flat().map((seq) => seq!)
          assert.deepStrictEqual(
            [...seqs].sort((x, y) => x - y),
            range(1, 100)
          )
          yield* seen(early, 100)
          assert.deepStrictEqual(early.seqs(), range(1, 100))
          const late = yield* follow(feed.changes({ since: 40 }), 40)
          yield* seen(late, 100)
          assert.deepStrictEqual(late.seqs(), range(41, 100))
          assert.deepStrictEqual(late.changes(), early.changes().slice(40))
          // The lines readers get are the same changes, as their wire JSON.
          const lines = yield* Stream.runCollect(
            feed.changeLines().pipe(
              Stream.filter((item) => item._tag === "Change"),
              Stream.take(100)
            )
          )
          assert.deepStrictEqual(
            Chunk.toArray(lines).map((line) => ("body" in line ? JSON.parse(decoder.decode(wireJson(line))) : line)),
            [...early.changes()]
          )
        })
      )
    )

    it.live("a_cursor_ahead_of_the_head_or_from_another_epoch_is_reset", () =>
      withFeed((feed) =>
        Effect.gen(function* () {
          yield* feed.publishAll(numbered(1, 5).map((event) => ({ event })))
          const window = { oldestSeq: 1, headSeq: 5 }
          const ahead = yield* follow(feed.changes({ since: 9 }), 9)
          const foreign = yield* follow(feed.changes({ since: { seq: 2, epoch: "0123456789abcdef" } }), 2)
          // Wait for what the readers deliver, not for their cursors: before its first item a
          // reader's cursor is the one it was given, and 9 is already past the head.
          yield* delivered(ahead, 2)
          yield* delivered(foreign, 2)
          const caughtUp = { _tag: "CaughtUp", seq: 5 } as const
          assert.deepStrictEqual(ahead.items.slice(0, 2), [reset("ahead_of_head", 9, window), caughtUp])
          assert.deepStrictEqual(foreign.items.slice(0, 2), [reset("epoch_mismatch", 2, window), caughtUp])
          yield* feed.publish("s", { type: "session_deleted", session_id: "s" })
          yield* seen(ahead, 6)
          assert.deepStrictEqual(ahead.seqs(), [6])
        })
      )
    )

    it.live("a_session_filter_delivers_that_session_and_progress_for_the_rest", () =>
      withFeed((feed) =>
        Effect.gen(function* () {
          const reader = yield* follow(feed.changes({ sessionId: "e3" }))
          yield* feed.publishAll(numbered(1, 6).map((event) => ({ event })))
          yield* seen(reader, 6)
          assert.deepStrictEqual(reader.seqs(), [3])
          assert.strictEqual(reader.cursor(), 6)
        })
      )
    )
  })
