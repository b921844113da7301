/**
 * Idempotent appends: which requests the feed has already accepted, by the key their producer
 * gave them, so that a retry is answered with the original seqs instead of being appended again.
 *
 * The key is journaled with every durable event of its request, in the same write, so what the
 * window knows is never ahead of (or behind) the journal: at open it is rebuilt from the journal's
 * tail, and while running the writer adds a request once its batch is journaled. A request is
 * known by a fingerprint of its durable events (what the journal holds, so it can be computed
 * again from the journal after a restart): a retry must carry the same durable events, in the
 * same order, with the same sessions. Ephemeral events are never stored, so they are not part of
 * it, and a request with none leaves no trace.
 *
 * At open only the keys are learnt, from the lines as written (a `"key"` field next to `"event"`
 * and `"session_id"`), without decoding the events: a request's fingerprint is computed from its
 * lines when a retry first needs it, which after a restart is the rare case.
 *
 * The window is bounded: a key is forgotten once its request's first event falls `events` or
 * more below the head, and the oldest go first when the keys take more than `bytes`. A retry
 * after that is appended again.
 */
import { Effect, Stream } from "effect"
import * as Crypto from "node:crypto"
import type { Journal, JournalCorrupt, JournalIoError } from "../Journal.js"

/** 1 to 128 characters that need no escaping in a header, a URL or a journal line (a UUID fits). */
const KEY = /^[A-Za-z0-9._:-]{1,128}$/

export const isValidKey = (key: string): boolean => KEY.test(key)

/** The fingerprint of a request with no durable event. */
export const emptyFingerprint = ""

/**
 * The fingerprint of a request's durable events so far, extended by one: a chain, so that the
 * fingerprint of a request's first `m` events is a step on the way to the whole one's.
 * `entry` is the event as the journal stores it (`entryText`).
 */
export const chainFingerprint = (previous: string, entry: string): string =>
  Crypto.createHash("sha256").update(previous).update("\n").update(entry).digest("base64url").slice(0, 22)

/** One durable event as fingerprinted: its session and its event encoded as the journal writes it. */
export const entryText = (sessionId: string | undefined, encodedEvent: unknown): string =>
  JSON.stringify([sessionId ?? null, encodedEvent])

/** `entryText` of an event given as its JSON (`JSON.stringify` of its encoding): the same text. */
export const entryTextOfJson = (sessionId: string | undefined, eventJson: string): string =>
  `[${JSON.stringify(sessionId ?? null)},${eventJson}]`

/**
 * `chainFingerprint(previous, entryTextOfJson(sessionId, json))` for an event given as the UTF-8
 * of its JSON: the same fingerprint, hashed from the bytes without making the text.
 */
export const chainFingerprintOfJson = (
  previous: string,
  sessionId: string | undefined,
  eventJson: Uint8Array
): string =>
  Crypto.createHash("sha256")
    .update(previous)
    .update(`\n[${JSON.stringify(sessionId ?? null)},`)
    .update(eventJson)
    .update("]")
    .digest("base64url")
    .slice(0, 22)

/** The seqs a request's durable events were journaled at, as runs: `[start, count, start, count, ...]`. */
export type Runs = ReadonlyArray<number>

/** A request's answer: one entry per event, the seqs of its durable events in order, `null` elsewhere. */
export const seqsAt = (length: number, durablePositions: ReadonlyArray<number>, runs: Runs): Array<number | null> => {
  const seqs: Array<number | null> = new Array(length).fill(null)
  let k = 0
  for (let r = 0; r < runs.length; r += 2) {
    for (let j = 0; j < runs[r + 1]!; j++) seqs[durablePositions[k++]!] = runs[r]! + j
  }
  return seqs
}

/** A request the journal holds. */
export interface Journaled {
  readonly _tag: "Journaled"
  readonly key: string
  /** `undefined` for a request learnt at open, until a retry needs it (`recallFingerprint`). */
  fingerprint: string | undefined
  /** Durable events journaled under the key. */
  count: number
  runs: Array<number>
  lastSeq: number
  /**
   * The journal ended with this request's events when it was opened after a crash: a write cut
   * short may have left only its first events, which a retry completes.
   */
  torn: boolean
  bytes: number
}

