"""Lambda deployment artifacts built without Docker, for the CDK constructs to point their assets at.

CDK's usual Python bundling runs ``pip`` inside a SAM build image, which needs a Docker engine; the machines that
synthesize Conveyor's stacks (laptops without Docker Desktop, CI runners without a daemon) have none. Every runtime
dependency ships manylinux wheels, so ``pip install --platform … --only-binary=:all:`` run by the local interpreter
produces the same files the container would, for either Lambda architecture and any supported Python version.

Outputs are directories in a cache, named by a hash of what went into them. Repeated synths reuse them, so synth
is fast and works offline after the first build, and an unchanged input keeps the same directory, which keeps
CDK's asset hash (and therefore the deployed function) unchanged. Each directory is built in a temporary sibling
and renamed into place at the end, so an interrupted build never leaves something that looks finished.

This module is pure Python and the standard library: the constructs import it, not the other way round.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Bump when the layout or the content of a built directory changes for the same inputs, so old caches are not reused.
BUNDLE_FORMAT = "3"

# The Lambda Python runtime already provides the AWS SDK; bundling it again would add tens of MB to every layer.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore"})

# Lambda's Python 3.12+ runtimes run on Amazon Linux 2023 (glibc 2.34), so manylinux_2_28 wheels work there; some
# packages (psycopg-binary 3.3 on aarch64) ship only those, and with manylinux2014 alone pip would fall back to an
# older release. pip takes --platform more than once and picks the best match.
PLATFORMS = {
    "arm64": ("manylinux_2_28_aarch64", "manylinux2014_aarch64"),
    "x86_64": ("manylinux_2_28_x86_64", "manylinux2014_x86_64"),
}
PYTHON_VERSIONS = ("3.12", "3.13", "3.14")

# Written into a layer directory just before it is renamed into place: its presence means pip finished.
LAYER_MARKER = ".conveyor-layer.json"

# Email templates (functions/email_send/templates/*.tmpl) are read at run time, like the .sql files.
CODE_SUFFIXES = (".py", ".sql", ".json", ".typed", ".tmpl")

_STDERR_TAIL = 2000

# Names the interpreter that compiles the artifacts' bytecode, when the one on PATH is not the runtime's version.
BUNDLE_PYTHON_ENV = "CONVEYOR_BUNDLE_PYTHON"

# Where Lambda mounts the function's code and its layers: the compiled files name these paths, not the build's.
CODE_MOUNT = "/var/task"
LAYER_MOUNT = "/opt/python"


class BundlingError(Exception):
    """A Lambda artifact could not be built; the message says what to fix."""


def runtime_requirements(pyproject: Path) -> list[str]:
    """The pip requirements every Lambda needs: ``[project].dependencies`` minus what the runtime provides."""
    try:
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise BundlingError(f"{pyproject} does not exist; it should list the runtime dependencies") from None
    except tomllib.TOMLDecodeError as exc:
        raise BundlingError(f"{pyproject} is not valid TOML: {exc}") from exc
    dependencies = data.get("project", {}).get("dependencies")
    if not isinstance(dependencies, list):
        raise BundlingError(f"{pyproject} has no [project].dependencies list; it should list the runtime dependencies")
    return [req for req in dependencies if _requirement_name(req) not in RUNTIME_PROVIDED]


def _requirement_name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (``Psycopg[binary]>=3.2`` -> ``psycopg``)."""
    name = requirement.strip()
    for stop in "[<>=!~;@ (":
        name = name.split(stop, 1)[0]
    return name.lower().replace("_", "-").replace(".", "-")


def bytecode_compiler(python_version: str, *, environ: Mapping[str, str] = os.environ) -> Bytecode | None:
    """The interpreter that can compile bytecode for ``python_version``, or None if this machine has none.

    Bytecode is specific to a Python minor version, and Lambda's ``/opt`` and ``/var/task`` are read-only, so an
    artifact shipped as source is compiled again by every new execution environment (hundreds of ms per cold start,
    docs/BENCHMARKS.md). Tried in order: ``$CONVEYOR_BUNDLE_PYTHON`` (an error if it is missing or another version,
    since the user asked for it), ``python<version>`` on PATH, then the running interpreter. A candidate that does
    not run (a pyenv shim for a version that is not selected) is skipped.
    """
    explicit = environ.get(BUNDLE_PYTHON_ENV)
    if explicit:
        found = shutil.which(explicit, path=environ.get("PATH"))
        if found is None:
            raise BundlingError(
                f"{BUNDLE_PYTHON_ENV}={explicit!r} is not an executable; point it at a Python {python_version} "
                f"interpreter, or unset it to ship the Lambda code uncompiled"
            )
        bytecode = _interpreter(found)
        if bytecode is None or bytecode.python_version != python_version:
            got = f"Python {bytecode.python_version}" if bytecode else "not a working Python"
            raise BundlingError(
                f"{BUNDLE_PYTHON_ENV}={explicit!r} is {got}, but the Lambda runtime is Python {python_version} and "
                f"bytecode only loads on the version that compiled it; point it at a Python {python_version}"
            )
        return bytecode
    candidates = [shutil.which(f"python{python_version}", path=environ.get("PATH")), sys.executable]
    for candidate in filter(None, candidates):
        bytecode = _interpreter(candidate)
        if bytecode is not None and bytecode.python_version == python_version:
            return bytecode
    return None


