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
 *                     (call $multModP
 *                       (call $shiftOf (i32.sub (global.get $checked) (local.get $p)))
 *                       (call $crcBytes (global.get $acc) (i32.sub (local.get $p) (i32.const 1)) (local.get $p)))
 *                     (global.get $stored))))
 *               (else
 *                 (global.set $acc (global.get $stored))
 *                 (local.set $flags (i32.or (local.get $flags) (i32.const 4)))))
 *             (global.set $acc (call $crcBytes (global.get $acc) (global.get $checked) (local.get $e)))
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

import { CRC_TABLE, X2N } from "./Crc.js"

const MODULE =
  "AGFzbQEAAAABJAVgAn9/AX9gBH9/f38Bf2ABfwF/YAN/f38Bf2AFf39/f38BfwMKCQAAAAABAAIDBAUDAQAEBhoFfwFBAAt/AUEAC38B" +
  "QQALfwFBAAt/AUEACwcbAwZtZW1vcnkCAAdjb250cm9sAAAEc2NhbgAICoAOCXoDAX8BewF/IAAgAWohAgJAA0AgAEEQaiACSw0BIAD9" +
  "AAQAIQMgA0Eg/Q/9JiADQQr9D/0j/U/9UwRAQQEPCyAAQRBqIQAMAAsLAkADQCAAIAJPDQEgAC0AACEEIARBIEkgBEEKR3EEQEEBDwsg" +
  "AEEBaiEADAALC0EAC6oBAgF7A39BACQAAkADQCAAQRBqIAFLDQEgAP0ABAAhAiACQQr9D/0j/WQhAyACQSD9D/0mIAJBCv0P/SP9T/1k" +
  "IQQgAwRAIANoIQUgBEEBIAV0QQFrcQRAQQEkAAsgACAFag8LIAQEQEEBJAALIABBEGohAAwACwsCQANAIAAgAU8NASAALQAAIQUgBUEK" +
  "Rg0BIAVBIEkEQEEBJAALIABBAWohAAwACwsgAAs2AQF/AkADQCAAIAFPDQEgAC0AACECIAJBIkYEQCAADwsgAkHcAEYNASAAQQFqIQAM" +
  "AAsLQX8LfAEBfyABIABrQQFIIAEgAGtBgAFKcgRAQQAPCwJAA0AgACABTwRAQQEPCyAALQAAIQIgAkEwTyACQTpNcSACQcEATyACQdoA" +
  "TXFyIAJB4QBPIAJB+gBNcSACQS5GciACQd8ARiACQS1GcnJyRQ0BIABBAWohAAwACwtBAAvLBgMFfwF+B39BfyEOQX8hD0F/IRAgASAA" +
  "a0EUSARAQQAPCyABQQFrLQAAQf0ARwRAQQAPCyABQQJrLQAAQSJHBEBBAA8LIAFBEmshBCAEKQMAQqzEjJO3zIidIlIEQEEADwsgBEEI" +
  "aiEGA0AgBi0AACEHIAdBME8gB0E5TXEEfyAHQTBrBSAHQeEATyAHQeYATXEEfyAHQdcAawVBAA8LCyEIIAVBBHQgCHIhBSAGQQFqIQYg" +
  "BiAEQRBqSQ0ACyMABEBBAA8LIABBB2ogAU0gACkDAEL//////////wCDQvvEzKuWzogdUXFFBEBBAA8LIABBB2ohBiAAQRdqIQoCQANA" +
  "IAYgAU8NASAGIApPDQEgBi0AACEHIAdBMEkgB0E5S3INASAJQgp+IAdBMGutfCEJIAZBAWohBgwACwsgBiAAQQdqRgRAQQAPCyAJQgFU" +
  "BEBBAA8LIAlC/////////w9WBEBBAA8LIAZBB2ogAU0gBikDAEL//////////wCDQqzE0JunxI4RUXFFBEBBAA8LIAZBB2ogARACIQsg" +
  "C0EASARAQQAPCyALQQFqIQsgC0EIaiABTSALKQMAQqzEzKu27ty07wBRcSALQQhqQQdqIAFNIAtBCGopAwBC//////////8Ag0LuvqWj" +
  "psSOEVFxcQRAIAtBD2ohDiAOIAEQAiEPIA9BAEgEQEEADwsgD0EBaiELCyALQQhqIAFNIAspAwBCrMSUs9fMm7oiUXEgC0EIakECaiAB" +
  "TSALQQhqKQMAQv//A4NCuvYBUXFxRQRAQQAPCyAEIQwgBEEBay0AAEEiRgRAIARBAmshDQJAA0AgDSAASARAQQAPCyANLQAAQSJGDQEg" +
  "DUEBayENDAALCyANQQdrIQwgDCAASARAQQAPCyAMQQhqIAFNIAwpAwBCrMSsq5bPiJ0iUXFFBEBBAA8LIA1BAWohECAQIARBAWsQA0UE" +
  "QEEADwsLIAxBAWstAABB/QBHBEBBAA8LIAMgCac2AgwgAyAJQiCIpzYCECADIAwgAms2AhQgA0F/IA4gAmsgDkEASBs2AhwgA0F/IA8g" +
  "AmsgD0EASBs2AiAgA0F/IBAgAmsgEEEASBs2AiQgBCQBIAUkAkEBC0IBAn8DQCACIAEgAEEfdXFzIQIgAEEBdCEAIAFBAXZBoIbi7X5B" +
  "ACABQQFxa3FzIQEgA0EBaiEDIANBIEkNAAsgAgt8AQN/IABBgIAESQRAQYCQCiAAQQJ0aiEDIAMoAgAhASABBEAgAQ8LC0GAgICAeCEB" +
  "QQMhAgJAA0AgAEUNASAAQQFxBEBBgIgKIAJBH3FBAnRqKAIAIAEQBSEBCyAAQQF2IQAgAkEBaiECDAALCyADBEAgAyABNgIACyABC0UB" +
  "AX8gAEF/cyEDAkADQCABIAJPDQFBgIAKIAMgAS0AAHNB/wFxQQJ0aigCACADQQh2cyEDIAFBAWohAQwACwsgA0F/cwvPAQEGfyAAIAFq" +
  "IQUgACACaiEGIAMhCSACRQRAQQAkBAsCQANAIAggBE8NASAGIAVLDQEgBiAFEAEhByMAQQF0IQogBiAHIAAgCRAEBEAjBARAIwEgBmsQ" +
  "BiMDIAZBAWsgBhAHEAUjAnMkAwUjAiQDIApBBHIhCgsjAyMBIAcQByQDQQEkBCAJIwM2AhggCkEBciEKBUEAJAQLIAkgBiAAazYCACAJ" +
  "IAcgAGs2AgQgCSAKNgIIIAlBKGohCSAIQQFqIQggB0EBaiEGDAALCyAICw=="

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
 * only the module reads and writes), then the block.
 */
const RECORDS_AT = 0
const MAX_RECORDS = 4096
const TABLE_AT = 163840
const X2N_AT = 164864
const BLOCK_AT = 458752
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
