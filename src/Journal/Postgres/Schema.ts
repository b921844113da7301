/**
 * The PostgreSQL journal's tables, created and evolved through `@effect/sql`'s migrator, and the
 * partitions of `feed_events` kept ahead of the global position.
 *
 * - `feed_heads`: the allocator, one row per account; `head` is the last seq handed out, which is
 *   the last committed one (the append bumps it in the statement that inserts the events).
 *   Never deleted, so a seq is never reused; `floor_seq` is the oldest seq still retained.
 *   `fillfactor=80` leaves room for the head updates to stay HOT.
 * - `feed_meta`: one row, the epoch readers see in cursors, the server timeline it was minted
 *   on, and the size of a partition.
 * - `feed_events`: one row per event, partitioned by range of `gpos` (a global position drawn
 *   from `feed_gpos` under the account's head lock, so per account it grows with seq and a
 *   dropped partition is a prefix of every account's seqs). `payload` is the event's wire JSON
 *   after its `{"seq":N` prefix, as text: the exact bytes that were acknowledged (`jsonb` would
 *   reorder keys). `key` is the idempotency key, `batch_id` the append statement that wrote the
 *   row, to learn the outcome of a statement whose answer was lost.
 * - `feed_partitions`: the partitions that exist, with their ranges, for maintenance and retention.
 * - `feed_events_key`: the events of an idempotency key, for a retry that reaches another replica.
 */
import * as PgMigrator from "@effect/sql-pg/PgMigrator"
import type { PgClient } from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { Effect, Schedule } from "effect"

/** The migrations, by `<id>_<name>`. */
const migrations = PgMigrator.fromRecord({
  "1_feed_journal": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe(`
CREATE TABLE feed_meta (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  epoch text NOT NULL,
  timeline text NOT NULL,
  partition_rows bigint NOT NULL CHECK (partition_rows > 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE feed_heads (
  account_id text PRIMARY KEY,
  head bigint NOT NULL,
  floor_seq bigint NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);
CREATE SEQUENCE feed_gpos AS bigint CACHE 1;
CREATE TABLE feed_events (
  gpos bigint NOT NULL DEFAULT nextval('feed_gpos'),
  account_id text NOT NULL,
  seq bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  session_id text,
  key text,
  batch_id uuid NOT NULL,
  payload text NOT NULL,
  PRIMARY KEY (account_id, seq, gpos)
) PARTITION BY RANGE (gpos);
CREATE TABLE feed_partitions (
  name text PRIMARY KEY,
  lo bigint NOT NULL,
  hi bigint NOT NULL
);
-- Creates the partitions up to two past the one the next gpos falls in; answers how many it created.
CREATE FUNCTION feed_ensure_partitions() RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
  size bigint;
  next_gpos bigint;
  target bigint;
  k bigint;
  created integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('feed_partitions'));
  SELECT partition_rows INTO size FROM feed_meta;
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_gpos FROM feed_gpos;
  target := (next_gpos - 1) / size + 2;
  SELECT coalesce(max(hi), 1) INTO k FROM feed_partitions;
  k := (k - 1) / size;
  WHILE k <= target LOOP
    EXECUTE format(
      'CREATE TABLE %I PARTITION OF feed_events FOR VALUES FROM (%s) TO (%s)',
      'feed_events_' || lpad(k::text, 10, '0'), k * size + 1, (k + 1) * size + 1);
    INSERT INTO feed_partitions (name, lo, hi)
      VALUES ('feed_events_' || lpad(k::text, 10, '0'), k * size + 1, (k + 1) * size + 1);
    created := created + 1;
    k := k + 1;
  END LOOP;
  RETURN created;
END
$fn$;
`)
  ),
  // A retry of a request can reach another replica than the one that journaled it: that replica
  // finds the request's events by its key.
  "2_feed_keys": Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe(`CREATE INDEX feed_events_key ON feed_events (account_id, key) WHERE key IS NOT NULL`)
  )
})

/** Runs the migrations that have not run yet (several replicas starting at once: retried). */
export const migrate: Effect.Effect<void, SqlError | PgMigrator.MigrationError, PgClient | SqlClient.SqlClient> =
  PgMigrator.run({ loader: migrations, table: "feed_migrations" }).pipe(
    Effect.provide(NodeContext.layer),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(5)))),
    Effect.asVoid
  )

/** Creates the partitions the next appends need (idempotent, safe from several replicas). */
export const ensurePartitions = (sql: SqlClient.SqlClient) =>
  sql.unsafe<{ created: number }>(`SELECT feed_ensure_partitions() AS created`)

/** The SQLSTATE of "no partition of relation found for row". */
export const NO_PARTITION = "23514"
