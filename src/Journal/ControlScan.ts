/**
 * The search for control bytes over a whole chunk of a journal, 16 bytes at a time: a reader
 * looks at every byte of what it reads for a byte below 0x20 other than a newline (which would
 * break an SSE frame), and in JavaScript that look was the largest cost of reading a chunk in
 * place after the checksums. A WebAssembly function with 128-bit SIMD compares 16 bytes at once;
 * the bytes are copied into its memory first, a piece at a time, which costs less than the look
 * it saves. Where WebAssembly SIMD is not available, `controlByteIn` answers `undefined` and the
 * caller looks in JavaScript.
 *
 * The module, as assembled (`wat2wasm --enable-simd`) from:
 *
 * ```wat
 * (module
 *   (memory (export "memory") 4)
 *   ;; 1 if bytes p to p + n hold a byte below 0x20 that is not a newline, else 0.
 *   (func (export "control") (param $p i32) (param $n i32) (result i32)
 *     (local $end i32) (local $v v128) (local $b i32)
 *     (local.set $end (i32.add (local.get $p) (local.get $n)))
 *     (block $tail
 *       (loop $sixteen
 *         (br_if $tail (i32.gt_u (i32.add (local.get $p) (i32.const 16)) (local.get $end)))
 *         (local.set $v (v128.load (local.get $p)))
 *         (if (v128.any_true
 *               (v128.andnot
 *                 (i8x16.lt_u (local.get $v) (i8x16.splat (i32.const 0x20)))
 *                 (i8x16.eq (local.get $v) (i8x16.splat (i32.const 0x0a)))))
 *           (then (return (i32.const 1))))
 *         (local.set $p (i32.add (local.get $p) (i32.const 16)))
 *         (br $sixteen)))
 *     (block $done
 *       (loop $one
 *         (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
 *         (local.set $b (i32.load8_u (local.get $p)))
 *         (if (i32.and (i32.lt_u (local.get $b) (i32.const 0x20)) (i32.ne (local.get $b) (i32.const 0x0a)))
 *           (then (return (i32.const 1))))
 *         (local.set $p (i32.add (local.get $p) (i32.const 1)))
 *         (br $one)))
 *     (i32.const 0)))
 * ```
 */

const MODULE =
  "AGFzbQEAAAABBwFgAn9/AX8DAgEABQMBAAQHFAIGbWVtb3J5AgAHY29udHJvbAAACnwBegMBfwF7AX8gACABaiECAkADQCAAQRBqIAJL" +
  "DQEgAP0ABAAhAyADQSD9D/0mIANBCv0P/SP9T/1TBEBBAQ8LIABBEGohAAwACwsCQANAIAAgAk8NASAALQAAIQQgBEEgSSAEQQpHcQRA" +
  "QQEPCyAAQQFqIQAMAAsLQQAL"

/** The bytes copied into the module's memory at once: its 4 pages of 64 KiB, which stay in the CPU's caches. */
export const PIECE_BYTES = 4 * 64 * 1024

interface Scan {
  readonly memory: Uint8Array
  readonly control: (at: number, length: number) => number
}

/** The module, instantiated at the first search; `null` where WebAssembly SIMD is not available. */
let scan: Scan | null | undefined

const instantiate = (): Scan | null => {
  try {
    const bytes = Buffer.from(MODULE, "base64")
    if (!WebAssembly.validate(bytes)) return null
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes))
    const exports = instance.exports as { memory: WebAssembly.Memory; control: (at: number, length: number) => number }
    return { memory: new Uint8Array(exports.memory.buffer), control: exports.control }
  } catch {
    return null
  }
}

/**
 * Whether `bytes` hold a byte below 0x20 other than a newline; `undefined` where WebAssembly SIMD
 * is not available. The bytes are looked at in pieces of `PIECE_BYTES`.
 */
export const controlByteIn = (bytes: Uint8Array): boolean | undefined => {
  if (scan === undefined) scan = instantiate()
  if (scan === null) return undefined
  const { control, memory } = scan
  for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
    const piece = Math.min(PIECE_BYTES, bytes.length - at)
    memory.set(at === 0 && piece === bytes.length ? bytes : bytes.subarray(at, at + piece), 0)
    if (control(0, piece) === 1) return true
  }
  return false
}
