-- Idempotency-Key on the creating POSTs other than /v1/messages (whose key is kept with its
-- message in idempotency_keys): the first 2xx answer, replayed for 24 h. `scope` is a digest
-- of the caller's credential, the method and the path.
CREATE TABLE api_idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
