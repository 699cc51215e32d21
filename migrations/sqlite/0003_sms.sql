-- SMS: the segments an outbound text is billed as (computed before sending) and the cost
-- the provider reported (e.g. "KES 0.8000", "USD 0.0079").
ALTER TABLE messages ADD COLUMN segments BIGINT;
ALTER TABLE messages ADD COLUMN cost TEXT;
