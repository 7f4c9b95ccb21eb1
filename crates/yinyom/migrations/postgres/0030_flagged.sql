-- Subjects with a flag set (erasure, restriction, objection, age) are few
-- and the decision view holds all of them: an index over just those rows.
-- Flags are stored as '{}' when none is set.
UPDATE subjects SET flags = '{}' WHERE flags = '{"erased":false,"restricted":[],"objected":[]}';
CREATE INDEX subjects_flagged ON subjects (tenant) WHERE flags <> '{}';
