-- The demo domain that the example jobs work on: stock held for a customer until it expires.
CREATE TABLE demo.reservations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    expires_at  timestamptz NOT NULL,
    released_at timestamptz
);

CREATE INDEX reservations_expiring ON demo.reservations (expires_at) WHERE released_at IS NULL;
