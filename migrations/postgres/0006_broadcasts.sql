-- Broadcasts: one content to many contacts through one bot, now or at a scheduled time.
-- Recipients are snapshotted at creation (contact, name, phone, the platform id to send to);
-- each gets its message id up front, and the message row is written when the broadcast
-- starts, so a recipient's status is its message's.
CREATE TABLE broadcasts (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    bot_id           TEXT NOT NULL,
    title            TEXT NOT NULL,
    content          TEXT NOT NULL,
    audience         TEXT NOT NULL,
    status           TEXT NOT NULL,
    scheduled_at     BIGINT,
    started_at       BIGINT,
    started_late     BIGINT NOT NULL DEFAULT 0,
    finished_at      BIGINT,
    recipient_count  BIGINT NOT NULL,
    segments         BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX broadcasts_tenant ON broadcasts (tenant_id, id);
CREATE INDEX broadcasts_status ON broadcasts (status, scheduled_at);

CREATE TABLE broadcast_recipients (
    broadcast_id  TEXT NOT NULL REFERENCES broadcasts(id) ON DELETE CASCADE,
    position      BIGINT NOT NULL,
    contact_id    TEXT NOT NULL,
    name          TEXT,
    phone         TEXT,
    chat          TEXT,
    skip_reason   TEXT,
    message_id    TEXT,
    PRIMARY KEY (broadcast_id, position)
);
CREATE INDEX broadcast_recipients_message ON broadcast_recipients (message_id);
