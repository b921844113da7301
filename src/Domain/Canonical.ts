/**
 * Canonical values of a schema: parsed JSON that decoding would only copy, and whose encoding
 * is the value itself. For such a value, `JSON.stringify(value)` is exactly what the journal's
 * encoder writes for it (`JSON.stringify(encode(decode(value)))`), so a producer that holds one
 * can skip both the decode copy and the encode, and hand the journal the event's JSON. The
 * journal's encoder asks the same of the events a producer gives as values: one that is canonical
 * (a plain object, as the schema reads it) is written as `JSON.stringify` writes it, without the
 * encoder's copy.
 *
 * The check is compiled once from the schema's AST and covers what plain JSON schemas are made
 * of: structs (fields in declaration order, optional ones exact), string, number, boolean and
 * literal fields, arrays, `Unknown`, and unions told apart by a literal field. A value is
 * canonical only if it has exactly the struct's fields, in the struct's order, since decoding
 * drops unknown fields and writes the known ones in that order. Anything else the schema holds
 * (a transformation, a refinement, a class) makes the check answer `false`, so the caller falls
 * back to decoding: a `false` is never wrong, only slower.
 */
import { type Schema, SchemaAST } from "effect"
import { BytesTable, findByte, matchAt } from "../Scratch.js"

/** Whether `value`, parsed from JSON, is canonical for the schema the check was made for. */
export type CanonicalCheck = (value: unknown) => boolean

const never: CanonicalCheck = () => false

/** A key of a union member that holds a different literal in every member. */
const discriminant = (members: ReadonlyArray<SchemaAST.AST>): string | undefined => {
  const first = members[0]
  if (first === undefined || first._tag !== "TypeLiteral") return undefined
  for (const candidate of first.propertySignatures) {
    if (typeof candidate.name !== "string") continue
    const seen = new Set<unknown>()
    const tagged = members.every((member) => {
      if (member._tag !== "TypeLiteral") return false
      const field = member.propertySignatures.find((ps) => ps.name === candidate.name)
      if (field === undefined || field.isOptional || field.type._tag !== "Literal") return false
      if (seen.has(field.type.literal)) return false
      seen.add(field.type.literal)
      return true
    })
    if (tagged) return candidate.name
  }
  return undefined
}

const compile = (ast: SchemaAST.AST): CanonicalCheck => {
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => typeof u === "string"
    case "NumberKeyword":
      return (u) => typeof u === "number"
    case "BooleanKeyword":
      return (u) => typeof u === "boolean"
    case "UnknownKeyword":
    case "AnyKeyword":
      return () => true
    case "Literal": {
      const literal = ast.literal
      return (u) => u === literal
    }
    case "TupleType": {
      if (ast.elements.length > 0 || ast.rest.length !== 1) return never
      const item = compile(ast.rest[0]!.type)
      return (u) => {
        if (!Array.isArray(u)) return false
        for (let i = 0; i < u.length; i++) if (!item(u[i])) return false
        return true
      }
    }
    case "TypeLiteral": {
      if (ast.indexSignatures.length > 0) return never
      const fields = ast.propertySignatures
      if (fields.some((ps) => typeof ps.name !== "string")) return never
      const names = fields.map((ps) => ps.name as string)
      const optional = fields.map((ps) => ps.isOptional)
      const checks = fields.map((ps) => compile(ps.type))
      return (u) => {
        if (typeof u !== "object" || u === null || Array.isArray(u)) return false
        // A plain object only: another (a class's, a `Data` value) may write itself otherwise (`toJSON`).
        const prototype: unknown = Object.getPrototypeOf(u)
        if (prototype !== Object.prototype && prototype !== null) return false
        const record = u as Record<string, unknown>
        let i = 0
        for (const key in record) {
          // Absent optional fields are skipped; any other key out of place is one decoding would move or drop.
          while (i < names.length && names[i] !== key && optional[i]) i++
          if (i === names.length || names[i] !== key || !checks[i]!(record[key])) return false
          i++
        }
        for (; i < names.length; i++) if (!optional[i]) return false
        return true
      }
    }
    case "Union": {
      const key = discriminant(ast.types)
      if (key === undefined) return never
      const byTag = new Map<unknown, CanonicalCheck>()
      for (const member of ast.types) {
        const field = (member as SchemaAST.TypeLiteral).propertySignatures.find((ps) => ps.name === key)!
        byTag.set((field.type as SchemaAST.Literal).literal, compile(member))
      }
      return (u) => {
        if (typeof u !== "object" || u === null) return false
        const check = byTag.get((u as Record<string, unknown>)[key])
        return check !== undefined && check(u)
      }
    }
    default:
      return never
  }
}

