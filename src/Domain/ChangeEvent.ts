/**
 * `ChangeEvent`: one journaled event as it appears on disk and on the wire,
 * `{"seq":7,"ts":"2026-11-27T10:00:00.123Z","session_id":"s1","event":{...}}`.
 * `session_id` is omitted when absent; `ts` is RFC 3339 UTC, stamped by the writer.
 */
import { Schema } from "effect"

export interface ChangeEvent<A> {
  readonly seq: number
  readonly ts: string
  readonly session_id?: string
  readonly event: A
}

/** Sequence numbers: positive safe integers (0 is "before the first event", used only by cursors). */
export const Seq = Schema.Int.pipe(Schema.positive(), Schema.lessThanOrEqualTo(Number.MAX_SAFE_INTEGER))

/** The wire schema of a `ChangeEvent` carrying events of the given schema. */
export const ChangeEvent = <A, I, R>(event: Schema.Schema<A, I, R>) =>
  Schema.Struct({
    seq: Seq,
    ts: Schema.String,
    session_id: Schema.optionalWith(Schema.String, { exact: true }),
    event
  })
