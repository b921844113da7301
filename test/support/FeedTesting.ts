/**
 * Helpers shared by the change feed's tests: feeds on real temp directories that a test can
 * close and reopen, readers that collect what a feed delivers, and what the journal holds.
 */
import { FileSystem, Path } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert } from "@effect/vitest"
import { Cause, Chunk, Effect, Exit, Fiber, Layer, Logger, Scope, Stream } from "effect"
import * as ChangeFeed from "../../src/ChangeFeed.js"
import { AgentDomain, type AgentEvent } from "../../src/Domain/AgentEvent.js"
import type { ChangeEvent } from "../../src/Domain/ChangeEvent.js"
import { cursorAfter, type FeedItem } from "../../src/Domain/FeedItem.js"
import * as FailingFileSystem from "./FailingFileSystem.js"
import { eventually } from "./Wait.js"

/** Real files; no log output (tests that look at logs add their own logger). */
export const Env = Layer.merge(NodeContext.layer, Logger.remove(Logger.defaultLogger))

/** `Env` with a `FileSystem` whose files fail on demand (`FaultInjector`). */
export const FaultyEnv = Layer.merge(FailingFileSystem.layer, Logger.remove(Logger.defaultLogger))

// The helpers every kind of test shares, defined in their own modules.
export { range, reset } from "./Expected.js"
export { tempDir } from "./TempDir.js"
export { eventually, joinWithin, settle, yieldToIo } from "./Wait.js"

// ---------------------------------------------------------------------------------------------------------------
// Feeds
// ---------------------------------------------------------------------------------------------------------------

export type Feed = ChangeFeed.ChangeFeedService<AgentEvent>

export interface OpenFeed {
  readonly feed: Feed
  /** Closes the feed (drain, end readers, release the journal), as a clean shutdown does. */
  readonly close: Effect.Effect<void>
}

/**
 * The agent feed on `directory`, in a scope of its own that the test can close (to restart
 * on the same directory) and that the test's scope closes in any case.
 */
export const openFeed = (
  directory: string,
  options: Omit<ChangeFeed.FeedOptions, "directory"> = {}
): Effect.Effect<OpenFeed, never, Scope.Scope | FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function* () {
    const scope = yield* Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void))
    const feed = yield* ChangeFeed.makeFiles(AgentDomain, { directory, ...options }).pipe(
      Scope.extend(scope),
      Effect.orDie
    )
    return { feed, close: Scope.close(scope, Exit.void) }
  })

// ---------------------------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------------------------

export interface Reader<A> {
  /** Everything delivered so far, in order. */
  readonly items: ReadonlyArray<FeedItem<A>>
  readonly fiber: Fiber.RuntimeFiber<void, unknown>
  /** The cursor a client would resume from (`since` until something arrives). */
  readonly cursor: () => number
  readonly changes: () => ReadonlyArray<ChangeEvent<A>>
  readonly seqs: () => ReadonlyArray<number>
}

/** Runs a reader's stream in a fiber of its own, collecting what it delivers. */
export const follow = <A, E>(stream: Stream.Stream<FeedItem<A>, E>, since = 0): Effect.Effect<Reader<A>> =>
  Effect.gen(function* () {
    const items: Array<FeedItem<A>> = []
    const fiber = yield* Effect.fork(Stream.runForEach(stream, (item) => Effect.sync(() => items.push(item))))
    const changes = () => items.flatMap((item) => (item._tag === "Change" ? [item.change] : []))
    return {
      items,
      fiber,
      cursor: () => (items.length === 0 ? since : cursorAfter(items[items.length - 1]!)),
      changes,
      seqs: () => changes().map((change) => change.seq)
    }
  })

/** Fails fast with the reader's own failure rather than timing out on it. */
const checkAlive = <A>(reader: Reader<A>) => {
  const exit = reader.fiber.unsafePoll()
  if (exit !== null && Exit.isFailure(exit)) {
    assert.fail(`the reader failed: ${Cause.pretty(exit.cause)}`)
  }
}

/**
 * Waits until the reader's cursor has reached `seq`. Before its first item the cursor is the one
 * the reader was given: to wait for a reader that starts at or past `seq`, use `delivered`.
 */
export const seen = <A>(reader: Reader<A>, seq: number, timeoutMs?: number) =>
  eventually(
    `the reader's cursor reaches ${seq} (it is at ${reader.cursor()})`,
    () => {
      checkAlive(reader)
      return reader.cursor() >= seq
    },
    timeoutMs
  )

/** Waits until the reader has delivered `count` items. */
export const delivered = <A>(reader: Reader<A>, count: number) =>
  eventually(`the reader delivers ${count} items (it has ${reader.items.length})`, () => {
    checkAlive(reader)
    return reader.items.length >= count
  })

/** Waits until the journal's head has reached `seq`. */
export const headReaches = (feed: { readonly headSeq: Effect.Effect<number> }, seq: number) =>
  eventually(
    `the head reaches ${seq}`,
    Effect.map(feed.headSeq, (head) => head >= seq)
  )

// ---------------------------------------------------------------------------------------------------------------
// The journal, read back
// ---------------------------------------------------------------------------------------------------------------

/** Every journaled event, read through the feed. */
export const journaled = <A>(feed: ChangeFeed.ChangeFeedService<A>, since = 0) =>
  Effect.map(Stream.runCollect(feed.read(since)), Chunk.toArray)

/**
 * Every line of every segment file in `directory`, parsed, in file order: what is on disk,
 * independent of the journal's reader. Fails the test on a partial last line.
 */
/** Every line of the segment files in `directory`, parsed as stored (the journal's own fields included). */
export const storedLinesOnDisk = (directory: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const names = (yield* fs.readDirectory(directory)).filter((name) => /^events-\d{20}\.jsonl$/.test(name)).sort()
    const lines: Array<ChangeEvent<AgentEvent> & { readonly key?: string; readonly crc?: string }> = []
    for (const name of names) {
      const text = yield* fs.readFileString(path.join(directory, name))
      assert.isTrue(text === "" || text.endsWith("\n"), `${name} ends with a partial line: ${JSON.stringify(text)}`)
      for (const line of text.split("\n")) if (line !== "") lines.push(JSON.parse(line))
    }
    return lines
  })

/** The changes the segment files in `directory` hold, without the journal's own fields (the key, the checksum). */
export const linesOnDisk = (directory: string) =>
  Effect.map(storedLinesOnDisk(directory), (lines) =>
    lines.map(({ key: _key, crc: _crc, ...change }): ChangeEvent<AgentEvent> => change)
  )

// ---------------------------------------------------------------------------------------------------------------
// Events and items
// ---------------------------------------------------------------------------------------------------------------

export const deleted = (sessionId: string): AgentEvent => ({ type: "session_deleted", session_id: sessionId })
export const token = (content: string): AgentEvent => ({ type: "token", content })
export const complete: AgentEvent = { type: "complete", usage: { total_tokens: 3 } }

/** `count` events `e<from>`.. whose session ids name the seq they are expected to get. */
export const numbered = (from: number, count: number): Array<AgentEvent> =>
  Array.from({ length: count }, (_, i) => deleted(`e${from + i}`))