/** Checks compiled so far, by schema: every account's journal asks for its schema's, and one is tens of KiB. */
const compiled = new WeakMap<SchemaAST.AST, CanonicalCheck>()

/** The canonical check of `schema`, compiled once. */
export const canonicalCheck = <A, I>(schema: Schema.Schema<A, I>): CanonicalCheck => {
  let check = compiled.get(schema.ast)
  if (check === undefined) {
    check = compile(schema.ast)
    compiled.set(schema.ast, check)
  }
  return check
}

// ---------------------------------------------------------------------------------------------------------------
// The same check on JSON text, before anything is parsed
// ---------------------------------------------------------------------------------------------------------------

/**
 * Where the canonical JSON of a value of the schema that starts at `start` ends (exclusive), or
 * -1. The bytes must be UTF-8 and hold no byte below 0x20, as canonical JSON never does (the
 * caller checks a whole body for both at once). Canonical JSON is what `JSON.stringify` writes
 * for the value `JSON.parse` reads from it, and the value canonical for the schema
 * (`CanonicalCheck`): so the text is the event's journal JSON as it is, and parsing it gives the
 * decoded event. Anything the walk is not sure of (an escape `JSON.stringify` does
 * not write, a number in another form, whitespace, a key that may be ordered otherwise or given
 * twice, nesting past `MAX_DEPTH`) is -1: never wrong, only slower, as the caller parses then.
 */
export type CanonicalJsonCheck = (bytes: Uint8Array, start: number) => number

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const MINUS = 0x2d
const ZERO = 0x30
const NINE = 0x39

/** Deeper than this the walk gives up (the parse then judges the nesting). */
const MAX_DEPTH = 64
/** Keys compared with each other for duplicates in one object of an `Unknown`; more and the walk gives up. */
const MAX_KEYS = 64

const TRUE = [0x74, 0x72, 0x75, 0x65]
const FALSE = [0x66, 0x61, 0x6c, 0x73, 0x65]
const NULL = [0x6e, 0x75, 0x6c, 0x6c]

const bytesOf = (text: string): Uint8Array => new TextEncoder().encode(text)

const isLowerHex = (c: number | undefined) => c !== undefined && ((c >= ZERO && c <= NINE) || (c >= 0x61 && c <= 0x66))

/**
 * The bytes the next backslash was last looked for in, from where, and where it is (their
 * length if none). Kept between calls (a body's strings are walked in order, and most hold no
 * escape): it holds on to the last bytes walked, one body at most, until the next walk.
 */
let escapesIn: Uint8Array | undefined = undefined
let escapesFrom = 0
let nextEscape = 0

/** Where the first backslash at or after `from` is in `bytes` (their length if none), memchr'd once for many strings. */
const escapeFrom = (bytes: Uint8Array, from: number): number => {
  if (escapesIn !== bytes || from < escapesFrom || nextEscape < from) {
    const found = findByte(bytes, BACKSLASH, from)
    escapesIn = bytes
    escapesFrom = from
    nextEscape = found < 0 ? bytes.length : found
  }
  return nextEscape
}

/**
 * Where the string whose opening quote is at `at` ends (past its closing quote), or -1 unless
 * it is as `JSON.stringify` writes it: only the escapes it writes (`\"`, `\\`, `\b \f \n \r
 * \t`, and `\u00xx` in lowercase for the other control characters), so no escaped
 * surrogate, alone or paired. The bytes hold no control character (`CanonicalJsonCheck`): the
 * closing quote is found by memchr, and only a string with a backslash is walked.
 */
export const canonicalStringEnd = (bytes: Uint8Array, at: number): number => {
  const quote = findByte(bytes, QUOTE, at + 1)
  if (quote < 0) return -1
  let i = escapeFrom(bytes, at + 1)
  if (i > quote) return quote + 1
  while (true) {
    const c = bytes[i]
    if (c === undefined) return -1
    if (c === QUOTE) return i + 1
    if (c !== BACKSLASH) {
      i++
      continue
    }
    const e = bytes[i + 1]
    if (e === QUOTE || e === BACKSLASH || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
      i += 2
      continue
    }
    // `\u00xx`: only for a control character without a short escape.
    if (e !== 0x75 || bytes[i + 2] !== ZERO || bytes[i + 3] !== ZERO) return -1
    const high = bytes[i + 4]
    const low = bytes[i + 5]
    if ((high !== ZERO && high !== 0x31) || !isLowerHex(low)) return -1
    const code = (high - ZERO) * 16 + (low! <= NINE ? low! - ZERO : low! - 0x57)
    if (code === 0x08 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d) return -1
    i += 6
  }
}

