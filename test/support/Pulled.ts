/**
 * A feed's line readers seen as `changes`, for tests that hold them to the same contract: each
 * line decoded and its seq and session checked against the line; `pullLines` (runs of journal
 * lines, live batches' runs) taken out event by event; and `pullLines` with a live tail, read as a
 * stream connection reads it.
 */
import { assert } from "@effect/vitest"
import { Chunk, Effect, Either, Option, Queue, Schema, Stream } from "effect"
import type { ChangeFeedService, ChangesOptions } from "../../src/ChangeFeed.js"
import type { PullLinesOptions } from "../../src/ChangeFeed/Reader.js"
import type { LiveRun } from "../../src/ChangeFeed/Broadcast.js"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import { ChangeEvent } from "../../src/Domain/ChangeEvent.js"
import { type FeedItem, type LineChange, type LineItem, wireJson } from "../../src/Domain/FeedItem.js"
import type { JournalLineRun } from "../../src/Journal.js"
import { yieldToIo } from "./Wait.js"

const decodeLine = Schema.decodeUnknownSync(Schema.parseJson(ChangeEvent(AgentEvent)))

/**
 * `changeLines` seen as `changes`: each line decoded, and its seq and session checked against
 * the line, so that a test holds the lines to the contract `changes` is held to.
 */
export const linesAsChanges = (
  feed: ChangeFeedService<AgentEvent>,
  options: ChangesOptions
): Stream.Stream<FeedItem<AgentEvent>, unknown> =>
  Stream.map(feed.changeLines(options), (item) => (item._tag === "Change" ? lineAsChange(item) : item))

const lineAsChange = (item: LineChange): FeedItem<AgentEvent> => {
  const change = decodeLine(new TextDecoder().decode(wireJson(item)))
  assert.strictEqual(change.seq, item.seq, "a line's seq is the seq it is delivered at")
  assert.strictEqual(change.session_id, item.sessionId, "a line's session is the session it is delivered with")
  return { _tag: "Change" as const, change }
}

/**
 * `pullLines` seen as `changes` (`asChanges`), as each pull answers it. A reader reusing its
 * chunks is read slowly: the event loop runs (a chunk read ahead lands) before each pull's items
 * are copied out.
 */
export const pulledAsChanges = (
  feed: ChangeFeedService<AgentEvent>,
  options: PullLinesOptions
): Stream.Stream<FeedItem<AgentEvent>, unknown> =>
  asChanges(
    Stream.unwrapScoped(
      Effect.map(feed.pullLines(options), (pull) =>
        Stream.repeatEffectChunkOption(options.reuseChunks === true ? Effect.tap(pull, () => yieldToIo) : pull)
      )
    )
  )

type Pulled = LineItem | LiveRun | JournalLineRun

/**
 * `pullLines` with a live tail, as a stream connection reads it: what the tail takes while the
 * reader is parked (the `takes` pattern says whether it takes each offer) joins the items the pull
 * answers, in the order they come, as a connection's writer would send them; a parked reader is
 * pulled again once it wakes its consumer, and only then.
 */
export const pulledWithTail =
  (takes: ReadonlyArray<boolean>) =>
  (feed: ChangeFeedService<AgentEvent>, options: ChangesOptions): Stream.Stream<FeedItem<AgentEvent>, unknown> =>
    asChanges(
      Stream.unwrapScoped(
        Effect.gen(function* () {
          const out = yield* Queue.unbounded<Either.Either<Chunk.Chunk<Pulled>, Option.Option<unknown>>>()
          const woken = yield* Queue.unbounded<void>()
          let offers = 0
          const pull = yield* feed.pullLines(options, {
            offer: (runs) => {
              if (!takes[offers++ % takes.length]) return false
              out.unsafeOffer(Either.right(Chunk.fromIterable(runs)))
              return true
            },
            wake: () => {
              woken.unsafeOffer(undefined)
            }
          })
          const step = Effect.flatMap(pull, (items) => {
            if (items.length > 0) return Queue.offer(out, Either.right(items))
            return Queue.take(woken)
          })
          yield* Effect.forkScoped(
            Effect.forever(step).pipe(Effect.catchAll((end) => Queue.offer(out, Either.left(end))))
          )
          return Stream.repeatEffectChunkOption(
            Effect.flatMap(Queue.take(out), (next) =>
              Either.isRight(next) ? Effect.succeed(next.right) : Effect.fail(next.left)
            )
          )
        })
      )
    )

/**
 * Pulled items seen as `changes`: every event of a run of journal lines and of a live batch's run
 * taken out one by one, its body decoded and checked against the seq it holds in the run.
 */
const asChanges = <E>(pulled: Stream.Stream<Pulled, E>): Stream.Stream<FeedItem<AgentEvent>, E> =>
  pulled.pipe(
    Stream.mapConcat((item): Array<FeedItem<AgentEvent>> => {
      switch (item._tag) {
        case "LiveRun":
          return Array.from({ length: item.batch.last - item.from + 1 }, (_, k) =>
            lineAsChange(item.batch.change(item.from - item.batch.first + k).line)
          )
        case "LineRun": {
          const { bodyEnds, bytes, ends } = item.lines
          return ends.map((_, i) => {
            const body = bytes.subarray(i === 0 ? 0 : ends[i - 1]! + 1, bodyEnds[i]!)
            const change = decodeLine(new TextDecoder().decode(body) + "}")
            assert.strictEqual(change.seq, item.first + i, "an event of a run holds the seq of its place in the run")
            return { _tag: "Change" as const, change }
          })
        }
        case "Change":
          return [lineAsChange(item)]
        default:
          return [item]
      }
    })
  )
