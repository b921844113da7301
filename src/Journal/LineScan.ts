/**
 * The byte-level work of reading a journal's chunk in place, in WebAssembly with 128-bit SIMD:
 * a reader looks at every byte of what it reads (for newlines, and for control bytes, which would
 * break an SSE frame) and at the fields of every line, and in JavaScript that was most of the
 * cost of a replay after the checksums (a typed array's byte costs a bounds check and more; 16
 * bytes are one compare here). Two uses:
 *
 * - `controlByteIn`: whether bytes hold a control byte (below 0x20, not a newline), copied into the
 *   module's memory a piece at a time, which costs less than the look it saves.
 * - `BlockLines`: the lines of a block (a chunk's complete lines): where each ends, whether it
 *   holds a control byte, and for a line `scanInPlace` would read in place, its seq, body end,
 *   session id and key, and the checksum its span of such lines must have (`Crc`), as records of
 *   10 ints. It is the twin of `scanInPlace` but for computing the checksum (the caller checks a
 *   span's in one call), and tests hold the two to the same answers.
 *
 * Where WebAssembly SIMD is not available, `controlByteIn` answers `undefined` and `blockLines`
 * nothing, and the callers do the work in JavaScript.
 *
 * The module, as assembled by WABT's `wat2wasm` (SIMD enabled) from:
 *
 * ```wat
 * (module
 *   (memory (export "memory") 4)
 *   (global $control (mut i32) (i32.const 0))
 *   ;; What $inPlace found of the last line read in place: where its checksummed part ends, and its checksum.
 *   (global $checked (mut i32) (i32.const 0))
 *   (global $stored (mut i32) (i32.const 0))
 *   ;; The CRC-32 of the span of lines read in place so far (from the first of them to the end of the last), and
 *   ;; whether the last line scanned was one of them (the span goes on).
 *   (global $acc (mut i32) (i32.const 0))
 *   (global $spanOpen (mut i32) (i32.const 0))
 *
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
 *     (i32.const 0))
 *
 *   ;; Where the line from p ends (its newline, or end); $control is set to 1 if a control byte lies before it.
 *   (func $lineEnd (param $p i32) (param $end i32) (result i32)
 *     (local $v v128) (local $newlines i32) (local $controls i32) (local $b i32)
 *     (global.set $control (i32.const 0))
 *     (block $tail
 *       (loop $sixteen
 *         (br_if $tail (i32.gt_u (i32.add (local.get $p) (i32.const 16)) (local.get $end)))
 *         (local.set $v (v128.load (local.get $p)))
 *         (local.set $newlines (i8x16.bitmask (i8x16.eq (local.get $v) (i8x16.splat (i32.const 0x0a)))))
 *         (local.set $controls
 *           (i8x16.bitmask
 *             (v128.andnot
 *               (i8x16.lt_u (local.get $v) (i8x16.splat (i32.const 0x20)))
 *               (i8x16.eq (local.get $v) (i8x16.splat (i32.const 0x0a))))))
 *         (if (local.get $newlines)
 *           (then
 *             (local.set $b (i32.ctz (local.get $newlines)))
 *             (if (i32.and (local.get $controls) (i32.sub (i32.shl (i32.const 1) (local.get $b)) (i32.const 1)))
 *               (then (global.set $control (i32.const 1))))
 *             (return (i32.add (local.get $p) (local.get $b)))))
 *         (if (local.get $controls) (then (global.set $control (i32.const 1))))
 *         (local.set $p (i32.add (local.get $p) (i32.const 16)))
 *         (br $sixteen)))
 *     (block $done
 *       (loop $one
 *         (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
 *         (local.set $b (i32.load8_u (local.get $p)))
 *         (br_if $done (i32.eq (local.get $b) (i32.const 0x0a)))
 *         (if (i32.lt_u (local.get $b) (i32.const 0x20)) (then (global.set $control (i32.const 1))))
 *         (local.set $p (i32.add (local.get $p) (i32.const 1)))
 *         (br $one)))
 *     (local.get $p))
 *
 *   ;; Where the JSON string whose text starts at p closes (its quote), or -1 if it holds a backslash or does not close before end.
 *   (func $plainStringEnd (param $p i32) (param $end i32) (result i32)
 *     (local $b i32)
 *     (block $none
 *       (loop $bytes
 *         (br_if $none (i32.ge_u (local.get $p) (local.get $end)))
 *         (local.set $b (i32.load8_u (local.get $p)))
 *         (if (i32.eq (local.get $b) (i32.const 0x22)) (then (return (local.get $p))))
 *         (br_if $none (i32.eq (local.get $b) (i32.const 0x5c)))
 *         (local.set $p (i32.add (local.get $p) (i32.const 1)))
 *         (br $bytes)))
 *     (i32.const -1))
 *
 *   ;; Whether bytes from to to are an idempotency key: 1 to 128 of [0-9:A-Za-z._-].
 *   (func $isKey (param $from i32) (param $to i32) (result i32)
 *     (local $b i32)
 *     (if (i32.or (i32.lt_s (i32.sub (local.get $to) (local.get $from)) (i32.const 1))
 *                 (i32.gt_s (i32.sub (local.get $to) (local.get $from)) (i32.const 128)))
 *       (then (return (i32.const 0))))
 *     (block $bad
 *       (loop $bytes
 *         (if (i32.ge_u (local.get $from) (local.get $to)) (then (return (i32.const 1))))
 *         (local.set $b (i32.load8_u (local.get $from)))
 *         (br_if $bad
 *           (i32.eqz
 *             (i32.or
 *               (i32.or
 *                 (i32.and (i32.ge_u (local.get $b) (i32.const 0x30)) (i32.le_u (local.get $b) (i32.const 0x3a)))
 *                 (i32.and (i32.ge_u (local.get $b) (i32.const 0x41)) (i32.le_u (local.get $b) (i32.const 0x5a))))
 *               (i32.or
 *                 (i32.or
 *                   (i32.and (i32.ge_u (local.get $b) (i32.const 0x61)) (i32.le_u (local.get $b) (i32.const 0x7a)))
 *                   (i32.eq (local.get $b) (i32.const 0x2e)))
 *                 (i32.or (i32.eq (local.get $b) (i32.const 0x5f)) (i32.eq (local.get $b) (i32.const 0x2d)))))))
 *         (local.set $from (i32.add (local.get $from) (i32.const 1)))
 *         (br $bytes)))
 *     (i32.const 0))
 *
 *   ;; Whether the line s to e (no control byte in it: $control is 0) is a checksummed line in the codec's layout;
 *   ;; if so its seq, body end, session and key go into the record at rec (fields 3 to 5 and 7 to 9, positions relative
 *   ;; to base, -1 for a field the line has not), and where its
 *   ;; checksummed part ends and the checksum it holds into $checked and $stored.
 *   (func $inPlace (param $s i32) (param $e i32) (param $base i32) (param $rec i32) (result i32)
 *     (local $checked i32) (local $stored i32) (local $i i32) (local $b i32) (local $nibble i32)
 *     (local $seq i64) (local $digits i32) (local $next i32) (local $bodyEnd i32) (local $open i32)
 *     (local $sessionFrom i32) (local $sessionTo i32) (local $keyFrom i32)
 *     (local.set $sessionFrom (i32.const -1))
 *     (local.set $sessionTo (i32.const -1))
 *     (local.set $keyFrom (i32.const -1))
 *     ;; A checksum field ends the line: `,"crc":"` 8 hex digits `"}`.
 *     (if (i32.lt_s (i32.sub (local.get $e) (local.get $s)) (i32.const 20)) (then (return (i32.const 0))))
 *     (if (i32.ne (i32.load8_u (i32.sub (local.get $e) (i32.const 1))) (i32.const 0x7d)) (then (return (i32.const 0))))
 *     (if (i32.ne (i32.load8_u (i32.sub (local.get $e) (i32.const 2))) (i32.const 0x22)) (then (return (i32.const 0))))
 *     (local.set $checked (i32.sub (local.get $e) (i32.const 18)))
 *     (if (i64.ne (i64.load (local.get $checked)) (i64.const 0x223a22637263222c)) (then (return (i32.const 0))))
 *     (local.set $i (i32.add (local.get $checked) (i32.const 8)))
 *     (loop $hex
 *       (local.set $b (i32.load8_u (local.get $i)))
 *       (local.set $nibble
 *         (if (result i32) (i32.and (i32.ge_u (local.get $b) (i32.const 48)) (i32.le_u (local.get $b) (i32.const 57)))
 *           (then (i32.sub (local.get $b) (i32.const 48)))
 *           (else
 *             (if (result i32) (i32.and (i32.ge_u (local.get $b) (i32.const 97)) (i32.le_u (local.get $b) (i32.const 102)))
 *               (then (i32.sub (local.get $b) (i32.const 87)))
 *               (else (return (i32.const 0)))))))
 *       (local.set $stored (i32.or (i32.shl (local.get $stored) (i32.const 4)) (local.get $nibble)))
 *       (local.set $i (i32.add (local.get $i) (i32.const 1)))
 *       (br_if $hex (i32.lt_u (local.get $i) (i32.add (local.get $checked) (i32.const 16)))))
 *     (if (global.get $control) (then (return (i32.const 0))))
 *     ;; `{"seq":` and up to 16 digits, a safe integer from 1.
 *     (if (i32.eqz (i32.and (i32.le_u (i32.add (local.get $s) (i32.const 7)) (local.get $e))
 *       (i64.eq (i64.and (i64.load (local.get $s)) (i64.const 0xffffffffffffff)) (i64.const 0x3a22716573227b))))
 *       (then (return (i32.const 0))))
 *     (local.set $i (i32.add (local.get $s) (i32.const 7)))
 *     (local.set $digits (i32.add (local.get $s) (i32.const 23)))
 *     (block $seqEnd
 *       (loop $seqDigits
 *         (br_if $seqEnd (i32.ge_u (local.get $i) (local.get $e)))
 *         (br_if $seqEnd (i32.ge_u (local.get $i) (local.get $digits)))
 *         (local.set $b (i32.load8_u (local.get $i)))
 *         (br_if $seqEnd (i32.or (i32.lt_u (local.get $b) (i32.const 48)) (i32.gt_u (local.get $b) (i32.const 57))))
 *         (local.set $seq (i64.add (i64.mul (local.get $seq) (i64.const 10)) (i64.extend_i32_u (i32.sub (local.get $b) (i32.const 48)))))
 *         (local.set $i (i32.add (local.get $i) (i32.const 1)))
 *         (br $seqDigits)))
 *     (if (i32.eq (local.get $i) (i32.add (local.get $s) (i32.const 7))) (then (return (i32.const 0))))
 *     (if (i64.lt_u (local.get $seq) (i64.const 1)) (then (return (i32.const 0))))
 *     (if (i64.gt_u (local.get $seq) (i64.const 9007199254740991)) (then (return (i32.const 0))))
 *     ;; `,"ts":"` and its text, without a backslash.
 *     (if (i32.eqz (i32.and (i32.le_u (i32.add (local.get $i) (i32.const 7)) (local.get $e))
 *       (i64.eq (i64.and (i64.load (local.get $i)) (i64.const 0xffffffffffffff)) (i64.const 0x223a227374222c))))
 *       (then (return (i32.const 0))))
 *     (local.set $next (call $plainStringEnd (i32.add (local.get $i) (i32.const 7)) (local.get $e)))
 *     (if (i32.lt_s (local.get $next) (i32.const 0)) (then (return (i32.const 0))))
 *     (local.set $next (i32.add (local.get $next) (i32.const 1)))
 *     ;; `,"session_id":"` and its text, if there is one.
 *     (if (i32.and
 *           (i32.and (i32.le_u (i32.add (local.get $next) (i32.const 8)) (local.get $e))
 *       (i64.eq (i64.load (local.get $next)) (i64.const 0x6f6973736573222c)))
 *           (i32.and (i32.le_u (i32.add (i32.add (local.get $next) (i32.const 8)) (i32.const 7)) (local.get $e))
 *       (i64.eq (i64.and (i64.load (i32.add (local.get $next) (i32.const 8))) (i64.const 0xffffffffffffff)) (i64.const 0x223a2264695f6e))))
 *       (then
 *         (local.set $sessionFrom (i32.add (local.get $next) (i32.const 15)))
 *         (local.set $sessionTo (call $plainStringEnd (local.get $sessionFrom) (local.get $e)))
 *         (if (i32.lt_s (local.get $sessionTo) (i32.const 0)) (then (return (i32.const 0))))
 *         (local.set $next (i32.add (local.get $sessionTo) (i32.const 1)))))
 *     ;; `,"event":{`
 *     (if (i32.eqz
 *           (i32.and
 *             (i32.and (i32.le_u (i32.add (local.get $next) (i32.const 8)) (local.get $e))
 *       (i64.eq (i64.load (local.get $next)) (i64.const 0x22746e657665222c)))
 *             (i32.and (i32.le_u (i32.add (i32.add (local.get $next) (i32.const 8)) (i32.const 2)) (local.get $e))
 *       (i64.eq (i64.and (i64.load (i32.add (local.get $next) (i32.const 8))) (i64.const 0xffff)) (i64.const 0x7b3a)))))
 *       (then (return (i32.const 0))))
 *     ;; The event ends where the key field begins, if there is one, or where the checksum field does.
 *     (local.set $bodyEnd (local.get $checked))
 *     (if (i32.eq (i32.load8_u (i32.sub (local.get $checked) (i32.const 1))) (i32.const 0x22))
 *       (then
 *         (local.set $open (i32.sub (local.get $checked) (i32.const 2)))
 *         (block $found
 *           (loop $back
 *             (if (i32.lt_s (local.get $open) (local.get $s)) (then (return (i32.const 0))))
 *             (br_if $found (i32.eq (i32.load8_u (local.get $open)) (i32.const 0x22)))
 *             (local.set $open (i32.sub (local.get $open) (i32.const 1)))
 *             (br $back)))
 *         (local.set $bodyEnd (i32.sub (local.get $open) (i32.const 7)))
 *         (if (i32.lt_s (local.get $bodyEnd) (local.get $s)) (then (return (i32.const 0))))
 *         (if (i32.eqz (i32.and (i32.le_u (i32.add (local.get $bodyEnd) (i32.const 8)) (local.get $e))
 *       (i64.eq (i64.load (local.get $bodyEnd)) (i64.const 0x223a2279656b222c))))
 *           (then (return (i32.const 0))))
 *         (local.set $keyFrom (i32.add (local.get $open) (i32.const 1)))
 *         (if (i32.eqz (call $isKey (local.get $keyFrom) (i32.sub (local.get $checked) (i32.const 1))))
 *           (then (return (i32.const 0))))))
 *     (if (i32.ne (i32.load8_u (i32.sub (local.get $bodyEnd) (i32.const 1))) (i32.const 0x7d)) (then (return (i32.const 0))))
 *     (i32.store offset=12 (local.get $rec) (i32.wrap_i64 (local.get $seq)))
 *     (i32.store offset=16 (local.get $rec) (i32.wrap_i64 (i64.shr_u (local.get $seq) (i64.const 32))))
 *     (i32.store offset=20 (local.get $rec) (i32.sub (local.get $bodyEnd) (local.get $base)))
 *     (i32.store offset=28 (local.get $rec)
 *       (select (i32.const -1) (i32.sub (local.get $sessionFrom) (local.get $base)) (i32.lt_s (local.get $sessionFrom) (i32.const 0))))
 *     (i32.store offset=32 (local.get $rec)
 *       (select (i32.const -1) (i32.sub (local.get $sessionTo) (local.get $base)) (i32.lt_s (local.get $sessionTo) (i32.const 0))))
 *     (i32.store offset=36 (local.get $rec)
 *       (select (i32.const -1) (i32.sub (local.get $keyFrom) (local.get $base)) (i32.lt_s (local.get $keyFrom) (i32.const 0))))
 *     (global.set $checked (local.get $checked))
 *     (global.set $stored (local.get $stored))
 *     (i32.const 1))
 *
 *   ;; a times b modulo the CRC-32 polynomial, both reflected (zlib's multmodp), without branches.
 *   (func $multModP (param $a i32) (param $b i32) (result i32)
 *     (local $p i32) (local $k i32)
 *     (loop $bits
 *       (local.set $p (i32.xor (local.get $p) (i32.and (local.get $b) (i32.shr_s (local.get $a) (i32.const 31)))))
 *       (local.set $a (i32.shl (local.get $a) (i32.const 1)))
 *       (local.set $b
 *         (i32.xor
 *           (i32.shr_u (local.get $b) (i32.const 1))
 *           (i32.and (i32.const 0xedb88320) (i32.sub (i32.const 0) (i32.and (local.get $b) (i32.const 1))))))
 *       (local.set $k (i32.add (local.get $k) (i32.const 1)))
 *       (br_if $bits (i32.lt_u (local.get $k) (i32.const 32))))
 *     (local.get $p))
 *
 *   ;; x to the power 8n modulo the polynomial (zlib's x2nmodp(n, 3)), from x^(2^k) at 164864 + 4k; kept at
 *   ;; 165888 + 4n for n below 65536 (0 until made: no such power is 0).
 *   (func $shiftOf (param $n i32) (result i32)
 *     (local $p i32) (local $k i32) (local $at i32)
 *     (if (i32.lt_u (local.get $n) (i32.const 65536))
 *       (then
 *         (local.set $at (i32.add (i32.const 165888) (i32.shl (local.get $n) (i32.const 2))))
 *         (local.set $p (i32.load (local.get $at)))
 *         (if (local.get $p) (then (return (local.get $p))))))
 *     (local.set $p (i32.const 0x80000000))
 *     (local.set $k (i32.const 3))
 *     (block $done
 *       (loop $bits
 *         (br_if $done (i32.eqz (local.get $n)))
 *         (if (i32.and (local.get $n) (i32.const 1))
 *           (then
 *             (local.set $p
 *               (call $multModP
 *                 (i32.load (i32.add (i32.const 164864) (i32.shl (i32.and (local.get $k) (i32.const 31)) (i32.const 2))))
 *                 (local.get $p)))))
 *         (local.set $n (i32.shr_u (local.get $n) (i32.const 1)))
 *         (local.set $k (i32.add (local.get $k) (i32.const 1)))
 *         (br $bits)))
 *     (if (local.get $at) (then (i32.store (local.get $at) (local.get $p))))
 *     (local.get $p))
 *
 *   ;; b times x to the power 8n modulo the polynomial, four bits of b at a time (Horner's rule, x^4 by the table at
 *   ;; 163840: its entry 16m is m times x^4): for n below 4096, from the multiples of x^(8n) by each four bits, kept at
 *   ;; 458752 + 64n (made at the first use: entry 8, x^(8n) itself, is never 0); otherwise a bit at a time.
 *   (func $shiftMult (param $n i32) (param $b i32) (result i32)
 *     (local $t i32) (local $a0 i32) (local $a1 i32) (local $a2 i32) (local $a3 i32) (local $m i32) (local $p i32)
 *     (local $k i32)
 *     (if (i32.ge_u (local.get $n) (i32.const 4096))
 *       (then (return (call $multModP (call $shiftOf (local.get $n)) (local.get $b)))))
 *     (local.set $t (i32.add (i32.const 458752) (i32.shl (local.get $n) (i32.const 6))))
 *     (if (i32.eqz (i32.load offset=32 (local.get $t)))
 *       (then
 *         (local.set $a0 (call $shiftOf (local.get $n)))
 *         (local.set $a1
 *           (i32.xor (i32.shr_u (local.get $a0) (i32.const 1))
 *             (i32.and (i32.const 0xedb88320) (i32.sub (i32.const 0) (i32.and (local.get $a0) (i32.const 1))))))
 *         (local.set $a2
 *           (i32.xor (i32.shr_u (local.get $a1) (i32.const 1))
 *             (i32.and (i32.const 0xedb88320) (i32.sub (i32.const 0) (i32.and (local.get $a1) (i32.const 1))))))
 *         (local.set $a3
 *           (i32.xor (i32.shr_u (local.get $a2) (i32.const 1))
 *             (i32.and (i32.const 0xedb88320) (i32.sub (i32.const 0) (i32.and (local.get $a2) (i32.const 1))))))
 *         ;; Entry m: the bits of m from its top one are x^0 to x^3.
 *         (loop $entries
 *           (i32.store (i32.add (local.get $t) (i32.shl (local.get $m) (i32.const 2)))
 *             (i32.xor
 *               (i32.xor
 *                 (i32.and (local.get $a0) (i32.sub (i32.const 0) (i32.and (i32.shr_u (local.get $m) (i32.const 3)) (i32.const 1))))
 *                 (i32.and (local.get $a1) (i32.sub (i32.const 0) (i32.and (i32.shr_u (local.get $m) (i32.const 2)) (i32.const 1)))))
 *               (i32.xor
 *                 (i32.and (local.get $a2) (i32.sub (i32.const 0) (i32.and (i32.shr_u (local.get $m) (i32.const 1)) (i32.const 1))))
 *                 (i32.and (local.get $a3) (i32.sub (i32.const 0) (i32.and (local.get $m) (i32.const 1)))))))
 *           (local.set $m (i32.add (local.get $m) (i32.const 1)))
 *           (br_if $entries (i32.lt_u (local.get $m) (i32.const 16))))))
 *     ;; The four bits of b of the highest powers (its lowest) first.
 *     (local.set $p (i32.load (i32.add (local.get $t) (i32.shl (i32.and (local.get $b) (i32.const 15)) (i32.const 2)))))
 *     (local.set $k (i32.const 4))
 *     (loop $nibbles
 *       (local.set $p
 *         (i32.xor
 *           (i32.xor
 *             (i32.shr_u (local.get $p) (i32.const 4))
 *             (i32.load offset=163840 (i32.shl (i32.and (local.get $p) (i32.const 15)) (i32.const 6))))
 *           (i32.load
 *             (i32.add (local.get $t) (i32.shl (i32.and (i32.shr_u (local.get $b) (local.get $k)) (i32.const 15)) (i32.const 2))))))
 *       (local.set $k (i32.add (local.get $k) (i32.const 4)))
 *       (br_if $nibbles (i32.lt_u (local.get $k) (i32.const 32))))
 *     (local.get $p))
 *
 *   ;; crc continued over bytes p to end, a byte at a time, with the table at 163840.
 *   (func $crcBytes (param $crc i32) (param $p i32) (param $end i32) (result i32)
 *     (local $c i32)
 *     (local.set $c (i32.xor (local.get $crc) (i32.const -1)))
 *     (block $done
 *       (loop $bytes
 *         (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
 *         (local.set $c
 *           (i32.xor
 *             (i32.load
 *               (i32.add
 *                 (i32.const 163840)
 *                 (i32.shl (i32.and (i32.xor (local.get $c) (i32.load8_u (local.get $p))) (i32.const 0xff)) (i32.const 2))))
 *             (i32.shr_u (local.get $c) (i32.const 8))))
 *         (local.set $p (i32.add (local.get $p) (i32.const 1)))
 *         (br $bytes)))
 *     (i32.xor (local.get $c) (i32.const -1)))
 *
 *   ;; crc continued over a line's checksum field (`,"crc":"`, the 8 hex digits of stored, `"}`), from the tables at
 *   ;; 428032 (`crcFieldTables`): eight lookups, by the bytes of crc and of stored.
 *   (func $fieldCrc (param $crc i32) (param $stored i32) (result i32)
 *     (i32.xor
 *       (i32.xor
 *         (i32.xor
 *           (i32.load offset=428032 (i32.shl (i32.and (local.get $crc) (i32.const 0xff)) (i32.const 2)))
 *           (i32.load offset=429056 (i32.shl (i32.and (i32.shr_u (local.get $crc) (i32.const 8)) (i32.const 0xff)) (i32.const 2))))
 *         (i32.xor
 *           (i32.load offset=430080 (i32.shl (i32.and (i32.shr_u (local.get $crc) (i32.const 16)) (i32.const 0xff)) (i32.const 2)))
 *           (i32.load offset=431104 (i32.shl (i32.shr_u (local.get $crc) (i32.const 24)) (i32.const 2)))))
 *       (i32.xor
 *         (i32.xor
 *           (i32.load offset=432128 (i32.shl (i32.and (local.get $stored) (i32.const 0xff)) (i32.const 2)))
 *           (i32.load offset=433152 (i32.shl (i32.and (i32.shr_u (local.get $stored) (i32.const 8)) (i32.const 0xff)) (i32.const 2))))
 *         (i32.xor
 *           (i32.load offset=434176 (i32.shl (i32.and (i32.shr_u (local.get $stored) (i32.const 16)) (i32.const 0xff)) (i32.const 2)))
 *           (i32.load offset=435200 (i32.shl (i32.shr_u (local.get $stored) (i32.const 24)) (i32.const 2)))))))
 *
 *   ;; The lines of the block at base (length bytes) from offset from (a line's start), at most max of them: a record of
 *   ;; 10 i32 each at out (start, end, flags: 1 read in place, 2 holds a control byte, 4 the first of a span of lines
 *   ;; read in place; then for a line read in place: seq low and high, body end, the CRC-32 of its span from the
 *   ;; span's first line to its own end, where its session id's text starts and ends, and where its key's starts),
 *   ;; positions relative to base. Answers how many.
 *   (func (export "scan") (param $base i32) (param $length i32) (param $from i32) (param $out i32) (param $max i32) (result i32)
 *     (local $end i32) (local $p i32) (local $e i32) (local $count i32) (local $rec i32) (local $flags i32)
 *     (local.set $end (i32.add (local.get $base) (local.get $length)))
 *     (local.set $p (i32.add (local.get $base) (local.get $from)))
 *     (local.set $rec (local.get $out))
 *     ;; A block's first scan starts no span: its first line read in place begins one.
 *     (if (i32.eqz (local.get $from)) (then (global.set $spanOpen (i32.const 0))))
 *     (block $stop
 *       (loop $lines
 *         (br_if $stop (i32.ge_u (local.get $count) (local.get $max)))
 *         (br_if $stop (i32.gt_u (local.get $p) (local.get $end)))
 *         (local.set $e (call $lineEnd (local.get $p) (local.get $end)))
 *         (local.set $flags (i32.shl (global.get $control) (i32.const 1)))
 *         (if (call $inPlace (local.get $p) (local.get $e) (local.get $base) (local.get $rec))
 *           (then
 *             ;; The span's checksum, from the checksum the line holds: the line is the span's first, or follows its
 *             ;; newline; then its checksum field.
 *             (if (global.get $spanOpen)
 *               (then
 *                 (global.set $acc
 *                   (i32.xor
 *                     (call $shiftMult
 *                       (i32.sub (global.get $checked) (local.get $p))
 *                       (call $crcBytes (global.get $acc) (i32.sub (local.get $p) (i32.const 1)) (local.get $p)))
 *                     (global.get $stored))))
 *               (else
 *                 (global.set $acc (global.get $stored))
 *                 (local.set $flags (i32.or (local.get $flags) (i32.const 4)))))
 *             (global.set $acc (call $fieldCrc (global.get $acc) (global.get $stored)))
 *             (global.set $spanOpen (i32.const 1))
 *             (i32.store offset=24 (local.get $rec) (global.get $acc))
 *             (local.set $flags (i32.or (local.get $flags) (i32.const 1))))
 *           (else (global.set $spanOpen (i32.const 0))))
 *         (i32.store (local.get $rec) (i32.sub (local.get $p) (local.get $base)))
 *         (i32.store offset=4 (local.get $rec) (i32.sub (local.get $e) (local.get $base)))
 *         (i32.store offset=8 (local.get $rec) (local.get $flags))
 *         (local.set $rec (i32.add (local.get $rec) (i32.const 40)))
 *         (local.set $count (i32.add (local.get $count) (i32.const 1)))
 *         (local.set $p (i32.add (local.get $e) (i32.const 1)))
 *         (br $lines)))
 *     (local.get $count)))
 * ```
 */