/** Whether the string whose opening quote is at `at` and which ends at `end` holds an escape. */
export const hasEscape = (bytes: Uint8Array, at: number, end: number): boolean => escapeFrom(bytes, at + 1) < end

/** Where the number at `at` ends, or -1 unless it is the text `String` gives for its value (so not `1.0`, `1e3`, `-0`, `01`). */
export const canonicalNumberEnd = (bytes: Uint8Array, at: number): number => {
  let i = at
  if (bytes[i] === MINUS) i++
  const digits = i
  while (bytes[i]! >= ZERO && bytes[i]! <= NINE) i++
  if (i === digits) return -1
  const c = bytes[i]
  const fraction = c === 0x2e || c === 0x65 || c === 0x45 /* . e E */
  if (fraction) {
    while (true) {
      const d = bytes[i]
      if (
        d === undefined ||
        !((d >= ZERO && d <= NINE) || d === 0x2e || d === 0x65 || d === 0x45 || d === 0x2b || d === MINUS)
      )
        break
      i++
    }
  }
  // Short integers without a leading zero print as they are read; the rest are checked.
  if (fraction || i - digits > 15 || (bytes[digits] === ZERO && (i - digits > 1 || digits > at))) {
    const text = String.fromCharCode(...bytes.subarray(at, i))
    if (String(Number(text)) !== text) return -1
  }
  return i
}

/** Whether the key whose content is `start` to `end` is one an object may order otherwise (an index) or is written twice. */
const keyRefused = (bytes: Uint8Array, start: number, end: number, keys: Array<number>): boolean => {
  const first = bytes[start]
  if ((first !== undefined && first >= ZERO && first <= NINE) || first === MINUS) return true
  const length = end - start
  for (let k = 0; k < keys.length; k += 2) {
    const other = keys[k]!
    if (keys[k + 1]! - other !== length) continue
    let same = true
    for (let j = 0; j < length; j++) {
      if (bytes[start + j] !== bytes[other + j]) {
        same = false
        break
      }
    }
    if (same) return true
  }
  keys.push(start, end)
  return keys.length > 2 * MAX_KEYS
}

/** Where the canonical JSON value at `at` ends, or -1: any value, as an `Unknown` field holds it. */
export const canonicalValueEnd = (bytes: Uint8Array, at: number, depth = 0): number => {
  const c = bytes[at]
  if (c === QUOTE) return canonicalStringEnd(bytes, at)
  if (c === OPEN_BRACE) {
    if (depth >= MAX_DEPTH) return -1
    let i = at + 1
    if (bytes[i] === CLOSE_BRACE) return i + 1
    const keys: Array<number> = []
    while (true) {
      if (bytes[i] !== QUOTE) return -1
      const keyEnd = canonicalStringEnd(bytes, i)
      if (keyEnd < 0 || bytes[keyEnd] !== COLON) return -1
      // A key with an escape may equal another written otherwise: not compared, refused.
      if (hasEscape(bytes, i, keyEnd)) return -1
      if (keyRefused(bytes, i + 1, keyEnd - 1, keys)) return -1
      i = canonicalValueEnd(bytes, keyEnd + 1, depth + 1)
      if (i < 0) return -1
      const next = bytes[i++]
      if (next === CLOSE_BRACE) return i
      if (next !== COMMA) return -1
    }
  }
  if (c === OPEN_BRACKET) {
    if (depth >= MAX_DEPTH) return -1
    let i = at + 1
    if (bytes[i] === CLOSE_BRACKET) return i + 1
    while (true) {
      i = canonicalValueEnd(bytes, i, depth + 1)
      if (i < 0) return -1
      const next = bytes[i++]
      if (next === CLOSE_BRACKET) return i
      if (next !== COMMA) return -1
    }
  }
  if (c === 0x74) return matchAt(bytes, at, TRUE) ? at + 4 : -1
  if (c === 0x66) return matchAt(bytes, at, FALSE) ? at + 5 : -1
  if (c === 0x6e) return matchAt(bytes, at, NULL) ? at + 4 : -1
  return canonicalNumberEnd(bytes, at)
}

