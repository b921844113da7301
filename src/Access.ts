/**
 * Who may do what on which account.
 *
 * Two kinds of credential, presented as a bearer token (or `access_token` on the stream):
 * - the admin token (`FEED_TOKEN`): everything, on every account;
 * - an account token: an HMAC-signed JWT (HS256) that the platform issues with the shared
 *   secret `FEED_JWT_SECRET`, naming one account (`sub`) and what it allows (`scope`, a
 *   space-separated list of `read` and `append`), with an expiry (`exp`). Verified with `jose`.
 *
 * With neither configured, the service is open: every request is an admin. A wrong, expired or
 * unsigned credential is unauthenticated (401); a good one used beyond what it grants is
 * forbidden (403).
 */
import { Data, Duration, Effect, Either, Redacted } from "effect"
import { errors as JoseErrors, jwtVerify, SignJWT } from "jose"
import * as Crypto from "node:crypto"
import { parseAccountId } from "./Domain/Account.js"

/** What a request wants to do: read an account's feed, append to it, or administer the service. */
export type Permission = "read" | "append" | "admin"
export type AccountPermission = Exclude<Permission, "admin">
export const accountPermissions: ReadonlyArray<AccountPermission> = ["read", "append"]

/** Who a credential says the caller is. */
export type Grant =
  | { readonly _tag: "Admin" }
  | {
      readonly _tag: "Account"
      readonly account: string
      readonly permissions: ReadonlySet<AccountPermission>
      /** Unix seconds. */
      readonly expiresAt: number
    }

/** No credential, or one that does not verify: 401. */
export class Unauthenticated extends Data.TaggedError("Unauthenticated")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

/** A valid credential that does not grant this: 403. */
export class Forbidden extends Data.TaggedError("Forbidden")<{ readonly reason: string }> {
  override get message() {
    return this.reason
  }
}

export interface AccessOptions {
  readonly adminToken?: Redacted.Redacted<string> | undefined
  readonly jwtSecret?: Redacted.Redacted<string> | undefined
}

/** Only HS256: a token signed otherwise (or not at all: `alg: none`) is refused. */
const ALGORITHMS = ["HS256"]

const digest = (text: string) => Crypto.createHash("sha256").update(text).digest()

/** Constant-time equality of two secrets, whatever their lengths. */
export const sameSecret = (a: string, b: string): boolean => Crypto.timingSafeEqual(digest(a), digest(b))

const secretKey = (secret: Redacted.Redacted<string>) => new TextEncoder().encode(Redacted.value(secret))

export interface Access {
  /** Whether any credential is required at all. */
  readonly required: boolean
  /** Who the presented credential (the bearer token, without `Bearer `) says the caller is. */
  readonly authenticate: (credential: string | undefined) => Effect.Effect<Grant, Unauthenticated>
}

export const make = (options: AccessOptions): Access => {
  const admin = options.adminToken === undefined ? undefined : Redacted.value(options.adminToken)
  const key = options.jwtSecret === undefined ? undefined : secretKey(options.jwtSecret)
  const required = admin !== undefined || key !== undefined
  const adminGrant: Grant = { _tag: "Admin" }

  const verifyJwt = (token: string, secret: Uint8Array) =>
    Effect.tryPromise({
      try: () => jwtVerify(token, secret, { algorithms: ALGORITHMS, requiredClaims: ["exp", "sub"] }),
      catch: (error) =>
        new Unauthenticated({
          reason:
            error instanceof JoseErrors.JWTExpired
              ? "the account token has expired: ask the platform for a new one"
              : `the token is not valid (${error instanceof Error ? error.message : String(error)})`
        })
    }).pipe(
      Effect.flatMap(({ payload }) => {
        const account = parseAccountId(String(payload.sub))
        if (Either.isLeft(account)) {
          return new Unauthenticated({ reason: `the token's account (sub) is not valid: ${account.left}` })
        }
        const scope = typeof payload["scope"] === "string" ? payload["scope"].split(" ") : []
        const permissions = new Set(accountPermissions.filter((p) => scope.includes(p)))
        if (permissions.size === 0) {
          return new Unauthenticated({ reason: "the token's scope grants neither read nor append" })
        }
        return Effect.succeed<Grant>({
          _tag: "Account",
          account: account.right,
          permissions,
          expiresAt: payload.exp!
        })
      })
    )

  const authenticate = (credential: string | undefined): Effect.Effect<Grant, Unauthenticated> => {
    if (!required) return Effect.succeed(adminGrant)
    if (credential === undefined || credential === "") {
      return new Unauthenticated({
        reason: "this route needs a token: send 'Authorization: Bearer <token>' (or ?access_token= on the stream)"
      })
    }
    if (admin !== undefined && sameSecret(credential, admin)) return Effect.succeed(adminGrant)
    if (key !== undefined && credential.split(".").length === 3) return verifyJwt(credential, key)
    return new Unauthenticated({ reason: "the token is not valid" })
  }

  return { required, authenticate }
}

/** Whether `grant` allows `permission`, on `account` for account permissions. */
export const authorize = (grant: Grant, permission: Permission, account?: string): Either.Either<void, Forbidden> => {
  if (grant._tag === "Admin") return Either.void
  if (permission === "admin") {
    return Either.left(new Forbidden({ reason: "this route needs the admin token; an account token cannot use it" }))
  }
  if (account !== grant.account) {
    return Either.left(
      new Forbidden({ reason: `this token is for account '${grant.account}', not '${account ?? "?"}'` })
    )
  }
  if (!grant.permissions.has(permission)) {
    return Either.left(
      new Forbidden({ reason: `this token for account '${grant.account}' does not allow ${permission}` })
    )
  }
  return Either.void
}

export interface MintOptions {
  readonly account: string
  readonly permissions: ReadonlyArray<AccountPermission>
  readonly ttl: Duration.DurationInput
}

/** Issues an account token, as the platform would: for operators and tests (`change-feed token`). */
export const mint = (secret: Redacted.Redacted<string>, options: MintOptions): Effect.Effect<string> =>
  Effect.promise(() => {
    const now = Math.floor(Date.now() / 1000)
    return new SignJWT({ scope: options.permissions.join(" ") })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(options.account)
      .setIssuedAt(now)
      .setExpirationTime(now + Math.max(1, Math.round(Duration.toSeconds(Duration.decode(options.ttl)))))
      .sign(secretKey(secret))
  })
