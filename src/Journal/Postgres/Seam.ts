/**
 * The journal seam as this backend sees it: the interface every journal backend implements,
 * in one place so that the backend's modules import it from here.
 */
import type { Effect, Schema, Scope, Stream } from "effect"
import type { AccountId } from "../../Domain/Account.js"
import type { JournalInfo, JournalRecovery } from "../../Journal.js"
import type { JournalIoError, JournalOpenError, JournalReadError } from "../Errors.js"
import type { EncodedBatch, StoredEvent, StoredLine } from "../Lines.js"

export type { JournalInfo, JournalRecovery } from "../../Journal.js"

export type JournalEvent<A> = StoredEvent<A>
export type JournalLine = StoredLine

export interface JournalEntry<A> {
  readonly ts: string
  readonly session_id?: string | undefined
  readonly event: A
  readonly key?: string | undefined
}

export interface Appended<A> {
  readonly events: ReadonlyArray<JournalEvent<A>>
  readonly lines: EncodedBatch
}

export interface Journal<A> {
  readonly location: string
  readonly epoch: string
  readonly recovery: JournalRecovery
  readonly headSeq: Effect.Effect<number>
  readonly info: Effect.Effect<JournalInfo>
  readonly append: (entries: ReadonlyArray<JournalEntry<A>>) => Effect.Effect<Appended<A>, JournalIoError>
  readonly read: (since: number, upTo?: number) => Stream.Stream<JournalEvent<A>, JournalReadError>
  readonly readLines: (since: number, upTo?: number) => Stream.Stream<JournalLine, JournalReadError>
  readonly foreignHeads?: Stream.Stream<number> | undefined
}

export interface JournalStore {
  readonly location: string
  readonly open: <A, I>(
    schema: Schema.Schema<A, I>,
    account: AccountId
  ) => Effect.Effect<Journal<A>, JournalOpenError, Scope.Scope>
  readonly accounts: Effect.Effect<ReadonlyArray<AccountId>, JournalIoError>
}
