-- Demo data for `conveyor seed-demo` (shared/demo/seed.py runs the seed_* blocks in file order, in one transaction).
-- Every time is relative to %(now)s, so each scheduled job finds work the moment it runs: rows just past each job's
-- threshold, and rows just short of it that it must leave alone. Ids are read back by row number, never assumed.
-- %(scale)s multiplies the commerce volume (users, orders, vouchers, logs); the stores and the property-billing
-- scenario (which contract ends when) stay as they are. Money is MNT; prices include 10 percent VAT.

-- name: demo_state
-- Migrated at all? (The migration runner's table is read only when it exists.)
SELECT to_regclass('conveyor.migrations') IS NOT NULL AND to_regclass('conveyor.outbox') IS NOT NULL

-- name: demo_version
-- The demo component's applied version (0 when none).
SELECT coalesce(max(version), 0) FROM conveyor.migrations WHERE component = 'demo'

-- name: demo_lock
-- Two seeds at once would both find the tables empty.
SELECT pg_advisory_xact_lock(hashtext('conveyor.seed-demo'))

-- name: demo_tables
-- Every table of the demo schema, including ones later migrations add: --reset empties them all, the summary counts them.
SELECT tablename FROM pg_tables WHERE schemaname = 'demo' ORDER BY tablename

-- name: demo_existing
-- Data a seed would mix with: the roots every other demo row hangs from.
SELECT (SELECT count(*) FROM demo.users) + (SELECT count(*) FROM demo.stores) + (SELECT count(*) FROM demo.tenants)

-- -- people and devices ----------------------------------------------------------------------------------------------

-- name: seed_users
INSERT INTO demo.users (email, name, phone, created_at)
SELECT (ARRAY['bat-erdene.g', 'oyuntsetseg.d', 'tumurbaatar.b', 'enkhjargal.ts', 'saruul.b', 'munkhbat.p',
              'altantsetseg.l', 'ganzorig.ch', 'narantuya.e', 'temuulen.s'])[mod(g.i - 1, 10) + 1]
       || CASE WHEN g.i > 10 THEN '.' || ((g.i - 1) / 10 + 1) ELSE '' END || '@example.com',
       (ARRAY['Bat-Erdene Ganbold', 'Oyuntsetseg Dorj', 'Tömörbaatar Bold', 'Enkhjargal Tsend', 'Saruul Batbayar',
              'Munkhbat Pürev', 'Altantsetseg Luvsan', 'Ganzorig Chuluun', 'Narantuya Erdene',
              'Temüülen Sükhbaatar'])[mod(g.i - 1, 10) + 1],
       '+9769911' || lpad(g.i::text, 4, '0'),
       %(now)s - make_interval(days => 3 * g.i)
FROM generate_series(1, 10 * %(scale)s) AS g(i)
ORDER BY g.i

-- name: seed_device_tokens
-- Everyone has a phone seen in the last hours; every third user also a browser not seen for 90 days, which
-- push_tokens.cleanup (60 days by default) deletes.
WITH u AS (SELECT id, email, row_number() OVER (ORDER BY id) AS n FROM demo.users)
INSERT INTO demo.device_tokens (user_id, token, platform, last_seen_at)
SELECT u.id, 'demo-' || d.platform || '-' || md5(u.email || d.platform), d.platform,
       CASE WHEN d.stale THEN %(now)s - interval '90 days' ELSE %(now)s - make_interval(hours => u.n::int) END
FROM u
CROSS JOIN LATERAL (VALUES (CASE WHEN mod(u.n, 2) = 0 THEN 'android' ELSE 'ios' END, false), ('web', true)) AS d(platform, stale)
WHERE NOT d.stale OR mod(u.n, 3) = 0
ORDER BY u.n, d.stale

-- name: seed_notifications
-- A fresh promotion each, a reminder from four months ago (notifications.cleanup deletes past 90 days), and for
-- every other user a critical order update from minutes ago (notification.dispatch also emails those).
WITH u AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.users)
INSERT INTO demo.notifications (user_id, type, title, body, created_at, read_at)
SELECT u.id, k.type, k.title, k.body, k.created_at, k.read_at
FROM u
CROSS JOIN LATERAL (VALUES
    ('promotion', 'Naadam week', 'A fifth off airag and aaruul until Sunday.',
     %(now)s - make_interval(hours => u.n::int), NULL::timestamptz),
    ('reminder', 'Your basket is waiting', 'Three items are still in your basket.',
     %(now)s - make_interval(days => 120 + u.n::int), %(now)s - make_interval(days => 119 + u.n::int)),
    ('order_update', 'Your order is on its way', 'The courier picked up your order and will call before arriving.',
     %(now)s - make_interval(mins => 5 + u.n::int), NULL::timestamptz)
) AS k(type, title, body, created_at, read_at)
WHERE k.type <> 'order_update' OR mod(u.n, 2) = 1
ORDER BY u.n, k.created_at

