/**
 * `Idempotency-Key` on `POST /api/v1/events`, end to end: a retry answers the original seqs and
 * appends nothing, duplicates sent at once append once, a reused key answers 422, a malformed
 * one 400, keys survive a restart of the server, and the header is in the OpenAPI document.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect } from "effect"
import { created, post, request, start, status, type TestServer } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"

const events = (server: TestServer) => `${server.url}/api/v1/events`

const batch = {
  events: [
    created("s1"),
    { session_id: "s1", event: { type: "token", content: "Hi" } },
    { session_id: "s1", event: { type: "session_deleted", session_id: "s1" } }
  ]
}

describe("Idempotency-Key", () => {
  it.scopedLive("a_retried_post_with_the_same_key_answers_the_original_seqs_and_appends_nothing", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* post(events(server), created("s0"))
      const first = yield* post(events(server), batch, { "idempotency-key": "batch-1" })
      assert.deepStrictEqual([first.status, first.body], [200, { seqs: [2, null, 3] }])
      const retry = yield* post(events(server), batch, { "Idempotency-Key": "batch-1" })
      assert.deepStrictEqual([retry.status, retry.body], [200, { seqs: [2, null, 3] }])
      assert.strictEqual((yield* status(server)).head_seq, 3)
      // One event sent alone (not as a batch) is the same request as itself.
      const one = { session_id: "s2", event: { type: "session_deleted", session_id: "s2" } }
      assert.deepStrictEqual((yield* post(events(server), one, { "idempotency-key": "one" })).body, { seqs: [4] })
      assert.deepStrictEqual((yield* post(events(server), one, { "idempotency-key": "one" })).body, { seqs: [4] })
      // The key is the journal's business: a page of events does not show it.
      const page = yield* request(`${events(server)}?since=0`)
      assert.strictEqual(page.body.events.length, 4)
      assert.notInclude(JSON.stringify(page.body), "batch-1")
    })
  )

  it.scopedLive("duplicates_sent_at_once_append_once_and_all_answer_the_same", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const answers = yield* Effect.all(
        Array.from({ length: 6 }, () => post(events(server), batch, { "idempotency-key": "same" })),
        { concurrency: "unbounded" }
      )
      for (const answer of answers) assert.deepStrictEqual([answer.status, answer.body], [200, { seqs: [1, null, 2] }])
      assert.strictEqual((yield* status(server)).head_seq, 2)
    })
  )

  it.scopedLive("a_key_reused_for_a_different_request_answers_422_naming_the_key", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      yield* post(events(server), batch, { "idempotency-key": "k-1" })
      const other = { events: [created("s1"), created("s9")] }
      const reused = yield* post(events(server), other, { "idempotency-key": "k-1" })
      assert.strictEqual(reused.status, 422)
      assert.strictEqual(reused.body._tag, "IdempotencyKeyReused")
      assert.strictEqual(reused.body.field, "Idempotency-Key")
      assert.strictEqual(reused.body.key, "k-1")
      assert.include(reused.body.message, "'k-1'")
      const shorter = yield* post(events(server), created("s1"), { "idempotency-key": "k-1" })
      assert.strictEqual(shorter.status, 422)
      assert.strictEqual((yield* status(server)).head_seq, 2)
    })
  )

  it.scopedLive("a_malformed_key_answers_400_naming_the_header_and_journals_nothing", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      for (const key of ["has space", "x".repeat(129), "a/b", "a,b"]) {
        const response = yield* post(events(server), batch, { "idempotency-key": key })
        assert.strictEqual(response.status, 400, key)
        assert.strictEqual(response.body.field, "Idempotency-Key", key)
        assert.include(response.body.message, "idempotency key", key)
      }
      // Sent twice, a header arrives as one value joined by a comma: refused, not half-used.
      const twice = yield* request(events(server), {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": ["a", "b"] as unknown as string },
        body: JSON.stringify(batch)
      })
      assert.strictEqual(twice.status, 400)
      assert.strictEqual((yield* status(server)).head_seq, 0)
    })
  )

  it.scopedLive("keys_survive_a_restart_of_the_server", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      const first = yield* start({ directory })
      const answer = yield* post(events(first), batch, { "idempotency-key": "before-restart" })
      assert.deepStrictEqual(answer.body, { seqs: [1, null, 2] })
      yield* first.close
      const second = yield* start({ directory })
      const retry = yield* post(events(second), batch, { "idempotency-key": "before-restart" })
      assert.deepStrictEqual([retry.status, retry.body], [200, { seqs: [1, null, 2] }])
      assert.strictEqual((yield* status(second)).head_seq, 2)
    })
  )

  it.scopedLive("the_openapi_document_describes_the_header_and_the_422", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir })
      const spec = yield* request(`${server.url}/docs/openapi.json`)
      const operation = spec.body.paths["/api/v1/events"].post
      const header = operation.parameters.find((p: any) => p.in === "header" && p.name === "idempotency-key")
      assert.isDefined(header, JSON.stringify(operation.parameters))
      assert.isFalse(header.required)
      assert.include(header.description, "retry")
      assert.property(operation.responses, "422")
      assert.include(operation.description, "Idempotency-Key")
    })
  )
})
