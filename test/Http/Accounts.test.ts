/**
 * Many accounts over HTTP: each account's routes under `/api/v1/accounts/{account}`, the
 * original routes as the default account, who may use which route (the isolation matrix),
 * the admin listing, the bound on open feeds, and account ids that try to leave the root.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, it, assert } from "@effect/vitest"
import * as NodeHttp from "node:http"
import { Effect, Exit, Redacted, Scope } from "effect"
import { SignJWT } from "jose"
import * as Access from "../../src/Access.js"
import { created, dataOf, openStream, post, request, seqsOf, start, type TestServer } from "../support/Server.js"
import { tempDir } from "../support/TempDir.js"
import { eventually } from "../support/Wait.js"

const ADMIN = "admin-token-for-the-tests"
const SECRET = Redacted.make("account-token-secret-of-32-bytes-or-more")

const bearer = (token: string | undefined): Record<string, string> =>
  token === undefined ? {} : { authorization: `Bearer ${token}` }

const mint = (account: string, permissions: ReadonlyArray<Access.AccountPermission> = ["read", "append"]) =>
  Access.mint(SECRET, { account, permissions, ttl: "1 hour" })

const serverWithTokens = (feed: Parameters<typeof start>[0]["feed"] = {}) =>
  Effect.gen(function* () {
    return yield* start({
      directory: yield* tempDir,
      feed: { fsync: "never", ...feed },
      http: { token: Redacted.make(ADMIN), jwtSecret: SECRET }
    })
  })

const accountUrl = (server: TestServer, account: string, route: string) =>
  `${server.url}/api/v1/accounts/${account}/${route}`

/** Every route of an account's feed, as a request that answers its status code. */
const routes = (server: TestServer, account: string) => ({
  "GET stream": (headers: Record<string, string>) =>
    Effect.scoped(Effect.map(openStream(accountUrl(server, account, "stream"), headers), (s) => s.status)),
  "GET events": (headers: Record<string, string>) =>
    Effect.map(request(accountUrl(server, account, "events"), { headers }), (r) => r.status),
  "POST events": (headers: Record<string, string>) =>
    Effect.map(post(accountUrl(server, account, "events"), created("s1"), headers), (r) => r.status),
  "GET status": (headers: Record<string, string>) =>
    Effect.map(request(accountUrl(server, account, "status"), { headers }), (r) => r.status)
})

/** A POST on exactly `path`, as sent on the wire. */
const rawPost = (server: TestServer, path: string, body: unknown) =>
  Effect.async<{ status: number; body: string }>((resume) => {
    const req = NodeHttp.request(
      {
        host: "127.0.0.1",
        port: server.port,
        path,
        method: "POST",
        agent: false,
        headers: { "content-type": "application/json" }
      },
      (response) => {
        let text = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (text += chunk))
        response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, body: text })))
      }
    )
    req.on("error", (error) => resume(Effect.die(error)))
    req.end(JSON.stringify(body))
  })

