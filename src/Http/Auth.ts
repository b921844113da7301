/**
 * Credentials on the wire: what a usable configured secret is, where a request carries its
 * credential (the `Authorization` header, or `?access_token=` on a stream, since `EventSource`
 * cannot set headers), and the check every `/api` route runs before anything else of the request
 * (its body included) is read. Who may do what is `Access`.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import { Data, Effect, Either, Redacted } from "effect"
import * as Access from "../Access.js"
import { isStreamPath } from "../Api/Routes.js"
import { Forbidden, Unauthorized } from "../Domain/Errors.js"

/** A configured token or secret no client could use, refused at startup. */
export class InvalidToken extends Data.TaggedError("InvalidToken")<{ readonly reason: string }> {
  override get message() {
    return `the bearer token ${this.reason}: set FEED_TOKEN (or --token) to the token clients must send, or leave it unset to serve without one`
  }
}

/**
 * Why `token` cannot be the feed's token, if it cannot: empty or blank (which would leave the stream
 * open to `?access_token=` while every other route refuses everyone), or with whitespace at
 * either end (a header value loses it, so no request could ever match).
 */
export const tokenProblem = (token: string): string | undefined =>
  token.trim() === ""
    ? "is set but empty"
    : token.trim() !== token
      ? "has whitespace at its start or end, which an Authorization header cannot carry"
      : undefined

/** HS256 keys shorter than the hash are weak; RFC 7518 asks for at least 256 bits. */
export const MIN_JWT_SECRET_BYTES = 32

/** Why `secret` cannot sign account tokens, if it cannot. */
export const jwtSecretProblem = (secret: string): string | undefined =>
  Buffer.byteLength(secret) < MIN_JWT_SECRET_BYTES
    ? `is ${Buffer.byteLength(secret)} bytes; an HS256 secret needs at least ${MIN_JWT_SECRET_BYTES}`
    : undefined

/** The credential a request presents, if any, or why its `Authorization` header is unusable. */
const credentialOf = Effect.gen(function* () {
  const request = yield* HttpServerRequest.HttpServerRequest
  const header = request.headers["authorization"]
  if (header !== undefined) {
    const match = /^Bearer\s+(.+)$/i.exec(header)
    if (match === null) {
      return yield* new Unauthorized({ message: "the Authorization header must be 'Bearer <token>'" })
    }
    return match[1]!.trim()
  }
  if (!isStreamPath(request.url)) return undefined
  const query = (yield* HttpServerRequest.ParsedSearchParams)["access_token"]
  return typeof query === "string" ? query : undefined
})

/**
 * The check of the `Authorization` middleware: who the caller is. Secrets are compared in
 * constant time (`Access`), JWTs verified with `jose`; the route then checks what this caller may do.
 */
export const makeAuthenticate = (
  options: Access.AccessOptions
): Effect.Effect<
  Effect.Effect<Access.Grant, Unauthorized, HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams>,
  InvalidToken
> =>
  Effect.gen(function* () {
    if (options.adminToken !== undefined) {
      const problem = tokenProblem(Redacted.value(options.adminToken))
      if (problem !== undefined) return yield* new InvalidToken({ reason: problem })
    }
    if (options.jwtSecret !== undefined) {
      const problem = jwtSecretProblem(Redacted.value(options.jwtSecret))
      if (problem !== undefined) return yield* new InvalidToken({ reason: `secret (FEED_JWT_SECRET) ${problem}` })
    }
    const access = Access.make(options)
    if (!access.required) return access.authenticate(undefined).pipe(Effect.orDie)
    return Effect.flatMap(credentialOf, (credential) =>
      access.authenticate(credential).pipe(Effect.mapError((error) => new Unauthorized({ message: error.message })))
    )
  })

/** Whether the caller may do `permission` (on `account`), as an API error when not. */
export const authorize = (
  grant: Access.Grant,
  permission: Access.Permission,
  account?: string
): Effect.Effect<void, Forbidden> =>
  Either.match(Access.authorize(grant, permission, account), {
    onLeft: (denied) => Effect.fail(new Forbidden({ message: denied.message })),
    onRight: () => Effect.void
  })
