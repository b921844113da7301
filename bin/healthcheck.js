#!/usr/bin/env node
// The container's health check (the Dockerfile's HEALTHCHECK): exits 0 when the service on this
// machine answers its status route, 1 otherwise, saying why. Plain Node without dependencies, so
// a check costs a fresh process a few milliseconds, not the service's start-up.
//
// It sends FEED_TOKEN when the service has one. A service configured with account tokens only
// (FEED_JWT_SECRET) answers the check 401, as it answers anyone without a credential: that
// answer counts as healthy, since the service is up and the check holds no credential to ask more.
const host = process.env.HOST ?? "127.0.0.1"
// A wildcard address is reached on loopback; an IPv6 literal needs brackets in a URL.
const reachable = host === "0.0.0.0" || host === "::" || host === "" ? "127.0.0.1" : host
const url = `http://${reachable.includes(":") ? `[${reachable}]` : reachable}:${process.env.PORT ?? "8787"}/api/v1/status`
const token = process.env.FEED_TOKEN

const verdict = await fetch(url, {
  headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  signal: AbortSignal.timeout(5000)
}).then(
  (response) =>
    response.status === 200 || (token === undefined && response.status === 401)
      ? undefined
      : `GET ${url} answered ${response.status}`,
  (error) => `GET ${url} failed: ${error instanceof Error ? (error.cause?.message ?? error.message) : String(error)}`
)
if (verdict !== undefined) {
  process.stderr.write(`unhealthy: ${verdict}\n`)
  process.exitCode = 1
}
