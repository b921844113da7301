/**
 * The OpenAPI document the service serves: valid for a strict OpenAPI 3.1 validator, with the
 * bearer scheme on every API operation and the stream's `?access_token=` as an alternative.
 */
import { describe, it, assert } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Effect } from "effect"
import { request, start } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"

const served = Effect.gen(function* () {
  const server = yield* start({ directory: yield* tempDir })
  const response = yield* request(`${server.url}/docs/openapi.json`)
  assert.strictEqual(response.status, 200)
  return response.body as Record<string, any>
})

const operations = (spec: Record<string, any>) =>
  Object.entries<Record<string, any>>(spec["paths"]).flatMap(([path, item]) =>
    Object.entries<Record<string, any>>(item).map(([method, operation]) => ({ path, method, operation }))
  )

describe("/docs/openapi.json", () => {
  it.scopedLive("the_document_passes_a_strict_openapi_3_1_validator", () =>
    Effect.gen(function* () {
      const spec = yield* served
      // Its full 3.1 check: the 3.1 schema with its JSON Schema dialect, then every $ref and $id.
      const validator = new Validator()
      const result = yield* Effect.promise(() => validator.validate(spec))
      assert.deepStrictEqual(result, { valid: true }, JSON.stringify(result.errors))
      assert.strictEqual(validator.version, "3.1")
      // The identifiers a strict validator refused before: none is declared twice.
      const ids = [...JSON.stringify(spec).matchAll(/"\$id":"([^"]*)"/g)].map((m) => m[1])
      assert.strictEqual(new Set(ids).size, ids.length, `duplicate $id: ${ids.join(", ")}`)
    })
  )

  it.scopedLive("every_api_operation_declares_the_bearer_scheme_and_the_stream_also_takes_access_token", () =>
    Effect.gen(function* () {
      const spec = yield* served
      assert.deepInclude(spec["components"]["securitySchemes"], {
        bearer: {
          type: "http",
          scheme: "bearer",
          description: spec["components"]["securitySchemes"].bearer.description
        },
        access_token: {
          type: "apiKey",
          in: "query",
          name: "access_token",
          description: spec["components"]["securitySchemes"].access_token.description
        }
      })
      const api = operations(spec).filter(({ path }) => path.startsWith("/api/"))
      assert.isAbove(api.length, 0)
      for (const { path, method, operation } of api) {
        const schemes = (operation["security"] as Array<Record<string, unknown>>).map((r) => Object.keys(r).join("+"))
        const expected = path.endsWith("/stream") ? ["bearer", "access_token"] : ["bearer"]
        assert.deepStrictEqual(schemes, expected, `${method.toUpperCase()} ${path}`)
      }
    })
  )
})
