/**
 * The send-time stamps of the fan-out shapes, and how subscribers find them. A producer stamps
 * each event with when it sent it, in the event's `message_id` (`m<i>_<µs since the epoch>`);
 * every subscriber, SSE or `XREAD BLOCK`, finds the stamps in the bytes it receives with the same
 * scanner, so the two sides' clients do the same work per event.
 *
 * The subscribers share the machine's two cores with the server they measure: whatever a
 * subscriber spends on an event, the server does not get. The scanner thus looks at each chunk
 * once, as latin1 text (byte for character), with the engine's own string search, and joins no
 * big chunks: a stamp cut by a chunk's end is finished from the next chunk's first bytes.
 */
import { clock, durableEvent } from "./common.js"

/** Bench event `i` stamped with the time it is sent: its `message_id` is `m<i>_<µs since the epoch>`. */
export const stamped = (i: number, micros: number) => ({ ...durableEvent(i), message_id: `m${i}_${micros}` })

const MARKER = 'message_id":"m'
const DIGIT_0 = 0x30
const UNDERSCORE = 0x5f
/** More than the text a stamp takes after its marker (an index, `_`, the µs since the epoch, the quote). */
const STAMP_ROOM = 48

export type OnStamp = (index: number, sentMicros: number, at: number) => void

/**
 * The stamp whose marker is at `found` in `text`: calls `onEvent` if it is one (an event with
 * `m<i>` alone, as the producer's warm-up request sends, is not counted) and answers where it
 * ends, or -1 when its digits run to the end of `text`, so that it may go on in the next chunk.
 */
const stampAt = (text: string, found: number, onEvent: OnStamp, at: number): number => {
  let p = found + MARKER.length
  let index = 0
  for (; p < text.length; p++) {
    const digit = text.charCodeAt(p) - DIGIT_0
    if (digit < 0 || digit > 9) break
    index = index * 10 + digit
  }
  let micros = 0
  let q = p + 1
  for (; q < text.length; q++) {
    const digit = text.charCodeAt(q) - DIGIT_0
    if (digit < 0 || digit > 9) break
    micros = micros * 10 + digit
  }
  if (q >= text.length) return -1
  if (text.charCodeAt(p) === UNDERSCORE && q > p + 1) onEvent(index, micros, at)
  return q
}

/**
 * Scans a byte stream for stamped events: calls `onEvent(index, sentMicros, at)` for each, with
 * `at` the time the chunk arrived, in the order they come.
 */
export const stampScanner = (onEvent: OnStamp) => {
  // The last chunk's end from where a marker, or the stamp after one, may go on in this chunk.
  let carry = ""
  return (chunk: Buffer): void => {
    const at = clock()
    let text = chunk.toString("latin1")
    let from = 0
    if (carry !== "") {
      if (text.length < STAMP_ROOM) text = carry + text
      else {
        // Only a marker that begins in the carry is finished here (it has all it needs from this
        // chunk's first bytes, or is no stamp); one wholly in this chunk is found below, once.
        const head = carry + text.slice(0, STAMP_ROOM)
        const found = head.indexOf(MARKER)
        if (found >= 0 && found < carry.length) from = Math.max(0, stampAt(head, found, onEvent, at) - carry.length)
      }
      carry = ""
    }
    for (;;) {
      const found = text.indexOf(MARKER, from)
      if (found < 0) break
      const end = stampAt(text, found, onEvent, at)
      if (end < 0) {
        carry = text.slice(found)
        return
      }
      from = end
    }
    // Whatever could begin a marker goes on into the next chunk.
    const keep = Math.max(from, text.length - MARKER.length + 1)
    if (keep < text.length) carry = text.slice(keep)
  }
}