import { CRC_TABLE, crcFieldTables, X2N } from "./Crc.js"

const MODULE =
  "AGFzbQEAAAABJAVgAn9/AX9gBH9/f38Bf2ABfwF/YAN/f38Bf2AFf39/f38BfwMMCwAAAAABAAIAAwAEBQMBAAQGGgV/AUEAC38BQQAL" +
  "fwFBAAt/AUEAC38BQQALBxsDBm1lbW9yeQIAB2NvbnRyb2wAAARzY2FuAAoKmxELegMBfwF7AX8gACABaiECAkADQCAAQRBqIAJLDQEg" +
  "AP0ABAAhAyADQSD9D/0mIANBCv0P/SP9T/1TBEBBAQ8LIABBEGohAAwACwsCQANAIAAgAk8NASAALQAAIQQgBEEgSSAEQQpHcQRAQQEP" +
  "CyAAQQFqIQAMAAsLQQALqgECAXsDf0EAJAACQANAIABBEGogAUsNASAA/QAEACECIAJBCv0P/SP9ZCEDIAJBIP0P/SYgAkEK/Q/9I/1P" +
  "/WQhBCADBEAgA2ghBSAEQQEgBXRBAWtxBEBBASQACyAAIAVqDwsgBARAQQEkAAsgAEEQaiEADAALCwJAA0AgACABTw0BIAAtAAAhBSAF" +
  "QQpGDQEgBUEgSQRAQQEkAAsgAEEBaiEADAALCyAACzYBAX8CQANAIAAgAU8NASAALQAAIQIgAkEiRgRAIAAPCyACQdwARg0BIABBAWoh" +
  "AAwACwtBfwt8AQF/IAEgAGtBAUggASAAa0GAAUpyBEBBAA8LAkADQCAAIAFPBEBBAQ8LIAAtAAAhAiACQTBPIAJBOk1xIAJBwQBPIAJB" +
  "2gBNcXIgAkHhAE8gAkH6AE1xIAJBLkZyIAJB3wBGIAJBLUZycnJFDQEgAEEBaiEADAALC0EAC8sGAwV/AX4Hf0F/IQ5BfyEPQX8hECAB" +
  "IABrQRRIBEBBAA8LIAFBAWstAABB/QBHBEBBAA8LIAFBAmstAABBIkcEQEEADwsgAUESayEEIAQpAwBCrMSMk7fMiJ0iUgRAQQAPCyAE" +
  "QQhqIQYDQCAGLQAAIQcgB0EwTyAHQTlNcQR/IAdBMGsFIAdB4QBPIAdB5gBNcQR/IAdB1wBrBUEADwsLIQggBUEEdCAIciEFIAZBAWoh" +
  "BiAGIARBEGpJDQALIwAEQEEADwsgAEEHaiABTSAAKQMAQv//////////AINC+8TMq5bOiB1RcUUEQEEADwsgAEEHaiEGIABBF2ohCgJA" +
  "A0AgBiABTw0BIAYgCk8NASAGLQAAIQcgB0EwSSAHQTlLcg0BIAlCCn4gB0Ewa618IQkgBkEBaiEGDAALCyAGIABBB2pGBEBBAA8LIAlC" +
  "AVQEQEEADwsgCUL/////////D1YEQEEADwsgBkEHaiABTSAGKQMAQv//////////AINCrMTQm6fEjhFRcUUEQEEADwsgBkEHaiABEAIh" +
  "CyALQQBIBEBBAA8LIAtBAWohCyALQQhqIAFNIAspAwBCrMTMq7bu3LTvAFFxIAtBCGpBB2ogAU0gC0EIaikDAEL//////////wCDQu6+" +
  "paOmxI4RUXFxBEAgC0EPaiEOIA4gARACIQ8gD0EASARAQQAPCyAPQQFqIQsLIAtBCGogAU0gCykDAEKsxJSz18ybuiJRcSALQQhqQQJq" +
  "IAFNIAtBCGopAwBC//8Dg0K69gFRcXFFBEBBAA8LIAQhDCAEQQFrLQAAQSJGBEAgBEECayENAkADQCANIABIBEBBAA8LIA0tAABBIkYN" +
  "ASANQQFrIQ0MAAsLIA1BB2shDCAMIABIBEBBAA8LIAxBCGogAU0gDCkDAEKsxKyrls+InSJRcUUEQEEADwsgDUEBaiEQIBAgBEEBaxAD" +
  "RQRAQQAPCwsgDEEBay0AAEH9AEcEQEEADwsgAyAJpzYCDCADIAlCIIinNgIQIAMgDCACazYCFCADQX8gDiACayAOQQBIGzYCHCADQX8g" +
  "DyACayAPQQBIGzYCICADQX8gECACayAQQQBIGzYCJCAEJAEgBSQCQQELQgECfwNAIAIgASAAQR91cXMhAiAAQQF0IQAgAUEBdkGghuLt" +
  "fkEAIAFBAXFrcXMhASADQQFqIQMgA0EgSQ0ACyACC3wBA38gAEGAgARJBEBBgJAKIABBAnRqIQMgAygCACEBIAEEQCABDwsLQYCAgIB4" +
  "IQFBAyECAkADQCAARQ0BIABBAXEEQEGAiAogAkEfcUECdGooAgAgARAFIQELIABBAXYhACACQQFqIQIMAAsLIAMEQCADIAE2AgALIAEL" +
  "mAIBCH8gAEGAIE8EQCAAEAYgARAFDwtBgIAcIABBBnRqIQIgAigCIEUEQCAAEAYhAyADQQF2QaCG4u1+QQAgA0EBcWtxcyEEIARBAXZB" +
  "oIbi7X5BACAEQQFxa3FzIQUgBUEBdkGghuLtfkEAIAVBAXFrcXMhBgNAIAIgB0ECdGogA0EAIAdBA3ZBAXFrcSAEQQAgB0ECdkEBcWtx" +
  "cyAFQQAgB0EBdkEBcWtxIAZBACAHQQFxa3FzczYCACAHQQFqIQcgB0EQSQ0ACwsgAiABQQ9xQQJ0aigCACEIQQQhCQNAIAhBBHYgCEEP" +
  "cUEGdCgCgIAKcyACIAEgCXZBD3FBAnRqKAIAcyEIIAlBBGohCSAJQSBJDQALIAgLRQEBfyAAQX9zIQMCQANAIAEgAk8NAUGAgAogAyAB" +
  "LQAAc0H/AXFBAnRqKAIAIANBCHZzIQMgAUEBaiEBDAALCyADQX9zC4MBACAAQf8BcUECdCgCgJAaIABBCHZB/wFxQQJ0KAKAmBpzIABB" +
  "EHZB/wFxQQJ0KAKAoBogAEEYdkECdCgCgKgac3MgAUH/AXFBAnQoAoCwGiABQQh2Qf8BcUECdCgCgLgacyABQRB2Qf8BcUECdCgCgMAa" +
  "IAFBGHZBAnQoAoDIGnNzcwvLAQEGfyAAIAFqIQUgACACaiEGIAMhCSACRQRAQQAkBAsCQANAIAggBE8NASAGIAVLDQEgBiAFEAEhByMA" +
  "QQF0IQogBiAHIAAgCRAEBEAjBARAIwEgBmsjAyAGQQFrIAYQCBAHIwJzJAMFIwIkAyAKQQRyIQoLIwMjAhAJJANBASQEIAkjAzYCGCAK" +
  "QQFyIQoFQQAkBAsgCSAGIABrNgIAIAkgByAAazYCBCAJIAo2AgggCUEoaiEJIAhBAWohCCAHQQFqIQYMAAsLIAgL"

