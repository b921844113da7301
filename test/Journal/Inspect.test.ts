/**
 * Offline verification (`change-feed inspect`): ranges and counts of a healthy journal,
 * corruption reported by file and offset, a torn tail reported and cut by `repair` (and
 * nothing else), repair refused while a writer holds the journal; and the command itself.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as NFs from "node:fs"
import * as Path from "node:path"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import * as Journal from "../../src/Journal.js"
import { inspect, repair } from "../../src/Journal/Inspect.js"

const tempDir = Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "inspect-" }))

const deleted = (seq: number) => ({
  seq,
  ts: "2026-11-27T10:00:00.000Z",
  session_id: `s${seq}`,
  event: { type: "session_deleted" as const, session_id: `s${seq}` }
})

/** A journal of `count` events in segments of about `segmentBytes`, closed cleanly. */
const writeJournal = (directory: string, count: number, segmentBytes = 400) =>
  Effect.scoped(
    Effect.gen(function* () {
      const journal = yield* Journal.make(AgentEvent, { directory, segmentBytes, fsync: "never" })
      for (let seq = 1; seq <= count; seq++) yield* journal.append([deleted(seq)])
    })
  )

const segmentPaths = (directory: string) =>
  NFs.readdirSync(directory)
    .filter((name) => name.startsWith("events-"))
    .sort()
    .map((name) => Path.join(directory, name))

describe("Inspect", () => {
  it.scoped("a_healthy_journal_reports_its_segments_ranges_and_no_problem", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 20)
      const report = yield* inspect(AgentEvent, directory)
      assert.strictEqual(report.events, 20)
      assert.deepStrictEqual(report.problems, [])
      assert.isUndefined(report.tornTail)
      assert.isAbove(report.segments.length, 2)
      assert.strictEqual(report.segments[0]!.firstSeq, 1)
      assert.strictEqual(report.segments.at(-1)!.lastSeq, 20)
      for (let i = 1; i < report.segments.length; i++) {
        assert.strictEqual(report.segments[i]!.firstSeq, report.segments[i - 1]!.lastSeq! + 1)
        assert.strictEqual(report.segments[i]!.start, report.segments[i]!.firstSeq)
      }
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("corruption_is_reported_with_file_and_byte_offset_and_repair_leaves_it", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 20)
      const file = segmentPaths(directory)[0]!
      const text = NFs.readFileSync(file, "utf8")
      const secondLine = text.indexOf("\n") + 1
      NFs.writeFileSync(file, text.slice(0, secondLine) + "{not json" + text.slice(text.indexOf("\n", secondLine)))
      const report = yield* inspect(AgentEvent, directory)
      assert.strictEqual(report.problems.length, 1)
      assert.strictEqual(report.problems[0]!.file, file)
      assert.strictEqual(report.problems[0]!.offset, secondLine)
      assert.include(report.problems[0]!.reason, "invalid JSON")
      assert.isUndefined(report.tornTail)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("a_torn_tail_is_reported_and_repair_cuts_exactly_it", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 10)
      const newest = segmentPaths(directory).at(-1)!
      const before = NFs.statSync(newest).size
      NFs.appendFileSync(newest, '{"seq":11,"ts":"2026-11-27T1')
      const report = yield* inspect(AgentEvent, directory)
      assert.deepStrictEqual(report.problems, [])
      assert.deepStrictEqual(report.tornTail, { file: newest, offset: before, bytes: 28 })
      // inspect alone changes nothing
      assert.strictEqual(NFs.statSync(newest).size, before + 28)
      yield* repair(directory, report.tornTail!)
      assert.strictEqual(NFs.statSync(newest).size, before)
      const again = yield* inspect(AgentEvent, directory)
      assert.isUndefined(again.tornTail)
      assert.strictEqual(again.events, 10)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("repair_is_refused_while_a_writer_holds_the_journal", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 3)
      const newest = segmentPaths(directory).at(-1)!
      NFs.appendFileSync(newest, "{torn")
      const report = yield* inspect(AgentEvent, directory)
      const error = yield* Effect.scoped(
        Effect.zipRight(Journal.make(AgentEvent, { directory }), Effect.flip(repair(directory, report.tornTail!)))
      )
      assert.strictEqual(error._tag, "JournalLocked")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("the_inspect_command_prints_the_report_and_exits_non_zero_on_corruption", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 5)
      const bin = Path.resolve(import.meta.dirname, "../../bin/change-feed.js")
      const healthy = ChildProcess.spawnSync(process.execPath, [bin, "inspect", directory], { encoding: "utf8" })
      assert.strictEqual(healthy.status, 0, healthy.stderr)
      assert.include(healthy.stdout, "5 event(s)")
      const file = segmentPaths(directory)[0]!
      NFs.writeFileSync(file, "garbage\n" + NFs.readFileSync(file, "utf8"))
      const corrupt = ChildProcess.spawnSync(process.execPath, [bin, "inspect", directory], { encoding: "utf8" })
      assert.strictEqual(corrupt.status, 1)
      assert.include(corrupt.stdout, `CORRUPT ${file} at byte 0`)
      assert.include(corrupt.stderr, "corrupt place(s) found")
    }).pipe(Effect.provide(NodeContext.layer))
  )
})
