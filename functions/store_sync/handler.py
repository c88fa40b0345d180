"""store.sync: pull one store's inventory from its POS API and upsert it; or, without a store, fan out.

Two forms of one job:

* ``{}`` (the hourly schedule's payload): enqueue one ``store.sync`` per store with an inventory integration
  (``demo.stores.pos_store_ref``), with dedup key ``store-sync:{store_id}`` and ``dedup_active``: a store whose sync
  is still waiting, queued or retrying gets no second one, so syncs never pile up behind a slow POS.
* ``{"store_id": 3}``: GET ``/stores/{pos_store_ref}/inventory`` from the ``pos`` integration, then upsert the
  items into ``demo.inventory`` and set the store's ``synced_at`` (when the GET began), in ``ctx.transaction()``. No
  transaction is open during the HTTP call. Running it again writes nothing new (unchanged rows are not touched).
  Two runs for one store (a manual trigger while the hourly one runs) never let the older snapshot win: the
  transaction locks the store row, and a run whose GET began before the stored snapshot's stores nothing (its result
  says ``skipped``).

Sync one store now, out of schedule::

    conveyor trigger store.sync --json '{"store_id": 3}'

An unknown store, a store without a POS reference and an answer that is not an inventory are permanent (to the
DLQ, nothing retried); HTTP errors are the integration client's (5xx/timeouts retry, 4xx permanent, 429 waits).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.integrations.http import Integration
from shared.jobs import STORE_SYNC
from shared.outbox import Item, enqueue_many
from shared.payloads import StoreSync
from shared.runtime import JobContext, PermanentJobError, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.store_sync")
INTEGRATION = "pos"


def dedup_key(store_id: int) -> str:
    return f"store-sync:{store_id}"


class InventoryItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sku: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    price: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    on_hand: int = Field(ge=0, le=2**31 - 1)


class Inventory(BaseModel):
    """The POS API's answer: ``{"items": [{"sku", "name", "price", "on_hand"}, ...]}`` (other fields ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    items: list[InventoryItem]


def parse_inventory(store_id: int, text: str) -> Inventory:
    try:
        inventory = Inventory.model_validate_json(text)
    except ValidationError as exc:
        raise PermanentJobError(f"store {store_id}: the POS answered something that is not an inventory: {exc}") from exc
    seen: set[str] = set()
    for item in inventory.items:
        if item.sku in seen:
            # One statement cannot upsert a row twice; which of the two is right, only the POS knows.
            raise PermanentJobError(f"store {store_id}: the POS listed sku {item.sku!r} twice")
        seen.add(item.sku)
    return inventory


def fan_out(ctx: JobContext) -> dict[str, int]:
    with ctx.transaction() as conn:
        stores = [store_id for (store_id,) in conn.execute(QUERIES["stores_integrated"])]
        # A store whose sync is still pending, queued or retrying keeps that job (its id comes back): no pile-up.
        enqueue_many(conn, STORE_SYNC, [Item({"store_id": s}, dedup_key=dedup_key(s)) for s in stores], dedup_active=True)
        result = {"stores": len(stores)}
        ctx.set_result(result)
    return result


SKIPPED = "a newer sync already stored"


def sync_store(store_id: int, ctx: JobContext) -> dict[str, int | str]:
    row = ctx.connection().execute(QUERIES["store_get"], {"store_id": store_id}).fetchone()
    if row is None:
        raise PermanentJobError(f"store {store_id} does not exist")
    _, ref, fetch_started = row
    if ref is None:
        raise PermanentJobError(f"store {store_id} has no inventory integration (no pos_store_ref)")

    response = Integration.from_env(INTEGRATION).request("GET", f"/stores/{quote(ref, safe='')}/inventory")
    inventory = parse_inventory(store_id, response.text)
    items = json.dumps([item.model_dump(mode="json") for item in inventory.items])

    with ctx.transaction() as conn:
        locked = conn.execute(QUERIES["store_lock"], {"store_id": store_id}).fetchone()
        if locked is None:
            raise PermanentJobError(f"store {store_id} does not exist")
        (synced_at,) = locked
        if synced_at is not None and synced_at > fetch_started:
            ctx.logger.info(
                "a newer sync already stored; this run's older inventory is dropped",
                extra={"store_id": store_id, "fetch_started": fetch_started.isoformat(), "synced_at": synced_at.isoformat()},
            )
            result: dict[str, int | str] = {"store_id": store_id, "skipped": SKIPPED}
        else:
            changed = conn.execute(QUERIES["inventory_upsert"], {"store_id": store_id, "items": items}).rowcount
            conn.execute(QUERIES["store_synced"], {"store_id": store_id, "fetch_started": fetch_started})
            result = {"store_id": store_id, "items": len(inventory.items), "changed": changed}
        ctx.set_result(result)
    return result


def sync(payload: StoreSync, ctx: JobContext) -> dict[str, int | str]:
    if payload.store_id is None:
        return fan_out(ctx)
    return sync_store(payload.store_id, ctx)


handler = job_handler(STORE_SYNC, sync)
