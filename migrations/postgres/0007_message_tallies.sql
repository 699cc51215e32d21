-- Message counts per tenant, bot and quarter hour (unix seconds / 900), kept by the writer in
-- the transaction that stores what they count: /v1/stats reads a few hundred rows instead of
-- counting messages. Quarter hours so that "today" lines up in every time zone.
CREATE TABLE message_tallies (
    tenant_id  TEXT NOT NULL,
    bot_id     TEXT NOT NULL,
    bucket     BIGINT NOT NULL,
    received   BIGINT NOT NULL DEFAULT 0,
    sent       BIGINT NOT NULL DEFAULT 0,
    failed     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, bot_id, bucket)
);

INSERT INTO message_tallies (tenant_id, bot_id, bucket, received)
    SELECT tenant_id, bot_id, created_at / 900000000, COUNT(*) FROM messages
    WHERE direction = 'inbound' GROUP BY tenant_id, bot_id, created_at / 900000000;

INSERT INTO message_tallies (tenant_id, bot_id, bucket, sent)
    SELECT tenant_id, bot_id, sent_at / 900000000, COUNT(*) FROM messages
    WHERE direction = 'outbound' AND sent_at IS NOT NULL GROUP BY tenant_id, bot_id, sent_at / 900000000
    ON CONFLICT (tenant_id, bot_id, bucket) DO UPDATE SET sent = excluded.sent;

INSERT INTO message_tallies (tenant_id, bot_id, bucket, failed)
    SELECT tenant_id, bot_id, created_at / 900000000, COUNT(*) FROM messages
    WHERE status = 'failed' GROUP BY tenant_id, bot_id, created_at / 900000000
    ON CONFLICT (tenant_id, bot_id, bucket) DO UPDATE SET failed = excluded.failed;
