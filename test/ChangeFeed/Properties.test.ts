/**
 * Invariant 5 as a property: over random schedules of recording, opening readers at random
 * cursors (sometimes from another epoch), restarting the feed on the same directory, and
 * rotation with pruning underneath, every reader receives exactly the events after its
 * cursor, in order, once each, up to the head — or a reset (the right one) and then exactly
 * the events after the reset's `continueFrom`. Readers run concurrently with the recording.
 * Readers follow `changes` (decoded events), `changeLines` (journal lines, each checked to be
 * the JSON of the event at its seq) or `pullLines` (what the SSE stream reads: runs of journal
 * lines in replay, whole broadcast batches live, each event in them checked as a line), reusing
 * its chunks as the SSE stream does (each pull's bytes copied out before the next) or not, or
 * with a live tail that takes what comes while the reader is parked, or refuses it, by a pattern,
 * over journals read in chunks of any size.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import type { ChangeFeedService, ChangesOptions } from "../../src/ChangeFeed.js"
import type { AgentEvent } from "../../src/Domain/AgentEvent.js"
import type { ResetReason } from "../../src/Domain/FeedItem.js"
import {
  delivered,
  Env,
  follow,
  headReaches,
  joinWithin,
  journaled,
  numbered,
  openFeed,
  type OpenFeed,
  range,
  type Reader,
  seen,
  tempDir
} from "../support/FeedTesting.js"
import { linesAsChanges, pulledAsChanges, pulledWithTail } from "../support/Pulled.js"

type Command =
  | { readonly _tag: "Record"; readonly count: number; readonly via: "record" | "publish" | "publishAll" }
  | {
      readonly _tag: "Read"
      /** Reduced modulo head + 4: a cursor in 0..head+3. */
      readonly at: number
      readonly epoch: "none" | "same" | "wrong"
      /** Wait for the journal to catch up and for the reader to start before going on. */
      readonly settled: boolean
      readonly via: "changes" | "changeLines" | "pullLines" | "pullLinesReusingChunks" | "pullTail"
      /** For `pullTail`: whether the tail takes each batch offered, in turn, round and round. */
      readonly takes: ReadonlyArray<boolean>
    }
  | { readonly _tag: "Restart" }

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      _tag: fc.constant("Record" as const),
      count: fc.integer({ min: 1, max: 12 }),
      via: fc.constantFrom("record" as const, "publish" as const, "publishAll" as const)
    })
  },
  {
    weight: 3,
    arbitrary: fc.record({
      _tag: fc.constant("Read" as const),
      at: fc.nat({ max: 1_000 }),
      epoch: fc.constantFrom("none" as const, "same" as const, "wrong" as const),
      settled: fc.boolean(),
      via: fc.constantFrom(
        "changes" as const,
        "changeLines" as const,
        "pullLines" as const,
        "pullLinesReusingChunks" as const,
        "pullTail" as const
      ),
      takes: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 })
    })
  },
  { weight: 1, arbitrary: fc.constant({ _tag: "Restart" as const }) }
)

const readersBy = {
  changes: (feed: ChangeFeedService<AgentEvent>, options: ChangesOptions) => feed.changes(options),
  changeLines: linesAsChanges,
  pullLines: pulledAsChanges,
  pullLinesReusingChunks: (feed: ChangeFeedService<AgentEvent>, options: ChangesOptions) =>
    pulledAsChanges(feed, { ...options, reuseChunks: true })
}

interface Tracked {
  readonly reader: Reader<AgentEvent>
  readonly cursor: number
  readonly wrongEpoch: boolean
  /** The journal's head when the reader was opened (heads only grow within a lifetime). */
  readonly headAtOpen: number
  /** For settled readers, the one possible first reset (or none). */
  readonly expected: ResetReason | "none" | undefined
}

/** Checks one reader's whole delivery against the contract, ending at `head`. */
const check = (tracked: Tracked, head: number) => {
  const { cursor, reader } = tracked
  const items = reader.items
  const where = `reader from ${cursor}${tracked.wrongEpoch ? " (wrong epoch)" : ""}: ${JSON.stringify(
    items.map((item) => (item._tag === "Change" ? item.change.seq : item))
  )}`
  let position = cursor
  let caughtUp = 0
  const first = items[0]
  if (tracked.expected !== undefined) {
    assert.strictEqual(first?._tag === "Reset" ? first.reason : "none", tracked.expected, where)
  }
  if (tracked.wrongEpoch) assert.strictEqual(first?._tag === "Reset" && first.reason, "epoch_mismatch", where)
  items.forEach((item, index) => {
    switch (item._tag) {
      case "Reset": {
        assert.strictEqual(item.fromSeq, position, `a reset names the cursor it could not serve; ${where}`)
        assert.strictEqual(item.continueFrom, item.headSeq, `a reset continues from the head; ${where}`)
        if (index === 0) {
          if (item.reason === "ahead_of_head") {
            assert.isAbove(position, item.headSeq, where)
            assert.isAbove(position, tracked.headAtOpen, `ahead only of a head it had not reached; ${where}`)
          }
          if (item.reason === "below_retention") assert.isBelow(position, item.oldestSeq - 1, where)
          if (item.reason === "epoch_mismatch") assert.isTrue(tracked.wrongEpoch, where)
        } else {
          // Retention removed what the reader was replaying: only ever below the window.
          assert.strictEqual(item.reason, "below_retention", where)
          assert.isBelow(position, item.oldestSeq - 1, where)
        }
        position = item.continueFrom
        break
      }
      case "Change": {
        assert.strictEqual(item.change.seq, position + 1, `contiguous, in order, once each; ${where}`)
        assert.strictEqual(item.change.session_id, `e${item.change.seq}`, `the event recorded for that seq; ${where}`)
        position = item.change.seq
        break
      }
      case "CaughtUp": {
        assert.strictEqual(item.seq, position, where)
        caughtUp++
        break
      }
      case "Progress":
        assert.fail(`progress without a session filter; ${where}`)
    }
  })
  assert.isAtMost(caughtUp, 1, where)
  assert.strictEqual(position, head, `the reader reached the head; ${where}`)
}

