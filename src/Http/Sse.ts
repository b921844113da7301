/**
 * The Server-Sent Events wire of `/api/v1/stream`: one frame per feed item. Event frames
 * are `id:` + `data:` (ChangeEvent JSON), as the original's clients expect; ids carry the
 * epoch so a browser's automatic reconnect is epoch-checked.
 */
import { cursorPrefix, formatCursor } from "../Domain/Cursor.js"
import { caughtUpText, failureText, progressText, resetText, type StreamFailure } from "../Domain/FeedFrame.js"
import type { LineChange, LineItem } from "../Domain/FeedItem.js"

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

/**
 * Renders a run of feed items to the bytes of their SSE frames, in one buffer. A change's
 * `data:` is its body copied from its journal line, and the closing brace: the JSON is neither
 * parsed nor encoded again, whether it came from the journal or live from the writer. The frame
 * of a live event, which every connection sends, is made once and shared.
 */
export const makeFrameEncoder = (epoch: string) => {
  const idPrefix = `id: ${cursorPrefix(epoch)}`
  /** What precedes a change's body in its frame. */
  const changeHead = (item: LineChange): string => `${idPrefix}${item.seq}\ndata: `
  const shared = new WeakMap<LineChange, Uint8Array>()
  /** A change's frame on its own. */
  const changeFrame = (item: LineChange): Uint8Array => {
    const head = changeHead(item)
    // A buffer of its own rather than a slice of Node's shared pool: copying from a pool slice
    // into each connection's frames was measured at more than twice the cost.
    const frame = new Uint8Array(head.length + item.body.length + 3)
    const at = Buffer.from(frame.buffer).write(head, 0, "latin1")
    frame.set(item.body, at)
    closeChange(frame, at + item.body.length)
    return frame
  }
  return (items: ReadonlyArray<LineItem>): Uint8Array => {
    // Each item's bytes: a live event's shared frame, or an ASCII head (a marker frame, or the
    // `id:` and `data:` before a replayed event's body, which is copied after it).
    const heads: Array<Uint8Array | string> = new Array(items.length)
    let size = 0
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!
      if (item._tag !== "Change") {
        heads[i] = markerFrame(epoch, item)
      } else if (item.live === true) {
        let frame = shared.get(item)
        if (frame === undefined) {
          frame = changeFrame(item)
          shared.set(item, frame)
        }
        heads[i] = frame
      } else {
        heads[i] = changeHead(item)
        size += item.body.length + 3
      }
      size += heads[i]!.length
    }
    if (items.length === 1 && typeof heads[0] !== "string") return heads[0]!
    const out = Buffer.allocUnsafe(size)
    let at = 0
    for (let i = 0; i < items.length; i++) {
      const head = heads[i]!
      if (typeof head !== "string") {
        out.set(head, at)
        at += head.length
        continue
      }
      at += out.write(head, at, "latin1")
      const item = items[i]!
      if (item._tag === "Change") {
        out.set(item.body, at)
        at = closeChange(out, at + item.body.length)
      }
    }
    return out
  }
}
