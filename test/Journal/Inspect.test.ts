/**
 * Offline verification (`change-feed inspect`): ranges and counts of a healthy journal,
 * corruption (checksums included) reported by file and offset, damage at the end cut by
 * `repair` in a new epoch (and nothing else), repair refused while a writer holds the journal;
 * and the command itself.
 */
import { NodeContext } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as NFs from "node:fs"
import * as Path from "node:path"
import { crc32 } from "node:zlib"
import { AgentEvent } from "../../src/Domain/AgentEvent.js"
import * as Journal from "../../src/Journal.js"
import * as FileJournal from "../../src/Journal/File.js"
import { inspect, repair } from "../../src/Journal/Inspect.js"
import { tempDir } from "../support/TempDir.js"

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
      const journal = yield* FileJournal.make(AgentEvent, { directory, segmentBytes, fsync: "never" })
      for (let seq = 1; seq <= count; seq++) yield* journal.append([deleted(seq)])
    })
  )

const epochOf = (directory: string) => NFs.readFileSync(Path.join(directory, "EPOCH"), "utf8").trim()

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

  it.scoped("an_incomplete_last_line_is_reported_and_repair_cuts_exactly_it_in_a_new_epoch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 10)
      const epoch = epochOf(directory)
      const newest = segmentPaths(directory).at(-1)!
      const before = NFs.statSync(newest).size
      NFs.appendFileSync(newest, '{"seq":11,"ts":"2026-11-27T1')
      const report = yield* inspect(AgentEvent, directory)
      assert.deepStrictEqual(report.problems, [])
      assert.isFalse(report.unclean)
      assert.deepStrictEqual(report.tornTail, { file: newest, offset: before, bytes: 28 })
      assert.deepStrictEqual(report.repairable, report.tornTail)
      // inspect alone changes nothing
      assert.strictEqual(NFs.statSync(newest).size, before + 28)
      assert.strictEqual(epochOf(directory), epoch)
      const newEpoch = yield* repair(directory, report.repairable!)
      assert.strictEqual(NFs.statSync(newest).size, before)
      assert.notStrictEqual(newEpoch, epoch)
      assert.strictEqual(epochOf(directory), newEpoch)
      const again = yield* inspect(AgentEvent, directory)
      assert.isUndefined(again.tornTail)
      assert.isUndefined(again.repairable)
      assert.strictEqual(again.events, 10)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("an_acknowledged_seq_is_never_handed_to_other_content_in_the_same_epoch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      // seqs 1..3 appended (and acknowledged), then a clean stop.
      const epoch = yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* FileJournal.make(AgentEvent, { directory })
          yield* journal.append([deleted(1), deleted(2), deleted(3)])
          return journal.epoch
        })
      )
      const file = segmentPaths(directory)[0]!
      const bytes = NFs.readFileSync(file)
      const lastLine = bytes.lastIndexOf(0x0a, bytes.length - 2) + 1
      bytes[lastLine] = 0x78 // the first byte of the last line changed
      NFs.writeFileSync(file, bytes)

      // The journal refuses to open, naming the place and the way out.
      const refused = yield* Effect.flip(Effect.scoped(FileJournal.make(AgentEvent, { directory })))
      assert.instanceOf(refused, Journal.JournalCorrupt)
      assert.strictEqual((refused as Journal.JournalCorrupt).offset, lastLine)
      assert.include(refused.message, `change-feed inspect ${directory} --repair`)

      const report = yield* inspect(AgentEvent, directory)
      assert.deepStrictEqual(
        report.problems.map((p) => [p.file, p.offset]),
        [[file, lastLine]]
      )
      assert.deepStrictEqual(report.repairable, { file, offset: lastLine, bytes: bytes.length - lastLine })
      yield* repair(directory, report.repairable!)

      // Seq 3 is handed out again, but never in the epoch whose readers may have seen the first one.
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* FileJournal.make(AgentEvent, { directory })
          assert.notStrictEqual(journal.epoch, epoch)
          assert.strictEqual(yield* journal.headSeq, 2)
          yield* journal.append([
            { ...deleted(3), session_id: "other", event: { type: "session_deleted", session_id: "other" } }
          ])
        })
      )
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("inspect_verifies_every_checksum_and_counts_lines_without_one", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      // Two lines of the original (no checksum), then lines written here.
      const original = [1, 2].map((seq) => JSON.stringify(deleted(seq)) + "\n").join("")
      NFs.writeFileSync(Path.join(directory, "events-00000000000000000001.jsonl"), original)
      yield* Effect.scoped(
        Effect.gen(function* () {
          const journal = yield* FileJournal.make(AgentEvent, { directory, segmentBytes: 400 })
          for (let seq = 3; seq <= 20; seq++) yield* journal.append([deleted(seq)])
        })
      )
      const healthy = yield* inspect(AgentEvent, directory)
      assert.deepStrictEqual(healthy.problems, [])
      assert.strictEqual(healthy.events, 20)
      assert.strictEqual(healthy.linesWithoutChecksum, 2)

      // A changed character inside a string of an older segment: still JSON, still an event.
      const file = segmentPaths(directory)[1]!
      const text = NFs.readFileSync(file, "utf8")
      const at = text.indexOf('"session_id":"s') + '"session_id":"s'.length
      NFs.writeFileSync(file, text.slice(0, at) + "9" + text.slice(at + 1))
      const report = yield* inspect(AgentEvent, directory)
      assert.strictEqual(report.problems.length, 1)
      assert.strictEqual(report.problems[0]!.file, file)
      assert.strictEqual(report.problems[0]!.offset, 0)
      assert.include(report.problems[0]!.reason, "checksum mismatch")
      assert.isUndefined(report.repairable, "damage before the newest segment is not cut")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("repair_keeps_an_intact_line_whose_event_this_version_does_not_know", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 3)
      const newest = segmentPaths(directory).at(-1)!
      const size = NFs.statSync(newest).size
      // What a newer version may write: a valid line, checksum and all, with an event type unknown here.
      const wire = `{"seq":4,"ts":"2026-11-27T10:00:00.000Z","event":{"type":"from_the_future"}}`
      const checked = wire.slice(0, -1)
      NFs.appendFileSync(newest, `${checked},"crc":"${crc32(checked).toString(16).padStart(8, "0")}"}\n`)
      const report = yield* inspect(AgentEvent, directory)
      assert.strictEqual(report.problems.length, 1)
      assert.include(report.problems[0]!.reason, "field `event` is invalid")
      assert.strictEqual(report.problems[0]!.offset, size)
      assert.isUndefined(report.repairable)
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("repair_is_refused_while_a_writer_holds_the_journal", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 3)
      const newest = segmentPaths(directory).at(-1)!
      const size = NFs.statSync(newest).size
      const error = yield* Effect.scoped(
        Effect.zipRight(
          FileJournal.make(AgentEvent, { directory }),
          Effect.flip(repair(directory, { file: newest, offset: size - 10, bytes: 10 }))
        )
      )
      assert.strictEqual(error._tag, "JournalLocked")
      assert.strictEqual(NFs.statSync(newest).size, size)
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
      assert.include(corrupt.stderr, "restore the other segments from a backup")
    }).pipe(Effect.provide(NodeContext.layer))
  )

  it.scoped("the_inspect_command_repairs_a_damaged_end_and_says_it_started_a_new_epoch", () =>
    Effect.gen(function* () {
      const directory = yield* tempDir
      yield* writeJournal(directory, 5)
      const epoch = epochOf(directory)
      const file = segmentPaths(directory).at(-1)!
      NFs.appendFileSync(file, "garbage\n")
      const bin = Path.resolve(import.meta.dirname, "../../bin/change-feed.js")
      const found = ChildProcess.spawnSync(process.execPath, [bin, "inspect", directory], { encoding: "utf8" })
      assert.strictEqual(found.status, 1)
      assert.include(found.stderr, "run with --repair")
      const repaired = ChildProcess.spawnSync(process.execPath, [bin, "inspect", directory, "--repair"], {
        encoding: "utf8"
      })
      assert.strictEqual(repaired.status, 0, repaired.stderr)
      const newEpoch = epochOf(directory)
      assert.notStrictEqual(newEpoch, epoch)
      assert.include(repaired.stdout, `cut 8 byte(s) from ${file}`)
      assert.include(repaired.stdout, `started the new epoch ${newEpoch}`)
    }).pipe(Effect.provide(NodeContext.layer))
  )
})
