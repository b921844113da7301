/**
 * The Server-Sent Events wire of `/api/v1/stream`: one frame per feed item. Event frames
 * are `id:` + `data:` (ChangeEvent JSON), as the original's clients expect; ids carry the
 * epoch so a browser's automatic reconnect is epoch-checked.
 */
import type { LiveBatch, LiveRun } from "../ChangeFeed.js"
import { cursorPrefix, formatCursor } from "../Domain/Cursor.js"
import { caughtUpText, failureText, progressText, resetText, type StreamFailure } from "../Domain/FeedFrame.js"
import type { LineItem } from "../Domain/FeedItem.js"

export const keepaliveFrame = ": keepalive\n\n"

/**
 * Ends a stream the feed could not go on serving (a corrupt journal line, an I/O error): the
 * error as the API answers it (`_tag`, `message`, and `file` and `offset` for a corrupt line).
 * Named `feed_error` rather than `error`, which is `EventSource`'s own event for a lost connection.
 */
export const feedErrorFrame = (failure: typeof StreamFailure.Type): string =>
  `event: feed_error\ndata: ${failureText(failure)}\n\n`

/** Opens every stream: how long a browser's `EventSource` waits before it reconnects (its default is ~3 s). */
export const retryFrame = (ms: number): string => `retry: ${ms}\n\n`

/** The frame of an item that is not a change (ASCII text). */
const markerFrame = (epoch: string, item: Exclude<LineItem, { readonly _tag: "Change" }>): string => {
  switch (item._tag) {
    case "Reset":
      return `id: ${formatCursor(epoch, item.continueFrom)}\ndata: ${resetText(item)}\n\n`
    case "CaughtUp":
      return `event: caught_up\nid: ${formatCursor(epoch, item.seq)}\ndata: ${caughtUpText(item.seq)}\n\n`
    case "Progress":
      return `event: progress\nid: ${formatCursor(epoch, item.seq)}\ndata: ${progressText(item.seq)}\n\n`
  }
}

/** Writes what follows a change's body in its frame (the JSON's closing brace, the frame's end); answers the end. */
const closeChange = (frame: Uint8Array, at: number): number => {
  frame[at] = 0x7d // }
  frame[at + 1] = 0x0a
  frame[at + 2] = 0x0a
  return at + 3
}

/** A batch's frames, made once: every event's frame after the other, and where each starts. */
interface BatchFrames {
  readonly bytes: Uint8Array
  /** `starts[i]` is where event `i`'s frame starts; `starts[n]` is the end. */
  readonly starts: Int32Array
}

/**
 * Renders feed items to the bytes of their SSE frames. A change's `data:` is its body copied from
 * its journal line, and the closing brace: the JSON is neither parsed nor encoded again, whether
 * it came from the journal or live from the writer.
 *
 * A live run (the rest of a broadcast batch, as an unfiltered reader at the tail takes it) is a
 * view of the batch's frames, made once into one buffer for every connection: no copy per
 * connection, whatever the batch's size. Anything else (markers, replayed events, a filtered
 * reader's events) is rendered into a buffer of the connection's own, one per stretch of items.
 */
export const makeFrameEncoder = (epoch: string) => {
  const idPrefix = `id: ${cursorPrefix(epoch)}`
  /** What precedes a change's body in its frame. */
  const changeHead = (seq: number): string => `${idPrefix}${seq}\ndata: `
  const batches = new WeakMap<LiveBatch<unknown>, BatchFrames>()

  const batchFrames = (batch: LiveBatch<unknown>): BatchFrames => {
    const made = batches.get(batch)
    if (made !== undefined) return made
    const items = batch.items
    const starts = new Int32Array(items.length + 1)
    let size = 0
    for (let i = 0; i < items.length; i++) {
      starts[i] = size
      size += changeHead(batch.first + i).length + items[i]!.line.body.length + 3
    }
    starts[items.length] = size
    // A buffer of its own rather than a slice of Node's shared pool: it is kept as long as the batch.
    const bytes = Buffer.allocUnsafeSlow(size)
    for (let i = 0; i < items.length; i++) {
      const at = starts[i]! + bytes.write(changeHead(batch.first + i), starts[i]!, "latin1")
      const body = items[i]!.line.body
      bytes.set(body, at)
      closeChange(bytes, at + body.length)
    }
    const frames = { bytes, starts }
    batches.set(batch, frames)
    return frames
  }

  /** Items `from` to `to` (none of them a live run) rendered into one buffer. */
  const render = (items: ReadonlyArray<LineItem | LiveRun>, from: number, to: number): Uint8Array => {
    const heads: Array<string> = new Array(to - from)
    let size = 0
    for (let i = from; i < to; i++) {
      const item = items[i] as LineItem
      const head = item._tag === "Change" ? changeHead(item.seq) : markerFrame(epoch, item)
      heads[i - from] = head
      size += head.length + (item._tag === "Change" ? item.body.length + 3 : 0)
    }
    const out = Buffer.allocUnsafe(size)
    let at = 0
    for (let i = from; i < to; i++) {
      at += out.write(heads[i - from]!, at, "latin1")
      const item = items[i] as LineItem
      if (item._tag === "Change") {
        out.set(item.body, at)
        at = closeChange(out, at + item.body.length)
      }
    }
    return out
  }

  return (items: ReadonlyArray<LineItem | LiveRun>): Array<Uint8Array> => {
    const out: Array<Uint8Array> = []
    let from = 0
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!
      if (item._tag !== "LiveRun") continue
      if (from < i) out.push(render(items, from, i))
      from = i + 1
      const frames = batchFrames(item.batch)
      const index = item.from - item.batch.first
      out.push(index === 0 ? frames.bytes : frames.bytes.subarray(frames.starts[index]!))
    }
    if (from < items.length) out.push(render(items, from, items.length))
    return out
  }
}
