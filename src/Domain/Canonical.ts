/**
 * Canonical values of a schema: parsed JSON that decoding would only copy, and whose encoding
 * is the value itself. For such a value, `JSON.stringify(value)` is exactly what the journal's
 * encoder writes for it (`JSON.stringify(encode(decode(value)))`), so a producer that holds one
 * can skip both the decode copy and the encode, and hand the journal the event's JSON.
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

/** The canonical check of `schema`, compiled once. */
export const canonicalCheck = <A, I>(schema: Schema.Schema<A, I>): CanonicalCheck => compile(schema.ast)
