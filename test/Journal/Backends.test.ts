/**
 * The journal contract and the feed on top of it, on the two journals that need no server: the
 * file journal (the embedded default, on a temp directory) and the in-memory one.
 */
import { FileSystem } from "@effect/platform"
import { Effect, Layer } from "effect"
import * as FileJournal from "../../src/Journal/File.js"
import * as MemoryJournal from "../../src/Journal/Memory.js"
import { Env } from "../support/FeedTesting.js"
import { feedContract, journalContract } from "../support/JournalContract.js"

const files = {
  store: Effect.flatMap(FileSystem.FileSystem, (fs) => fs.makeTempDirectoryScoped({ prefix: "contract-" })).pipe(
    Effect.flatMap((directory) => FileJournal.store({ directory, fsync: "never" }))
  ),
  layer: Env
}

const memory = { store: MemoryJournal.store(), layer: Layer.empty }

journalContract("files", files)
feedContract("files", files)
journalContract("memory", memory)
feedContract("memory", memory)
