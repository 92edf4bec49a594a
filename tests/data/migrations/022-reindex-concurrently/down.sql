-- Nothing to undo: the index is the same, only rebuilt.
SELECT 1;
