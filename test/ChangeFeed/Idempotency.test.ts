/**
 * Idempotent appends through the library (`publishAll` with an `idempotencyKey`): retries answer
 * the original seqs and append nothing, concurrent duplicates wait for the first, a reused key
 * is refused, keys survive a restart of a file journal within their window and are forgotten
 * past it, a request cut short by a crash is completed by its retry, and a property over random
 * interleavings of keyed retries, plain publishes and restarts.
 */
import { FileSystem, Path } from "@effect/platform"
import { describe, it, assert } from "@effect/vitest"
import { Deferred, Effect, Exit, FastCheck as fc, Fiber } from "effect"
import * as ChangeFeed from "../../src/ChangeFeed.js"
import { AgentDomain, type AgentEvent } from "../../src/Domain/AgentEvent.js"
import * as Journal from "../../src/Journal.js"
import * as MemoryJournal from "../../src/Journal/Memory.js"
import {
  deleted,
  Env,
  eventually,
  journaled,
  storedLinesOnDisk,
  openFeed,
  type OpenFeed,
  settle,
  tempDir,
  token
} from "../support/FeedTesting.js"

type Entry = ChangeFeed.Entry<AgentEvent>

const durable = (name: string): Entry => ({ event: deleted(name) })
const ephemeral = (content: string): Entry => ({ sessionId: "s1", event: token(content) })

/** A feed on an in-memory journal whose appends wait at a gate the test opens. */
const gatedFeed = (options: ChangeFeed.ChangeFeedOptions = {}) =>
  Effect.gen(function* () {
    const journal = yield* MemoryJournal.make(AgentDomain.schema)
    const gate = yield* Effect.makeLatch(false)
    let appends = 0
    const feed = yield* ChangeFeed.make(
      AgentDomain,
      {
        ...journal,
        append: (batch) =>
          Effect.suspend(() => {
            appends++
            return Effect.zipRight(gate.await, journal.append(batch))
          })
      },
      options
    )
    // Added after the feed, so it runs before the feed drains, whatever the test did.
    yield* Effect.addFinalizer(() => gate.open)
    return { feed, gate, appends: () => appends }
  })

const memoryFeed = (options: ChangeFeed.ChangeFeedOptions = {}) =>
  Effect.flatMap(MemoryJournal.make(AgentDomain.schema), (journal) =>
    Effect.orDie(ChangeFeed.make(AgentDomain, journal, options))
  )

/** The journal's events as `[seq, session, key]`. */
const keysOf = (feed: ChangeFeed.ChangeFeedService<AgentEvent>) =>
  Effect.map(journaled(feed), (events) =>
    events.map((e) => [e.seq, e.session_id, (e as Journal.JournalEvent<AgentEvent>).key] as const)
  )

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) return assert.fail(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const failure = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  return failure ?? assert.fail(`expected a typed failure, got ${String(exit.cause)}`)
}

