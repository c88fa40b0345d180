-- The product's domain (issue 15): a small commerce backend (stores, orders, sales, vouchers, notifications) and a
-- property-billing one (contracts, monthly bills, bank statements), the tables the nineteen jobs work on. Apart from
-- Conveyor's own schema: the application owns these, and the job system could be lifted out without them.

-- -- people and devices ----------------------------------------------------------------------------------------------

CREATE TABLE demo.users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text NOT NULL,
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Push targets. last_seen_at moves whenever the app reports the token; push_tokens.cleanup deletes stale ones, and
-- notification.dispatch deletes one the push service calls invalid.
CREATE TABLE demo.device_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES demo.users ON DELETE CASCADE,
    token        text NOT NULL UNIQUE,
    platform     text NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_tokens_user ON demo.device_tokens (user_id);
CREATE INDEX device_tokens_seen ON demo.device_tokens (last_seen_at);

CREATE TABLE demo.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES demo.users ON DELETE CASCADE,
    type       text NOT NULL,
    title      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz
);
CREATE INDEX notifications_created ON demo.notifications (created_at);

-- -- commerce ----------------------------------------------------------------------------------------------------------

-- A store with an inventory integration has a POS reference: store.sync pulls its stock from the POS API.
CREATE TABLE demo.stores (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL,
    owner_user_id bigint NOT NULL REFERENCES demo.users,
    pos_store_ref text UNIQUE,
    synced_at     timestamptz
);

CREATE TABLE demo.inventory (
    store_id   bigint NOT NULL REFERENCES demo.stores ON DELETE CASCADE,
    sku        text NOT NULL,
    name       text NOT NULL,
    price      numeric(12, 2) NOT NULL CHECK (price >= 0),
    on_hand    integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, sku)
);

