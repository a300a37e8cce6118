-- The stage graph of a run: the names of the stages each stage waits for, comma-separated (stage
-- names have only letters, digits, '_', '.' and '-'). NULL for stages recorded before this column
-- existed; the web UI then draws them in one column.
ALTER TABLE stages ADD COLUMN needs TEXT;
