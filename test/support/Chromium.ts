/**
 * Debian's Chromium, headless, driven by `playwright-core`, for tests of what a browser does
 * with the service. Tests skip themselves when it is not installed (`apt-get install chromium`),
 * except in CI (`CI` set), where a missing browser fails them: a skipped browser test would let a
 * broken page land unseen.
 */
import { Effect } from "effect"
import * as NFs from "node:fs"
import { type Browser, chromium } from "playwright-core"

const chromiumPath = "/usr/bin/chromium"

const installed = NFs.existsSync(chromiumPath)
/** Whether to run the browser tests: always in CI, where they then fail if Chromium is missing. */
export const hasChromium = installed || (process.env["CI"] !== undefined && process.env["CI"] !== "")
if (!installed) {
  console.warn(
    hasChromium
      ? `Browser tests will fail: ${chromiumPath} is missing and CI is set (install it with 'apt-get install -y chromium').`
      : `Browser tests skipped: ${chromiumPath} is missing (install it with 'apt-get install -y chromium').`
  )
}

/** A headless browser, closed with the scope. */
export const launch = Effect.acquireRelease(
  Effect.promise(() =>
    chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
  ),
  (browser: Browser) => Effect.promise(() => browser.close())
)