-- A pending order holds its items' stock (inventory.reserved) until it is paid or reservations.cleanup cancels it.
CREATE TABLE demo.orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id   bigint NOT NULL REFERENCES demo.stores,
    user_id    bigint NOT NULL REFERENCES demo.users,
    status     text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
    total      numeric(12, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_pending ON demo.orders (created_at) WHERE status = 'pending';

CREATE TABLE demo.order_items (
    order_id bigint NOT NULL REFERENCES demo.orders ON DELETE CASCADE,
    store_id bigint NOT NULL,
    sku      text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    price    numeric(12, 2) NOT NULL,
    PRIMARY KEY (order_id, sku),
    FOREIGN KEY (store_id, sku) REFERENCES demo.inventory (store_id, sku)
);

-- A sale and its tax receipt: receipt.push, enqueued in the sale's own transaction, posts it to the receipt service
-- and stores the id it returns.
CREATE TABLE demo.sales (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id        bigint NOT NULL REFERENCES demo.stores,
    order_id        bigint REFERENCES demo.orders,
    total           numeric(12, 2) NOT NULL,
    vat             numeric(12, 2) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    receipt_id      text,
    receipt_sent_at timestamptz
);

-- Things a store owner hears about in the morning digest (orders.digest marks them processed).
CREATE TABLE demo.digest_items (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store_id     bigint NOT NULL REFERENCES demo.stores ON DELETE CASCADE,
    kind         text NOT NULL,
    summary      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX digest_items_unprocessed ON demo.digest_items (store_id) WHERE processed_at IS NULL;

CREATE TABLE demo.vouchers (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL UNIQUE,
    store_id   bigint NOT NULL REFERENCES demo.stores,
    amount     numeric(12, 2) NOT NULL CHECK (amount > 0),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vouchers_expiry ON demo.vouchers (expires_at);

-- A voucher's history. At most one EXPIRED row per voucher, whoever writes it and however often.
CREATE TABLE demo.voucher_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    voucher_id bigint NOT NULL REFERENCES demo.vouchers ON DELETE CASCADE,
    action     text NOT NULL CHECK (action IN ('CREATED', 'REDEEMED', 'EXPIRED')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX voucher_audit_expired_once ON demo.voucher_audit (voucher_id) WHERE action = 'EXPIRED';
CREATE INDEX voucher_audit_created ON demo.voucher_audit (created_at);

-- The application's audit log; audit.retention moves rows over a year old to the archive and purges the archive
-- after seven years.
CREATE TABLE demo.audit_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor      text NOT NULL,
    action     text NOT NULL,
    entity     text NOT NULL,
    detail     jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_created ON demo.audit_logs (created_at);

CREATE TABLE demo.audit_logs_archive (
    id          bigint PRIMARY KEY,
    actor       text NOT NULL,
    action      text NOT NULL,
    entity      text NOT NULL,
    detail      jsonb,
    created_at  timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_archive_created ON demo.audit_logs_archive (created_at);

-- Keys the API stores to answer a repeated request the same way; idempotency_keys.prune deletes expired ones.
CREATE TABLE demo.idempotency_keys (
    key        text PRIMARY KEY,
    response   jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON demo.idempotency_keys (expires_at);

-- -- property billing (Asia/Ulaanbaatar) -------------------------------------------------------------------------------

CREATE TABLE demo.properties (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
);

CREATE TABLE demo.units (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    property_id bigint NOT NULL REFERENCES demo.properties ON DELETE CASCADE,
    label       text NOT NULL,
    UNIQUE (property_id, label)
);

CREATE TABLE demo.tenants (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL,
    phone text NOT NULL,
    email text
);

-- A lease: billed monthly while active (starts_on <= the period's day, ends_on >= the period's first day).
CREATE TABLE demo.contracts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    unit_id      bigint NOT NULL REFERENCES demo.units,
    tenant_id    bigint NOT NULL REFERENCES demo.tenants,
    monthly_rent numeric(12, 2) NOT NULL CHECK (monthly_rent > 0),
    starts_on    date NOT NULL,
    ends_on      date NOT NULL,
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    CHECK (ends_on >= starts_on)
);
CREATE INDEX contracts_ending ON demo.contracts (ends_on) WHERE status = 'active';

-- One bill per contract and period (the period's first day): re-running bills.monthly for a period adds nothing.
-- The reference is what tenants write on their bank transfer; statements.reconcile matches on it and the amount.
CREATE TABLE demo.bills (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contract_id bigint NOT NULL REFERENCES demo.contracts,
    period      date NOT NULL CHECK (extract(day FROM period) = 1),
    amount      numeric(12, 2) NOT NULL CHECK (amount > 0),
    reference   text NOT NULL UNIQUE,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid')),
    due_on      date NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    paid_at     timestamptz,
    UNIQUE (contract_id, period)
);
CREATE INDEX bills_open ON demo.bills (reference) WHERE status = 'open';

-- Which expiry notices went out: once per contract and threshold (30 days, 7 days before the end, say).
CREATE TABLE demo.contract_notices (
    contract_id    bigint NOT NULL REFERENCES demo.contracts ON DELETE CASCADE,
    threshold_days integer NOT NULL CHECK (threshold_days > 0),
    sent_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contract_id, threshold_days)
);

-- Lines imported from the bank's statement API (bank_ref is the bank's own id: importing a line twice adds nothing).
-- statements.reconcile matches a line to an open bill, or leaves it unmatched for someone to review.
CREATE TABLE demo.statement_lines (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bank_ref       text NOT NULL UNIQUE,
    booked_on      date NOT NULL,
    amount         numeric(12, 2) NOT NULL,
    reference      text NOT NULL DEFAULT '',
    imported_at    timestamptz NOT NULL DEFAULT now(),
    status         text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'matched', 'unmatched')),
    matched_bill_id bigint REFERENCES demo.bills
);
CREATE INDEX statement_lines_new ON demo.statement_lines (id) WHERE status = 'new';

-- Where the bank's statement import got to (the API's cursor), one row per account.
CREATE TABLE demo.statement_cursor (
    account    text PRIMARY KEY,
    cursor     text,
    polled_at  timestamptz
);

-- Rendered PDFs in S3: an invoice (a bill), a statement (a tenant's period), or a package zipping many.
CREATE TABLE demo.documents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('invoice', 'statement', 'package')),
    subject_id  bigint,
    s3_key      text,
    bytes       integer,
    rendered_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, subject_id)
);

-- The first demo's reservations give way to orders holding stock (reservations.cleanup now cancels stale orders).
DROP TABLE demo.reservations;