describe("idempotent publishAll", () => {
  it.scopedLive("a_retried_batch_with_the_same_key_answers_the_original_seqs_and_appends_nothing", () =>
    Effect.gen(function* () {
      const feed = yield* memoryFeed()
      yield* feed.publishAll([durable("before")])
      const request = [durable("a"), ephemeral("t"), durable("b")]
      const first = yield* feed.publishAll(request, { idempotencyKey: "req-1" })
      assert.deepStrictEqual(first, [2, null, 3])
      const again = yield* feed.publishAll(request, { idempotencyKey: "req-1" })
      assert.deepStrictEqual(again, [2, null, 3])
      assert.strictEqual(yield* feed.headSeq, 3)
      // The key is journaled with every durable event of its request, and only with those.
      assert.deepStrictEqual(yield* keysOf(feed), [
        [1, "before", undefined],
        [2, "a", "req-1"],
        [3, "b", "req-1"]
      ])
      // A new key is a new request, even with the same events.
      assert.deepStrictEqual(yield* feed.publishAll(request, { idempotencyKey: "req-2" }), [4, null, 5])
    })
  )

  it.scopedLive("concurrent_duplicates_wait_for_the_first_and_answer_the_same_seqs", () =>
    Effect.gen(function* () {
      const { appends, feed, gate } = yield* gatedFeed()
      const request = [durable("a"), ephemeral("t"), durable("b")]
      const first = yield* Effect.fork(feed.publishAll(request, { idempotencyKey: "k" }))
      yield* eventually("the writer is appending the first", () => appends() === 1)
      const duplicates = yield* Effect.forEach([1, 2, 3], () =>
        Effect.fork(feed.publishAll(request, { idempotencyKey: "k" }))
      )
      // The same key with another request is refused at once, while the first is in flight.
      const other = yield* Effect.exit(feed.publishAll([durable("c")], { idempotencyKey: "k" }))
      assert.strictEqual(failureOf(other)._tag, "IdempotencyKeyConflict")
      yield* settle()
      for (const duplicate of duplicates) assert.isNull(duplicate.unsafePoll(), "a duplicate waits for the first")
      yield* gate.open
      assert.deepStrictEqual(yield* Fiber.join(first), [1, null, 2])
      for (const duplicate of duplicates) assert.deepStrictEqual(yield* Fiber.join(duplicate), [1, null, 2])
      assert.strictEqual(yield* feed.headSeq, 2)
      assert.strictEqual(appends(), 1, "one append for all of them")
    })
  )

  it.scopedLive("a_duplicate_of_a_batch_that_was_not_accepted_publishes_it_itself", () =>
    Effect.gen(function* () {
      // The queue holds one item and the writer is held at the gate with another: a first request
      // waits for room, its duplicate waits for it; the first gives up (busy), the duplicate goes on.
      const { appends, feed, gate } = yield* gatedFeed({ queueCapacity: 1 })
      const blocker = yield* Effect.fork(feed.publishAll([durable("held")]))
      yield* eventually("the writer holds the first batch", () => appends() === 1)
      const filler = yield* Effect.fork(feed.publishAll([durable("queued")]))
      yield* eventually(
        "the queue is full",
        Effect.map(feed.status, (s) => s.queued === 1)
      )
      const request = [durable("a")]
      const first = yield* Effect.fork(feed.publishAll(request, { idempotencyKey: "k", timeoutMs: 50 }))
      const duplicate = yield* Effect.fork(feed.publishAll(request, { idempotencyKey: "k", timeoutMs: 60_000 }))
      assert.strictEqual(failureOf(yield* Fiber.await(first))._tag, "FeedBusy")
      yield* gate.open
      assert.deepStrictEqual(yield* Fiber.join(blocker), [1])
      assert.deepStrictEqual(yield* Fiber.join(filler), [2])
      assert.deepStrictEqual(yield* Fiber.join(duplicate), [3])
      assert.deepStrictEqual(yield* feed.publishAll(request, { idempotencyKey: "k" }), [3])
      assert.strictEqual(yield* feed.headSeq, 3)
    })
  )

  it.scopedLive("reusing_a_key_for_a_different_request_fails_naming_the_key_and_appends_nothing", () =>
    Effect.gen(function* () {
      const feed = yield* memoryFeed()
      yield* feed.publishAll([durable("a"), durable("b")], { idempotencyKey: "order-7" })
      const attempts: ReadonlyArray<ReadonlyArray<Entry>> = [
        [durable("a")], // fewer durable events
        [durable("a"), durable("b"), durable("c")], // more
        [durable("a"), durable("x")], // as many, other content
        [durable("b"), durable("a")], // the same events in another order
        [{ sessionId: "other", event: deleted("a") }, durable("b")], // another session
        [ephemeral("only")] // no durable event at all
      ]
      for (const entries of attempts) {
        const error = failureOf(yield* Effect.exit(feed.publishAll(entries, { idempotencyKey: "order-7" })))
        assert.strictEqual(error._tag, "IdempotencyKeyConflict")
        assert.include(error.message, "'order-7'")
      }
      assert.strictEqual(yield* feed.headSeq, 2)
      // Ephemeral events are not part of a request's identity: they are never stored.
      const withTokens = [ephemeral("t"), durable("a"), durable("b"), ephemeral("u")]
      assert.deepStrictEqual(yield* feed.publishAll(withTokens, { idempotencyKey: "order-7" }), [null, 1, 2, null])
    })
  )

  it.scopedLive("an_invalid_key_is_refused_before_anything_is_accepted", () =>
    Effect.gen(function* () {
      const feed = yield* memoryFeed()
      for (const key of ["", "has space", "ä", "a/b", "x".repeat(129), "line\nbreak"]) {
        const error = failureOf(yield* Effect.exit(feed.publishAll([durable("a")], { idempotencyKey: key })))
        assert.strictEqual(error._tag, "InvalidIdempotencyKey", JSON.stringify(key))
      }
      assert.strictEqual(yield* feed.headSeq, 0)
      const longest = "A-z0.9_:".repeat(16)
      assert.deepStrictEqual(yield* feed.publishAll([durable("a")], { idempotencyKey: longest }), [1])
      assert.deepStrictEqual(yield* feed.publishAll([durable("a")], { idempotencyKey: longest }), [1])
    })
  )

  it.scopedLive("an_ephemeral_only_request_answers_nulls_journals_nothing_and_leaves_no_key", () =>
    Effect.gen(function* () {
      const feed = yield* memoryFeed()
      const request = [ephemeral("a"), ephemeral("b")]
      assert.deepStrictEqual(yield* feed.publishAll(request, { idempotencyKey: "tokens" }), [null, null])
      assert.deepStrictEqual(yield* feed.publishAll(request, { idempotencyKey: "tokens" }), [null, null])
      assert.strictEqual(yield* feed.headSeq, 0)
      assert.strictEqual((yield* feed.status).idempotencyKeys, 0)
    })
  )
})

