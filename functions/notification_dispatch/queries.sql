-- name: notification_load
-- The notification, its user and every device token of that user, in one statement (one snapshot, no locks held
-- while the push service is called).
SELECT n.id, n.type, n.title, n.body, u.email, u.name,
       coalesce(array_agg(t.token ORDER BY t.id) FILTER (WHERE t.token IS NOT NULL), '{}') AS tokens
FROM demo.notifications n
JOIN demo.users u ON u.id = n.user_id
LEFT JOIN demo.device_tokens t ON t.user_id = n.user_id
WHERE n.id = %(notification_id)s
GROUP BY n.id, u.id

-- name: device_tokens_delete
-- Only the user's own tokens: the push service's answer cannot delete another user's device.
DELETE FROM demo.device_tokens
WHERE user_id = (SELECT user_id FROM demo.notifications WHERE id = %(notification_id)s)
  AND token = ANY(%(tokens)s)
