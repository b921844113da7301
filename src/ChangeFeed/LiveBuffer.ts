/**
 * The live buffer every reader of a feed shares: the last broadcast events, by seq, and one
 * wake-up for the readers waiting on the next batch. A reader keeps only its cursor; one the
 * buffer has slid past finds out (the event after its cursor is no longer held) and catches up
 * from the journal, so a slow reader never holds back the writer or anyone else.
 *
 * Bounded in bytes, and in events only when asked (`capacity`, unbounded by default): it lets go
 * of its oldest batches once what it holds passes `maxBytes` (always keeping the newest batch, so
 * readers at the head never have to go to the journal). Bytes govern, so that a feed of small
 * events holds as long a window as one of large events holds in the same memory. Bytes are counted per batch, as the writer says
 * what a batch holds: its events' lines share one buffer, which stays in memory as long as any
 * of them is held.
 *
 * A batch may be held as one item that tells its events apart by seq (`pushShared`): each of its
 * events' slots then holds that item, and no object is kept per event.
 *
 * One buffer and one wake-up per batch for all readers, where a queue per reader would copy each
 * event into every queue and make a waiter per reader per wake-up. Its slots grow with what it
 * holds, up to `capacity`: a quiet feed (one of thousands of accounts) holds a few slots, not
 * thousands.
 */
import { Effect } from "effect"

/** Slots a buffer starts with. */
const INITIAL_SLOTS = 16

/** A batch still (at least partly) held: its last seq and the bytes it holds. */
interface HeldBatch {
  readonly last: number
  readonly bytes: number
}

export class LiveBuffer<T> {
  /** Slots by `seq % items.length`; grown (never past `capacity`) before they would overwrite a held event. */
  private items: Array<T | undefined>
  /** Seq of the oldest event held, and of the newest (both 0 while none is). */
  private first = 0
  private last = 0
  private closed = false
  /** Batches held, oldest first from `batchHead` (a queue without shifting). */
  private batches: Array<HeldBatch> = []
  private batchHead = 0
  private heldBytes = 0
  /** Waiting readers, each with the cursor it waits to get past. */
  private readonly waiters = new Map<() => void, number>()
  /** Readers told of every push past their cursor until they stop watching (`watch`). */
  private readonly watchers = new Set<Watcher>()

  constructor(
    readonly capacity: number = Number.POSITIVE_INFINITY,
    readonly maxBytes: number = Number.POSITIVE_INFINITY,
    /** The size of the event at `seq` (held as `item`) for `after`'s `maxBytes`: what a reader copies when it passes the event on. */
    private readonly weigh: (item: T, seq: number) => number = () => 0
  ) {
    this.items = new Array(Math.min(capacity, INITIAL_SLOTS))
  }

  /** Bytes held now, as the batches' `bytes` said. */
  get bytes(): number {
    return this.heldBytes
  }

  /** Slots allocated now (at most `capacity`). */
  get slots(): number {
    return this.items.length
  }

  /** Events held now. */
  get size(): number {
    return this.last === 0 ? 0 : this.last - this.first + 1
  }

  /**
   * Holds a batch of events with consecutive seqs from `firstSeq`, the next after the last
   * batch; `bytes` is what the batch holds in memory.
   */
  push(firstSeq: number, batch: ReadonlyArray<T>, bytes = 0): void {
    if (batch.length === 0) return
    this.makeRoom(firstSeq, batch.length)
    for (let i = 0; i < batch.length; i++) this.items[(firstSeq + i) % this.items.length] = batch[i]
    this.admit(firstSeq, batch.length, bytes)
  }

  /**
   * Holds `count` events from `firstSeq` as one item (a batch held as one object, which tells its
   * events apart by seq): every one of their slots holds it, and no object is made per event.
   */
  pushShared(firstSeq: number, count: number, item: T, bytes = 0): void {
    if (count === 0) return
    this.makeRoom(firstSeq, count)
    for (let i = 0; i < count; i++) this.items[(firstSeq + i) % this.items.length] = item
    this.admit(firstSeq, count, bytes)
  }

  /** Starts over if `count` events from `firstSeq` do not continue what is held, and grows the slots to take them. */
  private makeRoom(firstSeq: number, count: number): void {
    if (this.last !== 0 && firstSeq !== this.last + 1) this.clear()
    const held = this.last === 0 ? 0 : this.last - this.first + 1
    if (held + count > this.items.length && this.items.length < this.capacity) {
      this.grow(Math.min(this.capacity, Math.max(held + count, 2 * this.items.length)))
    }
  }

