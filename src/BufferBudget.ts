/**
 * What an in-memory buffer may hold, in items and in bytes: the feed's intake queue and each
 * stream connection's queue take their room from one on the way in and give it back on the way
 * out. A count alone does not bound memory (a thousand events of 1 MB are a gigabyte), so every
 * buffer is bounded in both.
 *
 * One entry larger than the whole budget is let in alone, once nothing else is held, so that it
 * cannot wait forever: what is held is at most the budget or one entry, whichever is larger.
 */
import { Effect } from "effect"

export class BufferBudget {
  private heldItems = 0
  private heldBytes = 0
  private peak = 0
  private closed = false
  /** Takers waiting for room, each with the room it needs (checked again once woken). */
  private readonly waiters = new Set<() => void>()

  constructor(
    readonly maxItems: number,
    readonly maxBytes: number,
    /** Told of every change in the bytes held (a gauge summing several budgets). */
    private readonly onBytes?: (delta: number) => void
  ) {}

  /** Items held now. */
  get items(): number {
    return this.heldItems
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.heldBytes
  }

  /** The most bytes ever held at once. */
  get peakBytes(): number {
    return this.peak
  }

  /** Whether `items` entries of `bytes` fit now. */
  fits(bytes: number, items = 1): boolean {
    if (this.closed) return false
    if (this.heldItems === 0 && this.heldBytes === 0) return true
    return this.heldItems + items <= this.maxItems && this.heldBytes + bytes <= this.maxBytes
  }

  /** Takes room for `items` entries of `bytes` if they fit now; never waits. */
  tryTake(bytes: number, items = 1): boolean {
    if (!this.fits(bytes, items)) return false
    this.heldItems += items
    this.add(bytes)
    return true
  }

  /**
   * Takes room, waiting until there is some; the caller gives it back with `release`. A caller
   * interrupted right after the take leaves the room taken: where that matters, wait with `room`
   * and take with `tryTake` in the same synchronous step that hands the entry on.
   */
  take(bytes: number, items = 1): Effect.Effect<void> {
    return Effect.suspend(() =>
      this.tryTake(bytes, items) ? Effect.void : Effect.zipRight(this.room(bytes, items), this.take(bytes, items))
    )
  }

  /** Completes once `items` entries of `bytes` would fit (another taker may still get there first); takes nothing. */
  room(bytes: number, items = 1): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.fits(bytes, items)) return resume(Effect.void)
      const waiter = () => {
        if (!this.fits(bytes, items)) return
        this.waiters.delete(waiter)
        resume(Effect.void)
      }
      this.waiters.add(waiter)
      return Effect.sync(() => this.waiters.delete(waiter))
    })
  }

  /** Gives back what `tryTake` or `take` took, waking the takers that now fit (nothing once closed). */
  release(bytes: number, items = 1): void {
    if (this.closed) return
    this.heldItems -= items
    this.add(-bytes)
    for (const waiter of this.waiters) waiter()
  }

  /** Gives back everything held and takes nothing more: the buffer is dropped whole. */
  close(): void {
    this.closed = true
    this.heldItems = 0
    this.add(-this.heldBytes)
  }

  private add(delta: number): void {
    this.heldBytes += delta
    if (this.heldBytes > this.peak) this.peak = this.heldBytes
    if (delta !== 0) this.onBytes?.(delta)
  }
}

/** What a value is counted as beyond its strings: a pointer and a header, roughly. */
const VALUE_BYTES = 16

/**
 * About how many bytes a decoded value holds in memory: 2 per UTF-16 unit of every string (the
 * most V8 uses; ASCII text takes half), 16 per value otherwise, keys included. Walks the value
 * without recursion and stops counting past `limit` (a value that large is over any budget
 * anyway, and a cyclic one cannot be walked to its end). On every `record`'s path: a flat
 * object is counted without allocating.
 */
export const estimateBytes = (value: unknown, limit = Number.MAX_SAFE_INTEGER): number => {
  if (typeof value === "string") return VALUE_BYTES + 2 * value.length
  if (typeof value !== "object" || value === null) return VALUE_BYTES
  let total = 0
  let pending: Array<object> | undefined
  let next: object = value
  while (true) {
    total += VALUE_BYTES
    if (Array.isArray(next)) {
      for (let i = 0; i < next.length; i++) {
        const item: unknown = next[i]
        if (typeof item === "string") total += VALUE_BYTES + 2 * item.length
        else if (typeof item === "object" && item !== null) (pending ??= []).push(item)
        else total += VALUE_BYTES
      }
    } else {
      for (const key in next) {
        const item: unknown = (next as Record<string, unknown>)[key]
        total += VALUE_BYTES
        if (typeof item === "string") total += VALUE_BYTES + 2 * item.length
        else if (typeof item === "object" && item !== null) (pending ??= []).push(item)
        else total += VALUE_BYTES
      }
    }
    if (pending === undefined || pending.length === 0 || total > limit) return total
    next = pending.pop()!
  }
}