describe("accounts over HTTP", () => {
  it.scopedLive("two_accounts_count_from_1_apart_and_no_event_crosses", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, feed: { fsync: "never" } })
      const acmeStream = yield* openStream(accountUrl(server, "acme", "stream"))
      yield* acmeStream.untilCaughtUp
      for (const account of ["acme", "globex", "acme"]) {
        const answer = yield* post(accountUrl(server, account, "events"), created(`${account}-s`))
        assert.strictEqual(answer.status, 200, JSON.stringify(answer.body))
      }
      const defaultAnswer = yield* post(`${server.url}/api/v1/events`, created("default-s"))
      assert.deepStrictEqual(defaultAnswer.body, { seqs: [1] })

      const live = [yield* acmeStream.next, yield* acmeStream.next]
      assert.deepStrictEqual(seqsOf(live), [1, 2])
      assert.deepStrictEqual(
        live.map((frame) => dataOf(frame).session_id),
        ["acme-s", "acme-s"]
      )
      const globex = yield* request(accountUrl(server, "globex", "events"))
      assert.deepStrictEqual(
        globex.body.events.map((e: any) => [e.seq, e.session_id]),
        [[1, "globex-s"]]
      )
      const acmeStatus = (yield* request(accountUrl(server, "acme", "status"))).body
      const globexStatus = (yield* request(accountUrl(server, "globex", "status"))).body
      const defaultStatus = (yield* request(`${server.url}/api/v1/status`)).body
      assert.deepStrictEqual([acmeStatus.head_seq, globexStatus.head_seq, defaultStatus.head_seq], [2, 1, 1])
      assert.strictEqual(new Set([acmeStatus.epoch, globexStatus.epoch, defaultStatus.epoch]).size, 3)
      // The default account is the one at the original paths.
      const viaAccounts = (yield* request(accountUrl(server, "default", "status"))).body
      assert.strictEqual(viaAccounts.epoch, defaultStatus.epoch)
    })
  )

  it.scopedLive("the_isolation_matrix_every_route_by_every_kind_of_credential", () =>
    Effect.gen(function* () {
      const server = yield* serverWithTokens()
      const own = yield* mint("acme")
      const other = yield* mint("globex")
      const expired = yield* Effect.promise(() =>
        new SignJWT({ scope: "read append" })
          .setProtectedHeader({ alg: "HS256" })
          .setSubject("acme")
          .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
          .sign(new TextEncoder().encode(Redacted.value(SECRET)))
      )
      const [header, , signature] = own.split(".")
      const tampered = [
        header,
        Buffer.from(JSON.stringify({ sub: "acme", scope: "read append admin", exp: 4102444800 })).toString("base64url"),
        signature
      ].join(".")
      const credentials: Record<string, { readonly headers: Record<string, string>; readonly expected: number }> = {
        own: { headers: bearer(own), expected: 200 },
        "other account": { headers: bearer(other), expected: 403 },
        admin: { headers: bearer(ADMIN), expected: 200 },
        none: { headers: {}, expected: 401 },
        expired: { headers: bearer(expired), expected: 401 },
        tampered: { headers: bearer(tampered), expected: 401 }
      }
      const failures: Array<string> = []
      for (const [route, call] of Object.entries(routes(server, "acme"))) {
        for (const [who, { headers, expected }] of Object.entries(credentials)) {
          const got = yield* call(headers)
          if (got !== expected) failures.push(`${route} with ${who}: ${got}, expected ${expected}`)
        }
      }
      assert.deepStrictEqual(failures, [])
      // Nothing but the own and admin appends reached the journal.
      const page = yield* request(accountUrl(server, "acme", "events"), { headers: bearer(ADMIN) })
      assert.deepStrictEqual(page.body.events.length, 2)
    })
  )

  it.scopedLive("a_token_grants_only_its_scopes_and_the_stream_takes_it_as_access_token", () =>
    Effect.gen(function* () {
      const server = yield* serverWithTokens()
      const reader = yield* mint("acme", ["read"])
      const writer = yield* mint("acme", ["append"])
      const refused = yield* post(accountUrl(server, "acme", "events"), created("s1"), bearer(reader))
      assert.strictEqual(refused.status, 403)
      assert.match(refused.body.message, /does not allow append/)
      assert.strictEqual((yield* post(accountUrl(server, "acme", "events"), created("s1"), bearer(writer))).status, 200)
      assert.strictEqual(
        (yield* request(accountUrl(server, "acme", "events"), { headers: bearer(writer) })).status,
        403
      )

      const stream = yield* openStream(`${accountUrl(server, "acme", "stream")}?access_token=${reader}`)
      assert.strictEqual(stream.status, 200)
      assert.deepStrictEqual(seqsOf(yield* stream.untilCaughtUp), [1])
      // Only on the stream: elsewhere a token travels in the header.
      const query = yield* request(`${accountUrl(server, "acme", "events")}?access_token=${reader}`)
      assert.strictEqual(query.status, 401)
    })
  )

  it.scopedLive("the_account_list_is_for_the_admin_and_shows_open_and_on_disk_accounts", () =>
    Effect.gen(function* () {
      const server = yield* serverWithTokens({ idleTimeToLive: "1 millis" })
      for (const account of ["acme", "globex"]) {
        yield* post(accountUrl(server, account, "events"), created("s1"), bearer(ADMIN))
      }
      const held = yield* openStream(accountUrl(server, "acme", "stream"), bearer(ADMIN))
      yield* held.untilCaughtUp
      const listed = yield* request(`${server.url}/api/v1/accounts`, { headers: bearer(ADMIN) })
      assert.strictEqual(listed.status, 200)
      const byName = Object.fromEntries(listed.body.accounts.map((a: any) => [a.account, a]))
      assert.deepStrictEqual(Object.keys(byName), ["acme", "globex"])
      assert.strictEqual(byName.acme.open, true)
      assert.strictEqual(byName.acme.head_seq, 1)
      assert.strictEqual(byName.acme.subscribers, 1)
      const token = yield* mint("acme")
      assert.strictEqual((yield* request(`${server.url}/api/v1/accounts`, { headers: bearer(token) })).status, 403)
      assert.strictEqual((yield* request(`${server.url}/api/v1/accounts`)).status, 401)
    })
  )

  it.scopedLive("past_the_bound_on_open_feeds_a_new_account_answers_503_with_retry_after", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, feed: { fsync: "never", maxOpen: 1 } })
      const scope = yield* Scope.make()
      const held = yield* openStream(accountUrl(server, "acme", "stream")).pipe(Scope.extend(scope))
      yield* held.untilCaughtUp
      const busy = yield* post(accountUrl(server, "globex", "events"), created("s1"))
      assert.strictEqual(busy.status, 503)
      assert.strictEqual(busy.body._tag, "Unavailable")
      assert.strictEqual(busy.body.accepted, false)
      assert.strictEqual(busy.headers["retry-after"], "1")
      assert.match(busy.body.message, /retry/)
      yield* Scope.close(scope, Exit.void)
      // Once acme is let go (the server notices the closed connection), globex opens in its place.
      let answer = busy
      yield* eventually(
        "an append to another account is accepted",
        Effect.gen(function* () {
          answer = yield* post(accountUrl(server, "globex", "events"), created("s1"))
          return answer.status !== 503
        })
      )
      assert.deepStrictEqual(answer.body, { seqs: [1] })
    })
  )

  it.scopedLive("account_ids_that_could_leave_the_root_answer_400_and_touch_nothing", () =>
    Effect.gen(function* () {
      const server = yield* start({ directory: yield* tempDir, feed: { fsync: "never" } })
      // Sent as raw paths: a URL parser on the client's side would already resolve the dots.
      for (const account of ["..", ".", "%2e%2e", "..%2Fescape", "%2F", ".hidden", "a%00b", "a".repeat(65), "%C3%A4"]) {
        const answer = yield* rawPost(server, `/api/v1/accounts/${account}/events`, created("s1"))
        assert.strictEqual(answer.status, 400, `${account}: ${answer.body}`)
        assert.strictEqual(JSON.parse(answer.body).field, "account", account)
      }
      const fs = yield* FileSystem.FileSystem
      assert.deepStrictEqual((yield* fs.readDirectory(server.directory)).filter((name) => name !== "EPOCH").sort(), [])
      // A path with more segments is no route at all.
      const nested = yield* request(`${server.url}/api/v1/accounts/a/b/status`)
      assert.strictEqual(nested.status, 404)
      const wrongMethod = yield* request(accountUrl(server, "acme", "status"), { method: "DELETE" })
      assert.strictEqual(wrongMethod.status, 405)
      assert.strictEqual(wrongMethod.headers["allow"], "GET")
      const listed = yield* request(`${server.url}/api/v1/accounts`)
      assert.deepStrictEqual(listed.body.accounts, [])
    }).pipe(Effect.provide(NodeContext.layer))
  )
})