const neverJson: CanonicalJsonCheck = () => -1

/** Whether `name` is written by `JSON.stringify` as it is, between quotes. */
const plainKey = (name: string) => JSON.stringify(name) === `"${name}"`

const compileJson = (ast: SchemaAST.AST): CanonicalJsonCheck => {
  switch (ast._tag) {
    case "StringKeyword":
      return (bytes, at) => (bytes[at] === QUOTE ? canonicalStringEnd(bytes, at) : -1)
    case "NumberKeyword":
      return (bytes, at) => {
        const c = bytes[at]
        return c === MINUS || (c !== undefined && c >= ZERO && c <= NINE) ? canonicalNumberEnd(bytes, at) : -1
      }
    case "BooleanKeyword":
      return (bytes, at) => (matchAt(bytes, at, TRUE) ? at + 4 : matchAt(bytes, at, FALSE) ? at + 5 : -1)
    case "UnknownKeyword":
    case "AnyKeyword":
      return (bytes, at) => canonicalValueEnd(bytes, at)
    case "Literal": {
      if (typeof ast.literal === "bigint") return neverJson
      const expected = bytesOf(JSON.stringify(ast.literal))
      return (bytes, at) => (matchAt(bytes, at, expected) ? at + expected.length : -1)
    }
    case "TupleType": {
      if (ast.elements.length > 0 || ast.rest.length !== 1) return neverJson
      const item = compileJson(ast.rest[0]!.type)
      return (bytes, at) => {
        if (bytes[at] !== OPEN_BRACKET) return -1
        let i = at + 1
        if (bytes[i] === CLOSE_BRACKET) return i + 1
        while (true) {
          i = item(bytes, i)
          if (i < 0) return -1
          const next = bytes[i++]
          if (next === CLOSE_BRACKET) return i
          if (next !== COMMA) return -1
        }
      }
    }
    case "TypeLiteral": {
      if (ast.indexSignatures.length > 0) return neverJson
      const fields = ast.propertySignatures
      if (fields.some((ps) => typeof ps.name !== "string" || !plainKey(ps.name))) return neverJson
      // Each field's key as it is written, with its quotes and colon.
      const keys = fields.map((ps) => bytesOf(`"${ps.name as string}":`))
      const optional = fields.map((ps) => ps.isOptional)
      const checks = fields.map((ps) => compileJson(ps.type))
      return (bytes, at) => {
        if (bytes[at] !== OPEN_BRACE) return -1
        let i = at + 1
        let f = 0
        if (bytes[i] === CLOSE_BRACE) i++
        else {
          while (true) {
            // The next key is the next field written; the optional ones before it are absent.
            while (f < keys.length && !matchAt(bytes, i, keys[f]!)) {
              if (!optional[f]) return -1
              f++
            }
            if (f === keys.length) return -1
            i = checks[f]!(bytes, i + keys[f]!.length)
            f++
            if (i < 0) return -1
            const next = bytes[i++]
            if (next === CLOSE_BRACE) break
            if (next !== COMMA) return -1
          }
        }
        for (; f < keys.length; f++) if (!optional[f]) return -1
        return i
      }
    }
    case "Union": {
      const key = discriminant(ast.types)
      if (key === undefined || !plainKey(key)) return neverJson
      // Told apart by the first field written, which in canonical order is the discriminant's
      // only if every member declares it first, and holds a string.
      const members: Array<readonly [string, CanonicalJsonCheck]> = []
      for (const member of ast.types) {
        const first = (member as SchemaAST.TypeLiteral).propertySignatures[0]!
        const tag = (first.type as SchemaAST.Literal).literal
        if (first.name !== key || typeof tag !== "string" || !plainKey(tag)) return neverJson
        members.push([tag, compileJson(member)])
      }
      const byTag = new BytesTable(members)
      const head = bytesOf(`{"${key}":"`)
      return (bytes, at) => {
        if (!matchAt(bytes, at, head)) return -1
        const from = at + head.length
        const check = byTag.get(bytes, from, findByte(bytes, QUOTE, from))
        return check === undefined ? -1 : check(bytes, at)
      }
    }
    default:
      return neverJson
  }
}

/** The canonical check of `schema` on JSON text (`CanonicalJsonCheck`), compiled once. */
export const canonicalJsonCheck = <A, I>(schema: Schema.Schema<A, I>): CanonicalJsonCheck => compileJson(schema.ast)
