/**
 * The line codec and splitter: the exact bytes of a line, what makes a line invalid, the seq
 * peek used to skip lines below a cursor, and byte offsets across chunks and multi-byte UTF-8.
 */
import { describe, it, assert } from "@effect/vitest"
import { FastCheck as fc, Schema } from "effect"
import { crc32 } from "node:zlib"
import {
  bodyAt,
  ByteLineSplitter,
  envelopeSeq,
  hasControlByte,
  wordsHoldControl,
  lineAt,
  LineSplitter,
  makeLineCodec,
  peekSeq,
  peekSeqBytes,
  readInPlace,
  readParsed,
  verifyChecksum,
  type Line
} from "../../src/Journal/Lines.js"
import { PIECE_BYTES } from "../../src/Journal/LineScan.js"
import { Note, storedNote } from "../support/Notes.js"

const bytes = (text: string) => new TextEncoder().encode(text)

/** A line as written here: `wire` with the checksum field before its closing brace. */
const withChecksum = (wire: string) => {
  const checked = wire.slice(0, -1)
  return `${checked},"crc":"${crc32(checked).toString(16).padStart(8, "0")}"}`
}

/** A line as the text splitter gives it. */
const line = (text: string, offset: number): Line => ({ text, bytes: bytes(text), offset })

/** Feeds `data` to a splitter in pieces of `size` bytes; answers every line (the data must be valid UTF-8). */
const splitInPieces = (data: Uint8Array, size: number): { lines: Array<Line>; splitter: LineSplitter } => {
  const splitter = new LineSplitter()
  const lines: Array<Line> = []
  for (let i = 0; i < data.length; i += size) {
    const result = splitter.push(data.subarray(i, i + size))
    if (!Array.isArray(result)) return assert.fail(`unexpected invalid UTF-8 at ${result.invalidUtf8At}`)
    lines.push(...result)
  }
  return { lines, splitter }
}

