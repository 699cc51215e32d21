-- A message is looked up by its platform id in two ways: an outbound one by its bot, when a
-- delivery report arrives (the report names no chat on Twilio, Africa's Talking, BulkSMS);
-- any message by its chat, when a reply or an edit refers to it (Telegram's message ids are
-- unique only per chat). The second used to read every message of the conversation.
-- Inbound messages leave the first index (only outbound ones are looked up there), so an
-- inbound message still updates as many indexes as before.
DROP INDEX messages_external;
CREATE INDEX messages_external ON messages (bot_id, external_id)
    WHERE external_id IS NOT NULL AND direction = 'outbound';
CREATE INDEX messages_chat_external ON messages (conversation_id, external_id)
    WHERE external_id IS NOT NULL;
