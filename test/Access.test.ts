/**
 * Credentials: the admin token, account tokens (HS256 JWTs) and what each allows; every way a
 * token can be wrong answers unauthenticated, every overreach forbidden.
 */
import { describe, it, assert } from "@effect/vitest"
import { Effect, Either, Redacted } from "effect"
import { SignJWT } from "jose"
import * as Access from "../src/Access.js"

const secret = Redacted.make("a-secret-of-at-least-thirty-two-bytes!")
const access = Access.make({ adminToken: Redacted.make("admin-token"), jwtSecret: secret })

const base64url = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url")
const signed = (claims: Record<string, unknown>, key = secret) =>
  Effect.promise(() =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(Redacted.value(key)))
  )
const now = () => Math.floor(Date.now() / 1000)

const failure = (credential: string | undefined) =>
  Effect.map(Effect.flip(access.authenticate(credential)), (error) => error.message)

describe("Access", () => {
  it.effect("a_minted_token_grants_its_account_what_it_names_and_nothing_else", () =>
    Effect.gen(function* () {
      const token = yield* Access.mint(secret, { account: "acme", permissions: ["read"], ttl: "1 hour" })
      const grant = yield* access.authenticate(token)
      assert.strictEqual(grant._tag, "Account")
      assert.isTrue(Either.isRight(Access.authorize(grant, "read", "acme")))
      const append = Access.authorize(grant, "append", "acme")
      assert.isTrue(Either.isLeft(append) && /does not allow append/.test(append.left.message))
      const other = Access.authorize(grant, "read", "globex")
      assert.isTrue(Either.isLeft(other) && /for account 'acme', not 'globex'/.test(other.left.message))
      assert.isTrue(Either.isLeft(Access.authorize(grant, "admin")))
    })
  )

  it.effect("the_admin_token_may_do_everything_on_every_account", () =>
    Effect.gen(function* () {
      const grant = yield* access.authenticate("admin-token")
      for (const permission of ["read", "append", "admin"] as const) {
        assert.isTrue(Either.isRight(Access.authorize(grant, permission, "anything")))
      }
    })
  )

  it.effect("missing_wrong_expired_tampered_unsigned_and_foreign_tokens_are_unauthenticated", () =>
    Effect.gen(function* () {
      const good = yield* Access.mint(secret, { account: "acme", permissions: ["read", "append"], ttl: "1 hour" })
      const [header, payload, signature] = good.split(".")
      const tampered = [header, base64url({ sub: "globex", scope: "read append", exp: now() + 3600 }), signature].join(
        "."
      )
      const unsigned = [base64url({ alg: "none", typ: "JWT" }), payload, ""].join(".")
      const expired = yield* signed({ sub: "acme", scope: "read", exp: now() - 10 })
      const foreign = yield* signed(
        { sub: "acme", scope: "read", exp: now() + 3600 },
        Redacted.make("another-secret-of-thirty-two-bytes!!")
      )
      const noExpiry = yield* signed({ sub: "acme", scope: "read" })
      const noScope = yield* signed({ sub: "acme", exp: now() + 3600 })
      const badAccount = yield* signed({ sub: "../etc", scope: "read", exp: now() + 3600 })

      assert.match(yield* failure(undefined), /needs a token/)
      assert.match(yield* failure(""), /needs a token/)
      assert.match(yield* failure("admin-token-but-longer"), /not valid/)
      assert.match(yield* failure(tampered), /signature verification failed/)
      assert.match(yield* failure(unsigned), /not valid/)
      assert.match(yield* failure(expired), /expired/)
      assert.match(yield* failure(foreign), /signature verification failed/)
      assert.match(yield* failure(noExpiry), /"exp" claim/)
      assert.match(yield* failure(noScope), /grants neither read nor append/)
      assert.match(yield* failure(badAccount), /account \(sub\) is not valid/)
    })
  )

  it.effect("without_tokens_configured_every_request_is_admin", () =>
    Effect.gen(function* () {
      const open = Access.make({})
      assert.isFalse(open.required)
      assert.strictEqual((yield* open.authenticate(undefined))._tag, "Admin")
    })
  )

  it("secrets_compare_equal_only_when_equal", () => {
    assert.isTrue(Access.sameSecret("abc", "abc"))
    assert.isFalse(Access.sameSecret("abc", "abd"))
    assert.isFalse(Access.sameSecret("abc", "abcd"))
  })
})
