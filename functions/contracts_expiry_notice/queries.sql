-- name: notices_due
-- Active contracts ending today or later, within the largest threshold, with the thresholds they have reached
-- (ends_on - today <= threshold) and have no notice for yet. The tenant and unit come along for the SMS.
SELECT c.id, c.ends_on, t.name, t.phone, u.label, p.name AS property,
       array_agg(th.days ORDER BY th.days) AS thresholds
FROM demo.contracts c
JOIN demo.tenants t ON t.id = c.tenant_id
JOIN demo.units u ON u.id = c.unit_id
JOIN demo.properties p ON p.id = u.property_id
JOIN unnest(%(thresholds)s::integer[]) AS th(days) ON c.ends_on - %(today)s::date <= th.days
WHERE c.status = 'active'
  AND c.ends_on >= %(today)s::date
  AND c.ends_on <= %(today)s::date + %(widest)s::integer
  AND NOT EXISTS (
      SELECT 1 FROM demo.contract_notices n WHERE n.contract_id = c.id AND n.threshold_days = th.days
  )
GROUP BY c.id, c.ends_on, t.name, t.phone, u.label, p.name
ORDER BY c.id;

-- name: notices_record
-- The notices this run sends, given side by side (contract, threshold). A notice another run recorded meanwhile
-- conflicts and is left out of RETURNING, so only the run that recorded it sends its SMS.
INSERT INTO demo.contract_notices (contract_id, threshold_days)
SELECT * FROM unnest(%(contract_ids)s::bigint[], %(thresholds)s::integer[])
ON CONFLICT (contract_id, threshold_days) DO NOTHING
RETURNING contract_id, threshold_days;
