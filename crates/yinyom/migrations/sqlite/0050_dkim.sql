-- DKIM signing of outgoing email: the connector's private key, sealed with
-- the tenant key like its secret (selector and domain are in `config`).
ALTER TABLE connectors ADD COLUMN dkim_key BLOB;
