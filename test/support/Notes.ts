/**
 * A tiny event domain for tests of the generic mechanism: the journal and feed are not tied
 * to the agent catalog.
 */
import { Schema } from "effect"
import type { ChangeEvent } from "../../src/Domain/ChangeEvent.js"
import type { FeedDomain } from "../../src/Domain/FeedDomain.js"

export const Note = Schema.Struct({
  type: Schema.Literal("note", "blip"),
  session: Schema.optionalWith(Schema.String, { exact: true }),
  text: Schema.String
})
export type Note = typeof Note.Type

export const NoteDomain: FeedDomain<Note, typeof Note.Encoded> = {
  schema: Note,
  isDurable: (n) => n.type === "note",
  sessionId: (n) => n.session
}

export const note = (text: string, session?: string): Note =>
  session === undefined ? { type: "note", text } : { type: "note", session, text }

/** A note as the journal stores it: its seq, a fixed ts, its session and key when given. */
export const storedNote = (spec: {
  readonly seq: number
  readonly text: string
  readonly session?: string | undefined
  readonly key?: string | undefined
}) => ({
  seq: spec.seq,
  ts: "2026-11-27T10:00:00.000Z",
  ...(spec.session === undefined ? {} : { session_id: spec.session }),
  event: { type: "note" as const, text: spec.text },
  ...(spec.key === undefined ? {} : { key: spec.key })
})

/** Contiguous change events `from..from+count-1`, payloads padded to `pad` characters. */
export const notes = (from: number, count: number, pad = 0): Array<ChangeEvent<Note>> =>
  Array.from({ length: count }, (_, i) => ({
    seq: from + i,
    ts: "2026-11-27T10:00:00.000Z",
    event: note(`n${from + i}`.padEnd(pad, "."))
  }))