@dataclass(frozen=True)
class Bytecode:
    """An interpreter that compiles the artifacts, and what its output depends on (part of the cache keys)."""

    executable: str
    python_version: str  # "3.14": which runtime can load what it compiles
    full_version: str  # "3.14.0": a patch release may compile the same source to other bytes

    def compile(self, root: Path, *, mount: str) -> None:
        """Write ``__pycache__/*.pyc`` beside every ``.py`` under ``root``, as Lambda will find it at ``mount``.

        Unchecked-hash pycs: the runtime loads them without looking at the source (no stat, no timestamp, which a
        zip would not keep anyway), and their bytes depend only on the source, so two builds of the same tree are
        identical and the asset hash does not change. ``-s``/``-p`` record ``mount`` as the source's path instead
        of the build directory's random name, for the same reason and for tracebacks.
        """
        command = [
            self.executable, "-m", "compileall", "-q", "-j0",
            "--invalidation-mode", "unchecked-hash",
            "-s", str(root), "-p", mount,
            str(root),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-_STDERR_TAIL:]
            raise BundlingError(
                f"compiling the Lambda bytecode failed (exit {result.returncode}): {shlex.join(command)}\n{output}\n"
                f"Fix the file it names, or set {BUNDLE_PYTHON_ENV} to an interpreter that is not Python "
                f"{self.python_version} to ship source instead."
            )

    def key(self) -> str:
        return f"cpython-{self.full_version}"


_VERSION_PROBE = (
    "import sys; v = sys.version_info; print(sys.implementation.name, f'{v[0]}.{v[1]}', f'{v[0]}.{v[1]}.{v[2]}')"
)


