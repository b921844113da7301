/**
 * The fan-out subscribers' stamp scanner: every stamped event is found once, in order, however
 * the bytes are split into chunks, on the SSE wire and on the RESP wire alike.
 */
import { describe, expect, it } from "vitest"
import fc from "fast-check"
import { durableEvent, sessionOf } from "../../bench/common.js"
import { stamped, stampScanner } from "../../bench/stamps.js"

const MICROS = 1_796_000_000_000_000

/** SSE frames of events `from` to `to`, each stamped `MICROS + i`, with one unstamped (warm-up) event first. */
const sseFrames = (from: number, to: number): string => {
  let text = `retry: 1000\n\nid: e-0\ndata: ${JSON.stringify({ seq: 0, event: durableEvent(7) })}\n\n`
  for (let i = from; i < to; i++) {
    const change = {
      seq: i + 1,
      ts: "2026-11-27T10:00:00.123Z",
      session_id: sessionOf(i),
      event: stamped(i, MICROS + i)
    }
    text += `id: e-${i + 1}\ndata: ${JSON.stringify(change)}\n\n`
  }
  return text
}

/** The same events as an `XREAD` reply carries them: each line a bulk string. */
const respEntries = (from: number, to: number): string => {
  let text = ""
  for (let i = from; i < to; i++) {
    const line = JSON.stringify({ seq: i + 1, session_id: sessionOf(i), event: stamped(i, MICROS + i) })
    text += `*2\r\n$${String(i + 1).length}\r\n${i + 1}\r\n*2\r\n$1\r\nd\r\n$${Buffer.byteLength(line)}\r\n${line}\r\n`
  }
  return text
}

const scanIn = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<readonly [number, number]> => {
  const seen: Array<readonly [number, number]> = []
  const scan = stampScanner((index, micros) => seen.push([index, micros]))
  let from = 0
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    scan(bytes.subarray(from, cut))
    from = cut
  }
  scan(bytes.subarray(from))
  return seen
}

const expected = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, k) => [from + k, MICROS + from + k])

describe("stampScanner", () => {
  it("finds_each_stamped_event_once_in_order_and_skips_an_unstamped_one", () => {
    expect(scanIn(Buffer.from(sseFrames(0, 5)), [])).toEqual(expected(0, 5))
  })

  it("finds_the_same_events_however_the_bytes_are_split_into_chunks", () => {
    const bytes = Buffer.from(sseFrames(10, 16) + respEntries(16, 20))
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 60 }), (cuts) => {
        expect(scanIn(bytes, cuts)).toEqual(expected(10, 20))
      })
    )
  })

  it("finds_a_stamp_cut_into_chunks_of_one_byte", () => {
    const bytes = Buffer.from(sseFrames(0, 3))
    expect(
      scanIn(
        bytes,
        Array.from({ length: bytes.length }, (_, i) => i)
      )
    ).toEqual(expected(0, 3))
  })

  it("calls_back_with_the_time_the_chunk_arrived", () => {
    const times: Array<number> = []
    const scan = stampScanner((_index, _micros, at) => times.push(at))
    const before = performance.timeOrigin + performance.now()
    scan(Buffer.from(sseFrames(0, 2)))
    expect(times).toHaveLength(2)
    expect(times[0]).toBe(times[1])
    expect(times[0]).toBeGreaterThanOrEqual(before)
  })
})