describe("the window of keys", () => {
  it.scopedLive("keys_survive_a_restart_of_a_file_journal", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const request = [durable("a"), ephemeral("t"), durable("b")]
      const first = yield* openFeed(directory)
      yield* first.feed.publishAll([durable("plain")])
      assert.deepStrictEqual(yield* first.feed.publishAll(request, { idempotencyKey: "k1" }), [2, null, 3])
      yield* first.close

      const lines = yield* storedLinesOnDisk(directory)
      assert.deepStrictEqual(
        lines.map((line) => line.key),
        [undefined, "k1", "k1"],
        "the key is written on each durable event of its request"
      )

      const second = yield* openFeed(directory)
      assert.deepStrictEqual(yield* second.feed.publishAll(request, { idempotencyKey: "k1" }), [2, null, 3])
      const conflict = yield* Effect.exit(second.feed.publishAll([durable("a")], { idempotencyKey: "k1" }))
      assert.strictEqual(failureOf(conflict)._tag, "IdempotencyKeyConflict")
      assert.strictEqual(yield* second.feed.headSeq, 3)
      // Read back from the file, the key is still there.
      assert.deepStrictEqual(yield* keysOf(second.feed), [
        [1, "plain", undefined],
        [2, "a", "k1"],
        [3, "b", "k1"]
      ])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("a_field_named_key_inside_an_event_is_not_taken_for_the_requests_key", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const message = (content: unknown): Entry => ({
        event: { type: "message_appended", session_id: "s1", message_id: "m1", role: "user", content }
      })
      const first = yield* openFeed(directory)
      yield* first.feed.publishAll([message({ key: "k1" })])
      yield* first.feed.publishAll([message("x"), message({ note: { key: "k2" } })])
      yield* first.close
      const second = yield* openFeed(directory)
      assert.strictEqual((yield* second.feed.status).idempotencyKeys, 0)
      assert.deepStrictEqual(yield* second.feed.publishAll([durable("a")], { idempotencyKey: "k1" }), [4])
      assert.deepStrictEqual(yield* second.feed.publishAll([durable("a")], { idempotencyKey: "k2" }), [5])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("keys_whose_requests_fall_out_of_the_window_are_forgotten_running_and_after_a_restart", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const once = (feed: ChangeFeed.ChangeFeedService<AgentEvent>, key: string, names: ReadonlyArray<string>) =>
        feed.publishAll(names.map(durable), { idempotencyKey: key })
      let current = yield* openFeed(directory, { idempotencyWindowEvents: 4 })
      assert.deepStrictEqual(yield* once(current.feed, "old", ["old"]), [1])
      yield* current.feed.publishAll([durable("p2"), durable("p3"), durable("p4")])
      // The last 4 events are 1..4: "old" is remembered.
      assert.deepStrictEqual(yield* once(current.feed, "old", ["old"]), [1])
      assert.deepStrictEqual(yield* once(current.feed, "new", ["n1", "n2"]), [5, 6])
      // Now they are 3..6: "old" is forgotten, and a retry of it is appended again.
      assert.deepStrictEqual(yield* once(current.feed, "old", ["old"]), [7])
      yield* current.close

      // At open, only the last 4 events (4..7) are read, and both requests in them are known.
      current = yield* openFeed(directory, { idempotencyWindowEvents: 4 })
      assert.deepStrictEqual(yield* once(current.feed, "new", ["n1", "n2"]), [5, 6])
      assert.deepStrictEqual(yield* once(current.feed, "old", ["old"]), [7])
      yield* current.close

      // A window of 2 (6..7) starts inside "new": what is left of it is not taken for the request.
      current = yield* openFeed(directory, { idempotencyWindowEvents: 2 })
      assert.deepStrictEqual(yield* once(current.feed, "old", ["old"]), [7])
      assert.deepStrictEqual(yield* once(current.feed, "new", ["n1", "n2"]), [8, 9])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("the_window_stays_within_its_memory_bound_forgetting_the_oldest_keys", () =>
    Effect.gen(function* () {
      const bound = 2_000
      const feed = yield* memoryFeed({ idempotencyWindowBytes: bound })
      for (let i = 1; i <= 50; i++) {
        yield* feed.publishAll([durable(`e${i}`)], { idempotencyKey: `key-${i}` })
        const status = yield* feed.status
        assert.isAtMost(status.idempotencyBytes, bound)
      }
      const status = yield* feed.status
      assert.isAbove(status.idempotencyKeys, 0)
      assert.isBelow(status.idempotencyKeys, 50)
      // The newest is remembered, the oldest forgotten.
      assert.deepStrictEqual(yield* feed.publishAll([durable("e50")], { idempotencyKey: "key-50" }), [50])
      assert.deepStrictEqual(yield* feed.publishAll([durable("e1")], { idempotencyKey: "key-1" }), [51])
    })
  )

  it.scopedLive("a_request_a_crash_cut_short_is_completed_by_its_retry_once", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const directory = yield* tempDir
      const request = [durable("a"), ephemeral("t"), durable("b"), durable("c")]
      const first = yield* openFeed(directory)
      assert.deepStrictEqual(yield* first.feed.publishAll(request, { idempotencyKey: "cut" }), [1, null, 2, 3])
      yield* first.close
      // What a write cut short by a crash leaves: the request's first lines, and the OPEN marker.
      const segment = path.join(
        directory,
        (yield* fs.readDirectory(directory)).find((n) => n.endsWith(".jsonl"))!
      )
      const text = yield* fs.readFileString(segment)
      yield* fs.writeFileString(segment, text.split("\n").slice(0, 2).join("\n") + "\n")
      yield* fs.writeFileString(path.join(directory, "OPEN"), "always\n")

      const second = yield* openFeed(directory)
      assert.strictEqual(yield* second.feed.headSeq, 2)
      yield* second.feed.publishAll([durable("meanwhile")])
      // The retry adds what is missing, and answers where each of its events is.
      assert.deepStrictEqual(yield* second.feed.publishAll(request, { idempotencyKey: "cut" }), [1, null, 2, 4])
      assert.deepStrictEqual(yield* second.feed.publishAll(request, { idempotencyKey: "cut" }), [1, null, 2, 4])
      yield* second.close

      const third = yield* openFeed(directory)
      assert.deepStrictEqual(yield* third.feed.publishAll(request, { idempotencyKey: "cut" }), [1, null, 2, 4])
      assert.deepStrictEqual(yield* keysOf(third.feed), [
        [1, "a", "cut"],
        [2, "b", "cut"],
        [3, "meanwhile", undefined],
        [4, "c", "cut"]
      ])
    }).pipe(Effect.provide(Env))
  )

  it.scopedLive("after_a_clean_stop_a_longer_request_under_a_known_key_is_a_conflict", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* openFeed(directory)
      yield* first.feed.publishAll([durable("a"), durable("b")], { idempotencyKey: "k" })
      yield* first.close
      // The journal was closed cleanly: nothing was cut short, so a longer request is another one.
      const second = yield* openFeed(directory)
      const longer = [durable("a"), durable("b"), durable("c")]
      const exit = yield* Effect.exit(second.feed.publishAll(longer, { idempotencyKey: "k" }))
      assert.strictEqual(failureOf(exit)._tag, "IdempotencyKeyConflict")
      assert.strictEqual(yield* second.feed.headSeq, 2)
    }).pipe(Effect.provide(Env))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The property: whatever the interleaving of keyed retries, duplicates in flight, plain publishes
// and restarts, the journal ends with every keyed request's events exactly once.
// ---------------------------------------------------------------------------------------------------------------

const REQUESTS = 6

type Command =
  | { readonly _tag: "Send"; readonly request: number }
  | { readonly _tag: "Burst"; readonly request: number; readonly copies: number }
  | { readonly _tag: "Plain"; readonly count: number }
  | { readonly _tag: "Restart" }

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ _tag: fc.constant("Send" as const), request: fc.nat({ max: REQUESTS - 1 }) })
  },
  {
    weight: 2,
    arbitrary: fc.record({
      _tag: fc.constant("Burst" as const),
      request: fc.nat({ max: REQUESTS - 1 }),
      copies: fc.integer({ min: 2, max: 4 })
    })
  },
  { weight: 2, arbitrary: fc.record({ _tag: fc.constant("Plain" as const), count: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ _tag: "Restart" as const }) }
)

