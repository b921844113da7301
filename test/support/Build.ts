/**
 * Vitest's global setup: `npm run build` once before any test file runs, so that the tests which
 * run the command line as a user does (`bin/change-feed.js`, which runs only the compiled
 * `dist/`) run the code under test. The build is incremental: a few seconds when nothing changed.
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { projectRoot } from "../../harness/ServerProcess.js"

export default async function build(): Promise<void> {
  await promisify(execFile)("npm", ["run", "-s", "build"], { cwd: projectRoot })
}
