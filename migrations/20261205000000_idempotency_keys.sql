-- The Idempotency-Key of a POST /data (IETF httpapi draft "The
-- Idempotency-Key HTTP Header Field"): the SHA-256 of the key a client
-- sent, and the entry its first request stored. A repeat with the same key
-- and the same entry is answered with that entry instead of storing it
-- again. Kept at least 24 hours, then pruned by age in small batches.
--
-- A new table, so the release before this one never reads or locks it;
-- `data` is untouched. No foreign key: `data` rows are never deleted, and
-- a key check on every insert would lock the entry's row for nothing.
-- Bounded, as squawk asks of every migration: a lock not granted within
-- 2 s fails the migration (and the deploy) rather than queueing writes
-- behind it.
SET LOCAL lock_timeout = '2s';
SET LOCAL statement_timeout = '30s';

CREATE TABLE idempotency_keys (
    key        bytea       PRIMARY KEY CHECK (octet_length(key) = 32),
    data_id    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
