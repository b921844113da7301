/**
 * The optional bearer token: what a usable token is, and the check every `/api` route runs
 * before anything else of the request (its body included) is read.
 */
import { HttpServerRequest } from "@effect/platform"
import * as Crypto from "node:crypto"
import { Data, Effect, Redacted } from "effect"
import { Unauthorized } from "../Domain/Errors.js"

/** A configured token no client could send, refused at startup. */
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

const digest = (text: string): Buffer => Crypto.createHash("sha256").update(text, "utf8").digest()

/**
 * The check of the `Authorization` middleware: the bearer token from the header, or from
 * `?access_token=` on the stream (EventSource cannot set headers), compared in constant time
 * as digests of equal length, so neither the token's bytes nor its length show in the timing.
 */
export const makeAuthorize = (
  token: Redacted.Redacted | undefined
): Effect.Effect<
  Effect.Effect<void, Unauthorized, HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams>,
  InvalidToken
> => {
  if (token === undefined) return Effect.succeed(Effect.void)
  const problem = tokenProblem(Redacted.value(token))
  if (problem !== undefined) return Effect.fail(new InvalidToken({ reason: problem }))
  const expected = digest(Redacted.value(token))
  return Effect.succeed(
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const header = request.headers["authorization"]
      let given: string | undefined
      if (header !== undefined) {
        const match = /^Bearer\s+(.+)$/i.exec(header)
        if (match === null) {
          return yield* new Unauthorized({ message: "the Authorization header must be 'Bearer <token>'" })
        }
        given = match[1]!.trim()
      } else {
        const params = yield* HttpServerRequest.ParsedSearchParams
        const query = params["access_token"]
        if (typeof query === "string" && request.url.startsWith("/api/v1/stream")) given = query
      }
      if (given === undefined) {
        return yield* new Unauthorized({
          message:
            "this feed requires a bearer token: send 'Authorization: Bearer <token>' (or ?access_token= on the stream)"
        })
      }
      if (!Crypto.timingSafeEqual(digest(given), expected)) {
        return yield* new Unauthorized({ message: "the bearer token is not valid" })
      }
    })
  )
}
