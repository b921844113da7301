#!/usr/bin/env node
// The `change-feed` command: the compiled CLI in `dist/`, and nothing else (no TypeScript loader
// at runtime). In the package from npm `dist/` is all there is. In a clone, where `src/` sits
// beside it, a missing or older build is refused rather than run: a command older than the code
// beside it would mislead. `npm run build` ends by touching `dist/.tsbuildinfo`, so a build that
// had nothing to rewrite still counts as new.
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "..")
const compiled = Path.join(root, "dist", "bin.js")
const sources = Path.join(root, "src")

/** The latest modification time of any file under `directory`. */
const newest = (directory) => {
  let latest = 0
  for (const entry of Fs.readdirSync(directory, { withFileTypes: true })) {
    const path = Path.join(directory, entry.name)
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : Fs.statSync(path).mtimeMs)
  }
  return latest
}

const problem = !Fs.existsSync(compiled)
  ? `${compiled} is missing`
  : Fs.existsSync(sources) && newest(Path.dirname(compiled)) < newest(sources)
    ? `the build in ${Path.dirname(compiled)} is older than ${sources}`
    : undefined

if (problem === undefined) {
  await import(pathToFileURL(compiled).href)
} else {
  process.stderr.write(
    `change-feed: ${problem}: run 'npm run build' in ${root} first (or 'npm run change-feed -- ...', which builds)\n`
  )
  process.exitCode = 1
}
