-- Switchboard spine schema (PostgreSQL). Keep in step with migrations/sqlite/0001_spine.sql:
-- same tables, columns and indexes; only dialect differences. Timestamps are unix
-- microseconds (BIGINT), ids are UUIDv7 text, JSON is text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    time_zone   TEXT NOT NULL DEFAULT 'UTC',
    last_seq    BIGINT NOT NULL DEFAULT 0,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE bots (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    platform          TEXT NOT NULL,
    enabled           BIGINT NOT NULL,
    settings          TEXT NOT NULL,
    credentials       TEXT,
    credential_fields TEXT NOT NULL,
    state             TEXT NOT NULL,
    state_reason      TEXT,
    last_error        TEXT,
    last_seen_at      BIGINT,
    source            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX bots_tenant ON bots (tenant_id, id);

CREATE TABLE contacts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT,
    phone       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX contacts_phone ON contacts (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_tenant ON contacts (tenant_id, id);

CREATE TABLE contact_identities (
    bot_id       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    platform     TEXT NOT NULL,
    contact_id   TEXT NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    PRIMARY KEY (bot_id, external_id)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

CREATE TABLE conversations (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    bot_id            TEXT NOT NULL,
    platform          TEXT NOT NULL,
    external_chat_id  TEXT NOT NULL,
    kind              TEXT NOT NULL,
    title             TEXT,
    contact_id        TEXT,
    last_message_at   BIGINT,
    created_at        BIGINT NOT NULL,
    UNIQUE (bot_id, external_chat_id)
);
CREATE INDEX conversations_tenant ON conversations (tenant_id, id);

CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    bot_id           TEXT NOT NULL,
    platform         TEXT NOT NULL,
    conversation_id  TEXT NOT NULL REFERENCES conversations(id),
    contact_id       TEXT,
    direction        TEXT NOT NULL,
    content          TEXT NOT NULL,
    status           TEXT NOT NULL,
    error            TEXT,
    external_id      TEXT,
    reply_to         TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    dedup_key        TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT,
    delivered_at     BIGINT,
    read_at          BIGINT,
    status_history   TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_dedup ON messages (bot_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX messages_external ON messages (bot_id, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX messages_tenant ON messages (tenant_id, id);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_outbox ON messages (bot_id, id) WHERE status IN ('queued', 'sending');

-- Delivery reports already applied (bot, platform id, status): a redelivery changes nothing.
CREATE TABLE status_reports (
    bot_id       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    message_id   TEXT,
    report       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (bot_id, external_id, status)
);

CREATE TABLE events (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    type       TEXT NOT NULL,
    bot_id     TEXT,
    at         BIGINT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE bot_cursors (
    bot_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (bot_id, name)
);