/** Request `r`'s entries: durable events with ids of their own, and ephemeral ones where `shape` says. */
const requestEntries = (r: number, shape: ReadonlyArray<boolean>): Array<Entry> =>
  shape.map((isDurable, k) => (isDurable ? durable(`r${r}-${k}`) : ephemeral(`r${r}-${k}`)))

describe("properties", () => {
  it.scopedLive.prop(
    "keyed_retries_and_duplicates_leave_each_request_in_the_journal_exactly_once",
    {
      commands: fc.array(command, { minLength: 1, maxLength: 20 }),
      shapes: fc.array(fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }), {
        minLength: REQUESTS,
        maxLength: REQUESTS
      })
    },
    ({ commands, shapes }) =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        const options = { fsync: "never" as const, segmentBytes: 400 }
        let current: OpenFeed = yield* openFeed(directory, options)
        const answers = new Map<number, Array<Array<number | null>>>()
        let plain = 0
        const send = (feed: ChangeFeed.ChangeFeedService<AgentEvent>, r: number) =>
          Effect.tap(feed.publishAll(requestEntries(r, shapes[r]!), { idempotencyKey: `request-${r}` }), (seqs) =>
            Effect.sync(() => answers.set(r, [...(answers.get(r) ?? []), seqs]))
          )

        for (const cmd of commands) {
          const feed = current.feed
          switch (cmd._tag) {
            case "Send":
              yield* send(feed, cmd.request)
              break
            case "Burst": {
              const started = yield* Deferred.make<void>()
              const copies = yield* Effect.forEach(Array.from({ length: cmd.copies }), () =>
                Effect.fork(Effect.zipRight(Deferred.await(started), send(feed, cmd.request)))
              )
              yield* Deferred.succeed(started, undefined)
              yield* Effect.forEach(copies, Fiber.join)
              break
            }
            case "Plain":
              yield* feed.publishAll(Array.from({ length: cmd.count }, () => durable(`plain-${++plain}`)))
              break
            case "Restart":
              yield* current.close
              current = yield* openFeed(directory, options)
              break
          }
        }

        const events = yield* journaled(current.feed)
        const seqsOf = new Map<string, Array<number>>()
        for (const event of events) {
          const id = event.session_id!
          seqsOf.set(id, [...(seqsOf.get(id) ?? []), event.seq])
        }
        for (let r = 0; r < REQUESTS; r++) {
          const given = answers.get(r)
          const ids = shapes[r]!.flatMap((isDurable, k) => (isDurable ? [`r${r}-${k}`] : []))
          if (given === undefined) {
            for (const id of ids) assert.isUndefined(seqsOf.get(id), `${id} was never sent`)
            continue
          }
          for (const seqs of given) assert.deepStrictEqual(seqs, given[0], `every answer to request ${r} is the same`)
          const expected = shapes[r]!.map((isDurable, k) => (isDurable ? seqsOf.get(`r${r}-${k}`) : undefined))
          assert.deepStrictEqual(
            expected.map((seqs) => (seqs === undefined ? null : seqs.length === 1 ? seqs[0] : seqs)),
            given[0],
            `request ${r}'s events are journaled once each, at the seqs it was answered`
          )
        }
        for (let p = 1; p <= plain; p++) assert.strictEqual(seqsOf.get(`plain-${p}`)?.length, 1)
        assert.strictEqual(events.length, yield* current.feed.headSeq)
      }).pipe(Effect.provide(Env)),
    { timeout: 120_000, fastCheck: { numRuns: 30 } }
  )
})
