/**
 * The broadcast: the live buffer every reader of a feed follows, fed in seq order with each
 * durable batch, once, as one object that readers take whole or make both kinds of reader item of.
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
  bodyLengthAt,
  type EncodedBatch,
  isOnlyJson,
  type Journal,
  type JournalEvent,
  type JournalLine,
  lineAt,
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

/** Where a live batch's events' bodies lie: in the lines the writer encoded, or one view each (read back from the journal). */
type LiveBodies = EncodedBatch | ReadonlyArray<Uint8Array>

const isEncoded = (bodies: LiveBodies): bodies is EncodedBatch => !Array.isArray(bodies)

/**
 * A batch as the broadcast holds it, one object for every reader: its lines, its events'
 * sessions, and its events themselves only where a producer gave them as values (an event that
 * was only JSON is decoded from its line when a reader of decoded events first asks). No object
 * per event is kept: the buffer holds thousands of events for long enough that the collector
 * would move and mark every one, and most are never read one by one (readers at the tail take a
 * batch whole, its SSE frames made once and keyed by this object). An event's reader items are
 * made when a reader first asks for them (`change`), then shared.
 */
export class LiveBatch<A> {
  private made: Array<LiveEvent<A> | undefined> | undefined = undefined

  constructor(
    /** The seq of its first event; the others follow it. */
    readonly first: number,
    readonly length: number,
    private readonly sessions: ReadonlyArray<string | undefined>,
    private readonly bodies: LiveBodies,
    /** Its events, where any was given as a value; undefined: each is decoded from its line when asked. */
    private readonly events: ReadonlyArray<JournalEvent<A>> | undefined,
    private readonly decodeLine: LineCodec<A>["decodeLine"]
  ) {}

  /** The seq of its last event. */
  get last(): number {
    return this.first + this.length - 1
  }

  /** Event `i`'s session. */
  sessionAt(i: number): string | undefined {
    return this.sessions[i]
  }

  /** Event `i`'s body (its wire JSON less the closing brace), as a view. */
  bodyAt(i: number): Uint8Array {
    const bodies = this.bodies
    return isEncoded(bodies) ? bodyAt(bodies, i) : bodies[i]!
  }

  /** The length of event `i`'s body. */
  bodyLength(i: number): number {
    const bodies = this.bodies
    return isEncoded(bodies) ? bodyLengthAt(bodies, i) : bodies[i]!.length
  }

  /** Copies event `i`'s body into `out` at `at`; answers its length. */
  copyBody(i: number, out: Uint8Array, at: number): number {
    const body = this.bodyAt(i)
    out.set(body, at)
    return body.length
  }

  /** Event `i` as both kinds of reader item, made when first asked for and then shared by every reader. */
  change(i: number): LiveChange<A> {
    const made = (this.made ??= new Array(this.length))
    return (made[i] ??= new LiveEvent(this, i))
  }

  /** Event `i` as a reader of decoded events gets it: the value given, or its line decoded. */
  decodedAt(i: number): Change<A> {
    if (this.events !== undefined) return asItem(this.events[i]!)
    const bodies = this.bodies as EncodedBatch
    const line = lineAt(bodies, i)
    const event = this.decodeLine(lineDecoder.decode(line), line)
    // A line the writer has just encoded from a checked event decodes, or the codec is broken.
    if (typeof event === "string") throw new Error(`a line the feed wrote does not decode: ${event}`)
    return asItem(event)
  }
}

const lineDecoder = new TextDecoder()

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
export const lastOf = (batch: LiveBatch<unknown>): number => batch.last

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
 * What an event in the live buffer may hold besides its line and its decoded event: its slot and
 * session, and once a reader asks for it one by one, the change around the event, the two reader
 * items and its line's view of the batch's bytes.
 */
export const LIVE_EVENT_BYTES = 384

/** Events read at once when catching up with other writers. */
const CATCH_UP_CHUNK = 1024

/** A live event's reader items, each made when a reader first asks for it, then kept (every reader gets the same objects). */
class LiveEvent<A> implements LiveChange<A> {
  private decodedItem: Change<A> | undefined = undefined
  private lineItem: LineChange | undefined = undefined

  constructor(
    readonly batch: LiveBatch<A>,
    private readonly index: number
  ) {}

  get decoded(): Change<A> {
    return (this.decodedItem ??= this.batch.decodedAt(this.index))
  }

  get line(): LineChange {
    return (this.lineItem ??= {
      _tag: "Change",
      seq: this.batch.first + this.index,
      sessionId: this.batch.sessionAt(this.index),
      body: this.batch.bodyAt(this.index),
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
  readonly live: LiveBuffer<LiveBatch<A>>
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
    this.live = new LiveBuffer<LiveBatch<A>>(options.events, options.bytes, (batch, seq) =>
      batch.bodyLength(seq - batch.first)
    )
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
    const sessions: Array<string | undefined> = new Array(events.length)
    let onlyJson = true
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!
      sessions[i] = event.session_id
      if (onlyJson && !isOnlyJson(event)) onlyJson = false
    }
    // Events that are only JSON are let go of (their lines say it all); values given are kept.
    const batch = new LiveBatch(
      first,
      events.length,
      sessions,
      lines,
      onlyJson ? undefined : events,
      this.codec.decodeLine
    )
    this.push(batch, 2 * lines.bytes.length + events.length * LIVE_EVENT_BYTES + held)
  }

  /**
   * Events after `cursor`, in order, at most `max` of them and (past the first) at most `maxBytes`
   * of bodies, as reader items: none yet (an empty array, or "end" once closed), or "gap" when the
   * buffer has slid past the event after `cursor`.
   */
  after(cursor: number, max: number, maxBytes: number): Array<LiveChange<A>> | "gap" | "end" {
    const held = this.live.after(cursor, max, maxBytes)
    if (typeof held === "string") return held
    const changes: Array<LiveChange<A>> = new Array(held.length)
    for (let k = 0; k < held.length; k++) changes[k] = held[k]!.change(cursor + 1 + k - held[k]!.first)
    return changes
  }

  /** No event follows (the feed is closed): readers end. */
  close(): void {
    this.closed = true
    this.live.close()
  }

  private push(batch: LiveBatch<A>, bytes: number): void {
    this.live.pushShared(batch.first, batch.length, batch, bytes)
    this.head = batch.last
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
    const events: Array<JournalEvent<A>> = []
    const sessions: Array<string | undefined> = []
    const bodies: Array<Uint8Array> = []
    let first = 0
    let bytes = 0
    for (const line of chunk) {
      // A batch of ours may have come in while this was read.
      if (line.seq <= this.head + events.length) continue
      const decoded = this.decode(line)
      if (Option.isNone(decoded)) break
      if (events.length === 0) first = line.seq
      events.push(decoded.value)
      sessions.push(decoded.value.session_id)
      bodies.push(line.body)
      bytes += 2 * line.body.length + LIVE_EVENT_BYTES
    }
    if (events.length > 0)
      this.push(new LiveBatch(first, events.length, sessions, bodies, events, this.codec.decodeLine), bytes * 2)
  }

  private decode(line: JournalLine): Option.Option<JournalEvent<A>> {
    const text = this.decoder.decode(line.body) + "}"
    const event = this.codec.decodeLine(text)
    return typeof event === "string" ? Option.none() : Option.some(event)
  }
}
