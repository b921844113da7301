/**
 * The checks that keep a POST body from being journaled other than as sent, against reference
 * answers: the first byte that is not UTF-8 (Node's own validator), and the path of an integer
 * a double would round, wherever it sits in any JSON value, whatever the keys and strings around it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { isUtf8 } from "node:buffer"
import { inexactInteger, invalidUtf8At, parseBody } from "../../src/Http/Body.js"

/** Bytes that are mostly UTF-8 (text of every plane), with a stray byte spliced in now and then. */
const mostlyUtf8 = fc
  .tuple(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.option(fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 3 })))
  )
  .map(([text, splice]) => {
    const bytes = Buffer.from(text)
    if (splice === null) return new Uint8Array(bytes)
    const at = splice[0] % (bytes.length + 1)
    return new Uint8Array(Buffer.concat([bytes.subarray(0, at), splice[1], bytes.subarray(at)]))
  })

describe("invalidUtf8At", () => {
  it.prop("finds_the_first_byte_no_well_formed_sequence_covers", [mostlyUtf8], ([bytes]) => {
    const at = invalidUtf8At(bytes)
    if (at === undefined) {
      assert.isTrue(isUtf8(bytes))
      return
    }
    assert.isFalse(isUtf8(bytes))
    assert.isTrue(isUtf8(bytes.subarray(0, at)), "all before it is UTF-8")
    for (let length = 1; length <= 4 && at + length <= bytes.length; length++) {
      assert.isFalse(isUtf8(bytes.subarray(at, at + length)), "no character starts there")
    }
  })
})

const BIG = "12345678901234567890"

/** A JSON value with one leaf marked, and the path to that leaf as the server names fields. */
const withMarkedLeaf: fc.Arbitrary<{ readonly value: unknown; readonly path: string }> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant({ value: "MARK", path: "" }),
    fc
      .tuple(
        fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
        tie("node"),
        fc.array(fc.jsonValue(), { maxLength: 2 })
      )
      .map(([before, inner, after]) => {
        const { value, path } = inner as { value: unknown; path: string }
        return { value: [...before, value, ...after], path: `[${before.length}]${path}` }
      }),
    fc
      .tuple(
        fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
        fc.string({ maxLength: 8 }),
        tie("node")
      )
      .map(([others, key, inner]) => {
        const { value, path } = inner as { value: unknown; path: string }
        const rest = Object.fromEntries(Object.entries(others).filter(([k]) => k !== key))
        return { value: { ...rest, [key]: value }, path: `.${key}${path}` }
      })
  )
})).node

describe("inexactInteger", () => {
  it.prop("names_the_path_of_an_integer_a_double_would_round_anywhere_in_a_value", [withMarkedLeaf], ([marked]) => {
    // The marked leaf becomes the big integer; every other number is one a double holds exactly.
    const text = JSON.stringify(marked.value).replace('"MARK"', BIG)
    const found = inexactInteger(text)
    const path = marked.path.startsWith(".") ? marked.path.slice(1) : marked.path
    assert.deepStrictEqual(found, { path, literal: BIG, stored: String(Number(BIG)) })
    // And through the whole check, the field named is the same.
    const parsed = parseBody(Buffer.from(text))
    assert.isTrue(Either.isLeft(parsed) && parsed.left.field === (path === "" ? "body" : path))
  })

  it.prop("finds_nothing_in_json_that_a_double_holds_exactly", [fc.jsonValue()], ([value]) => {
    assert.isUndefined(inexactInteger(JSON.stringify(value)))
  })
})

/** The first problem the check has always named: children taken last first, off a stack. */
const firstProblem = (value: unknown): string | undefined => {
  const pending: Array<[unknown, number]> = [[value, 1]]
  while (pending.length > 0) {
    const [next, depth] = pending.pop()!
    if (typeof next === "number") {
      if (!Number.isFinite(next)) return "holds a number too large to store"
      continue
    }
    if (next === null || typeof next !== "object") continue
    if (depth > 256) return "nests arrays and objects more than 256 levels deep"
    for (const child of Object.values(next)) pending.push([child, depth + 1])
  }
  return undefined
}

/** JSON text of arrays and objects holding numbers too large for a double and runs nested about as deep as allowed. */
const troubled: fc.Arbitrary<string> = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constantFrom("1e999", "-1e999", "1", '"s"', "null"),
    fc.integer({ min: 250, max: 262 }).map((depth) => "[".repeat(depth) + "1" + "]".repeat(depth)),
    fc.array(tie("node"), { maxLength: 4 }).map((items) => `[${items.join(",")}]`),
    fc
      .array(fc.tuple(fc.string({ maxLength: 4 }), tie("node")), { maxLength: 4 })
      .map((fields) => `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`)
  )
})).node as fc.Arbitrary<string>

describe("parseBody", () => {
  it.prop("names_the_first_of_several_problems_as_it_always_has", [troubled], ([text]) => {
    const expected = firstProblem(JSON.parse(text))
    const parsed = parseBody(Buffer.from(text))
    if (expected === undefined) assert.isTrue(Either.isRight(parsed))
    else assert.strictEqual(Either.isLeft(parsed) ? parsed.left.message : "", `the request body ${expected}`)
  })
})
