-- name: cursor_get
SELECT cursor FROM demo.statement_cursor WHERE account = %(account)s;

-- name: lines_import
-- The bank's id is the line's identity: a line fetched twice (a retried poll, overlapping pages) is stored once, and
-- RETURNING names only the lines this import added.
INSERT INTO demo.statement_lines (bank_ref, booked_on, amount, reference)
SELECT * FROM unnest(%(bank_refs)s::text[], %(booked_on)s::date[], %(amounts)s::numeric[], %(references)s::text[])
ON CONFLICT (bank_ref) DO NOTHING
RETURNING id;

-- name: cursor_advance
-- Compare-and-set: the cursor moves only from the value this poll read. A concurrent poll (a manual trigger beside
-- the hourly one) that moved it first wins; this one's lines were stored anyway (see lines_import), and moving the
-- cursor back to an older position would only fetch them again. No row returned = not moved.
INSERT INTO demo.statement_cursor AS sc (account, cursor, polled_at)
VALUES (%(account)s, %(cursor)s, now())
ON CONFLICT (account) DO UPDATE SET cursor = excluded.cursor, polled_at = excluded.polled_at
WHERE sc.cursor IS NOT DISTINCT FROM %(previous)s
RETURNING cursor;
