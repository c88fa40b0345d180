import threading

import psycopg
import pytest

from shared.migrate import CONVEYOR, COMPONENTS, MigrationError, migrate, sync_registry
from shared.registry import JobSpec, Registry
from tests.support import Work


def test_migrate_is_idempotent(conn):
    again = migrate(conn)  # the template was migrated already
    assert again.applied == []
    assert again.versions["conveyor"] == len(CONVEYOR.migrations())


def test_concurrent_migrators_apply_each_file_once(pg_server, db_url):
    from psycopg import sql

    with psycopg.connect(db_url, autocommit=True) as conn:
        for schema in ("conveyor", "demo"):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    results, errors = [], []

    def run():
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                results.append(migrate(c))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(len(r.applied) for r in results)
    expected = sum(len(c.migrations()) for c in COMPONENTS)
    assert applied == [0, 0, expected]


def test_refuses_a_database_newer_than_the_code(conn):
    conn.execute("INSERT INTO conveyor.migrations (component, version, name, checksum) VALUES ('conveyor', 999, 'future', 'x')")
    with pytest.raises(MigrationError, match="at version 999, but this code knows only up to"):
        migrate(conn)


def test_sync_registry_adds_updates_and_removes_jobs(conn):
    def job_types():
        return conn.execute("SELECT name, default_queue, queues, routed FROM conveyor.job_types ORDER BY name").fetchall()

    registry = Registry([JobSpec(name="x.one", payload=Work, queue="a", queues=("b",))])
    assert sync_registry(conn, registry) == []
    assert job_types() == [("x.one", "a", ["a", "b"], False)]
    # The job moves to another default queue and gains a route; a second job appears.
    registry = Registry([
        JobSpec(name="x.one", payload=Work, queue="b", queues=("c",), route=lambda p: "c"),
        JobSpec(name="x.two", payload=Work, queue="a"),
    ])
    sync_registry(conn, registry)
    assert job_types() == [("x.one", "b", ["b", "c"], True), ("x.two", "a", ["a"], False)]
    sync_registry(conn, Registry([JobSpec(name="x.two", payload=Work, queue="a")]))
    assert job_types() == [("x.two", "a", ["a"], False)]


def test_sync_registry_warns_about_outbox_rows_nothing_will_take(conn):
    """Removing a job or a queue from the registry strands its pending rows: migrate must say so, loudly."""
    registry = Registry([JobSpec(name="x.one", payload=Work, queue="a", queues=("b",)), JobSpec(name="x.two", payload=Work, queue="a")])
    sync_registry(conn, registry)
    conn.execute("SELECT conveyor.add_job('x.one', queue => 'b')")
    conn.execute("SELECT conveyor.add_job('x.two')")
    conn.execute("SELECT conveyor.add_job('x.two')")
    warnings = sync_registry(conn, Registry([JobSpec(name="x.one", payload=Work, queue="a")]))
    assert len(warnings) == 2
    assert "1 row(s) in the outbox for job 'x.one' on queue 'b' will never run: queue 'b' is not among the queues of job 'x.one' (a)" in warnings[0]
    assert "2 row(s) in the outbox for job 'x.two' on queue 'a' will never run: job 'x.two' is not in the registry" in warnings[1]


def test_refuses_a_migration_edited_after_it_was_applied(conn):
    from shared.migrate import MigrationError, migrate

    conn.execute("UPDATE conveyor.migrations SET checksum = 'edited' WHERE component = 'conveyor' AND version = 1")
    with pytest.raises(MigrationError, match="conveyor/0001_outbox.sql was changed after it was applied"):
        migrate(conn)


def test_the_ledger_fixes_migration_keeps_one_waiting_row_per_job_from_older_data(db_url):
    """A database that ran the code before migration 0006 may hold two outbox rows for one job (a retry held in the
    outbox twice). 0006 keeps the latest attempt instead of failing on its new unique index."""
    import uuid

    from psycopg import sql

    with psycopg.connect(db_url, autocommit=True) as conn:
        for schema in ("conveyor", "demo"):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.execute("CREATE SCHEMA conveyor")
        migrations = CONVEYOR.migrations()
        with conn.transaction():
            for migration in migrations[:5]:  # 0001-0005, as an older deployment has them
                conn.execute(migration.sql)
        job_id = uuid.uuid4()
        for attempt in (2, 3):
            conn.execute(
                "INSERT INTO conveyor.outbox (id, job_id, job_name, queue, payload, attempt) VALUES (%s, %s, 'j', 'q', '{}', %s)",
                (uuid.uuid4(), job_id, attempt),
            )
        with conn.transaction():
            conn.execute(migrations[5].sql)
        assert migrations[5].name == "ledger_fixes"
        assert conn.execute("SELECT attempt FROM conveyor.outbox WHERE job_id = %s", (job_id,)).fetchall() == [(3,)]
