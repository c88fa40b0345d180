"""How long voucher audit rows are kept, read by ``vouchers.audit_archive`` (which deletes older rows).

Nothing else depends on it: a voucher's expiry is recorded on the voucher (``expired_at``), so ``vouchers.expire``
does not look at how far back audit rows still reach.
"""

from __future__ import annotations

import os

# The environment variable, named once: the function's environment (or the local runtime's) sets it.
VOUCHER_AUDIT_RETENTION_DAYS = "VOUCHER_AUDIT_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 730
MAX_RETENTION_DAYS = 36_500


class RetentionConfigError(ValueError):
    """VOUCHER_AUDIT_RETENTION_DAYS is set to something that is not a whole number of days in range: a
    configuration error no retry can fix."""


def audit_retention_days(override: int | None = None) -> int:
    """``override`` (a payload's ``retention_days``) if given, else VOUCHER_AUDIT_RETENTION_DAYS, else 730."""
    if override is not None:
        return override
    raw = os.environ.get(VOUCHER_AUDIT_RETENTION_DAYS, "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        raise RetentionConfigError(f"{VOUCHER_AUDIT_RETENTION_DAYS}={raw!r} is not a whole number of days") from None
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise RetentionConfigError(f"{VOUCHER_AUDIT_RETENTION_DAYS}={days} is out of range (1 to {MAX_RETENTION_DAYS} days)")
    return days
