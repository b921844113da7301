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
 *
 * Frames are rendered into buffers of the server's `FramePool` (Node connections only), each back
 * in the pool once the socket has written it: a replay makes no new buffer per frame. A live
 * batch's frames, shared by every connection at the tail, are made once as an HTTP/1.1 chunk
 * (`chunkedBuffer`) that each connection writes to its socket whole, in one write.
 */
import type { ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { Effect, Scheduler } from "effect"

/** Room before a `chunkedBuffer`'s bytes for the chunk's size line: 8 hex digits and CRLF. */
const CHUNK_HEAD_ROOM = 10

/** The chunk a `chunkedBuffer`'s bytes go out as, kept by the bytes it frames. */
const chunks = new WeakMap<Uint8Array, Uint8Array>()

/**
 * A buffer of `size` bytes (to be filled) that a chunked response sends as one HTTP/1.1 chunk
 * straight to its socket, size line and CRLF around it in the same memory: one write of one
 * buffer, where Node's response would make four (the size, a CRLF, the bytes, a CRLF) and a
 * `writev` of them on the next tick. Broadcast frames shared by many connections are made so.
 * Sent on a response that is not chunked, it goes out as plain bytes.
 */
export const chunkedBuffer = (size: number): Buffer => {
  // A chunk of size 0 would end the response.
  if (size === 0) return Buffer.alloc(0)
  const head = `${size.toString(16)}\r\n`
  const memory = Buffer.allocUnsafeSlow(CHUNK_HEAD_ROOM + size + 2)
  memory.write(head, CHUNK_HEAD_ROOM - head.length, "latin1")
  memory[CHUNK_HEAD_ROOM + size] = 0x0d
  memory[CHUNK_HEAD_ROOM + size + 1] = 0x0a
  const bytes = memory.subarray(CHUNK_HEAD_ROOM, CHUNK_HEAD_ROOM + size)
  chunks.set(bytes, memory.subarray(CHUNK_HEAD_ROOM - head.length))
  return bytes
}

/** What of Node's response (not in its types) tells whether a chunk may go straight to its socket. */
interface ResponseState {
  readonly chunkedEncoding?: boolean
  /** The head has gone to the socket: bytes written to the socket now follow it. */
  readonly _headerSent?: boolean
}

/** A buffer handed out by a `FramePool` is rounded up to a multiple of this, so that it fits the frames that follow. */
const POOL_GRAIN = 64 * 1024

/**
 * Buffers the stream connections of a server render their frames into (`FrameAlloc`). A buffer
 * goes back for another frame only once the socket has written its frame (the write's callback):
 * Node's socket writes a frame from the buffer itself, maybe long after `write` returned. At most
 * `maxFreeBytes` of buffers wait here, shared by every connection, so idle connections hold none;
 * frames under `minBytes` (Node's own pool takes them) or over `maxBytes` are not pooled.
 */
export class FramePool {
  private readonly free: Array<ArrayBuffer> = []
  private freeBytes = 0
  /** The memory of the frames out of the pool now (a frame never written is dropped with its connection). */
  private readonly lent = new WeakSet<ArrayBufferLike>()

  constructor(
    private readonly minBytes: number,
    private readonly maxBytes: number,
    private readonly maxFreeBytes: number
  ) {}

  /** A buffer of `size` bytes to render frames into, to be handed to `written` once the socket has written it. */
  readonly alloc = (size: number): Buffer => {
    if (size < this.minBytes || size > this.maxBytes) return Buffer.allocUnsafe(size)
    let memory: ArrayBuffer | undefined
    // The last one back first: the likeliest to be in the CPU's caches still.
    for (let i = this.free.length - 1; i >= 0; i--) {
      if (this.free[i]!.byteLength < size) continue
      memory = this.free[i]!
      this.free.splice(i, 1)
      this.freeBytes -= memory.byteLength
      break
    }
    memory ??= Buffer.allocUnsafeSlow(Math.ceil(size / POOL_GRAIN) * POOL_GRAIN).buffer as ArrayBuffer
    this.lent.add(memory)
    return Buffer.from(memory, 0, size)
  }

  /** Whether `bytes` is a frame of this pool's, out now. */
  owns(bytes: Uint8Array): boolean {
    return this.lent.has(bytes.buffer)
  }

  /** The socket has written `bytes`, a frame of this pool's: its buffer may take another. */
  written(bytes: Uint8Array): void {
    const memory = bytes.buffer as ArrayBuffer
    if (!this.lent.delete(memory) || this.freeBytes + memory.byteLength > this.maxFreeBytes) return
    this.free.push(memory)
    this.freeBytes += memory.byteLength
  }
}

export class ConnectionWriter {
  private pending: Array<Uint8Array> = []
  private pendingBytes = 0
  private waiting: (() => void) | undefined
  private ended = false

  /** The response's socket, which chunks go straight to (its own 'drain' then says when there is room again). */
  private readonly socket: Socket | null

  constructor(
    private readonly response: ServerResponse,
    readonly maxBufferedBytes: number,
    /** Told of every change in the bytes waiting here (the connections' gauge). */
    private readonly onBuffered: (delta: number) => void,
    /** Where the frames sent here that are pooled go back to once written. */
    private readonly pool?: FramePool | undefined
  ) {
    this.socket = response.socket
    response.on("drain", this.write)
    this.socket?.on("drain", this.write)
  }

  /** Whether the socket has more than it takes now (written through the response or straight to it). */
  get needsDrain(): boolean {
    return this.response.writableNeedDrain || (this.socket?.writableNeedDrain ?? false)
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
   * Sends all of `frames` after everything before it, in one write, if they fit now (several
   * buffers only within the budget: each may be one it lets in alone); otherwise takes none of
   * them (answers false), for the connection's reader to send them when there is room.
   */
  offer(frames: ReadonlyArray<Uint8Array>): boolean {
    let bytes = 0
    for (const frame of frames) bytes += frame.length
    const fits = frames.length === 1 ? this.fits(bytes) : this.pendingBytes + bytes <= this.maxBufferedBytes
    if (this.ended || !fits) return false
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
    if (!this.needsDrain) this.write()
  }

  /** Lets go of what waits (the connection is over); the response is the caller's to end. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.response.off("drain", this.write)
    this.socket?.off("drain", this.write)
    this.release()
    this.wake()
  }

  private readonly write = (): void => {
    if (this.ended || this.pending.length === 0) return
    const out = this.pending
    this.release()
    if (out.length === 1) {
      this.writeOne(out[0]!)
    } else {
      this.response.cork()
      for (const bytes of out) this.writeOne(bytes)
      this.response.uncork()
    }
    // Emptied once written. Every connection always holds an array of what waits, so V8 soon
    // allocates them in the old generation (allocation-site pretenuring), and an old array that is
    // garbage keeps what it points to alive through young collections until the next full one:
    // each write's frames, and the buffers they view, were copied into the old generation. With
    // 1,000 subscribers at 1,000 ev/s: ~1.45 MB promoted a young collection, ~0.3 MB emptied, and
    // no full collection (a ~40 ms stall of every connection) in a 5 s run where there was one.
    out.length = 0
    this.wake()
  }

  private writeOne(bytes: Uint8Array): void {
    const chunk = chunks.get(bytes)
    if (chunk !== undefined && this.chunksToSocket()) {
      this.socket!.write(chunk)
      return
    }
    const pool = this.pool
    if (pool === undefined || !pool.owns(bytes)) {
      this.response.write(bytes)
      return
    }
    // Back to the pool only once written: after an error the socket may not be done with it (it is then dropped).
    this.response.write(bytes, (error) => {
      if (error == null) pool.written(bytes)
    })
  }

  /**
   * Whether a chunk may go straight to the socket: the response is chunked, its head has gone out
   * (the first frame went through the response), and the socket serves it, not a pipelined other.
   */
  private chunksToSocket(): boolean {
    const socket = this.socket
    const state = this.response as ServerResponse & ResponseState
    return (
      socket !== null &&
      !socket.destroyed &&
      state.chunkedEncoding === true &&
      state._headerSent === true &&
      (socket as Socket & { _httpMessage?: unknown })._httpMessage === this.response
    )
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