def _interpreter(executable: str) -> Bytecode | None:
    """What ``executable`` is, or None if it does not run as a CPython (Lambda runs CPython's bytecode)."""
    try:
        result = subprocess.run(
            [executable, "-c", _VERSION_PROBE], capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 3 or parts[0] != "cpython":
        return None
    return Bytecode(executable=executable, python_version=parts[1], full_version=parts[2])


def uncompiled_notice(python_version: str) -> str:
    """What synth tells the user when it ships source: the cost, and the two ways to avoid it."""
    return (
        f"Conveyor: no Python {python_version} on this machine, so the Lambda code and layer ship without bytecode "
        f"and every cold start compiles them (~650 ms per function, docs/BENCHMARKS.md). Install "
        f"python{python_version} on PATH, or set {BUNDLE_PYTHON_ENV} to a Python {python_version} interpreter."
    )


def build_layer(
    *,
    requirements: list[str],
    python_version: str,
    architecture: str,
    cache_dir: Path,
    bytecode: Bytecode | None = None,
) -> Path:
    """A directory laid out as a Lambda layer (``<dir>/python/<packages>``) holding ``requirements``.

    Built by the local pip with manylinux wheels for the target platform, so no Docker is needed. The directory is
    keyed by the inputs, not by what pip resolved: a cached layer keeps the versions it was first built with until
    the requirements change, ``BUNDLE_FORMAT`` is bumped, or the cache is deleted. With ``bytecode`` (which must be
    ``python_version``'s) every module is also compiled, so the runtime does not compile it on each cold start.
    """
    platform = _platform(architecture)
    _check_python_version(python_version)
    if not requirements:
        raise BundlingError("build_layer got no requirements; a layer with nothing in it is not needed")
    _check_bytecode(bytecode, python_version)
    inputs = json.dumps(
        {
            "format": BUNDLE_FORMAT,
            "requirements": sorted(requirements),
            "python_version": python_version,
            "architecture": architecture,
            "bytecode": bytecode.key() if bytecode else None,
        },
        indent=2,
        sort_keys=True,
    )
    key = hashlib.sha256(inputs.encode()).hexdigest()
    final = cache_dir / f"layer-{architecture}-py{python_version}-{key[:24]}"
    if (final / LAYER_MARKER).is_file():
        return final
    staging = _staging_dir(cache_dir, final.name)
    try:
        _pip_install(requirements, target=staging / "python", platform=platform, python_version=python_version)
        _remove_pycache(staging)
        if bytecode:
            bytecode.compile(staging / "python", mount=LAYER_MOUNT)
        (staging / LAYER_MARKER).write_text(inputs + "\n")
        return _publish(staging, final, complete=lambda d: (d / LAYER_MARKER).is_file())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _platform(architecture: str) -> tuple[str, ...]:
    try:
        return PLATFORMS[architecture]
    except KeyError:
        allowed = ", ".join(repr(a) for a in PLATFORMS)
        raise BundlingError(f"architecture {architecture!r} is not supported; use one of {allowed}") from None


def _check_python_version(python_version: str) -> None:
    if python_version not in PYTHON_VERSIONS:
        allowed = ", ".join(repr(v) for v in PYTHON_VERSIONS)
        raise BundlingError(f"python_version {python_version!r} is not supported; use one of {allowed}")


def _check_bytecode(bytecode: Bytecode | None, python_version: str) -> None:
    if bytecode is not None and bytecode.python_version != python_version:
        raise BundlingError(
            f"{bytecode.executable} is Python {bytecode.python_version} and cannot compile bytecode for the "
            f"Python {python_version} runtime"
        )


def _pip_install(requirements: list[str], *, target: Path, platform: tuple[str, ...], python_version: str) -> None:
    command = [
        sys.executable, "-m", "pip", "install",
        "--no-compile", "--disable-pip-version-check", "--quiet",
        *(arg for tag in platform for arg in ("--platform", tag)),
        "--implementation", "cp",
        "--python-version", python_version,
        "--only-binary=:all:",
        "--target", str(target),
        *requirements,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        cp = "cp" + python_version.replace(".", "")
        raise BundlingError(
            f"pip failed (exit {result.returncode}): {shlex.join(command)}\n"
            f"{result.stderr[-_STDERR_TAIL:]}\n"
            f"Building the Lambda layer needs network access to PyPI, or a pip cache/index that has manylinux "
            f"wheels for {' or '.join(platform)} {cp}."
        )


def _remove_pycache(root: Path) -> None:
    """pip's own bytecode (if any) is for the build machine's Python, not the Lambda's: only ``Bytecode`` writes it."""
    for pycache in sorted(root.rglob("__pycache__"), reverse=True):
        if pycache.is_dir():
            shutil.rmtree(pycache)


def stage_code(
    *,
    project_root: Path,
    packages: tuple[str, ...] = ("functions", "shared"),
    exclude: tuple[str, ...] = ("shared/local",),
    cache_dir: Path,
    bytecode: Bytecode | None = None,
) -> Path:
    """A directory with only what the Lambda code needs from ``packages``: ``.py``, ``.sql``, ``.json``, ``py.typed``, ``.tmpl``.

    Pointing an asset at the repository root would ship tests, docs and the local runtime, and every unrelated edit
    would change the asset hash. The directory is keyed by the included files' paths and bytes, so an unchanged
    tree gives the same directory and CDK sees the same asset. With ``bytecode`` the ``.py`` files are also
    compiled (``__pycache__`` beside them), and the key says so: a compiled and a source tree never share a name.
    """
    files = sorted(_code_files(project_root, packages, exclude))
    compiled = bytecode.key() if bytecode else "source"
    hasher = hashlib.sha256(f"conveyor-code:{BUNDLE_FORMAT}:{compiled}\0".encode())
    for relative in files:
        data = (project_root / relative).read_bytes()
        hasher.update(f"{relative}\0{len(data)}\0".encode())
        hasher.update(data)
    final = cache_dir / f"code-{hasher.hexdigest()[:24]}"
    if final.is_dir():
        return final
    staging = _staging_dir(cache_dir, final.name)
    try:
        for relative in files:
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project_root / relative, destination)
        if bytecode:
            bytecode.compile(staging, mount=CODE_MOUNT)
        return _publish(staging, final, complete=Path.is_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _code_files(project_root: Path, packages: tuple[str, ...], exclude: tuple[str, ...]) -> Iterator[str]:
    """Relative POSIX paths of the files to ship, from each package directory."""
    excluded = {e.strip("/") for e in exclude}
    for package in packages:
        top = project_root / package
        if not top.is_dir():
            raise BundlingError(f"package directory {top} does not exist")
        for directory, subdirs, names in os.walk(top):
            relative_dir = Path(directory).relative_to(project_root).as_posix()
            subdirs[:] = [
                d for d in subdirs if d != "__pycache__" and f"{relative_dir}/{d}" not in excluded
            ]
            for name in names:
                relative = f"{relative_dir}/{name}"
                if name.endswith(CODE_SUFFIXES) and relative not in excluded:
                    yield relative


def _staging_dir(cache_dir: Path, name: str) -> Path:
    """A fresh, hidden sibling of the final directory, on the same filesystem so ``os.rename`` is atomic."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=cache_dir))
    staging.chmod(0o755)  # mkdtemp makes it 0700; the published directory should read like any other
    return staging


def _publish(staging: Path, final: Path, *, complete: Callable[[Path], bool]) -> Path:
    """Rename ``staging`` to ``final``; if a concurrent build got there first with a complete result, use that."""
    try:
        os.rename(staging, final)
    except OSError:
        if not complete(final):
            # Something that is not a finished build (an older format, a manual copy): replace it.
            shutil.rmtree(final)
            os.rename(staging, final)
    return final


def directory_size(path: Path) -> int:
    """Total bytes of the regular files under ``path`` (symlinks not followed), for reporting artifact sizes."""
    total = 0
    for directory, _subdirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            total += st.st_size
    return total