/** The bytes `controlByteIn` copies into the module's memory at once: its 4 pages of 64 KiB, which stay in the CPU's caches. */
export const PIECE_BYTES = 4 * 64 * 1024

interface Exports {
  readonly memory: WebAssembly.Memory
  readonly control: (at: number, length: number) => number
  readonly scan: (base: number, length: number, from: number, out: number, max: number) => number
}

/** A new instance of the module (each has a memory of its own), or `null` where WebAssembly SIMD is not available. */
const instantiate = (): Exports | null => {
  try {
    const bytes = Buffer.from(MODULE, "base64")
    if (!WebAssembly.validate(bytes)) return null
    return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Exports
  } catch {
    return null
  }
}

let controls: { readonly memory: Uint8Array; readonly control: Exports["control"] } | null | undefined

/**
 * Whether `bytes` hold a byte below 0x20 other than a newline; `undefined` where WebAssembly SIMD
 * is not available. The bytes are looked at in pieces of `PIECE_BYTES`.
 */
export const controlByteIn = (bytes: Uint8Array): boolean | undefined => {
  if (controls === undefined) {
    const exports = instantiate()
    controls = exports === null ? null : { memory: new Uint8Array(exports.memory.buffer), control: exports.control }
  }
  if (controls === null) return undefined
  const { control, memory } = controls
  for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
    const piece = Math.min(PIECE_BYTES, bytes.length - at)
    memory.set(at === 0 && piece === bytes.length ? bytes : bytes.subarray(at, at + piece), 0)
    if (control(0, piece) === 1) return true
  }
  return false
}

