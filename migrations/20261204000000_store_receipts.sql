-- Receipts of the store's batched writes: a write batch records its token
-- and the ids it stored in the same statement, so that when the connection
-- is lost before the answer comes, the store can tell whether the batch
-- committed (and answer with its rows) or not (and send it again). Kept a
-- quarter of an hour, then pruned. A new table: the release before this one
-- never reads it.
CREATE TABLE store_receipts (
    token      uuid        PRIMARY KEY,
    ids        bigint[]    NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX store_receipts_created_at ON store_receipts (created_at);
