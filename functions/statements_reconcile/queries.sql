-- name: lines_reconcile
-- One statement, so the matching is set-based and atomic:
-- 1. lines: the new lines to reconcile (those given, or all new ones), locked; lines another reconcile holds are
--    skipped, not waited for (that run reconciles them).
-- 2. candidates: each line's open bill with the same reference (trimmed, case-insensitive) and the same amount, one
--    to one. Two lines paying one bill: the earlier line gets it, the later one is left for review (a double
--    payment). A line whose reference fits two bills (references differing only in case) pays the first one.
-- 3. paid: those bills marked paid. "status = 'open'" is checked again under the bill's row lock, so a bill that a
--    concurrent reconcile paid first (its lines were locked by that run) is not paid twice and its line here is left
--    unmatched.
-- 4. every locked line ends matched (to the bill it paid) or unmatched.
WITH lines AS (
    SELECT id, btrim(lower(reference)) AS reference, amount
    FROM demo.statement_lines
    WHERE status = 'new' AND (cardinality(%(line_ids)s::bigint[]) = 0 OR id = ANY (%(line_ids)s::bigint[]))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT DISTINCT ON (line_id) bill_id, line_id
    FROM (
        SELECT DISTINCT ON (b.id) b.id AS bill_id, l.id AS line_id
        FROM lines l
        JOIN demo.bills b ON b.status = 'open' AND btrim(lower(b.reference)) = l.reference AND b.amount = l.amount
        WHERE l.reference <> ''
        ORDER BY b.id, l.id
    ) per_bill
    ORDER BY line_id, bill_id
), paid AS (
    UPDATE demo.bills b SET status = 'paid', paid_at = now()
    FROM candidates c
    WHERE b.id = c.bill_id AND b.status = 'open'
    RETURNING b.id AS bill_id, c.line_id
)
UPDATE demo.statement_lines s
SET status = CASE WHEN p.bill_id IS NULL THEN 'unmatched' ELSE 'matched' END, matched_bill_id = p.bill_id
FROM lines l LEFT JOIN paid p ON p.line_id = l.id
WHERE s.id = l.id
RETURNING s.id, s.status, s.matched_bill_id;
