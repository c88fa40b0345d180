"""Forward-only, numbered SQL migrations, safe to run from several processes at once.

Each component (``conveyor`` for our own schema, ``demo`` for the example domain) owns a schema of the same name and
a folder of ``NNNN_name.sql`` files. ``migrate`` takes a transaction-level advisory lock, so two deploys or two
``conveyor dev`` processes starting together apply each file exactly once, and it refuses a database whose schema
is newer than the code (rolling back code must not silently run against a schema it does not know).
"""

from __future__ import annotations

import hashlib

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from shared.registry import Registry
from shared.sqlfile import load_queries

QUERIES = load_queries("shared", "migrate.sql")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant: every migrator of every version takes the same lock.
_LOCK_KEY = 0x636F6E76  # "conv"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Component:
    """A schema and the folder of migrations that builds it."""

    name: str
    package: str

    def migrations(self) -> list[Migration]:
        found = []
        for entry in resources.files(self.package).iterdir():
            match = _FILE_RE.match(entry.name)
            if match:
                found.append(Migration(self.name, int(match[1]), match[2], entry.read_text(encoding="utf-8")))
            elif entry.name.endswith(".sql"):
                raise MigrationError(f"{self.package}/{entry.name}: migration files are named NNNN_name.sql")
        found.sort(key=lambda m: m.version)
        for expected, migration in enumerate(found, start=1):
            if migration.version != expected:
                raise MigrationError(f"{self.name} migrations must be numbered 1, 2, 3 … without gaps; found {migration.version} where {expected} was expected")
        return found


CONVEYOR = Component("conveyor", "shared.migrations")
DEMO = Component("demo", "shared.demo.migrations")
COMPONENTS = (CONVEYOR, DEMO)


@dataclass(frozen=True)
class MigrateResult:
    applied: list[Migration]
    versions: dict[str, int]


def migrate(conn: psycopg.Connection, components: tuple[Component, ...] = COMPONENTS) -> MigrateResult:
    """Apply every pending migration, each component in order, in one transaction under an advisory lock."""
    applied: list[Migration] = []
    versions: dict[str, int] = {}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS conveyor")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS conveyor.migrations (
                   component  text NOT NULL,
                   version    integer NOT NULL,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   checksum   text NOT NULL,
                   PRIMARY KEY (component, version))"""
        )
        for component in components:
            migrations = component.migrations()
            row = conn.execute(
                "SELECT coalesce(max(version), 0) FROM conveyor.migrations WHERE component = %s", (component.name,)
            ).fetchone()
            current = row[0] if row else 0
            known = migrations[-1].version if migrations else 0
            if current > known:
                raise MigrationError(
                    f"the database's {component.name} schema is at version {current}, but this code knows only up to "
                    f"{known}: deploy the newer code (migrations never run backwards)"
                )
            _check_unchanged(conn, component, migrations)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(component.name)))
            for migration in migrations[current:]:
                try:
                    conn.execute(migration.sql)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {component.name}/{migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
                conn.execute(
                    "INSERT INTO conveyor.migrations (component, version, name, checksum) VALUES (%s, %s, %s, %s)",
                    (component.name, migration.version, migration.name, migration.checksum),
                )
                applied.append(migration)
            versions[component.name] = max(current, known)
    return MigrateResult(applied, versions)


def _check_unchanged(conn: psycopg.Connection, component: Component, migrations: list[Migration]) -> None:
    """Applied migrations are history: a file edited after it ran would leave databases that disagree."""
    by_version = {m.version: m for m in migrations}
    rows = conn.execute(
        "SELECT version, name, checksum FROM conveyor.migrations WHERE component = %s ORDER BY version", (component.name,)
    ).fetchall()
    for version, name, checksum in rows:
        migration = by_version.get(version)
        if migration is not None and migration.checksum != checksum:
            raise MigrationError(
                f"migration {component.name}/{version:04d}_{name}.sql was changed after it was applied to this "
                "database: migrations are append-only, so add a new numbered file instead (for a throwaway local "
                "database, delete .conveyor/pgdata and start again)"
            )


def sync_registry(conn: psycopg.Connection, registry: Registry) -> list[str]:
    """Publish the registry's jobs and queues to ``conveyor.job_types`` for ``conveyor.add_job`` (SQL producers).

    Jobs no longer in the registry are removed, so SQL producers get a clear "unknown job" instead of jobs that no
    handler will ever take. Returns a warning for each group of outbox rows (pending or dead) whose job or queue the
    registry no longer has: no function will take them, so whoever removed the job must decide their fate.
    """
    names = [job.name for job in registry]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                QUERIES["job_types_upsert"],
                [(job.name, job.queue, list(job.all_queues), job.route is not None) for job in registry],
            )
            cur.execute(QUERIES["job_types_delete_others"], (names,))
        orphans = conn.execute(QUERIES["outbox_orphans"]).fetchall()
    warnings = []
    for job_name, queue, rows, dead in orphans:
        cause = f"job {job_name!r} is not in the registry" if job_name not in registry else (
            f"queue {queue!r} is not among the queues of job {job_name!r} ({', '.join(registry[job_name].all_queues)})"
        )
        where = "the outbox (dead rows included)" if dead else "the outbox"
        warnings.append(
            f"{rows} row(s) in {where} for job {job_name!r} on queue {queue!r} will never run: {cause}. "
            "restore it in the registry, or delete the rows (`conveyor outbox` lists them)"
        )
    return warnings