-- -- commerce ----------------------------------------------------------------------------------------------------------

-- name: seed_stores
-- Two stores run a POS with an inventory API (store.sync pulls their stock); the bakery keeps its stock by hand.
WITH owner AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.users)
INSERT INTO demo.stores (name, owner_user_id, pos_store_ref)
SELECT s.name, owner.id, s.pos_store_ref
FROM (VALUES (1, 'Nomin Market Sükhbaatar', 'POS-UB-0001'),
             (2, 'Sansar Mini Market', 'POS-UB-0002'),
             (3, 'Khan-Uul Bakery', NULL)) AS s(n, name, pos_store_ref)
JOIN owner USING (n)
ORDER BY s.n

-- name: seed_inventory
WITH s AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.stores)
INSERT INTO demo.inventory (store_id, sku, name, price, on_hand, updated_at)
SELECT s.id, p.sku, p.name, p.price, 40 + mod(s.n::int * 7 + p.k * 13, 80), %(now)s - interval '1 day'
FROM s
CROSS JOIN (VALUES (1, 'AIRAG-1L', 'Airag 1 L', 4500.00),
                   (2, 'MILK-1L', 'Milk 1 L', 3200.00),
                   (3, 'BOORTSOG-500', 'Boortsog 500 g', 6800.00),
                   (4, 'KHUUSHUUR-1KG', 'Frozen khuushuur 1 kg', 15900.00),
                   (5, 'AARUUL-250', 'Aaruul 250 g', 5500.00),
                   (6, 'TEA-BRICK', 'Brick tea', 8900.00),
                   (7, 'FLOUR-5KG', 'Flour 5 kg', 12500.00),
                   (8, 'BUUZ-1KG', 'Frozen buuz 1 kg', 18900.00)) AS p(k, sku, name, price)
ORDER BY s.n, p.k

-- name: seed_orders
-- Four kinds in turn: pending for 40+ minutes (reservations.cleanup cancels them), paid, pending for 10 minutes
-- (left alone until they too pass 30 minutes), shipped. Totals are filled in from the items below.
WITH s AS (SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total FROM demo.stores),
     u AS (SELECT id, row_number() OVER (ORDER BY id) AS n, count(*) OVER () AS total FROM demo.users),
     o AS (SELECT g.i,
                  (ARRAY['pending', 'paid', 'pending', 'shipped'])[mod(g.i - 1, 4) + 1] AS status,
                  %(now)s - CASE mod(g.i - 1, 4)
                                WHEN 0 THEN make_interval(mins => 40 + 7 * g.i)
                                WHEN 2 THEN interval '10 minutes'
                                ELSE make_interval(hours => g.i) END AS created_at
           FROM generate_series(1, 12 * %(scale)s) AS g(i))
INSERT INTO demo.orders (store_id, user_id, status, total, created_at, updated_at)
SELECT s.id, u.id, o.status, 0, o.created_at,
       o.created_at + CASE o.status WHEN 'paid' THEN interval '5 minutes' WHEN 'shipped' THEN interval '50 minutes'
                                    ELSE interval '0' END
FROM o
JOIN s ON s.n = mod(o.i - 1, s.total) + 1
JOIN u ON u.n = mod(3 * o.i, u.total) + 1
ORDER BY o.i

-- name: seed_order_items
-- Two lines per order, at the store's price.
WITH o AS (SELECT id, store_id, row_number() OVER (ORDER BY id) AS n FROM demo.orders),
     lines AS (SELECT o.id, o.store_id, l.k, l.quantity
               FROM o CROSS JOIN LATERAL (VALUES (mod(o.n::int, 8) + 1, 1 + mod(o.n::int, 3)),
                                                 (mod(o.n::int + 3, 8) + 1, 1)) AS l(k, quantity)),
     catalog AS (SELECT store_id, sku, price, row_number() OVER (PARTITION BY store_id ORDER BY sku) AS k
                 FROM demo.inventory)
