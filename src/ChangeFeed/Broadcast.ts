/**
 * The broadcast: the live buffer every reader of a feed follows, fed in seq order with each
 * durable batch, once, as both kinds of reader item.
 *
 * A batch this process appended goes in as the writer commits it. A journal with other writers
 * (replicas sharing a database) also reports the heads they reach: the broadcast then reads
 * what it has not seen from the journal, once for all its readers, and so does it when one of
 * its own batches comes after events it has not seen. Nothing enters the buffer out of order:
 * every push continues the last seq, or the buffer starts over (and readers catch up from the
 * journal).
 */
import { Effect, Option, Stream } from "effect"
import type { Change, LineChange } from "../Domain/FeedItem.js"
import {
  type Appended,
  bodyAt,
  type EncodedBatch,
  type Journal,
  type JournalEvent,
  type JournalLine,
  plainEvent
} from "../Journal.js"
import type { LineCodec } from "../Journal/Lines.js"
import { LiveBuffer } from "./LiveBuffer.js"

/** A broadcast event as both kinds of reader item, each made once for every reader, and the batch it came in. */
export interface LiveChange<A> {
  readonly decoded: Change<A>
  readonly line: LineChange
  readonly batch: LiveBatch<A>
}

/**
 * A batch as the broadcast holds it, one object for every reader: what is made of a whole batch
 * (its SSE frames) is made once, keyed by this object, and shared by every reader that takes the
 * batch whole.
 */
export interface LiveBatch<A> {
  /** The seq of its first event; the others follow it. */
  readonly first: number
  readonly items: ReadonlyArray<LiveChange<A>>
}

/**
 * Events `from` to the end of `batch`, as one item: what an unfiltered reader at the live tail
 * takes, at a cost that does not grow with the events in the batch.
 */
export interface LiveRun {
  readonly _tag: "LiveRun"
  readonly batch: LiveBatch<unknown>
  readonly from: number
}

/** The last seq of a batch. */
export const lastOf = (batch: LiveBatch<unknown>): number => batch.first + batch.items.length - 1

/**
 * A change as readers get it: a plain object (its event parsed if it was still JSON), without
 * the idempotency key it was journaled with, which is the journal's alone.
 */
export const asItem = <A>(appended: JournalEvent<A>): Change<A> => {
  const stored = plainEvent(appended)
  if (stored.key === undefined) return { _tag: "Change", change: stored }
  const { key: _key, ...change } = stored
  return { _tag: "Change", change }
}

/**
 * What an event in the live buffer holds besides its line and its decoded event: the change
 * around the event, the two reader items, and the line's view of the batch's bytes.
 */
export const LIVE_EVENT_BYTES = 384

/** Events read at once when catching up with other writers. */
const CATCH_UP_CHUNK = 1024

/**
 * A live event whose reader items are made when a reader first asks for them, then kept (every
 * reader gets the same objects). The buffer holds thousands of events for a while, long enough
 * for the collector to move what they hold out of the young generation: an event no reader
 * takes costs it only this object, not its two items and its line's view as well.
 */
class LiveEvent<A> implements LiveChange<A> {
  private decodedItem: Change<A> | undefined = undefined
  private lineItem: LineChange | undefined

  constructor(
    private readonly event: JournalEvent<A>,
    readonly batch: LiveBatch<A>,
    /** Where its line is in the batch's lines, when they are at hand (`line` is given otherwise). */
    private readonly lines: EncodedBatch | undefined,
    private readonly index: number,
    line: LineChange | undefined
  ) {
    this.lineItem = line
  }

  get decoded(): Change<A> {
    return (this.decodedItem ??= asItem(this.event))
  }

  get line(): LineChange {
    return (this.lineItem ??= {
      _tag: "Change",
      seq: this.event.seq,
      sessionId: this.event.session_id,
      body: bodyAt(this.lines!, this.index),
      live: true
    })
  }
}

export interface BroadcastOptions {
  /** Most events held (unbounded when undefined: bytes govern). */
  readonly events: number | undefined
  /**
   * Most bytes held: lines, an estimate of their decoded form, and as much again as the lines for
   * what readers make of a batch once for all (its SSE frames).
   */
  readonly bytes: number
}

export class Broadcast<A> {
  readonly live: LiveBuffer<LiveChange<A>>
  closed = false
  /** The last seq put in the buffer (or known to be before what it holds). */
  private head: number
  /** The head other writers (or a batch of ours past a hole) reached: what a catch-up reads up to. */
  private wanted: number
  private readonly catchUpNeeded: Effect.Latch
  private readonly decoder = new TextDecoder()