  /** Counts `count` events from `firstSeq`, just put in their slots, as held; lets go of the oldest past the bounds, and wakes readers. */
  private admit(firstSeq: number, count: number, bytes: number): void {
    if (this.last === 0) this.first = firstSeq
    this.last = firstSeq + count - 1
    this.batches.push({ last: this.last, bytes })
    this.heldBytes += bytes
    let first = Math.max(this.first, this.last - this.items.length + 1)
    while (this.heldBytes > this.maxBytes && this.batches.length - this.batchHead > 1) {
      first = Math.max(first, this.batches[this.batchHead]!.last + 1)
      this.dropOldestBatch()
    }
    while (this.batches[this.batchHead]!.last < first) this.dropOldestBatch()
    this.forget(first)
    this.wake()
  }

  /** No event follows: waiting readers wake up and find nothing more. */
  close(): void {
    this.closed = true
    this.wake()
  }

  /**
   * The event after `cursor`: undefined when there is none yet, "end" once closed, or "gap" when
   * the buffer has slid past it.
   */
  next(cursor: number): T | undefined | "gap" | "end" {
    if (this.last <= cursor) return this.closed ? "end" : undefined
    if (cursor + 1 < this.first) return "gap"
    return this.items[(cursor + 1) % this.items.length]!
  }

  /**
   * Events after `cursor`, in order, at most `max` of them and (past the first) at most
   * `maxBytes` by `weigh`: none yet (an empty array, or "end" once closed), or "gap" when the
   * buffer has slid past the event after `cursor`.
   */
  after(cursor: number, max: number, maxBytes = Number.POSITIVE_INFINITY): Array<T> | "gap" | "end" {
    if (this.last <= cursor) return this.closed ? "end" : []
    if (cursor + 1 < this.first) return "gap"
    const to = Math.min(this.last, cursor + max)
    const out: Array<T> = []
    let bytes = 0
    for (let seq = cursor + 1; seq <= to; seq++) {
      const item = this.items[seq % this.items.length]!
      bytes += this.weigh(item, seq)
      if (bytes > maxBytes && out.length > 0) break
      out.push(item)
    }
    return out
  }

  /** Completes once an event after `cursor` is held, or the buffer is closed. */
  awaitAfter(cursor: number): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.last > cursor || this.closed) return resume(Effect.void)
      const waiter = () => resume(Effect.void)
      this.waiters.set(waiter, cursor)
      return Effect.sync(() => this.waiters.delete(waiter))
    })
  }

  /**
   * Tells `watcher` (`wake`) whenever an event after its cursor is held, or the buffer closes: at
   * once if one is already, then on every push that passes its cursor, until the answer is called.
   * Unlike `awaitAfter`, a watcher stays: one that takes what was pushed and moves its cursor on
   * keeps following the buffer with no wait of its own to set up again.
   */
  watch(watcher: Watcher): () => void {
    this.watchers.add(watcher)
    if (this.last > watcher.cursor() || this.closed) watcher.wake()
    return () => {
      this.watchers.delete(watcher)
    }
  }

  private dropOldestBatch(): void {
    this.heldBytes -= this.batches[this.batchHead]!.bytes
    this.batchHead++
    if (this.batchHead > 64 && this.batchHead * 2 > this.batches.length) {
      this.batches = this.batches.slice(this.batchHead)
      this.batchHead = 0
    }
  }

  /** Lets go of the events before `first`: their slots no longer keep them in memory. */
  private forget(first: number): void {
    // A slot still used by a newer event (one `items.length` later) was overwritten by the push.
    for (let seq = Math.max(this.first, this.last - this.items.length + 1); seq < first; seq++) {
      this.items[seq % this.items.length] = undefined
    }
    this.first = first
  }

  /** More slots, the events held moved to theirs (their seq modulo the new length). */
  private grow(length: number): void {
    const items = new Array<T | undefined>(length)
    if (this.last !== 0) {
      for (let seq = this.first; seq <= this.last; seq++) items[seq % length] = this.items[seq % this.items.length]
    }
    this.items = items
  }

  /** Forgets everything held (a push that does not continue the last batch). */
  private clear(): void {
    this.items.fill(undefined)
    this.batches = []
    this.batchHead = 0
    this.heldBytes = 0
    this.last = 0
    this.first = 0
  }

  private wake(): void {
    for (const [waiter, cursor] of this.waiters) {
      if (this.last > cursor || this.closed) {
        this.waiters.delete(waiter)
        waiter()
      }
    }
    for (const watcher of this.watchers) if (this.last > watcher.cursor() || this.closed) watcher.wake()
  }
}

/** A reader following a buffer (`LiveBuffer.watch`): where it is, and how to tell it there is more. */
export interface Watcher {
  readonly cursor: () => number
  readonly wake: () => void
}
