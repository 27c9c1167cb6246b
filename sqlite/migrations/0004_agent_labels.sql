-- Agents: labels, which policies read as principal.labels. The default is
-- what an agent registered before this migration meant: no labels.
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '';  -- space-separated; labels hold no spaces
