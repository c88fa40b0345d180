-- name: device_tokens_delete_unseen
-- One batch of tokens the app has not reported for ``unseen_days``: the device is gone or the app uninstalled, and
-- pushing to them only earns errors. By primary key; tokens a concurrent writer holds (notification.dispatch
-- deleting an invalid one, the app refreshing last_seen_at) are skipped, not waited for.
DELETE FROM demo.device_tokens
WHERE id IN (
    SELECT id FROM demo.device_tokens
    WHERE last_seen_at < now() - make_interval(days => %(unseen_days)s)
    ORDER BY last_seen_at
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
);