/** A record's fields (`BlockLines.records`, 10 ints a line). */
export const RECORD_INTS = 10
export const LINE_START = 0
export const LINE_END = 1
export const LINE_FLAGS = 2
export const SEQ_LOW = 3
export const SEQ_HIGH = 4
export const BODY_END = 5
/** The CRC-32 of the line's span: from the span's first line (`SPAN_START`) to the line's end. */
export const SPAN_CRC = 6
/** Where the line's session id's text starts and ends (-1 when it has none). */
export const SESSION_FROM = 7
export const SESSION_TO = 8
/** Where the line's idempotency key's text starts (-1 when it has none); it ends before the checksum field's quote. */
export const KEY_FROM = 9
/** `LINE_FLAGS`: the line is read in place (checksummed, in the codec's layout, no control byte). */
export const IN_PLACE = 1
/** `LINE_FLAGS`: the line holds a control byte. */
export const HOLDS_CONTROL = 2
/** `LINE_FLAGS`: the line is the first of a span of lines read in place, one after the other. */
export const SPAN_START = 4

/**
 * The module's memory, as `scan` uses it: the records (at most `MAX_RECORDS` a scan), the CRC-32
 * table, the powers x^(2^k), the multipliers of the line lengths made so far (at 165888, which
 * only the module reads and writes), the tables of a checksum field (`crcFieldTables`), the
 * multiples of those multipliers by four bits (at 458752, the module's too), then the block.
 */
