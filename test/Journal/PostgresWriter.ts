/**
 * A writer replica for the multi-process PostgreSQL tests: opens a store on `url` and the
 * journals of `accounts` (in the order given), then for `rounds` rounds appends one batch of
 * `batch` events to each of them at once (so the committer merges them into multi-account
 * statements). Prints `round N` after each round, then one JSON line: each account's
 * acknowledged ranges, and the failures (an append that fails is not retried).
 */
import { Effect } from "effect"
import type { AccountId } from "../../src/Domain/Account.js"
import * as Postgres from "../../src/Journal/Postgres.js"
import { Note, note } from "../support/Notes.js"

interface Args {
  readonly url: string
  readonly accounts: ReadonlyArray<string>
  readonly rounds: number
  readonly batch: number
}

const args = JSON.parse(process.argv[2]!) as Args

const program = Effect.scoped(
  Effect.gen(function* () {
    const store = yield* Postgres.store({ url: args.url, maxConnections: 4 })
    const journals = yield* Effect.forEach(args.accounts, (a) => store.open(Note, a as AccountId))
    const acks: Record<string, Array<[number, number]>> = {}
    const failures: Array<string> = []
    for (let round = 0; round < args.rounds; round++) {
      yield* Effect.forEach(
        journals,
        (journal, i) => {
          const size = 1 + ((round + i) % args.batch)
          const entries = Array.from({ length: size }, (_, k) => ({
            ts: new Date().toISOString(),
            event: note(`${process.pid}-${round}-${k}`)
          }))
          return journal.append(entries).pipe(
            Effect.tap((a) => Effect.sync(() => (acks[args.accounts[i]!] ??= []).push([a.events[0]!.seq, size]))),
            Effect.catchAll((error) => Effect.sync(() => failures.push(error.message)))
          )
        },
        { concurrency: "unbounded", discard: true }
      )
      process.stdout.write(`round ${round}\n`)
    }
    process.stdout.write(JSON.stringify({ acks, failures }) + "\n")
  })
)

Effect.runPromise(program).catch((error) => {
  process.stderr.write(`writer failed: ${error}\n`)
  process.exit(1)
})