  private constructor(
    private readonly journal: Journal<A>,
    private readonly codec: LineCodec<A>,
    options: BroadcastOptions,
    head: number,
    latch: Effect.Latch
  ) {
    this.live = new LiveBuffer<LiveChange<A>>(options.events, options.bytes, (change) => change.line.body.length)
    this.head = head
    this.wanted = head
    this.catchUpNeeded = latch
  }

  /** The broadcast from the journal's head on; follows other writers' heads in the scope, if any. */
  static make = <A>(journal: Journal<A>, codec: LineCodec<A>, options: BroadcastOptions) =>
    Effect.gen(function* () {
      const broadcast = new Broadcast(journal, codec, options, yield* journal.headSeq, yield* Effect.makeLatch(false))
      if (journal.foreignHeads !== undefined) {
        yield* Effect.forkScoped(
          Stream.runForEach(journal.foreignHeads, (head) => Effect.sync(() => broadcast.want(head)))
        )
        yield* Effect.forkScoped(broadcast.catchUp)
      }
      return broadcast
    })

  /** A batch the writer committed; `held` is what it holds in memory besides its lines. */
  committed(appended: Appended<A>, held: number): void {
    const { events, lines } = appended
    if (events.length === 0) return
    const first = events[0]!.seq
    // After events this process has not seen (another writer's): read them all from the journal.
    if (first !== this.head + 1) return this.want(events[events.length - 1]!.seq)
    const items: Array<LiveChange<A>> = new Array(events.length)
    const batch: LiveBatch<A> = { first, items }
    for (let i = 0; i < events.length; i++) items[i] = new LiveEvent(events[i]!, batch, lines, i, undefined)
    this.push(batch, 2 * lines.bytes.length + events.length * LIVE_EVENT_BYTES + held)
  }

  /** No event follows (the feed is closed): readers end. */
  close(): void {
    this.closed = true
    this.live.close()
  }

  private push(batch: LiveBatch<A>, bytes: number): void {
    this.live.push(batch.first, batch.items, bytes)
    this.head = lastOf(batch)
    if (this.wanted < this.head) this.wanted = this.head
  }

  private want(head: number): void {
    if (head <= this.wanted) return
    this.wanted = head
    this.catchUpNeeded.unsafeOpen()
  }

  /** Reads from the journal what other writers appended, in order, and puts it in the buffer. */
  private get catchUp(): Effect.Effect<never> {
    const step = Effect.suspend(() => {
      this.catchUpNeeded.unsafeClose()
      if (this.wanted <= this.head) return this.catchUpNeeded.await
      return this.journal.readLines(this.head, this.wanted).pipe(
        Stream.grouped(CATCH_UP_CHUNK),
        Stream.runForEach((chunk) => Effect.sync(() => this.pushLines(chunk))),
        // A read that fails (the database away) is tried again by the next head reported.
        Effect.catchAllCause((cause) =>
          Effect.logWarning("change feed: could not read what other writers appended; retrying", cause).pipe(
            Effect.zipRight(Effect.sleep("200 millis"))
          )
        )
      )
    })
    return Effect.forever(step)
  }

  private pushLines(chunk: Iterable<JournalLine>): void {
    const items: Array<LiveChange<A>> = []
    const batch: { first: number; items: Array<LiveChange<A>> } = { first: 0, items }
    let bytes = 0
    for (const line of chunk) {
      // A batch of ours may have come in while this was read.
      if (line.seq <= this.head + items.length) continue
      const decoded = this.decode(line)
      if (Option.isNone(decoded)) break
      if (items.length === 0) batch.first = line.seq
      const event = decoded.value
      items.push(
        new LiveEvent(event, batch, undefined, 0, {
          _tag: "Change",
          seq: event.seq,
          sessionId: event.session_id,
          body: line.body,
          live: true
        })
      )
      bytes += 2 * line.body.length + LIVE_EVENT_BYTES
    }
    if (items.length > 0) this.push(batch, bytes * 2)
  }

  private decode(line: JournalLine): Option.Option<JournalEvent<A>> {
    const text = this.decoder.decode(line.body) + "}"
    const event = this.codec.decodeLine(text)
    return typeof event === "string" ? Option.none() : Option.some(event)
  }
}