describe("properties", () => {
  it.scopedLive.prop(
    "every_reader_sees_exactly_the_events_after_its_cursor_or_a_reset",
    {
      commands: fc.array(command, { minLength: 1, maxLength: 14 }),
      readChunkBytes: fc.option(fc.integer({ min: 1, max: 1024 }), { nil: undefined })
    },
    ({ commands, readChunkBytes }) =>
      Effect.gen(function* () {
        const directory = yield* tempDir
        // A live buffer smaller than a batch, so readers fall behind and catch up from the journal.
        // No fsync: what is tested is ordering, and syncing every batch would only slow the runs down.
        const options = {
          segmentBytes: 300,
          retention: { segments: 3 },
          liveBuffer: 8,
          fsync: "never" as const,
          readChunkBytes
        }
        let current: OpenFeed = yield* openFeed(directory, options)
        let head = 0
        let readers: Array<Tracked> = []
        const checked: Array<readonly [Tracked, number]> = []

        // Let everyone reach the head, check the journal, close; the readers' streams end with it.
        const endLifetime = Effect.gen(function* () {
          const feed = current.feed
          yield* headReaches(feed, head)
          for (const { reader } of readers) yield* seen(reader, head)
          const status = yield* feed.status
          assert.strictEqual(status.dropped, 0)
          assert.strictEqual(status.headSeq, head)
          const retained = yield* journaled(feed, status.oldestSeq - 1)
          assert.deepStrictEqual(
            retained.map((e) => [e.seq, e.session_id]),
            range(status.oldestSeq, head).map((seq) => [seq, `e${seq}`])
          )
          yield* current.close
          for (const { reader } of readers) yield* joinWithin(reader.fiber, "a reader ends with its feed")
          for (const tracked of readers) checked.push([tracked, head])
          readers = []
        })

        for (const cmd of commands) {
          const feed = current.feed
          switch (cmd._tag) {
            case "Record": {
              const events = numbered(head + 1, cmd.count)
              if (cmd.via === "record") {
                for (const event of events) feed.unsafeRecord(undefined, event)
              } else if (cmd.via === "publish") {
                for (const [i, event] of events.entries()) {
                  const seq = yield* feed.publish(undefined, event)
                  assert.deepStrictEqual(seq._tag === "Some" && seq.value, head + 1 + i)
                }
              } else {
                const seqs = yield* feed.publishAll(events.map((event) => ({ event })))
                assert.deepStrictEqual(seqs, range(head + 1, head + cmd.count))
              }
              head += cmd.count
              break
            }
            case "Read": {
              if (cmd.settled) yield* headReaches(feed, head)
              const status = yield* feed.status
              const cursor = cmd.at % (head + 4)
              const since: ChangesOptions["since"] =
                cmd.epoch === "none" ? cursor : { epoch: cmd.epoch === "same" ? feed.epoch : "ffff", seq: cursor }
              const read = cmd.via === "pullTail" ? pulledWithTail(cmd.takes) : readersBy[cmd.via]
              const reader = yield* follow(read(feed, { since }), cursor)
              let expected: Tracked["expected"] = undefined
              if (cmd.settled) {
                // Nothing moves the window until the reader has decided: its reset is predictable.
                yield* delivered(reader, 1)
                expected =
                  cmd.epoch === "wrong"
                    ? "epoch_mismatch"
                    : cursor > status.headSeq
                      ? "ahead_of_head"
                      : cursor < status.oldestSeq - 1
                        ? "below_retention"
                        : "none"
              }
              readers.push({
                reader,
                cursor,
                wrongEpoch: cmd.epoch === "wrong",
                headAtOpen: status.headSeq,
                expected
              })
              break
            }
            case "Restart": {
              yield* endLifetime
              current = yield* openFeed(directory, options)
              assert.strictEqual(yield* current.feed.headSeq, head, "the head survives the restart")
              break
            }
          }
        }
        yield* endLifetime
        for (const [tracked, headAtEnd] of checked) check(tracked, headAtEnd)
      }).pipe(Effect.provide(Env)),
    { timeout: 120_000, fastCheck: { numRuns: 25 } }
  )
})