INSERT INTO demo.order_items (order_id, store_id, sku, quantity, price)
SELECT lines.id, lines.store_id, catalog.sku, lines.quantity, catalog.price
FROM lines JOIN catalog ON catalog.store_id = lines.store_id AND catalog.k = lines.k
ORDER BY lines.id, lines.k

-- name: seed_order_totals
UPDATE demo.orders o
SET total = t.total
FROM (SELECT order_id, sum(quantity * price) AS total FROM demo.order_items GROUP BY order_id) AS t
WHERE t.order_id = o.id

-- name: seed_reserved
-- A pending order holds its items' stock: what reservations.cleanup gives back when it cancels one.
UPDATE demo.inventory i
SET reserved = r.quantity
FROM (SELECT oi.store_id, oi.sku, sum(oi.quantity) AS quantity
      FROM demo.order_items oi JOIN demo.orders o ON o.id = oi.order_id
      WHERE o.status = 'pending'
      GROUP BY oi.store_id, oi.sku) AS r
WHERE i.store_id = r.store_id AND i.sku = r.sku

-- name: seed_sales
-- A sale per paid or shipped order, its tax receipt not yet sent (receipt.push is enqueued for each, in this same
-- transaction). VAT is the tenth included in the price: total / 11.
INSERT INTO demo.sales (store_id, order_id, total, vat, created_at)
SELECT store_id, id, total, round(total / 11, 2), updated_at
FROM demo.orders
WHERE status IN ('paid', 'shipped')
ORDER BY id
RETURNING id

-- name: seed_digest_items
-- What each owner reads in the morning: every order of the last day, a low-stock warning, and yesterday's item
-- already sent.
INSERT INTO demo.digest_items (store_id, kind, summary, created_at, processed_at)
SELECT o.store_id, 'order_' || o.status,
       'Order #' || o.id || ' ' || o.status || ', ' || to_char(o.total, 'FM999G999G990D00') || ' MNT',
       o.created_at, NULL::timestamptz
FROM demo.orders o
UNION ALL
SELECT i.store_id, 'low_stock', i.name || ': ' || (i.on_hand - i.reserved) || ' left', %(now)s - interval '2 hours', NULL
FROM (SELECT DISTINCT ON (store_id) * FROM demo.inventory ORDER BY store_id, on_hand - reserved, sku) AS i
UNION ALL
SELECT s.id, 'order_paid', 'Yesterday: 14 orders paid', %(now)s - interval '2 days', %(now)s - interval '1 day'
FROM demo.stores s
ORDER BY 4, 1

-- name: seed_vouchers
-- Per store, four kinds in turn: valid for another month; expired days ago and not marked expired yet
-- (vouchers.expire marks it and writes its EXPIRED row); expired 40 days ago and already marked, with its EXPIRED row
-- (left alone); a three-year gift card bought over two years ago, whose CREATED and REDEEMED rows
-- vouchers.audit_archive (730 days) deletes. Every voucher has its CREATED row.
WITH s AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.stores),
     v AS (INSERT INTO demo.vouchers (code, store_id, amount, expires_at, created_at, expired_at)
           SELECT 'GIFT-' || s.n || '-' || lpad(g.j::text, 4, '0'), s.id,
                  (ARRAY[10000.00, 25000.00, 50000.00, 100000.00])[mod(g.j - 1, 4) + 1],
                  %(now)s + CASE mod(g.j - 1, 4) WHEN 0 THEN interval '30 days'
                                                 WHEN 1 THEN -make_interval(days => g.j)
                                                 WHEN 2 THEN interval '-40 days'
                                                 ELSE interval '300 days' END,
                  %(now)s - CASE mod(g.j - 1, 4) WHEN 0 THEN make_interval(days => g.j)
                                                 WHEN 1 THEN interval '60 days'
                                                 WHEN 2 THEN interval '90 days'
                                                 ELSE make_interval(days => 800 + g.j) END,
                  CASE WHEN mod(g.j - 1, 4) = 2 THEN %(now)s - interval '40 days' + interval '2 hours' END
           FROM s CROSS JOIN generate_series(1, 4 * %(scale)s) AS g(j)
           ORDER BY s.n, g.j
           RETURNING id, created_at, expired_at)
