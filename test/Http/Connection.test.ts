/**
 * The frame pool of the stream connections: a buffer takes another frame only once the socket has
 * written the one it held, frames too small or too large for it are not pooled, and only so many
 * bytes of buffers wait in it. (Pooled frames behind a client that stops reading, end to end, are
 * in `Fanout.test.ts`.)
 */
import { describe, it, assert } from "@effect/vitest"
import { FramePool } from "../../src/Http/Connection.js"

const KiB = 1024

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
