-- name: audit_logs_archive_old
-- One batch moved in one statement: the delete's RETURNING feeds the archive's insert, so a row is in exactly one
-- of the two tables whether the batch commits or not. Oldest first, by primary key; rows a concurrent run has
-- locked are skipped, not waited for. No ON CONFLICT on the archive: ids come from audit_logs' identity, so a
-- clash means something else wrote the archive, and failing (and retrying) beats deleting a log that was not kept.
WITH moved AS (
    DELETE FROM demo.audit_logs
    WHERE id IN (
        SELECT id FROM demo.audit_logs
        WHERE created_at < now() - make_interval(days => %(archive_after_days)s)
        ORDER BY created_at
        LIMIT %(batch_size)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, actor, action, entity, detail, created_at
)
INSERT INTO demo.audit_logs_archive (id, actor, action, entity, detail, created_at)
SELECT id, actor, action, entity, detail, created_at FROM moved;

-- name: audit_logs_archive_purge
-- One batch of archived logs past the legal keep (by when the event happened, not when it was archived).
DELETE FROM demo.audit_logs_archive
WHERE id IN (
    SELECT id FROM demo.audit_logs_archive
    WHERE created_at < now() - make_interval(days => %(purge_after_days)s)
    ORDER BY created_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
