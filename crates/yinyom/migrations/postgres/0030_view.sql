-- Subjects with a flag set (erasure, restriction, objection, age) are few
-- and the decision view holds all of them: an index over just those rows.
-- Flags are stored as '{}' when none is set.
UPDATE subjects SET flags = '{}' WHERE flags = '{"erased":false,"restricted":[],"objected":[]}';
CREATE INDEX subjects_flagged ON subjects (tenant) WHERE flags <> '{}';

-- Facts about this database: `store_id` names it in files made from it
-- (the decision view's snapshot), so that a file of another store is
-- never loaded.
CREATE TABLE store_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('store_id', md5(random()::text || clock_timestamp()::text));
