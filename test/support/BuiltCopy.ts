/**
 * A copy of the project as a fresh clone has it after `npm ci` (the sources, the command, the
 * package and build files, a link to the shared `node_modules`), built with `npm run build`:
 * for tests that run the project as a user does, on a tree no other test is building or
 * changing at the same time.
 */
import { execFile } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { promisify } from "node:util"
import { projectRoot } from "../../harness/ServerProcess.js"

const copied = ["src", "bin", "package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "README.md"]

/** Makes the copy, unbuilt, in a new temporary directory; answers its path. */
export const copyOfProject = (prefix: string): string => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), prefix))
  for (const entry of copied) Fs.cpSync(Path.join(projectRoot, entry), Path.join(dir, entry), { recursive: true })
  Fs.symlinkSync(Path.join(projectRoot, "node_modules"), Path.join(dir, "node_modules"), "dir")
  return dir
}

/** Makes the copy and builds it; answers its path. */
export const builtCopy = async (prefix: string): Promise<string> => {
  const dir = copyOfProject(prefix)
  await promisify(execFile)("npm", ["run", "-s", "build"], { cwd: dir })
  return dir
}