INSERT INTO demo.voucher_audit (voucher_id, action, created_at)
SELECT id, 'CREATED', created_at FROM v
UNION ALL
SELECT id, 'EXPIRED', expired_at FROM v WHERE expired_at IS NOT NULL
UNION ALL
SELECT id, 'REDEEMED', created_at + interval '30 days' FROM v WHERE created_at < %(now)s - interval '730 days'
ORDER BY 3

-- -- audit and API bookkeeping -------------------------------------------------------------------------------------

-- name: seed_audit_logs_archive
-- Rows audit.retention moved here earlier: half past seven years (it purges them), half younger (kept). They came
-- from demo.audit_logs, so their ids are that table's: drawn from its sequence, they never collide with a row the
-- job archives later.
INSERT INTO demo.audit_logs_archive (id, actor, action, entity, detail, created_at, archived_at)
SELECT nextval(pg_get_serial_sequence('demo.audit_logs', 'id')), a.actor, a.action, a.entity, a.detail, a.created_at,
       a.created_at + interval '366 days'
FROM (SELECT g.i, 'admin@example.com' AS actor, 'order.refunded' AS action, 'order:' || (1000 + g.i) AS entity,
             jsonb_build_object('amount', 12500.00 * g.i, 'currency', 'MNT') AS detail,
             %(now)s - CASE WHEN mod(g.i, 2) = 0 THEN make_interval(days => 2600 + 30 * g.i)
                            ELSE make_interval(days => 500 + 20 * g.i) END AS created_at
      FROM generate_series(1, 8 * %(scale)s) AS g(i)) AS a
ORDER BY a.created_at

-- name: seed_audit_logs
-- Half from the last day, half over a year old (audit.retention moves those to the archive).
INSERT INTO demo.audit_logs (actor, action, entity, detail, created_at)
SELECT (ARRAY['admin@example.com', 'system', 'oyuntsetseg.d@example.com'])[mod(g.i - 1, 3) + 1],
       (ARRAY['user.login', 'order.paid', 'voucher.created', 'inventory.adjusted'])[mod(g.i - 1, 4) + 1],
       (ARRAY['user:', 'order:', 'voucher:', 'inventory:'])[mod(g.i - 1, 4) + 1] || g.i,
       jsonb_build_object('ip', '202.131.0.' || mod(g.i, 250), 'seeded', true),
       %(now)s - CASE WHEN mod(g.i, 2) = 0 THEN make_interval(days => 400 + g.i) ELSE make_interval(hours => g.i) END
FROM generate_series(1, 20 * %(scale)s) AS g(i)
ORDER BY 5

-- name: seed_idempotency_keys
-- Keys live a day; half have expired (idempotency_keys.prune deletes them).
INSERT INTO demo.idempotency_keys (key, response, created_at, expires_at)
SELECT 'idem-' || md5('conveyor-demo-' || g.i), jsonb_build_object('status', 201, 'order_id', g.i),
       k.created_at, k.created_at + interval '24 hours'
FROM generate_series(1, 10 * %(scale)s) AS g(i)
CROSS JOIN LATERAL (SELECT %(now)s - CASE WHEN mod(g.i, 2) = 0 THEN make_interval(hours => 24 + g.i)
                                          ELSE make_interval(mins => g.i) END AS created_at) AS k
ORDER BY k.created_at

-- -- property billing (dates in Asia/Ulaanbaatar) ------------------------------------------------------------------

-- name: seed_properties
INSERT INTO demo.properties (name)
VALUES ('Zaisan Hills Residence'), ('Bayanzürkh Tower')

-- name: seed_units
WITH p AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.properties)
INSERT INTO demo.units (property_id, label)
SELECT p.id, l.label
FROM p CROSS JOIN (VALUES (1, 'A-101'), (2, 'A-102'), (3, 'B-201'), (4, 'B-202')) AS l(k, label)
ORDER BY p.n, l.k

