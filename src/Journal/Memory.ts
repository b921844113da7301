/**
 * The in-memory journal: the journal's contract (next seqs, exclusive reads, `JournalPruned`
 * below the retained window, wire lines identical to the file journal's) with nothing kept
 * across a stop, for tests of the layers above it and for code that needs a feed but no
 * durability.
 */
import { Effect, type Schema, Stream } from "effect"
import type { AccountId } from "../Domain/Account.js"
import {
  type Appended,
  cleanRecovery,
  emptyAppended,
  type Journal,
  type JournalEntry,
  type JournalEvent,
  type JournalInfo,
  type JournalStore,
  numbered,
  plainEvent
} from "../Journal.js"
import { newEpochId } from "./Epoch.js"
import { JournalPruned } from "./Errors.js"
import { bodyAt, makeLineCodec } from "./Lines.js"

export interface MemoryJournalOptions {
  /** Keep at most this many events (oldest dropped first); unbounded when unset. */
  readonly retainEvents?: number | undefined
  readonly epoch?: string | undefined
}

export const make = <A, I>(
  schema: Schema.Schema<A, I>,
  options: MemoryJournalOptions = {}
): Effect.Effect<Journal<A>> =>
  Effect.sync(() => {
    const codec = makeLineCodec(schema)
    const events: Array<JournalEvent<A>> = []
    const epoch = options.epoch ?? newEpochId()
    const bodies: Array<Uint8Array> = []
    let head = 0
    const oldest = () => (events.length > 0 ? events[0]!.seq : head + 1)
    const slice = <T>(since: number, upTo: number | undefined, item: (index: number) => T) =>
      Stream.suspend(() => {
        const target = Math.min(upTo ?? head, head)
        if (since >= target) return Stream.empty
        if (since + 1 < oldest()) return Stream.fail(new JournalPruned({ requested: since + 1, oldest: oldest() }))
        const from = since + 1 - oldest()
        return Stream.fromIterable(Array.from({ length: target - since }, (_, k) => item(from + k)))
      })
    const info = Effect.sync((): JournalInfo => ({
      headSeq: head,
      oldestSeq: oldest(),
      epoch,
      segments: events.length > 0 ? 1 : 0,
      bytes: 0,
      fsync: "never"
    }))
    const append = (entries: ReadonlyArray<JournalEntry<A>>): Effect.Effect<Appended<A>> =>
      Effect.sync(() => {
        if (entries.length === 0) return emptyAppended
        const batch = numbered(entries, head + 1)
        const lines = codec.encodeBatch(batch, entries)
        for (let i = 0; i < batch.length; i++) {
          // Read back as plain objects, as every other journal's reads give them.
          events.push(plainEvent(batch[i]!))
          bodies.push(bodyAt(lines, i))
        }
        head += batch.length
        if (options.retainEvents !== undefined && events.length > options.retainEvents) {
          events.splice(0, events.length - options.retainEvents)
          bodies.splice(0, bodies.length - options.retainEvents)
        }
        return { events: batch, lines }
      })
    return {
      location: ":memory:",
      epoch,
      recovery: cleanRecovery,
      headSeq: Effect.sync(() => head),
      info,
      append,
      read: (since, upTo) => slice(since, upTo, (i) => events[i]!),
      readLines: (since, upTo) =>
        slice(since, upTo, (i) => ({
          _tag: "Change" as const,
          seq: events[i]!.seq,
          sessionId: events[i]!.session_id,
          body: bodies[i]!,
          key: events[i]!.key
        }))
    } satisfies Journal<A>
  })

/** In-memory journals of many accounts, each kept while the store lives (reopening one finds its events). */
export const store = (options: MemoryJournalOptions = {}): Effect.Effect<JournalStore> =>
  Effect.sync(() => {
    const journals = new Map<AccountId, Journal<unknown>>()
    return {
      location: ":memory:",
      open: <A, I>(schema: Schema.Schema<A, I>, account: AccountId) =>
        Effect.suspend(() => {
          const known = journals.get(account)
          if (known !== undefined) return Effect.succeed(known as Journal<A>)
          return Effect.tap(make(schema, options), (journal) => journals.set(account, journal as Journal<unknown>))
        }),
      accounts: Effect.sync(() => [...journals.keys()].sort())
    } satisfies JournalStore
  })
