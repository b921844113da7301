/**
 * The OpenAPI document as served: what `HttpApi` generates, finished so that strict OpenAPI 3.1
 * validators accept it and so that it says how the stream takes its token.
 *
 * Effect's JSON Schema output marks every `Schema.Unknown` (and the other keyword schemas) with
 * the same `$id` (`/schemas/unknown`), so a document that uses one several times declares one
 * identifier many times, which JSON Schema forbids. Those `$id`s carry no meaning here (nothing
 * refers to them), so they are left out. Operations that take an `access_token` query parameter
 * (the stream, for `EventSource`, which cannot set headers) accept it as an alternative to the
 * bearer header, and the document says so with a security scheme of its own.
 */

/** The `$id`s Effect gives its keyword schemas (unknown, any, object, {}, void, never). */
const keywordIds = new Set([
  "/schemas/unknown",
  "/schemas/any",
  "/schemas/object",
  "/schemas/%7B%7D",
  "/schemas/void",
  "/schemas/never"
])

const withoutKeywordIds = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(withoutKeywordIds)
  if (typeof value !== "object" || value === null) return value
  const out: Record<string, unknown> = {}
  for (const [key, field] of Object.entries(value)) {
    if (key === "$id" && typeof field === "string" && keywordIds.has(field)) continue
    out[key] = withoutKeywordIds(field)
  }
  return out
}

/** The name of the security scheme of the stream's `?access_token=`. */
export const queryTokenScheme = "access_token"

const takesQueryToken = (operation: { readonly parameters?: ReadonlyArray<{ name?: string; in?: string }> }) =>
  (operation.parameters ?? []).some((parameter) => parameter.name === "access_token" && parameter.in === "query")

/** `OpenApi.Transform` of the feed's API. */
export const finishDocument = (spec: Record<string, any>): Record<string, any> => {
  const out = withoutKeywordIds(spec) as Record<string, any>
  let queryToken = false
  for (const item of Object.values<Record<string, any>>(out["paths"] ?? {})) {
    for (const operation of Object.values<Record<string, any>>(item)) {
      if (typeof operation !== "object" || operation === null || !takesQueryToken(operation)) continue
      queryToken = true
      // Either scheme is enough: each requirement object of the list is an alternative.
      operation["security"] = [...(operation["security"] ?? []), { [queryTokenScheme]: [] }]
    }
  }
  if (queryToken) {
    out["components"]["securitySchemes"][queryTokenScheme] = {
      type: "apiKey",
      in: "query",
      name: "access_token",
      description: "The bearer token as a query parameter, on the stream only (EventSource cannot set headers)"
    }
  }
  return out
}