/** A request accepted but not yet journaled: duplicates wait for it. */
export interface Pending {
  readonly _tag: "Pending"
  readonly key: string
  readonly fingerprint: string
  readonly count: number
  /** The part of this request a crash left in the journal, when this completes it. */
  readonly prior: Journaled | undefined
  /** Told the request's seqs once journaled, or `undefined` if it never will be. */
  readonly waiters: Set<(runs: Runs | undefined) => void>
}

export interface WindowLimits {
  /** Keys are remembered while their first event is among the last this many journaled. */
  readonly events: number
  /** Most memory the journaled keys may take, by estimate. */
  readonly bytes: number
}

/**
 * What one key costs in memory (the map entry, the record, the key's characters, the fingerprint,
 * the runs), by estimate: 388 bytes for a UUID key, where the heap grew by about 280 a key for
 * 20,000 keys learnt at open.
 */
const slotBytes = (key: string, runs: number) => 300 + key.length * 2 + runs * 8

export class IdempotencyWindow {
  /** In the order the journal holds them (a request completed after a crash moves to the end). */
  private readonly journaled = new Map<string, Journaled>()
  private readonly pending = new Map<string, Pending>()
  private bytes = 0
  /** The key of the last event restored at open, and its seq. */
  private tail: { readonly key: string; readonly seq: number } | undefined = undefined

  constructor(private readonly limits: WindowLimits) {}

  get size(): number {
    return this.journaled.size + this.pending.size
  }

  get memoryBytes(): number {
    return this.bytes
  }

  /** What the window knows of `key` while the journal's head is `head`. */
  find(key: string, head: number): Journaled | Pending | undefined {
    this.evict(head)
    return this.pending.get(key) ?? this.journaled.get(key)
  }

  /** A request is accepted under `key`; `prior` is the part of it already journaled, if any. */
  begin(key: string, fingerprint: string, count: number, prior: Journaled | undefined): Pending {
    const slot: Pending = { _tag: "Pending", key, fingerprint, count, prior, waiters: new Set() }
    this.pending.set(key, slot)
    return slot
  }

  /** The writer journaled `count` events of the request at `first`..; `head` is the journal's head now. */
  journaledAt(slot: Pending, first: number, count: number, head: number): void {
    if (this.pending.get(slot.key) === slot) this.pending.delete(slot.key)
    const runs = slot.prior === undefined ? [first, count] : [...slot.prior.runs, first, count]
    this.remove(slot.key)
    this.insert({
      _tag: "Journaled",
      key: slot.key,
      fingerprint: slot.fingerprint,
      count: slot.count,
      runs,
      lastSeq: first + count - 1,
      torn: false,
      bytes: slotBytes(slot.key, runs.length)
    })
    this.evict(head)
    for (const waiter of slot.waiters) waiter(runs)
  }

  /** The request was not accepted, or will never be journaled: a retry may append it. */
  abandon(slot: Pending): void {
    if (this.pending.get(slot.key) !== slot) return
    this.pending.delete(slot.key)
    for (const waiter of slot.waiters) waiter(undefined)
  }

  /**
   * At open: one event of the journal's tail, in seq order, journaled under `key`. The events of
   * a request are consecutive, but for one a crash cut short, whose rest a retry appended later.
   */
  restore(key: string, seq: number): void {
    const slot = this.journaled.get(key)
    if (slot === undefined) {
      this.insert({
        _tag: "Journaled",
        key,
        fingerprint: undefined,
        count: 1,
        runs: [seq, 1],
        lastSeq: seq,
        torn: false,
        bytes: slotBytes(key, 2)
      })
      this.evict(seq)
    } else {
      slot.count++
      if (seq === slot.lastSeq + 1) slot.runs[slot.runs.length - 1]!++
      else {
        slot.runs.push(seq, 1)
        this.bytes += 16
        slot.bytes += 16
      }
      slot.lastSeq = seq
    }
    this.tail = { key, seq }
  }

  /**
   * A request another writer of the journal appended under `key`, found in the journal: its
   * events' seqs, in order. Its fingerprint is read back when needed, as for a key learnt at open.
   */
  learn(key: string, seqs: ReadonlyArray<number>, head: number): void {
    if (seqs.length === 0 || this.journaled.has(key)) return
    for (const seq of seqs) this.restore(key, seq)
    this.tail = undefined
    this.evict(head)
  }

  /** At open, after `restore`: the journal's head, and whether the last process stopped without closing it. */
  restored(head: number, unclean: boolean): void {
    const last = this.tail
    this.tail = undefined
    if (unclean && last !== undefined && last.seq === head) {
      const slot = this.journaled.get(last.key)
      if (slot !== undefined) slot.torn = true
    }
    this.evict(head)
  }

