/**
 * The sending side of the stream connections. The frame pool: a buffer takes another frame only
 * once the socket has written the one it held, frames too small or too large for it are not
 * pooled, and only so many bytes of buffers wait in it. (Pooled frames behind a client that stops
 * reading, end to end, are in `Fanout.test.ts`.) The writer, on a real server on loopback read
 * byte for byte: a chunked buffer goes out as one well-formed chunk in order with the response's
 * own writes, through the response before its head is out, and as plain bytes to HTTP/1.0; an
 * offer of several buffers is taken only within the connection's budget.
 */
import * as Http from "node:http"
import * as Net from "node:net"
import { describe, it, assert } from "@effect/vitest"
import { chunkedBuffer, ConnectionWriter, FramePool } from "../../src/Http/Connection.js"

const KiB = 1024

/** A chunked buffer holding `text`. */
const chunked = (text: string): Buffer => {
  const bytes = chunkedBuffer(Buffer.byteLength(text))
  bytes.write(text)
  return bytes
}

/**
 * Serves one request with `respond` (given a writer on its response, which it ends), and answers
 * the raw bytes a client sending `request` over a plain socket reads until the server closes.
 */
const exchange = async (
  request: string,
  respond: (writer: ConnectionWriter, response: Http.ServerResponse) => void
) => {
  const server = Http.createServer((_req, response) => {
    response.writeHead(200, { "content-type": "text/event-stream", connection: "close" })
    respond(new ConnectionWriter(response, 1024 * KiB, () => {}), response)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  try {
    const { port } = server.address() as Net.AddressInfo
    return await new Promise<string>((resolve, reject) => {
      const parts: Array<Buffer> = []
      const socket = Net.connect(port, "127.0.0.1", () => socket.write(request))
      socket.on("data", (bytes) => parts.push(bytes))
      socket.on("end", () => resolve(Buffer.concat(parts).toString("latin1")))
      socket.on("error", reject)
    })
  } finally {
    server.close()
  }
}

const GET_1_1 = "GET / HTTP/1.1\r\nhost: x\r\n\r\n"

/** The body of a chunked answer, every chunk's size checked against its bytes; fails on any malformed chunk. */
const dechunk = (answer: string): { readonly chunks: Array<string>; readonly body: string } => {
  let at = answer.indexOf("\r\n\r\n") + 4
  const chunks: Array<string> = []
  for (;;) {
    const line = answer.indexOf("\r\n", at)
    assert.isAbove(line, at - 1, `a chunk size line at ${at}`)
    const size = Number.parseInt(answer.slice(at, line), 16)
    assert.isFalse(Number.isNaN(size), `a hex chunk size at ${at}: ${JSON.stringify(answer.slice(at, line))}`)
    at = line + 2
    if (size === 0) break
    chunks.push(answer.slice(at, at + size))
    assert.strictEqual(answer.slice(at + size, at + size + 2), "\r\n", `CRLF after the chunk at ${at}`)
    at += size + 2
  }
  assert.strictEqual(answer.slice(at), "\r\n", "the last chunk ends the answer")
  return { chunks, body: chunks.join("") }
}

describe("ConnectionWriter", () => {
  it("a_chunked_buffer_goes_out_as_one_chunk_in_order_with_the_responses_own_writes", async () => {
    const answer = await exchange(GET_1_1, (writer, response) => {
      writer.send(Buffer.from("retry: 1\n\n"))
      assert.isTrue(writer.offer([chunked("id: 1\ndata: {}\n\n")]))
      // Several waiting together go out in one corked write, each chunked buffer a chunk of its own.
      writer.queue(Buffer.from(": keepalive\n\n"))
      writer.queue(chunked("id: 2\ndata: {}\n\n"))
      writer.queue(chunked("id: 3\ndata: {}\n\n"))
      writer.queue(Buffer.from("event: caught_up\n\n"))
      writer.flush()
      response.end()
    })
    const { body, chunks } = dechunk(answer)
    assert.strictEqual(
      body,
      "retry: 1\n\nid: 1\ndata: {}\n\n: keepalive\n\nid: 2\ndata: {}\n\nid: 3\ndata: {}\n\nevent: caught_up\n\n"
    )
    assert.include(chunks, "id: 1\ndata: {}\n\n", "the chunked buffer is a chunk whole")
    assert.include(chunks, "id: 3\ndata: {}\n\n")
  })

  it("a_chunked_buffer_written_before_the_head_is_out_goes_through_the_response", async () => {
    const answer = await exchange(GET_1_1, (writer, response) => {
      writer.send(chunked("id: 1\ndata: {}\n\n"))
      writer.send(chunked("id: 2\ndata: {}\n\n"))
      response.end()
    })
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/)
    assert.strictEqual(dechunk(answer).body, "id: 1\ndata: {}\n\nid: 2\ndata: {}\n\n")
  })

  it("an_offer_of_several_buffers_is_taken_within_the_budget_only_and_one_buffer_larger_alone", async () => {
    const answer = await exchange(GET_1_1, (_writer, response) => {
      const writer = new ConnectionWriter(response, 32, () => {})
      const frame = (text: string) => Buffer.from(`data: ${text}\n\n`)
      assert.isFalse(writer.offer([frame("1234567890"), frame("1234567890")]), "36 bytes of two buffers over 32")
      assert.isTrue(writer.offer([frame("a frame of more than 32 bytes alone")]), "one buffer over 32, nothing waiting")
      assert.isTrue(writer.offer([frame("1"), frame("2")]), "two buffers within 32")
      response.end()
    })
    assert.strictEqual(dechunk(answer).body, "data: a frame of more than 32 bytes alone\n\ndata: 1\n\ndata: 2\n\n")
  })

  it("an_http_1_0_client_gets_a_chunked_buffer_as_plain_bytes", async () => {
    const answer = await exchange("GET / HTTP/1.0\r\n\r\n", (writer, response) => {
      writer.send(Buffer.from("retry: 1\n\n"))
      writer.send(chunked("id: 1\ndata: {}\n\n"))
      response.end()
    })
    assert.notMatch(answer, /transfer-encoding/i)
    assert.strictEqual(answer.slice(answer.indexOf("\r\n\r\n") + 4), "retry: 1\n\nid: 1\ndata: {}\n\n")
  })
})

describe("FramePool", () => {
  it("a_buffer_takes_another_frame_only_once_its_frame_is_written", () => {
    const pool = new FramePool(16 * KiB, 1024 * KiB, 1024 * KiB)
    const first = pool.alloc(40 * KiB)
    const second = pool.alloc(40 * KiB)
    assert.notStrictEqual(second.buffer, first.buffer, "a frame not yet written keeps its buffer")
    assert.isTrue(pool.owns(first))
    pool.written(first)
    assert.isFalse(pool.owns(first), "a frame written is no longer out")
    const third = pool.alloc(30 * KiB)
    assert.strictEqual(third.buffer, first.buffer, "the written frame's buffer takes the next frame that fits")
    assert.strictEqual(third.length, 30 * KiB)
    assert.notStrictEqual(pool.alloc(30 * KiB).buffer, first.buffer, "while it is out again, it takes no other")
  })

  it("frames_too_small_or_too_large_for_the_pool_are_not_pooled", () => {
    const pool = new FramePool(16 * KiB, 64 * KiB, 1024 * KiB)
    const small = pool.alloc(1 * KiB)
    const large = pool.alloc(65 * KiB)
    assert.isFalse(pool.owns(small))
    assert.isFalse(pool.owns(large))
    assert.strictEqual(large.length, 65 * KiB)
  })

  it("at_most_the_free_bytes_of_buffers_wait_for_a_frame", () => {
    // Buffers are rounded up to 64 KiB: room for two.
    const pool = new FramePool(16 * KiB, 1024 * KiB, 128 * KiB)
    const frames = [pool.alloc(64 * KiB), pool.alloc(64 * KiB), pool.alloc(64 * KiB)]
    for (const frame of frames) pool.written(frame)
    const again = [pool.alloc(64 * KiB), pool.alloc(64 * KiB), pool.alloc(64 * KiB)]
    const reused = again.filter((frame) => frames.some((old) => old.buffer === frame.buffer))
    assert.strictEqual(reused.length, 2)
  })
})
