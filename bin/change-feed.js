#!/usr/bin/env node
// The `change-feed` command. Runs the compiled CLI (`dist/`, made by `npm run build`) when it is
// there and up to date with the sources; otherwise the TypeScript sources through tsx, so the
// command works from a fresh clone, and never runs a build older than the code beside it.
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

// A build rewrites only what changed, so it is as new as its newest file.
const useCompiled =
  Fs.existsSync(compiled) && (!Fs.existsSync(sources) || newest(Path.dirname(compiled)) >= newest(sources))

if (useCompiled) {
  await import(pathToFileURL(compiled).href)
} else {
  const { register } = await import("tsx/esm/api")
  register()
  await import(pathToFileURL(Path.join(sources, "bin.ts")).href)
}
