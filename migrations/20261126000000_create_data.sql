-- The original app's `data` table, plus when each entry was stored.
CREATE TABLE data (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notes      varchar(128) NOT NULL,
    greeting   varchar(128) NOT NULL,
    created_at timestamptz  NOT NULL DEFAULT now()
);