  /** The fingerprint of a request learnt at open, read back from the journal; `undefined` if its events are gone. */
  recalled(slot: Journaled, fingerprint: string | undefined): void {
    if (fingerprint !== undefined) slot.fingerprint = fingerprint
    else if (this.journaled.get(slot.key) === slot) this.remove(slot.key)
  }

  private insert(slot: Journaled): void {
    this.journaled.set(slot.key, slot)
    this.bytes += slot.bytes
  }

  private remove(key: string): void {
    const slot = this.journaled.get(key)
    if (slot === undefined) return
    this.journaled.delete(key)
    this.bytes -= slot.bytes
  }

  /** Forgets, oldest first, the keys below the window and those past its memory bound. */
  private evict(head: number): void {
    const floor = head - this.limits.events
    for (const [key, slot] of this.journaled) {
      if (slot.runs[0]! > floor && this.bytes <= this.limits.bytes) break
      this.journaled.delete(key)
      this.bytes -= slot.bytes
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading keys back from the journal
// ---------------------------------------------------------------------------------------------------------------

const bodyDecoder = new TextDecoder()

/**
 * Learns the keys of the requests within the journal's last `events` events (never more: the
 * whole journal can be far larger), so that a retry that comes after a restart is recognised.
 */
export const restoreKeys = <A>(
  journal: Journal<A>,
  window: IdempotencyWindow,
  events: number
): Effect.Effect<void, JournalCorrupt | JournalIoError> =>
  Effect.gen(function* () {
    const info = yield* journal.info
    const floor = Math.max(info.oldestSeq - 1, info.headSeq - events)
    if (floor >= info.headSeq) return
    // One event more than the window, to see whether the request the window starts with began
    // below it: only part of it would be learnt, and its retry taken for another request.
    let edge: string | undefined = undefined
    // Only each line's seq and key (a string) are kept, so the read may reuse its chunks: a window
    // of many events would otherwise leave as many bytes of chunks for a full collection to free.
    // A chunk's lines are taken in one step: an effect per line cost more than reading the line.
    yield* journal.readLines(Math.max(info.oldestSeq - 1, floor - 1), info.headSeq, { reuseChunks: true }).pipe(
      Stream.runForEachChunk((lines) =>
        Effect.sync(() => {
          for (const line of lines) {
            const key = line.key
            if (key === undefined) continue
            if (line.seq <= floor) edge = key
            else if (key !== edge) window.restore(key, line.seq)
          }
        })
      ),
      // Nothing is pruned while the feed opens: the window starts at the oldest retained event.
      Effect.catchTag("JournalPruned", (error) => Effect.die(error))
    )
    window.restored(info.headSeq, journal.recovery.unclean)
    if (window.size > 0) {
      yield* Effect.logDebug(
        `change feed: ${window.size} idempotency key(s) learnt from seqs ${floor + 1}..${info.headSeq}`
      )
    }
  })

/**
 * The fingerprint of a request learnt at open, from its lines: what it was when the request was
 * accepted, since a line holds its event as the request's fingerprint took it (`entryText`).
 * `undefined` when retention removed its events, or they are not the key's.
 */
export const recallFingerprint = <A>(
  journal: Journal<A>,
  slot: Journaled
): Effect.Effect<string | undefined, JournalCorrupt | JournalIoError> =>
  Effect.gen(function* () {
    let fingerprint: string | undefined = emptyFingerprint
    for (let r = 0; r < slot.runs.length; r += 2) {
      const first = slot.runs[r]!
      yield* journal.readLines(first - 1, first + slot.runs[r + 1]! - 1).pipe(
        Stream.runForEachChunk((lines) =>
          Effect.sync(() => {
            for (const line of lines) {
              if (fingerprint === undefined || line.key !== slot.key) {
                fingerprint = undefined
                return
              }
              // The line's wire JSON (its body and the closing brace): the event as it was stored.
              const change = JSON.parse(bodyDecoder.decode(line.body) + "}")
              fingerprint = chainFingerprint(fingerprint, entryText(change.session_id, change.event))
            }
          })
        )
      )
    }
    return fingerprint
  }).pipe(Effect.catchTag("JournalPruned", () => Effect.succeed(undefined)))
