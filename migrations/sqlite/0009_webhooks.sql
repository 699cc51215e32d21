-- Outbound webhooks to the business's app: a tenant's subscriptions, each following the
-- tenant's event log from where it was created (`delivered_seq`: every event up to it was
-- delivered or is waiting in webhook_retries), and the deliveries that failed: retried with
-- backoff, then kept as dead letters.
CREATE TABLE webhook_subscriptions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    url           TEXT NOT NULL,
    types         TEXT NOT NULL,
    secret        TEXT NOT NULL,
    delivered_seq BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    -- The instance delivering for the subscription, until when (several instances share
    -- the store; one delivers at a time).
    lease_owner   TEXT,
    lease_until   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, id);

CREATE TABLE webhook_retries (
    subscription_id  TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    state            TEXT NOT NULL,      -- retrying | dead
    attempts         INTEGER NOT NULL,
    first_attempt_at BIGINT NOT NULL,
    last_attempt_at  BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    last_status      INTEGER,
    last_error       TEXT NOT NULL,
    PRIMARY KEY (subscription_id, seq)
);
CREATE INDEX webhook_retries_due ON webhook_retries (state, next_attempt_at);
