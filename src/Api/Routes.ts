/**
 * The paths of the API, in one place: `Api` declares its endpoints at them, the typed client and
 * the tests request them, and the credential check recognises the streams by them.
 */

/** The default account's feed: the single-account service's paths. */
export const defaultPrefix = "/api/v1" as const

/** Every account, listed (admin only); each account's feed is under it. */
export const accountsPath = "/api/v1/accounts" as const

/** Any account's feed, as the API declares it (`:account` is the path parameter). */
export const accountPrefix = "/api/v1/accounts/:account" as const

/** The routes of one account's feed, under its prefix. */
export type FeedRoute = "stream" | "events" | "status"

/** The path of a feed route: the default account's when `account` is undefined. */
export const feedPath = (route: FeedRoute, account?: string | undefined): string =>
  account === undefined ? `${defaultPrefix}/${route}` : `${accountsPath}/${encodeURIComponent(account)}/${route}`

const streamPattern = /^\/api\/v1\/(?:accounts\/[^/?]+\/)?stream(?:\?|$)/

/** Whether `url` (a request's path and query) is one of the streams. */
export const isStreamPath = (url: string): boolean => streamPattern.test(url)
