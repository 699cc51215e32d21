-- When the contact last wrote in a conversation: platforms with a customer-service window
-- (WhatsApp: 24 h) refuse free-form messages outside it.
ALTER TABLE conversations ADD COLUMN last_inbound_at BIGINT;
