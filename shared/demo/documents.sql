-- name: invoice_read
-- One bill with what its invoice prints: the contract, its tenant, unit and property.
SELECT b.reference, b.period, b.amount, b.status, b.due_on, b.paid_at,
       c.id AS contract_id, t.name AS tenant, t.email, t.phone, u.label AS unit, p.name AS property
FROM demo.bills b
JOIN demo.contracts c ON c.id = b.contract_id
JOIN demo.tenants t ON t.id = c.tenant_id
JOIN demo.units u ON u.id = c.unit_id
JOIN demo.properties p ON p.id = u.property_id
WHERE b.id = %(bill_id)s;

-- name: contract_read
SELECT c.id, c.monthly_rent, c.starts_on, c.ends_on, c.status,
       t.name AS tenant, t.email, t.phone, u.label AS unit, p.name AS property
FROM demo.contracts c
JOIN demo.tenants t ON t.id = c.tenant_id
JOIN demo.units u ON u.id = c.unit_id
JOIN demo.properties p ON p.id = u.property_id
WHERE c.id = %(contract_id)s;

-- name: statement_entries
-- A contract's account in date order: each bill is a charge on its period's first day, each bank line matched to one
-- of its bills a payment on the day it was booked (a charge before a payment on the same day).
SELECT on_day, kind, description, amount
FROM (
    SELECT b.period AS on_day, 'charge' AS kind, 'Rent ' || to_char(b.period, 'YYYY-MM') || ' (' || b.reference || ')'
               AS description, b.amount, 0 AS sort, b.id
    FROM demo.bills b
    WHERE b.contract_id = %(contract_id)s
    UNION ALL
    SELECT l.booked_on, 'payment', 'Payment ' || l.bank_ref || ' (' || b.reference || ')', l.amount, 1, l.id
    FROM demo.statement_lines l
    JOIN demo.bills b ON b.id = l.matched_bill_id
    WHERE b.contract_id = %(contract_id)s AND l.status = 'matched'
) entries
ORDER BY on_day, sort, id;

-- name: document_upsert
-- Rendering a document again (a retry, a re-run) overwrites its S3 object and updates its row: one row per key.
INSERT INTO demo.documents (kind, subject_id, s3_key, bytes, rendered_at)
VALUES (%(kind)s, %(subject_id)s, %(s3_key)s, %(bytes)s, now())
ON CONFLICT (s3_key) DO UPDATE
SET kind = EXCLUDED.kind, subject_id = EXCLUDED.subject_id, bytes = EXCLUDED.bytes, rendered_at = EXCLUDED.rendered_at
RETURNING id;
