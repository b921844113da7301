/**
 * Account ids: which feed a request addresses. An id becomes a directory name, so it is
 * checked against one narrow pattern before it touches a path: no separators, no `.` or `..`,
 * no leading dot or dash, at most 64 characters.
 */
import { Either, Schema } from "effect"

/** The account the single-account routes and the single-account journal directory belong to. */
export const DEFAULT_ACCOUNT = "default"

const PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/
const RULE = "an account id is 1 to 64 of A-Z a-z 0-9 _ . - and starts with a letter or digit"

// The pattern already rules out `.` and `..` (no leading dot); they are named so that no later
// change to the pattern can let them through.
const isAccountId = (text: string) => PATTERN.test(text) && text !== "." && text !== ".."

export const AccountId = Schema.String.pipe(
  Schema.filter(isAccountId, { message: () => RULE }),
  Schema.brand("AccountId"),
  Schema.annotations({ identifier: "AccountId", examples: ["default" as never, "acme-prod" as never] })
)
export type AccountId = typeof AccountId.Type

/** The account id, or why the text is not one. */
export const parseAccountId = (text: string): Either.Either<AccountId, string> =>
  isAccountId(text)
    ? Either.right(text as AccountId)
    : Either.left(`${JSON.stringify(text.length > 80 ? text.slice(0, 80) + "…" : text)} is not valid: ${RULE}`)
