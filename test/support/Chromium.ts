/**
 * Debian's Chromium, headless, driven by `playwright-core`, for tests of what a browser does
 * with the service. Tests skip themselves when it is not installed (`apt-get install chromium`).
 */
import { Effect } from "effect"
import * as NFs from "node:fs"
import { type Browser, chromium } from "playwright-core"

const chromiumPath = "/usr/bin/chromium"

export const hasChromium = NFs.existsSync(chromiumPath)
if (!hasChromium) {
  console.warn(`Browser tests skipped: ${chromiumPath} is missing (install it with 'apt-get install -y chromium').`)
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
