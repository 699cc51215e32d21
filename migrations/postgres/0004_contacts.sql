-- Contacts as the API manages them: free tags and attributes beside name and phone.
ALTER TABLE contacts ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE contacts ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
CREATE INDEX contacts_tenant_name ON contacts (tenant_id, name);
