/**
 * One stream connection's sending side, straight onto Node's response: no queue, no Stream and
 * no fiber between the reader and the socket.
 *
 * Frames go out at once while the socket takes them; once it needs draining, whatever comes next
 * waits here, and on 'drain' everything waiting goes out together, in one write (corked, so Node
 * hands the socket all of it at once). Under load a connection thus sends fewer, bigger writes,
 * and its latency stops growing instead of queueing small writes behind each other. What waits is
 * bounded in bytes: past `maxBufferedBytes` the connection's reader waits for `room` (it stops
 * reading the feed, and catches up from the journal later), so a client that stops reading holds
 * at most its budget, never slows the feed or another connection.
 */
import type { ServerResponse } from "node:http"
import { Effect, Scheduler } from "effect"

export class ConnectionWriter {
  private pending: Array<Uint8Array> = []
  private pendingBytes = 0
  private waiting: (() => void) | undefined
  private ended = false

  constructor(
    private readonly response: ServerResponse,
    readonly maxBufferedBytes: number,
    /** Told of every change in the bytes waiting here (the connections' gauge). */
    private readonly onBuffered: (delta: number) => void
  ) {
    response.on("drain", this.write)
  }

  /** Bytes waiting for the socket. */
  get buffered(): number {
    return this.pendingBytes
  }

  /** Whether `bytes` more may wait here now: always when nothing waits, so one large run is let in alone. */
  fits(bytes: number): boolean {
    return this.pendingBytes === 0 || this.pendingBytes + bytes <= this.maxBufferedBytes
  }

  /** Completes once what waits has gone to the socket (or the connection ended). */
  readonly room: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.pendingBytes === 0 || this.ended) return resume(Effect.void)
    const waiter = () => resume(Effect.void)
    this.waiting = waiter
    return Effect.sync(() => {
      if (this.waiting === waiter) this.waiting = undefined
    })
  })

  /** Sends `bytes` after everything before it: now if the socket takes it, else with the next drain. */
  send(bytes: Uint8Array): void {
    this.queue(bytes)
    this.flush()
  }

  /**
   * Sends all of `frames` after everything before it, in one write, if they fit now; otherwise
   * takes none of them (answers false), for the connection's reader to send them when there is room.
   */
  offer(frames: ReadonlyArray<Uint8Array>): boolean {
    let bytes = 0
    for (const frame of frames) bytes += frame.length
    if (this.ended || !this.fits(bytes)) return false
    for (const frame of frames) this.queue(frame)
    this.flush()
    return true
  }

  /** Puts `bytes` after everything before it, to go out with the next `flush` (or drain). */
  queue(bytes: Uint8Array): void {
    if (this.ended || bytes.length === 0) return
    this.pending.push(bytes)
    this.pendingBytes += bytes.length
    this.onBuffered(bytes.length)
  }

  /** Sends everything waiting, in one write, unless the socket needs draining (then 'drain' sends it). */
  flush(): void {
    if (!this.response.writableNeedDrain) this.write()
  }

  /** Lets go of what waits (the connection is over); the response is the caller's to end. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.response.off("drain", this.write)
    this.release()
    this.wake()
  }

  private readonly write = (): void => {
    if (this.ended || this.pending.length === 0) return
    const out = this.pending
    this.release()
    if (out.length === 1) {
      this.response.write(out[0]!)
    } else {
      this.response.cork()
      for (const bytes of out) this.response.write(bytes)
      this.response.uncork()
    }
    this.wake()
  }

  private release(): void {
    this.onBuffered(-this.pendingBytes)
    this.pending = []
    this.pendingBytes = 0
  }

  private wake(): void {
    const waiter = this.waiting
    this.waiting = undefined
    waiter?.()
  }
}

/** What the server keeps of an open stream connection: its writer, and how to end it. */
export interface OpenConnection {
  readonly writer: ConnectionWriter
  /** Ends the connection (the server is shutting down); called at most once. */
  readonly stop: () => void
}

/**
 * The open stream connections of a server: one timer sends all their keepalives and one signal
 * ends them all at shutdown, where a fiber and a timer of each connection's own would hold memory
 * for every idle connection.
 */
export class OpenConnections {
  private readonly open = new Set<OpenConnection>()
  private stopped = false

  /** Connections open now. */
  get size(): number {
    return this.open.size
  }

  /** Holds `connection` until `remove`; once the server is shutting down, stops it at once instead. */
  add(connection: OpenConnection): void {
    if (this.stopped) connection.stop()
    else this.open.add(connection)
  }

  remove(connection: OpenConnection): void {
    this.open.delete(connection)
  }

  /** Sends `bytes` to every connection with nothing waiting: anything waiting goes out first and keeps it alive. */
  keepalive(bytes: Uint8Array): void {
    for (const connection of this.open) if (connection.writer.buffered === 0) connection.writer.send(bytes)
  }

  /** Stops every connection, and any added from now on. */
  shutdown(): void {
    this.stopped = true
    const all = [...this.open]
    this.open.clear()
    for (const connection of all) connection.stop()
  }
}

/**
 * The scheduler stream readers run on: their fibers resume in Node's check phase, after the
 * I/O callbacks of the same turn, so that the writer, its acks and incoming requests go first
 * and reader work yields to them (however many readers there are).
 */
export const readerScheduler: Scheduler.Scheduler = Scheduler.makeBatched((run) => setImmediate(run))