const RECORDS_AT = 0
const MAX_RECORDS = 4096
const TABLE_AT = 163840
const X2N_AT = 164864
const FIELD_TABLES_AT = 428032
const BLOCK_AT = 720896
/** Room after a block: the module reads 16 bytes at a time, and a field's 8, past where it looks. */
const SLACK = 16
const PAGE = 64 * 1024

/**
 * The lines of one block at a time (`load`), scanned a batch of records at a time (`scan`). One
 * instance serves every read: a read loads its block and takes all of its records without
 * yielding. The memory grows to the largest block loaded (a chunk and a line carried into it).
 */
export class BlockLines {
  private ints: Int32Array
  private length = 0

  constructor(private readonly exports: Exports) {
    const memory = exports.memory
    memory.grow(BLOCK_AT / PAGE - memory.buffer.byteLength / PAGE)
    this.ints = new Int32Array(memory.buffer)
    this.ints.set(CRC_TABLE, TABLE_AT / 4)
    this.ints.set(X2N, X2N_AT / 4)
    this.ints.set(crcFieldTables(), FIELD_TABLES_AT / 4)
  }

  /** Copies `bytes` (complete lines, the last without its newline) into the module's memory. */
  load(bytes: Uint8Array): void {
    const memory = this.exports.memory
    const needed = BLOCK_AT + bytes.length + SLACK
    if (needed > memory.buffer.byteLength) {
      memory.grow(Math.ceil((needed - memory.buffer.byteLength) / PAGE))
      this.ints = new Int32Array(memory.buffer)
    }
    new Uint8Array(memory.buffer, BLOCK_AT, bytes.length).set(bytes)
    this.length = bytes.length
  }

  /** Scans the lines from `from` (a line's start) on: answers how many records `records` holds (a full batch: scan on). */
  scan(from: number): number {
    return this.exports.scan(BLOCK_AT, this.length, from, RECORDS_AT, MAX_RECORDS)
  }

  /** The records of the last scan, from index 0 (`RECORD_INTS` a line). */
  get records(): Int32Array {
    return this.ints
  }

  /** Records a full scan answers: fewer means the block's lines are all scanned. */
  static readonly batch = MAX_RECORDS
}

let lines: BlockLines | null | undefined

/** The one `BlockLines`, or `undefined` where WebAssembly SIMD is not available. */
export const blockLines = (): BlockLines | undefined => {
  if (lines === undefined) {
    const exports = instantiate()
    lines = exports === null ? null : new BlockLines(exports)
  }
  return lines ?? undefined
}
