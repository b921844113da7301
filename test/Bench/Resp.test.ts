/**
 * The benchmark's RESP reply counter: replies are counted at their boundaries whatever the
 * nesting and however the bytes are split between chunks.
 */
import { describe, expect, it } from "vitest"
import fc from "fast-check"
import { encodeCommand, ReplyCounter } from "../../bench/resp.js"

/** An XREAD-shaped reply: one stream, `entries` entries of one field each. */
const xreadReply = (entries: number): string => {
  let text = "*1\r\n*2\r\n$3\r\nkey\r\n*" + entries + "\r\n"
  for (let i = 1; i <= entries; i++) {
    const payload = `{"seq":${i},"text":"a\r\n*9\r\n$5"}`
    text += `*2\r\n$${String(i).length + 2}\r\n${i}-0\r\n*2\r\n$1\r\nd\r\n$${Buffer.byteLength(payload)}\r\n${payload}\r\n`
  }
  return text
}

const REPLIES: ReadonlyArray<string> = [
  "+OK\r\n",
  "$8\r\n1764-0\r\n\r\n",
  ":42\r\n",
  "-ERR wrong number of arguments\r\n",
  "$-1\r\n",
  "*-1\r\n",
  "*0\r\n",
  "$0\r\n\r\n",
  xreadReply(3),
  "*2\r\n*1\r\n*0\r\n:1\r\n"
]

const countIn = (bytes: Buffer, cuts: ReadonlyArray<number>): ReplyCounter => {
  const counter = new ReplyCounter()
  let from = 0
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    counter.feed(bytes.subarray(from, cut))
    from = cut
  }
  counter.feed(bytes.subarray(from))
  return counter
}

describe("ReplyCounter", () => {
  it("counts_each_reply_once_whatever_its_nesting", () => {
    const counter = new ReplyCounter()
    expect(counter.feed(Buffer.from(REPLIES.join("")))).toBe(REPLIES.length)
    expect(counter.errors).toBe(1)
    expect(counter.firstError).toBe("ERR wrong number of arguments")
  })

  it("counts_the_same_replies_however_the_bytes_are_split_into_chunks", () => {
    const bytes = Buffer.from(REPLIES.join(""))
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 40 }), (cuts) => {
        const counter = countIn(bytes, cuts)
        expect(counter.replies).toBe(REPLIES.length)
        expect(counter.errors).toBe(1)
        expect(counter.firstError).toBe("ERR wrong number of arguments")
      })
    )
  })

  it("does_not_count_a_reply_before_its_last_byte", () => {
    const bytes = Buffer.from(xreadReply(2))
    const counter = new ReplyCounter()
    expect(counter.feed(bytes.subarray(0, bytes.length - 1))).toBe(0)
    expect(counter.feed(bytes.subarray(bytes.length - 1))).toBe(1)
  })

  it("reports_each_array_header_with_its_depth_so_an_xread_reader_can_count_entries", () => {
    const counter = new ReplyCounter()
    const headers: Array<readonly [number, number]> = []
    counter.onArray = (depth, length) => headers.push([depth, length])
    counter.feed(Buffer.from(xreadReply(3)))
    expect(headers.filter(([depth]) => depth === 2)).toEqual([[2, 3]])
    expect(headers[0]).toEqual([0, 1])
  })

  it("encodes_a_command_as_an_array_of_bulk_strings", () => {
    expect(encodeCommand(["XADD", "k", "*", "d", "é"]).toString()).toBe(
      "*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$1\r\nd\r\n$2\r\né\r\n"
    )
  })
})