describe("Lines", () => {
  describe("peekSeq", () => {
    it("reads_the_seq_of_a_line_written_here", () => {
      assert.strictEqual(peekSeq(`{"seq":1,"ts":"x","event":{}}`), 1)
      assert.strictEqual(peekSeq(`{"seq":9007199254740991,"ts":"x"}`), 9007199254740991)
      assert.strictEqual(peekSeq(`{"seq":120,`), 120)
    })

    it("answers_undefined_for_anything_else", () => {
      assert.strictEqual(peekSeq(`{"ts":"x","seq":1}`), undefined)
      assert.strictEqual(peekSeq(`{"seq": 1,"ts":"x"}`), undefined)
      assert.strictEqual(peekSeq(`{"seq":,"ts":"x"}`), undefined)
      assert.strictEqual(peekSeq(`{"seq":12`), undefined)
      assert.strictEqual(peekSeq(`{"seq":1.5,"ts":"x"}`), undefined)
      assert.strictEqual(peekSeq(`{"seq":"1","ts":"x"}`), undefined)
      assert.strictEqual(peekSeq(`{"seq":123456789012345678,"ts":"x"}`), undefined, "more digits than a safe integer")
      assert.strictEqual(peekSeq(""), undefined)
    })
  })

  describe("readInPlace", () => {
    it("reads_seq_session_key_and_body_in_place_from_a_line_written_here", () => {
      const codec = makeLineCodec(Note)
      const encoded = codec.encodeBatch([
        { seq: 41, ts: "2026-11-27T10:00:00.123Z", session_id: "s\u00e9", event: { type: "note", text: "a" } },
        { seq: 42, ts: "2026-11-27T10:00:00.123Z", event: { type: "blip", text: "b" }, key: "req-7:0" }
      ])
      const [first, second] = [lineAt(encoded, 0), lineAt(encoded, 1)]
      assert.deepStrictEqual(readInPlace(first), {
        _tag: "Change",
        seq: 41,
        sessionId: "s\u00e9",
        body: bodyAt(encoded, 0),
        key: undefined
      })
      assert.deepStrictEqual(readInPlace(second), {
        _tag: "Change",
        seq: 42,
        sessionId: undefined,
        body: bodyAt(encoded, 1),
        key: "req-7:0"
      })
      const body = readInPlace(second) as { body: Uint8Array }
      assert.strictEqual(body.body.buffer, second.buffer, "the body is a view of the line, not a copy")
      assert.strictEqual(
        new TextDecoder().decode(body.body) + "}",
        `{"seq":42,"ts":"2026-11-27T10:00:00.123Z","event":{"type":"blip","text":"b"}}`
      )
      assert.strictEqual(peekSeqBytes(second), 42)
    })

    it("answers_why_when_the_checksum_fails", () => {
      const codec = makeLineCodec(Note)
      const line = lineAt(codec.encodeBatch([{ seq: 1, ts: "t", event: { type: "note", text: "hello" } }]), 0)
      const changed = line.slice()
      changed[changed.indexOf(0x68 /* h */)] = 0x6a // a changed character inside a string: still valid JSON
      assert.include(readInPlace(changed) as string, "checksum mismatch")
      const upper = new TextEncoder().encode(new TextDecoder().decode(line).toUpperCase())
      assert.strictEqual(readInPlace(upper), undefined, "not this layout at all (`SEQ`): parsed in full instead")
      const badDigits = line.slice()
      badDigits[badDigits.length - 3] = 0x47 // G
      assert.strictEqual(readInPlace(badDigits), "field `crc` is not 8 lowercase hex digits")
    })

    it("answers_undefined_for_a_line_without_a_checksum_which_nothing_vouches_for", () => {
      assert.strictEqual(
        readInPlace(bytes(`{"seq":3,"ts":"t","session_id":"s1","event":{"type":"note","text":"x"}}`)),
        undefined
      )
    })

    it("answers_undefined_for_a_checksummed_line_of_another_layout_or_one_that_could_break_a_frame", () => {
      // Lines written by hand with a checksum that holds: what is not this layout, or holds a raw
      // control byte, is left to the parser.
      for (const wire of [
        `{"ts":"t","seq":1,"event":{}}`, // another key order
        `{"seq":1,"ts":"t","session_id":"a\\"b","event":{}}`, // an escaped session id
        `{"seq":0,"ts":"t","event":{}}`,
        `{"seq":1,"ts":"t","event":{"type":"note","text":"a\rb"}}`, // a raw CR in a string
        `{"seq":1,"ts":"t","event":{"type":"note","text":"a\u0001b"}}`, // any raw control byte
        `{"seq":1,"ts":"t","event":{},"key":"a b"}` // a key this codec never writes
      ]) {
        assert.strictEqual(readInPlace(bytes(withChecksum(wire))), undefined, JSON.stringify(wire))
      }
    })
  })

  describe("readParsed", () => {
    it("reads_a_line_of_the_original_with_its_own_bytes_as_body", () => {
      const original = bytes(`{"seq":3,"ts":"t","session_id":"s1","event":{"type":"future","n":12345678901234567890}}`)
      const item = readParsed(original)
      assert.deepStrictEqual(item, {
        _tag: "Change",
        seq: 3,
        sessionId: "s1",
        body: original.subarray(0, original.length - 1),
        key: undefined
      })
      assert.strictEqual((item as { body: Uint8Array }).body.buffer, original.buffer, "a view, digits and all")
    })

    it("answers_why_a_line_is_invalid_as_read_does", () => {
      for (const [line, reason] of [
        [`{"seq":1,"ts":"t","event":{"type":"x"}`, "invalid JSON"], // cut short, still ending in a brace
        [`{"seq":1,"ts":"t","event":{"type":"x"}}{"seq":2,"ts":"t","event":{}}`, "invalid JSON"],
        [`{"seq":1,"ts":"t","event":{"type":"x\\"}}`, "invalid JSON"],
        [`{"seq":1,"ts":"t","event":{"type":"note","text":"a\rb"}}`, "invalid JSON"],
        [`{"seq":1,"ts":"t","event":{"type":"note";"text":"ab"}}`, "invalid JSON"], // one flipped bit
        [`{"seq":1,"ts":"t","event":{"type":"note","text":"a\\qb"}}`, "invalid JSON"],
        [`{"seq":0,"ts":"t","event":{}}`, "field `seq` is not a positive integer"],
        [`{"seq":1,"ts":"t"}`, "field `event` is not an object"],
        [`{"seq":1,"ts":"t","event":{},"key":7}`, "field `key` is not an idempotency key"]
      ] as const) {
        assert.include(readParsed(bytes(line)) as string, reason, line)
      }
    })

    it("encodes_the_body_anew_where_the_line_cannot_be_served_as_it_is", () => {
      const decoder = new TextDecoder()
      const wire = (line: string) => decoder.decode((readParsed(bytes(line)) as { body: Uint8Array }).body) + "}"
      // A CR between tokens is JSON, but not something to put in a frame.
      assert.strictEqual(
        wire(`{"seq":1,"ts":"t",\r"event":{"type":"note","text":"x"}}`),
        `{"seq":1,"ts":"t","event":{"type":"note","text":"x"}}`
      )
      assert.strictEqual(
        wire(`{"ts":"t","event":{"type":"note"},"session_id":"a\\"b","seq":2}`),
        `{"seq":2,"ts":"t","session_id":"a\\"b","event":{"type":"note"}}`
      )
    })

    it("escapes_raw_line_separators_of_a_line_written_before_they_were", () => {
      const original = `{"seq":3,"ts":"t","event":{"type":"note","text":"a\u2028b\u2029c"}}`
      const item = readParsed(bytes(original)) as { body: Uint8Array }
      assert.strictEqual(
        new TextDecoder().decode(item.body) + "}",
        `{"seq":3,"ts":"t","event":{"type":"note","text":"a\\u2028b\\u2029c"}}`
      )
    })
  })

  describe("ByteLineSplitter", () => {
    it("gives_the_same_lines_and_offsets_as_the_text_splitter_for_every_chunk_size", () => {
      const data = bytes('a\u20acb\nxyz\n\u{1F600}\n{"k":"\u00e9"}\nlast\ntail')
      const decoder = new TextDecoder()
      for (let size = 1; size <= data.length; size++) {
        const text = new LineSplitter()
        const raw = new ByteLineSplitter()
        const expected: Array<Line> = []
        const got: Array<Line> = []
        for (let i = 0; i < data.length; i += size) {
          const a = text.push(data.subarray(i, i + size))
          const b = raw.push(data.subarray(i, i + size))
          if (!Array.isArray(a) || !Array.isArray(b)) return assert.fail("unexpected invalid UTF-8")
          expected.push(...a)
          got.push(...b.map((l) => ({ text: decoder.decode(l.bytes), bytes: l.bytes, offset: l.offset })))
        }
        assert.deepStrictEqual(got, expected, `pieces of ${size} bytes`)
        assert.strictEqual(raw.pending, 4)
        assert.strictEqual(raw.offset, text.offset)
      }
    })

    it("reports_the_offset_of_a_line_that_is_not_utf8_after_the_lines_before_it", () => {
      const data = new Uint8Array([...bytes("ok\n"), 0xc3, 0x28, 0x0a, ...bytes("next\n")])
      const split = new ByteLineSplitter(10).push(data)
      assert.ok(!Array.isArray(split))
      assert.strictEqual(split.invalidUtf8At, 13)
      assert.deepStrictEqual(
        split.lines.map((line) => [new TextDecoder().decode(line.bytes), line.offset]),
        [["ok", 10]]
      )
    })
  })

  describe("LineSplitter", () => {
    const text = 'a\u20acb\nxyz\n\u{1F600}\n{"k":"\u00e9"}\nlast\n'
    const data = bytes(text)
    const expected: Array<Line> = [
      line("a\u20acb", 0), // 1 + 3 + 1 bytes + newline
      line("xyz", 6),
      line("\u{1F600}", 10), // 4 bytes
      line('{"k":"\u00e9"}', 15), // 10 bytes
      line("last", 26)
    ]

    it("gives_byte_offsets_with_multi_byte_utf8_for_every_chunk_size", () => {
      for (let size = 1; size <= data.length; size++) {
        const { lines, splitter } = splitInPieces(data, size)
        assert.deepStrictEqual(lines, expected, `pieces of ${size} bytes`)
        assert.strictEqual(splitter.pending, 0)
        assert.strictEqual(splitter.offset, data.length)
      }
    })

    it("holds_back_an_incomplete_last_line", () => {
      const splitter = new LineSplitter()
      assert.deepStrictEqual(splitter.push(bytes("one\ntw")), [line("one", 0)])
      assert.strictEqual(splitter.pending, 2)
      assert.strictEqual(splitter.offset, 4)
      assert.deepStrictEqual(splitter.push(bytes("o")), [])
      assert.strictEqual(splitter.pending, 3)
      assert.deepStrictEqual(splitter.push(bytes("\nthree\n")), [line("two", 4), line("three", 8)])
      assert.strictEqual(splitter.pending, 0)
      assert.strictEqual(splitter.offset, 14)
    })

    it("counts_offsets_from_the_start_offset", () => {
      const splitter = new LineSplitter(100)
      assert.deepStrictEqual(splitter.push(bytes("ab\n\u00e9\n")), [line("ab", 100), line("\u00e9", 103)])
      assert.strictEqual(splitter.offset, 106)
    })

    it("reports_the_line_that_is_not_utf8_with_the_lines_before_it", () => {
      const splitter = new LineSplitter()
      assert.deepStrictEqual(splitter.push(bytes("ok\n\u00e9\n")), [line("ok", 0), line("\u00e9", 3)])
      const data = new Uint8Array([...bytes("good\n\u00e9!\n"), 0x7b, 0xff, 0xfe, 0x7d, 0x0a, ...bytes("after\n")])
      assert.deepStrictEqual(splitter.push(data), {
        invalidUtf8At: 6 + 9, // "good\n" 5 bytes, "é!\n" 4 bytes
        lines: [line("good", 6), line("\u00e9!", 11)]
      })
      // The bad line first in the chunk: no lines before it.
      assert.deepStrictEqual(new LineSplitter(7).push(new Uint8Array([0xc3, 0x0a])), { invalidUtf8At: 7, lines: [] })
      // A multi-byte character split across chunks is not mistaken for invalid UTF-8.
      const split = new LineSplitter()
      assert.deepStrictEqual(split.push(new Uint8Array([0x61, 0xc3])), [])
      assert.deepStrictEqual(split.push(new Uint8Array([0xa9, 0x0a])), [line("a\u00e9", 0)])
    })

    it("keeps_a_byte_order_mark_so_the_line_fails_to_parse", () => {
      const splitter = new LineSplitter()
      assert.deepStrictEqual(splitter.push(bytes("\uFEFF{}\nx\n")), [line("\uFEFF{}", 0), line("x", 6)])
    })

    it("returns_empty_lines_as_lines", () => {
      assert.deepStrictEqual(new LineSplitter().push(bytes("\n\na\n")), [line("", 0), line("", 1), line("a", 2)])
    })
  })

  describe("both reads agree", () => {
    const codec = makeLineCodec(Note)
    const fatal = new TextDecoder("utf-8", { fatal: true })
    const text = fc.string({ unit: "grapheme", maxLength: 40 })
    const stored = fc.record({
      seq: fc.integer({ min: 1, max: 1_000_000 }),
      session: fc.option(text, { nil: undefined }),
      text,
      key: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,16}$/), { nil: undefined }),
      // Lines of the original carry no checksum (nor key).
      original: fc.boolean()
    })
    const damage = fc.oneof(
      fc.record({ kind: fc.constant("replace" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), byte: fc.constant(0) }),
      fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) })
    )

    /** The line of `e`, as written here or by the original. */
    const lineOf = (e: typeof stored extends fc.Arbitrary<infer T> ? T : never): Uint8Array => {
      const change = storedNote(e)
      if (!e.original) return lineAt(codec.encodeBatch([change]), 0).slice()
      const { key: _key, ...wire } = change
      return bytes(JSON.stringify(wire))
    }

    it.prop(
      "a_damaged_line_is_refused_by_readLines_whenever_read_refuses_it_and_served_as_the_json_read_sees",
      [stored, fc.array(damage, { maxLength: 3 })],
      ([e, damages]) => {
        let line = lineOf(e)
        for (const d of damages) {
          const at = d.at % (line.length + 1)
          const next = Array.from(line)
          if (d.kind === "replace" && at < line.length) next[at] = d.byte
          if (d.kind === "flip" && at < line.length) next[at] = next[at]! ^ (1 << d.bit)
          if (d.kind === "delete") next.splice(at, 1)
          if (d.kind === "insert") next.splice(at, 0, d.byte)
          // A newline would make two lines of one; the splitter hands each on alone.
          line = Uint8Array.from(next.filter((b) => b !== 0x0a))
        }
        let lineText: string
        try {
          lineText = fatal.decode(line)
        } catch {
          return // not UTF-8: both reads refuse the line before either looks at it
        }
        const decoded = codec.decodeLine(lineText, line)
        const raw = readInPlace(line) ?? readParsed(line)
        // `readLines` does not judge the event against the schema; everything else it judges alike.
        const envelope = envelopeSeq(line)
        assert.strictEqual(typeof raw === "string", typeof envelope === "string", JSON.stringify(lineText))
        if (typeof decoded !== "string") assert.notStrictEqual(typeof raw, "string", JSON.stringify(lineText))
        if (typeof raw === "string") return
        const wire = new TextDecoder().decode(raw.body) + "}"
        assert.notMatch(wire, /[\u0000-\u001f\u2028\u2029]/, "nothing that breaks a frame or a line reader")
        // The change's fields as the line holds them (a field no reader knows is not the change's).
        const parsed = JSON.parse(lineText)
        const expected =
          typeof parsed.session_id === "string"
            ? { seq: parsed.seq, ts: parsed.ts, session_id: parsed.session_id, event: parsed.event }
            : { seq: parsed.seq, ts: parsed.ts, event: parsed.event }
        assert.deepStrictEqual(JSON.parse(wire), expected, "the wire JSON is the line's change")
        assert.strictEqual(raw.seq, parsed.seq)
        assert.strictEqual(raw.key, parsed.key)
      },
      { fastCheck: { numRuns: 2000 } }
    )

    it.prop(
      "has_control_byte_finds_every_byte_below_0x20_but_a_newline_at_any_alignment",
      [fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 7 })],
      ([data, offset]) => {
        const buffer = new Uint8Array(data.length + offset)
        buffer.set(data, offset)
        const view = buffer.subarray(offset)
        assert.strictEqual(
          hasControlByte(view),
          data.some((b) => b < 0x20 && b !== 0x0a)
        )
      },
      { fastCheck: { numRuns: 2000 } }
    )

    /** A control byte other than a newline, and where (modulo the data's length) it goes, or none. */
    const controlSomewhere = fc.option(
      fc.tuple(
        fc.nat(),
        fc.integer({ min: 0, max: 0x1f }).filter((b) => b !== 0x0a)
      ),
      { nil: undefined }
    )

    it.prop(
      "has_control_byte_finds_one_control_byte_among_text_and_newlines_wherever_it_lies",
      [
        fc.array(fc.oneof(fc.constant(0x0a), fc.integer({ min: 0x20, max: 0xff })), { maxLength: 200, size: "max" }),
        controlSomewhere,
        fc.nat({ max: 7 })
      ],
      ([text, control, offset]) => {
        const data = Uint8Array.from(text)
        if (control !== undefined && data.length > 0) data[control[0] % data.length] = control[1]
        const buffer = new Uint8Array(data.length + offset)
        buffer.set(data, offset)
        assert.strictEqual(
          hasControlByte(buffer.subarray(offset)),
          data.some((b) => b < 0x20 && b !== 0x0a)
        )
      },
      { fastCheck: { numRuns: 2000 } }
    )

    it.prop(
      "has_control_byte_finds_one_control_byte_in_a_chunk_of_many_pieces_wherever_it_lies",
      [fc.integer({ min: 0, max: 3 * PIECE_BYTES + 40 }), controlSomewhere, fc.nat({ max: 15 })],
      ([length, control, offset]) => {
        // Text with a newline now and then, as a chunk of lines is; at an offset, as a chunk's lines are.
        const buffer = new Uint8Array(length + offset).fill(0x61)
        for (let i = offset + 37; i < buffer.length; i += 97) buffer[i] = 0x0a
        const data = buffer.subarray(offset)
        if (control !== undefined && length > 0) data[control[0] % length] = control[1]
        const expected = control !== undefined && length > 0
        assert.strictEqual(hasControlByte(data), expected)
        assert.strictEqual(wordsHoldControl(data), expected, "the search in JavaScript agrees")
      },
      { fastCheck: { numRuns: 200 } }
    )
  })

  describe("LineCodec", () => {
    const codec = makeLineCodec(Note)

    /** A line as written here: the wire JSON, the key if any, and the CRC-32 of what precedes the checksum. */
    const stored = (wire: string, key?: string) => {
      const checked = wire.slice(0, -1) + (key === undefined ? "" : `,"key":"${key}"`)
      return `${checked},"crc":"${crc32(checked).toString(16).padStart(8, "0")}"}`
    }

    it("encodes_a_batch_in_the_original_line_format_with_key_and_checksum_after_the_event", () => {
      const encoded = codec.encodeBatch([
        {
          seq: 1,
          ts: "2026-11-27T10:00:00.123Z",
          session_id: "s1",
          event: { type: "note", session: "s1", text: "\u00e9" }
        },
        { seq: 2, ts: "2026-11-27T10:00:00.124Z", event: { type: "blip", text: "b" }, key: "K.1_a:b-c" }
      ])
      const firstWire = `{"seq":1,"ts":"2026-11-27T10:00:00.123Z","session_id":"s1","event":{"type":"note","session":"s1","text":"\u00e9"}}`
      const secondWire = `{"seq":2,"ts":"2026-11-27T10:00:00.124Z","event":{"type":"blip","text":"b"}}`
      const [first, second] = [stored(firstWire), stored(secondWire, "K.1_a:b-c")]
      assert.match(first, /,"crc":"[0-9a-f]{8}"\}$/)
      const decoder = new TextDecoder()
      assert.strictEqual(decoder.decode(encoded.bytes), `${first}\n${second}\n`)
      assert.strictEqual(decoder.decode(lineAt(encoded, 0)), first, "each event's line, as written")
      assert.strictEqual(decoder.decode(lineAt(encoded, 1)), second)
      assert.strictEqual(decoder.decode(bodyAt(encoded, 0)) + "}", firstWire, "each event's body: its wire JSON")
      assert.strictEqual(decoder.decode(bodyAt(encoded, 1)) + "}", secondWire, "the key is not part of it")
      assert.strictEqual(codec.encodeBatch([]).bytes.length, 0)
      // The original reads such a line as the same ChangeEvent: the fields it does not know it ignores.
      const parsed = JSON.parse(second)
      assert.deepStrictEqual(Object.keys(parsed), ["seq", "ts", "event", "key", "crc"])
    })

    it("escapes_line_separators_in_new_lines_as_the_same_json", () => {
      const encoded = codec.encodeBatch([{ seq: 1, ts: "t", event: { type: "note", text: "a\u2028b\u2029c" } }])
      const line = new TextDecoder().decode(lineAt(encoded, 0))
      assert.notInclude(line, "\u2028")
      assert.notInclude(line, "\u2029")
      assert.include(line, "a\\u2028b\\u2029c")
      assert.deepStrictEqual(codec.decodeLine(line), {
        seq: 1,
        ts: "t",
        event: { type: "note", text: "a\u2028b\u2029c" }
      })
    })

    it.prop(
      "an_event_given_as_its_json_is_written_byte_for_byte_as_the_encoder_writes_it",
      [
        fc.array(
          fc.record({
            session_id: fc.option(fc.string(), { nil: undefined }),
            text: fc.string({ unit: "binary" }),
            key: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/), { nil: undefined })
          }),
          { maxLength: 5 }
        )
      ],
      ([specs]) => {
        const events = specs.map((spec, i) => ({
          seq: i + 1,
          ts: "2026-11-27T10:00:00.000Z",
          event: { type: "note" as const, text: spec.text },
          ...(spec.session_id === undefined ? {} : { session_id: spec.session_id }),
          ...(spec.key === undefined ? {} : { key: spec.key })
        }))
        const given = events.map((e) => ({ eventJson: JSON.stringify(e.event) }))
        assert.deepStrictEqual(codec.encodeBatch(events, given), codec.encodeBatch(events))
      }
    )

    it.prop(
      "writes_each_line_as_the_json_of_its_change_with_separators_escaped_then_its_key_and_checksum",
      [
        fc.array(
          fc.record({
            seq: fc.oneof(
              fc.integer({ min: 1, max: 20 }),
              fc.maxSafeInteger(),
              fc.integer({ min: 1 }),
              // Never a seq, but what the encoder writes then is still what `JSON.stringify` writes.
              fc.constantFrom(-1.2345678901234567e-6, 1e21, 0.5, Number.NaN)
            ),
            ts: fc.oneof(fc.constant("2026-11-27T10:00:00.000Z"), fc.string({ unit: "binary" })),
            session_id: fc.option(
              fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.constantFrom("a\u2028b", 'q"\\\n')),
              {
                nil: undefined
              }
            ),
            text: fc.string({ unit: "binary" }),
            key: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,12}$/), { nil: undefined }),
            given: fc.constantFrom("bytes", "text", "none")
          }),
          { maxLength: 6 }
        )
      ],
      ([specs]) => {
        const events = specs.map((spec) => ({
          seq: spec.seq,
          ts: spec.ts,
          ...(spec.session_id === undefined ? {} : { session_id: spec.session_id }),
          event: { type: "note" as const, text: spec.text },
          ...(spec.key === undefined ? {} : { key: spec.key })
        }))
        const given = specs.map((spec, i) => {
          const json = JSON.stringify(events[i]!.event)
          return { eventJson: spec.given === "bytes" ? bytes(json) : spec.given === "text" ? json : undefined }
        })
        const escape = (json: string) => json.replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029")
        const expected = events
          .map((e) => {
            const { key, ...change } = e
            return `${stored(escape(JSON.stringify(change)), key)}\n`
          })
          .join("")
        assert.strictEqual(new TextDecoder().decode(codec.encodeBatch(events, given).bytes), expected)
      }
    )

    it("writes_a_value_that_is_not_its_own_encoding_as_the_schema_encodes_it", () => {
      // A schema whose plain values are their own encoding (`canonicalCheck` accepts them).
      const Plain = Schema.Struct({ type: Schema.Literal("note"), text: Schema.String })
      const plain = makeLineCodec(Plain)
      const line = (event: unknown) =>
        new TextDecoder().decode(lineAt(plain.encodeBatch([{ seq: 1, ts: "t", event: event as typeof Plain.Type }]), 0))
      const written = '"event":{"type":"note","text":"x"}'
      assert.include(line({ type: "note", text: "x" }), written, "its own encoding")
      assert.include(line({ text: "x", type: "note" }), written, "fields in the schema's order")
      assert.include(line({ type: "note", text: "x", extra: 1 }), written, "a field the schema does not hold dropped")
      class Written {
        readonly type = "note"
        readonly text = "x"
        toJSON() {
          return "not the event"
        }
      }
      assert.include(line(new Written()), written, "an object that writes itself otherwise")
      assert.throws(() => line({ type: "note", text: 1 }), /Expected string/, "a value the schema refuses")
    })

    it("writes_an_event_given_as_its_json_without_encoding_it_again", () => {
      // A JSON text the encoder would never write for the event: only a line made from it holds it.
      const encoded = codec.encodeBatch(
        [{ seq: 1, ts: "t", event: { type: "note", text: "x" } }],
        [{ eventJson: '{"type":"note","text":"given"}' }]
      )
      assert.include(new TextDecoder().decode(lineAt(encoded, 0)), '"event":{"type":"note","text":"given"}')
    })

    it("refuses_a_key_it_cannot_store_as_it_is", () => {
      for (const key of ["", 'a"b', "a b", "x".repeat(129), "\u00e9"]) {
        assert.throws(
          () => codec.encodeBatch([{ seq: 1, ts: "t", event: { type: "note", text: "x" }, key }]),
          /idempotency key/
        )
      }
    })

    it("decodes_the_key_and_verifies_the_checksum", () => {
      const line = stored(`{"seq":3,"ts":"t","event":{"type":"note","text":"x"}}`, "k1")
      assert.deepStrictEqual(codec.decodeLine(line), { seq: 3, ts: "t", event: { type: "note", text: "x" }, key: "k1" })
      assert.include(codec.decodeLine(line.replace('"x"', '"y"')) as string, "checksum mismatch")
      assert.strictEqual(verifyChecksum(bytes(`{"seq":3,"ts":"t","event":{}}`)), -1, "no checksum to check")
      assert.strictEqual(
        codec.decodeLine(`{"crc":"00000000","seq":3,"ts":"t","event":{"type":"note","text":"x"}}`),
        "field `crc` is not at the end of the line"
      )
      assert.strictEqual(envelopeSeq(bytes(line)), 3)
      assert.include(envelopeSeq(bytes(line.replace('"x"', '"y"'))) as string, "checksum mismatch")
    })

    it("decodes_a_line_and_leaves_an_absent_session_id_absent", () => {
      assert.deepStrictEqual(
        codec.decodeLine(`{"seq":3,"ts":"t","session_id":"s","event":{"type":"note","text":"x"}}`),
        {
          seq: 3,
          ts: "t",
          session_id: "s",
          event: { type: "note", text: "x" }
        }
      )
      const withoutSession = codec.decodeLine(`{"seq":4,"ts":"t","event":{"type":"blip","text":"y"}}`)
      assert.deepStrictEqual(withoutSession, { seq: 4, ts: "t", event: { type: "blip", text: "y" } })
      assert.isFalse(typeof withoutSession === "object" && "session_id" in withoutSession)
      assert.deepStrictEqual(
        codec.decodeLine(`{"seq":5,"ts":"t","session_id":null,"event":{"type":"note","text":""}}`),
        {
          seq: 5,
          ts: "t",
          event: { type: "note", text: "" }
        }
      )
    })

    it("answers_why_a_line_is_invalid", () => {
      const reason = (line: string) => {
        const decoded = codec.decodeLine(line)
        return typeof decoded === "string" ? decoded : assert.fail(`${line} decoded`)
      }
      assert.include(reason(`{"seq":1,`), "invalid JSON")
      assert.include(reason(``), "invalid JSON")
      assert.include(reason(`\uFEFF{"seq":1,"ts":"t","event":{"type":"note","text":"x"}}`), "invalid JSON")
      assert.strictEqual(reason(`[1]`), "field `seq` is not a positive integer")
      assert.strictEqual(reason(`null`), "line is not a JSON object")
      assert.strictEqual(reason(`7`), "line is not a JSON object")
      assert.strictEqual(reason(`{"seq":0,"ts":"t","event":{}}`), "field `seq` is not a positive integer")
      assert.strictEqual(reason(`{"seq":1.5,"ts":"t","event":{}}`), "field `seq` is not a positive integer")
      assert.strictEqual(reason(`{"seq":"1","ts":"t","event":{}}`), "field `seq` is not a positive integer")
      assert.strictEqual(reason(`{"seq":1,"event":{}}`), "field `ts` is not a string")
      assert.strictEqual(reason(`{"seq":1,"ts":"t","session_id":7,"event":{}}`), "field `session_id` is not a string")
      assert.include(reason(`{"seq":1,"ts":"t","event":{"type":"other","text":"x"}}`), "field `event` is invalid")
      assert.include(reason(`{"seq":1,"ts":"t"}`), "field `event` is invalid")
    })
  })
})