-- name: seed_tenants
INSERT INTO demo.tenants (name, phone, email)
SELECT t.name, '+9768811' || lpad(t.n::text, 4, '0'), t.email
FROM (VALUES (1, 'Dulamsuren Baatar', 'dulamsuren.b@example.com'),
             (2, 'Erdenebileg Nyam', 'erdenebileg.n@example.com'),
             (3, 'Khulan Ochir', 'khulan.o@example.com'),
             (4, 'Batzorig Tseveen', NULL),
             (5, 'Solongo Amar', 'solongo.a@example.com'),
             (6, 'Gantulga Damdin', 'gantulga.d@example.com'),
             (7, 'Uranchimeg Jamts', 'uranchimeg.j@example.com'),
             (8, 'Odbayar Sambuu', NULL)) AS t(n, name, email)
ORDER BY t.n

-- name: seed_contracts
-- Contract 1 ends in 5 days and contract 2 in 25 (contracts.expiry_notice texts both; the first is within 7 days
-- too), 3 to 7 run for months yet, and 8 ended before last month began (no longer billed).
WITH today AS (SELECT (%(now)s AT TIME ZONE 'Asia/Ulaanbaatar')::date AS d),
     u AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.units),
     t AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM demo.tenants)
INSERT INTO demo.contracts (unit_id, tenant_id, monthly_rent, starts_on, ends_on, status)
SELECT u.id, t.id,
       (ARRAY[1200000.00, 1450000.00, 980000.00, 2500000.00, 1750000.00, 1100000.00, 1600000.00, 1300000.00])[u.n::int],
       CASE WHEN u.n <= 2 THEN today.d - 360 ELSE today.d - (60 + 45 * u.n::int) END,
       CASE u.n WHEN 1 THEN today.d + 5
                WHEN 2 THEN today.d + 25
                WHEN 8 THEN (date_trunc('month', today.d::timestamp) - interval '1 month' - interval '1 day')::date
                ELSE today.d + (180 + 30 * u.n::int) END,
       CASE WHEN u.n = 8 THEN 'ended' ELSE 'active' END
FROM u JOIN t USING (n) CROSS JOIN today
ORDER BY u.n

-- name: seed_bills
-- Last month's bills, made on its 10th like bills.monthly would; every third is paid, the rest open. This month's
-- are left for bills.monthly to create.
WITH p AS (SELECT (date_trunc('month', %(now)s AT TIME ZONE 'Asia/Ulaanbaatar') - interval '1 month')::date AS period),
     c AS (SELECT c.id, c.monthly_rent, row_number() OVER (ORDER BY c.id) AS n
           FROM demo.contracts c CROSS JOIN p
           WHERE c.starts_on < p.period + interval '1 month' AND c.ends_on >= p.period)
INSERT INTO demo.bills (contract_id, period, amount, reference, status, due_on, created_at, paid_at)
SELECT c.id, p.period, c.monthly_rent, 'RENT-' || to_char(p.period, 'YYYYMM') || '-' || lpad(c.id::text, 4, '0'),
       CASE WHEN mod(c.n, 3) = 0 THEN 'paid' ELSE 'open' END,
       p.period + 24,
       (p.period + 9 + time '09:00') AT TIME ZONE 'Asia/Ulaanbaatar',
       CASE WHEN mod(c.n, 3) = 0 THEN (p.period + 20 + time '14:30') AT TIME ZONE 'Asia/Ulaanbaatar' END
FROM c CROSS JOIN p
ORDER BY c.n

-- name: seed_statement_lines
-- Imported from the bank an hour ago, not reconciled yet: the first two open bills paid exactly (statements.reconcile
-- matches them), the third paid short (left unmatched for review), and a transfer that is no rent at all. The paid
-- bills' own lines were matched earlier. The remaining open bills have no payment yet.
WITH today AS (SELECT (%(now)s AT TIME ZONE 'Asia/Ulaanbaatar')::date AS d),
     open_bills AS (SELECT id, amount, reference, row_number() OVER (ORDER BY id) AS n
                    FROM demo.bills WHERE status = 'open')
INSERT INTO demo.statement_lines (bank_ref, booked_on, amount, reference, imported_at, status, matched_bill_id)
SELECT 'KHAN-' || to_char(today.d, 'YYYYMMDD') || '-' || lpad(b.n::text, 4, '0'), today.d - b.n::int,
       CASE WHEN b.n = 3 THEN b.amount - 50000.00 ELSE b.amount END,
       b.reference, %(now)s - interval '1 hour', 'new', NULL::bigint
