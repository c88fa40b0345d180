-- A voucher's expiry is recorded on the voucher itself. vouchers.expire used to decide "already expired" from the
-- EXPIRED audit row, so once vouchers.audit_archive deleted that row (its retention can be shorter than the one
-- vouchers.expire looked back over) the voucher could get a second EXPIRED row. expired_at is never deleted: the
-- archive may delete audit rows freely, and vouchers.expire writes the EXPIRED row only when it sets expired_at.
ALTER TABLE demo.vouchers ADD COLUMN expired_at timestamptz;

-- Vouchers whose EXPIRED row is still there were expired when that row was written.
UPDATE demo.vouchers v
SET expired_at = a.created_at
FROM demo.voucher_audit a
WHERE a.voucher_id = v.id AND a.action = 'EXPIRED';

-- What vouchers.expire looks for: past expiry and not yet marked.
CREATE INDEX vouchers_unexpired ON demo.vouchers (expires_at) WHERE expired_at IS NULL;
