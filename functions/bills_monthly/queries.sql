-- name: bills_create
-- Every contract active at some point of the period gets the period's bill. The conflict target is the one-bill-per-
-- contract-and-period rule itself, so a second run for the period (a redelivery, a manual trigger) adds nothing and
-- RETURNING names only the bills this run created (the ones whose invoices still need rendering).
INSERT INTO demo.bills (contract_id, period, amount, reference, due_on)
SELECT c.id, %(period)s, c.monthly_rent, 'B' || c.id || '-' || to_char(%(period)s::date, 'YYYYMM'), %(due_on)s
FROM demo.contracts c
WHERE c.status = 'active'
  AND c.starts_on <= (%(period)s::date + interval '1 month - 1 day')::date
  AND c.ends_on >= %(period)s::date
ORDER BY c.id
ON CONFLICT (contract_id, period) DO NOTHING
RETURNING id;
