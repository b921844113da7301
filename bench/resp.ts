/**
 * A plain pipelined RESP client for the Redis baselines, costing Redis's side as little client
 * work as a benchmark client should: commands are encoded once into one buffer and written
 * together, and replies are counted, not decoded. `ReplyCounter` walks the reply bytes for the
 * boundaries of each reply (nested arrays, bulk strings skipped by their length) and keeps no
 * value but the text of the first error reply.
 */
import * as Net from "node:net"

const CRLF = "\r\n"

/** One command as a RESP array of bulk strings. */
export const encodeCommand = (args: ReadonlyArray<string | Buffer>): Buffer => {
  const parts: Array<Buffer> = [Buffer.from(`*${args.length}${CRLF}`)]
  for (const arg of args) {
    const bytes = typeof arg === "string" ? Buffer.from(arg) : arg
    parts.push(Buffer.from(`$${bytes.length}${CRLF}`), bytes, Buffer.from(CRLF))
  }
  return Buffer.concat(parts)
}

/** Commands encoded back to back into one buffer, for one pipelined write. */
export const encodeCommands = (commands: ReadonlyArray<ReadonlyArray<string | Buffer>>): Buffer =>
  Buffer.concat(commands.map(encodeCommand))

const CR = 0x0d
const LF = 0x0a
const MINUS = 0x2d

/** What the counter is in the middle of, between chunks. */
const enum State {
  /** At the type byte of the next element. */
  Type,
  /** In the length of an array (`*`) or bulk string (`$`) header. */
  Length,
  /** In a simple string, error or integer line, up to its LF. */
  Line,
  /** In a bulk string's body and its CRLF. */
  Body
}

/**
 * Counts complete RESP2 replies in a byte stream fed chunk by chunk. An element ends an open
 * aggregate when it is that aggregate's last; a reply is complete when no aggregate is open.
 */
export class ReplyCounter {
  /** Top-level replies completed so far. */
  replies = 0
  /** Top-level error replies (`-ERR ...`) so far. */
  errors = 0
  /** The text of the first error reply, if any. */
  firstError: string | undefined
  /** Called at each array header with its nesting depth (0 for a reply) and length. */
  onArray: ((depth: number, length: number) => void) | undefined
  private state = State.Type
  /** Elements still to come in each open aggregate, innermost last. */
  private readonly open: Array<number> = []
  private kind = 0
  private negative = false
  private length = 0
  private skip = 0
  private errorText: string | undefined

  /** Consumes `chunk`; answers how many replies it completed. */
  feed(chunk: Buffer): number {
    const before = this.replies
    const n = chunk.length
    let i = 0
    while (i < n) {
      switch (this.state) {
        case State.Type: {
          const kind = chunk[i++]!
          this.kind = kind
          if (kind === 0x2a /* * */ || kind === 0x24 /* $ */) {
            this.state = State.Length
            this.negative = false
            this.length = 0
          } else if (kind === 0x2b /* + */ || kind === 0x3a /* : */ || kind === MINUS) {
            this.state = State.Line
            if (kind === MINUS && this.open.length === 0 && this.firstError === undefined) this.errorText = ""
          } else {
            throw new Error(
              `RESP: unexpected type byte 0x${kind.toString(16)} (a RESP3 reply, or a desynchronised stream)`
            )
          }
          break
        }
        case State.Length: {
          const byte = chunk[i++]!
          if (byte === MINUS) this.negative = true
          else if (byte === CR) {
            // The LF is consumed with the body (bulk) or skipped below (array, null).
          } else if (byte === LF) {
            const length = this.negative ? -1 : this.length
            if (this.kind === 0x24 && length >= 0) {
              this.state = State.Body
              this.skip = length + 2
            } else if (this.kind === 0x2a && length > 0) {
              this.state = State.Type
              this.onArray?.(this.open.length, length)
              this.open.push(length)
            } else {
              // A null bulk, a null array or an empty array: a whole element.
              this.state = State.Type
              this.completed()
            }
          } else this.length = this.length * 10 + (byte - 0x30)
          break
        }
        case State.Line: {
          const end = chunk.indexOf(LF, i)
          const stop = end < 0 ? n : end
          if (this.errorText !== undefined) this.errorText += chunk.toString("latin1", i, stop)
          if (end < 0) {
            i = n
            break
          }
          i = end + 1
          this.state = State.Type
          if (this.kind === MINUS && this.open.length === 0) {
            this.errors++
            if (this.errorText !== undefined) {
              this.firstError = this.errorText.replace(/\r$/, "")
              this.errorText = undefined
            }
          }
          this.completed()
          break
        }
        case State.Body: {
          const take = Math.min(this.skip, n - i)
          i += take
          this.skip -= take
          if (this.skip === 0) {
            this.state = State.Type
            this.completed()
          }
          break
        }
      }
    }
    return this.replies - before
  }

  private completed(): void {
    const open = this.open
    while (open.length > 0) {
      const last = open.length - 1
      if (--open[last]! > 0) return
      open.pop()
    }
    this.replies++
  }
}

/**
 * One connection to Redis. `send` writes pre-encoded commands and resolves once `replies`
 * more replies have arrived, in order with earlier sends; `onChunk` sees every reply byte first
 * (for a caller that scans them, as the fan-out subscribers do).
 */
export class RespClient {
  private readonly counter = new ReplyCounter()
  private readonly waiting: Array<{ remaining: number; resolve: () => void }> = []
  private failure: Error | undefined
  onChunk: ((chunk: Buffer) => void) | undefined

  private constructor(private readonly socket: Net.Socket) {
    socket.setNoDelay(true)
    socket.on("data", (chunk: Buffer) => {
      this.onChunk?.(chunk)
      let done = this.counter.feed(chunk)
      while (done > 0 && this.waiting.length > 0) {
        const head = this.waiting[0]!
        const take = Math.min(done, head.remaining)
        head.remaining -= take
        done -= take
        if (head.remaining === 0) {
          this.waiting.shift()
          head.resolve()
        }
      }
    })
    socket.on("error", (error) => (this.failure = error))
  }

  static connect(port: number, host = "127.0.0.1"): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = Net.connect(port, host)
      socket.once("connect", () => resolve(new RespClient(socket)))
      socket.once("error", reject)
    })
  }

  /** Error replies so far, and the first one's text. */
  get errors(): { readonly count: number; readonly first: string | undefined } {
    return { count: this.counter.errors, first: this.counter.firstError }
  }

  /** Calls `hook` at each array header of the replies from now on, until the answered function is called. */
  arrays(hook: (depth: number, length: number) => void): () => void {
    this.counter.onArray = hook
    return () => {
      this.counter.onArray = undefined
    }
  }

  send(commands: Buffer, replies: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure)
    return new Promise((resolve) => {
      this.waiting.push({ remaining: replies, resolve })
      this.socket.write(commands)
    })
  }

  /** Sends commands and fails if any of their replies was an error. */
  async call(commands: Buffer, replies: number): Promise<void> {
    const before = this.counter.errors
    await this.send(commands, replies)
    if (this.counter.errors > before) throw new Error(`redis answered: ${this.counter.firstError ?? "an error"}`)
  }

  close(): void {
    this.socket.destroy()
  }
}