FROM open_bills b CROSS JOIN today
WHERE b.n <= 3
UNION ALL
SELECT 'KHAN-' || to_char(today.d, 'YYYYMMDD') || '-0900', today.d - 1, 75000.00, 'Khulan birthday gift',
       %(now)s - interval '1 hour', 'new', NULL
FROM today
UNION ALL
SELECT 'KHAN-' || to_char(b.paid_at AT TIME ZONE 'Asia/Ulaanbaatar', 'YYYYMMDD') || '-' || lpad(b.id::text, 4, '0'),
       (b.paid_at AT TIME ZONE 'Asia/Ulaanbaatar')::date, b.amount, b.reference, b.paid_at + interval '1 hour',
       'matched', b.id
FROM demo.bills b
WHERE b.status = 'paid'
ORDER BY 2, 1

-- name: seed_statement_cursor
-- Where the bank import got to: the last line above. statements.poll continues from here.
INSERT INTO demo.statement_cursor (account, cursor, polled_at)
SELECT 'main', max(bank_ref), %(now)s - interval '1 hour' FROM demo.statement_lines

-- -- after seeding -----------------------------------------------------------------------------------------------------

-- name: demo_welcome_user
SELECT email, name FROM demo.users ORDER BY id LIMIT 1

-- name: demo_critical_notification
SELECT id FROM demo.notifications WHERE type = %(type)s ORDER BY created_at DESC, id LIMIT 1

-- name: demo_work
-- What each job will find to do right now: the summary's "try" lines. A hint for people, not the jobs' own rules.
SELECT job, waiting, what FROM (VALUES
    ('reservations.cleanup', (SELECT count(*) FROM demo.orders
                              WHERE status = 'pending' AND created_at < %(now)s - interval '30 minutes'),
     'orders pending for over 30 minutes'),
    ('vouchers.expire', (SELECT count(*) FROM demo.vouchers WHERE expires_at < %(now)s AND expired_at IS NULL),
     'vouchers past expiry not marked expired yet'),
    ('vouchers.audit_archive', (SELECT count(*) FROM demo.voucher_audit WHERE created_at < %(now)s - interval '730 days'),
     'voucher audit rows over 730 days old'),
    ('audit.retention', (SELECT count(*) FROM demo.audit_logs WHERE created_at < %(now)s - interval '365 days')
                        + (SELECT count(*) FROM demo.audit_logs_archive WHERE created_at < %(now)s - interval '2555 days'),
     'audit rows to archive (over a year) or purge (over seven years)'),
    ('notifications.cleanup', (SELECT count(*) FROM demo.notifications WHERE created_at < %(now)s - interval '90 days'),
     'notifications over 90 days old'),
    ('push_tokens.cleanup', (SELECT count(*) FROM demo.device_tokens WHERE last_seen_at < %(now)s - interval '60 days'),
     'device tokens unseen for 60 days'),
    ('idempotency_keys.prune', (SELECT count(*) FROM demo.idempotency_keys WHERE expires_at < %(now)s),
     'expired idempotency keys'),
    ('orders.digest', (SELECT count(*) FROM demo.digest_items WHERE processed_at IS NULL),
     'unprocessed digest items'),
    ('store.sync', (SELECT count(*) FROM demo.stores WHERE pos_store_ref IS NOT NULL),
     'stores with a POS inventory integration'),
    ('bills.monthly', (SELECT count(*) FROM demo.contracts WHERE status = 'active'),
     'active contracts, none billed for this month yet'),
    ('contracts.expiry_notice', (SELECT count(*) FROM demo.contracts WHERE status = 'active'
                                 AND ends_on <= (%(now)s AT TIME ZONE 'Asia/Ulaanbaatar')::date + 30),
     'active contracts ending within 30 days'),
    ('statements.reconcile', (SELECT count(*) FROM demo.statement_lines WHERE status = 'new'),
     'bank statement lines not reconciled yet')
) AS w(job, waiting, what)

-- name: demo_bills_to_package
-- The seeded bills (last month's), whose invoices the demo packages as a flow.
SELECT id FROM demo.bills ORDER BY id;
