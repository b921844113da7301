/**
 * The live buffer every reader of a feed shares: the last `capacity` broadcast events, by seq,
 * and one wake-up for the readers waiting on the next batch. A reader keeps only its cursor; one
 * the buffer has slid past finds out (the event after its cursor is no longer held) and catches
 * up from the journal, so a slow reader never holds back the writer or anyone else.
 *
 * One buffer and one wake-up per batch for all readers, where a queue per reader would copy each
 * event into every queue and make a waiter per reader per wake-up.
 */
import { Effect } from "effect"

export class LiveBuffer<T> {
  private readonly items: Array<T | undefined>
  /** Seq of the oldest event held, and of the newest (both 0 while none is). */
  private first = 0
  private last = 0
  private closed = false
  /** Waiting readers, each with the cursor it waits to get past. */
  private readonly waiters = new Map<() => void, number>()

  constructor(readonly capacity: number) {
    this.items = new Array(capacity)
  }

  /** Holds a batch of events with consecutive seqs from `firstSeq`, the next after the last batch. */
  push(firstSeq: number, batch: ReadonlyArray<T>): void {
    if (batch.length === 0) return
    for (let i = 0; i < batch.length; i++) this.items[(firstSeq + i) % this.capacity] = batch[i]
    if (this.last === 0 || firstSeq !== this.last + 1) this.first = firstSeq
    this.last = firstSeq + batch.length - 1
    this.first = Math.max(this.first, this.last - this.capacity + 1)
    this.wake()
  }

  /** No event follows: waiting readers wake up and find nothing more. */
  close(): void {
    this.closed = true
    this.wake()
  }

  /**
   * Up to `max` events after `cursor`, in order: none yet (an empty array, or "end" once closed),
   * or "gap" when the buffer has slid past the event after `cursor`.
   */
  after(cursor: number, max: number): Array<T> | "gap" | "end" {
    if (this.last <= cursor) return this.closed ? "end" : []
    if (cursor + 1 < this.first) return "gap"
    const to = Math.min(this.last, cursor + max)
    const out: Array<T> = new Array(to - cursor)
    for (let seq = cursor + 1; seq <= to; seq++) out[seq - cursor - 1] = this.items[seq % this.capacity]!
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

  private wake(): void {
    for (const [waiter, cursor] of this.waiters) {
      if (this.last > cursor || this.closed) {
        this.waiters.delete(waiter)
        waiter()
      }
    }
  }
}
