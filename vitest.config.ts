import { defineConfig } from "vitest/config"

/**
 * Files that measure memory or pace, run real processes, fuzz or drive a browser: on a busy
 * machine they compete with each other for the CPU, so they run on their own, one file at a
 * time, after the rest (still part of `npm test`).
 */
const cpuSensitive = [
  // a real browser
  "test/Browser.test.ts",
  "test/Http/Cors.test.ts",
  "test/Http/Viewer.test.ts",
  // real processes: the server, the command line, signals
  "test/Crash.test.ts",
  "test/LargeEvents.test.ts",
  "test/Main.test.ts",
  "test/Messages.test.ts",
  "test/Signals.test.ts",
  // the package and the container: npm pack and install, the service as PID 1
  "test/Package.test.ts",
  "test/Container.test.ts",
  // memory and pace under faults, fuzzing
  "test/Faults.test.ts",
  "test/Fuzz.test.ts"
]

export default defineConfig({
  test: {
    // Tests that run the command line or the service as a user does need the compiled build.
    globalSetup: ["test/support/Build.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // `fileParallelism` is global in vitest 3.2, so the serial project gets a pool of its own with
    // one worker: `threads`, limited here, while everything else keeps running in parallel `forks`.
    poolOptions: { threads: { minThreads: 1, maxThreads: 1 } },
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: cpuSensitive,
          pool: "forks",
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: "serial",
          include: cpuSensitive,
          pool: "threads",
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
