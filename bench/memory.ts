/**
 * Section 4, memory: peak RSS of a fresh Node process (see `memory-child.ts`) while it
 *
 * - replays a large journal from 0 through `feed.changes` (512 MiB, in the full run only: the
 *   server's peak RSS replaying over SSE is in section `http`), next to the raw baseline (read
 *   stream + split + `JSON.parse`) over the same files;
 * - serves 1000 live readers of a feed that is being written to, next to the same feed and
 *   write rate with no reader attached.
 *
 * Each workload runs in its own child process so the parent's heap (other sections, Redis
 * clients) does not count.
 */
import {
  type BenchConfig,
  directoryBytes,
  eventsForBytes,
  log,
  MB,
  removeDir,
  type Report,
  runChild,
  tempDir,
  writeJournal
} from "./support.js"
import type { ChildResult } from "./memory-child.js"

const SECTION = "memory"
const GOAL_MB = 200

const sizes = (config: BenchConfig) =>
  config.quick
    ? { journalBytes: 64 * MB, readers: 1000, rate: 500, seconds: 2 }
    : { journalBytes: 512 * MB, readers: 1000, rate: 1000, seconds: 10 }

/** Peak RSS replaying a journal of `size.journalBytes` from 0, ours and the raw read, each in a child process. */
const replayPeak = async (size: ReturnType<typeof sizes>, report: Report): Promise<void> => {
  const dir = tempDir("memory")
  try {
    const events = eventsForBytes(size.journalBytes)
    log(`memory: writing a journal of ~${size.journalBytes / MB} MiB (${events} events)`)
    await writeJournal(dir, events)
    const bytes = directoryBytes(dir)
    const detail = `${(bytes / MB).toFixed(0)} MiB journal, ${events} events`
    log(`memory: replaying it in a child process (ours, then raw)`)
    const { result: ours, loader } = await runChild<ChildResult>("memory-child.ts", ["replay", dir])
    const { result: raw } = await runChild<ChildResult>("memory-child.ts", ["raw", dir])
    if (loader === "tsx")
      report.note(
        SECTION,
        "the memory children ran through tsx (esbuild bundling failed): RSS includes ~150 MB of loader"
      )
    for (const r of [ours, raw]) {
      if (r.events !== events) throw new Error(`memory ${r.mode}: replayed ${r.events} events, expected ${events}`)
    }
    report.figure(
      SECTION,
      "memory.replay.peak",
      `ours peak RSS, feed.changes replay of ${(bytes / MB).toFixed(0)} MiB`,
      ours.peakRssMB,
      "MB",
      {
        detail: `${detail}; RSS before ${ours.startRssMB.toFixed(0)} MB; ${((events / ours.ms) * 1000).toFixed(0)} ev/s`
      }
    )
    report.figure(
      SECTION,
      "memory.replay.raw.peak",
      "raw read peak RSS (read stream + split + JSON.parse)",
      raw.peakRssMB,
      "MB",
      {
        baseline: true,
        detail: `RSS before ${raw.startRssMB.toFixed(0)} MB`
      }
    )
    report.ratio("memory.replay.peak", "memory.replay.raw.peak", "raw read", true)
    report.goal(
      SECTION,
      "memory.replay.peak",
      `peak RSS < ${GOAL_MB} MB replaying 512 MiB`,
      ours.peakRssMB < GOAL_MB ? "PASS" : "MISS",
      `${ours.peakRssMB.toFixed(0)} MB`
    )
  } finally {
    removeDir(dir)
  }
}

export const run = async (config: BenchConfig, report: Report): Promise<void> => {
  const size = sizes(config)

  // Replay of a large journal, in the full run: `--quick` has the server's peak RSS replaying
  // over SSE (section `http`) and keeps to its two-minute budget.
  if (!config.quick) await replayPeak(size, report)

  // Readers attached to a feed being written to, and the same without readers.
  const results: Record<string, ChildResult> = {}
  for (const readers of [0, size.readers]) {
    const feedDir = tempDir("memory-readers")
    try {
      log(`memory: ${readers} live readers, writing ${size.rate} ev/s for ${size.seconds} s (child process)`)
      const { result } = await runChild<ChildResult>("memory-child.ts", [
        "readers",
        feedDir,
        String(readers),
        String(size.rate),
        String(size.seconds)
      ])
      results[readers] = result
    } finally {
      removeDir(feedDir)
    }
  }
  const none = results[0]!
  const many = results[size.readers]!
  const what = `writing ${size.rate} ev/s for ${size.seconds} s`
  report.figure(
    SECTION,
    "memory.readers.peak",
    `ours peak RSS, ${size.readers} live readers, ${what}`,
    many.peakRssMB,
    "MB",
    {
      detail:
        `RSS before readers ${many.bareRssMB?.toFixed(0)} MB, attached ${many.startRssMB.toFixed(0)} MB; ` +
        `delivered ${((many.delivered ?? 0) * 100).toFixed(1)} %`
    }
  )
  report.figure(SECTION, "memory.readers.none.peak", `same feed and rate, no reader`, none.peakRssMB, "MB", {
    baseline: true
  })
  report.figure(
    SECTION,
    "memory.readers.perReader",
    `RSS per attached reader ((peak - no-reader peak) / ${size.readers})`,
    ((many.peakRssMB - none.peakRssMB) * 1024) / size.readers,
    "KiB"
  )
  report.ratio("memory.readers.peak", "memory.readers.none.peak", "no reader", true)
}
