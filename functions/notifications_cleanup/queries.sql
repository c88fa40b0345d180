-- name: notifications_delete_old
-- One batch: the oldest notifications past the cut-off, by primary key (not ctid, which changes if a row is updated
-- between the subquery and the delete). Rows a concurrent run has locked are skipped, not waited for.
DELETE FROM demo.notifications
WHERE id IN (
    SELECT id FROM demo.notifications
    WHERE created_at < now() - make_interval(days => %(older_than_days)s)
    ORDER BY created_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
