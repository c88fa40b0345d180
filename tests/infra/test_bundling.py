"""Lambda artifacts built without Docker: runtime requirements, staged code, and the dependency layer."""

from __future__ import annotations

import importlib.util
import marshal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra import bundling
from infra.bundling import (
    BundlingError,
    build_layer,
    directory_size,
    runtime_requirements,
    stage_code,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_runtime_requirements_drop_the_sdk_and_keep_extras():
    requirements = runtime_requirements(PROJECT_ROOT / "pyproject.toml")

    assert not [r for r in requirements if r.lower().startswith(("boto3", "botocore"))]
    assert any(r.startswith("psycopg[binary]") for r in requirements)
    assert any(r.startswith("pydantic") for r in requirements)
    assert any(r.startswith("aws-lambda-powertools") for r in requirements)


def test_runtime_requirements_without_a_project_table(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.other]\nx = 1\n')

    with pytest.raises(BundlingError, match=r"no \[project\]\.dependencies"):
        runtime_requirements(pyproject)


def test_runtime_requirements_without_the_file(tmp_path):
    with pytest.raises(BundlingError, match="does not exist"):
        runtime_requirements(tmp_path / "pyproject.toml")


def _write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    _write(root, "functions/__init__.py")
    _write(root, "functions/a/__init__.py")
    _write(root, "functions/a/handler.py", "def handler(event, context):\n    return 1\n")
    _write(root, "functions/a/__pycache__/z.cpython-311.pyc", "bytecode")
    _write(root, "functions/a/templates/hello.html.tmpl", "<p>Hello ${name}</p>\n")
    _write(root, "shared/__init__.py")
    _write(root, "shared/x.py", "X = 1\n")
    _write(root, "shared/q.sql", "SELECT 1;\n")
    _write(root, "shared/py.typed")
    _write(root, "shared/stray.pyc", "bytecode")
    _write(root, "shared/local/__init__.py")
    _write(root, "shared/local/y.py", "Y = 1\n")
    _write(root, "shared/README.md", "# notes\n")
    _write(root, "README.md", "# project\n")
    return root


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_stage_code_copies_only_what_the_lambda_needs(project, tmp_path):
    staged = stage_code(project_root=project, cache_dir=tmp_path / "cache")

    assert _files(staged) == {
        "functions/__init__.py",
        "functions/a/__init__.py",
        "functions/a/handler.py",
        "functions/a/templates/hello.html.tmpl",
        "shared/__init__.py",
        "shared/x.py",
        "shared/q.sql",
        "shared/py.typed",
    }
    assert (staged / "functions/a/handler.py").read_text() == (project / "functions/a/handler.py").read_text()
    assert directory_size(staged) == sum((staged / f).stat().st_size for f in _files(staged))


def test_stage_code_is_keyed_by_content(project, tmp_path):
    cache = tmp_path / "cache"
    first = stage_code(project_root=project, cache_dir=cache)

    assert stage_code(project_root=project, cache_dir=cache) == first
    # Files that are not shipped do not change the key.
    _write(project, "README.md", "# changed\n")
    _write(project, "shared/local/y.py", "Y = 2\n")
    assert stage_code(project_root=project, cache_dir=cache) == first

    _write(project, "shared/x.py", "X = 2\n")
    second = stage_code(project_root=project, cache_dir=cache)
    assert second != first
    assert (second / "shared/x.py").read_text() == "X = 2\n"
    assert (first / "shared/x.py").read_text() == "X = 1\n"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no staging directories left behind"


def test_stage_code_names_a_missing_package(project, tmp_path):
    with pytest.raises(BundlingError, match="nope"):
        stage_code(project_root=project, packages=("functions", "nope"), cache_dir=tmp_path / "cache")


def test_build_layer_rejects_an_unknown_architecture(tmp_path):
    with pytest.raises(BundlingError, match=r"'amd64'.*'arm64', 'x86_64'"):
        build_layer(requirements=["tzdata"], python_version="3.13", architecture="amd64", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_build_layer_rejects_an_unknown_python_version(tmp_path):
    with pytest.raises(BundlingError, match="'3.9'"):
        build_layer(requirements=["tzdata"], python_version="3.9", architecture="arm64", cache_dir=tmp_path)


def test_build_layer_reports_a_pip_failure(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    cache = tmp_path / "cache"

    with pytest.raises(BundlingError) as raised:
        build_layer(
            requirements=["conveyor-no-such-package-xyz==0.0.1"],
            python_version="3.13",
            architecture="arm64",
            cache_dir=cache,
        )

    message = str(raised.value)
    assert "conveyor-no-such-package-xyz==0.0.1" in message  # the command
    assert "--platform manylinux2014_aarch64" in message
    assert "No matching distribution" in message  # pip's own stderr
    assert "manylinux wheels for manylinux_2_28_aarch64 or manylinux2014_aarch64 cp313" in message
    assert not list(cache.iterdir()), "a failed build leaves nothing behind"


def test_build_layer_reuses_a_finished_layer_and_redoes_an_unfinished_one(tmp_path, monkeypatch):
    calls = []

    def fake_pip(requirements, *, target, platform, python_version):
        calls.append((tuple(requirements), platform, python_version))
        _write(target, "pkg/__init__.py")
        _write(target, "pkg/__pycache__/__init__.cpython-311.pyc", "bytecode")

    monkeypatch.setattr(bundling, "_pip_install", fake_pip)
    settings = {"requirements": ["pkg>=1"], "python_version": "3.13", "architecture": "x86_64", "cache_dir": tmp_path}

    layer = build_layer(**settings)
    assert calls == [(("pkg>=1",), ("manylinux_2_28_x86_64", "manylinux2014_x86_64"), "3.13")]
    assert (layer / "python/pkg/__init__.py").is_file()
    assert not list(layer.rglob("__pycache__"))
    assert build_layer(**settings) == layer
    assert len(calls) == 1, "a finished layer is reused without pip"

    (layer / bundling.LAYER_MARKER).unlink()  # as if a build had stopped before it finished
    assert build_layer(**settings) == layer
    assert len(calls) == 2
    assert (layer / bundling.LAYER_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [layer.name], "no staging directories left behind"

    assert build_layer(**{**settings, "architecture": "arm64"}) != layer
    assert build_layer(**{**settings, "requirements": ["pkg>=2"]}) != layer


@pytest.mark.slow
@pytest.mark.parametrize("python_version", ["3.13"])
def test_build_layer_slow_real_build(tmp_path, python_version):
    requirements = runtime_requirements(PROJECT_ROOT / "pyproject.toml")
    started = time.monotonic()
    layer = build_layer(
        requirements=requirements, python_version=python_version, architecture="arm64", cache_dir=tmp_path
    )
    built_in = time.monotonic() - started

    site = layer / "python"
    assert list(site.glob("psycopg_binary*")), "psycopg[binary] brings its compiled wheel"
    assert (site / "pydantic_core").is_dir()
    assert not (site / "boto3").exists() and not (site / "botocore").exists()
    assert not list(layer.rglob("__pycache__"))
    abi = f"cpython-{python_version.replace('.', '')}-aarch64"
    compiled = [p.name for p in (site / "pydantic_core").glob("*.so")]
    assert compiled and all(abi in name for name in compiled), compiled

    started = time.monotonic()
    again = build_layer(
        requirements=requirements, python_version=python_version, architecture="arm64", cache_dir=tmp_path
    )
    assert again == layer
    assert time.monotonic() - started < 0.5, "a cached layer is reused without running pip"
    print(f"\nlayer py{python_version} arm64: {directory_size(layer) / 1e6:.1f} MB, built in {built_in:.1f}s")


# Bytecode: the artifacts are compiled by an interpreter of the runtime's version when the machine has one.

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"
NO_SUCH_VERSION = "3.99"


def _bin_dir(tmp_path: Path, **programs: str) -> Path:
    """A directory to use as PATH holding the given executables (name -> shell script body)."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for name, body in programs.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return directory


def test_bytecode_compiler_takes_the_running_interpreter_of_the_runtimes_version(tmp_path):
    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": str(_bin_dir(tmp_path))})

    assert bytecode is not None
    assert bytecode.executable == sys.executable
    assert bytecode.python_version == RUNNING
    assert bytecode.key() == "cpython-{}.{}.{}".format(*sys.version_info[:3])


def test_bytecode_compiler_prefers_pythonX_Y_on_path(tmp_path):
    path = _bin_dir(tmp_path, **{f"python{RUNNING}": f'exec "{sys.executable}" "$@"'})

    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": str(path)})

    assert bytecode is not None and bytecode.executable == str(path / f"python{RUNNING}")


def test_bytecode_compiler_finds_none_for_another_version(tmp_path):
    # A pyenv shim for a version that is not selected exists on PATH but does not run: not a candidate.
    path = _bin_dir(tmp_path, **{f"python{NO_SUCH_VERSION}": "echo 'pyenv: command not found' >&2; exit 127"})

    assert bundling.bytecode_compiler(NO_SUCH_VERSION, environ={"PATH": str(path)}) is None


def test_bytecode_compiler_env_var_must_name_an_interpreter_of_the_runtimes_version(tmp_path):
    path = str(_bin_dir(tmp_path, broken="exit 3"))
    env = bundling.BUNDLE_PYTHON_ENV

    chosen = bundling.bytecode_compiler(RUNNING, environ={"PATH": path, env: sys.executable})
    assert chosen is not None and chosen.executable == sys.executable

    with pytest.raises(BundlingError, match=rf"{env}='/nowhere/python3.14' is not an executable"):
        bundling.bytecode_compiler("3.14", environ={"PATH": path, env: "/nowhere/python3.14"})
    with pytest.raises(BundlingError, match=rf"is Python {RUNNING}, but the Lambda runtime is Python 3.99"):
        bundling.bytecode_compiler(NO_SUCH_VERSION, environ={"PATH": path, env: sys.executable})
    with pytest.raises(BundlingError, match=r"'broken' is not a working Python"):
        bundling.bytecode_compiler(RUNNING, environ={"PATH": path, env: "broken"})


def _pycs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.pyc")}


def test_stage_code_compiles_unchecked_hash_bytecode_reproducibly(project, tmp_path):
    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": ""})
    assert bytecode is not None

    staged = stage_code(project_root=project, cache_dir=tmp_path / "one", bytecode=bytecode)

    tag = sys.implementation.cache_tag
    sources = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.py"))
    expected = sorted(f"{Path(s).parent.as_posix()}/__pycache__/{Path(s).stem}.{tag}.pyc" for s in sources)
    assert sorted(_pycs(staged)) == expected
    for source in sources:
        pyc = (staged / importlib.util.cache_from_source(source)).read_bytes()
        assert pyc[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(pyc[4:8], "little") == 0b01, "hash-based (bit 0), not checked against source (bit 1)"
        assert pyc[8:16] == importlib.util.source_hash((staged / source).read_bytes())
        assert marshal.loads(pyc[16:]).co_filename == f"/var/task/{source}", "the path Lambda mounts, not the build's"

    again = stage_code(project_root=project, cache_dir=tmp_path / "two", bytecode=bytecode)
    assert again.name == staged.name
    files = _files(staged)
    assert _files(again) == files
    assert all((again / k).read_bytes() == (staged / k).read_bytes() for k in files)

    source_only = stage_code(project_root=project, cache_dir=tmp_path / "one")
    assert source_only != staged, "a compiled and an uncompiled tree never share a directory"
    assert not _pycs(source_only)


def test_staged_bytecode_is_loaded_without_reading_the_source(project, tmp_path):
    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": ""})
    staged = stage_code(project_root=project, cache_dir=tmp_path / "cache", bytecode=bytecode)
    (staged / "shared/x.py").write_text("X = 2\n")  # unchecked-hash: the runtime never compares

    out = subprocess.run(
        [sys.executable, "-B", "-c", "import shared.x; print(shared.x.X)"],
        cwd=staged, env={"PYTHONPATH": str(staged), "PATH": ""}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "1"


def test_stage_code_names_a_file_that_does_not_compile(project, tmp_path):
    _write(project, "shared/broken.py", "def oops(:\n")
    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": ""})

    with pytest.raises(BundlingError, match=r"(?s)compiling the Lambda bytecode failed.*broken\.py"):
        stage_code(project_root=project, cache_dir=tmp_path / "cache", bytecode=bytecode)
    assert not list((tmp_path / "cache").iterdir()), "a failed build leaves nothing behind"


def test_build_layer_compiles_with_a_matching_interpreter_only(tmp_path, monkeypatch):
    def fake_pip(requirements, *, target, platform, python_version):
        _write(target, "pkg/__init__.py", "VALUE = 1\n")

    monkeypatch.setattr(bundling, "_pip_install", fake_pip)
    # The running interpreter is not a Lambda runtime's version; allow it so the compile can run for real.
    monkeypatch.setattr(bundling, "PYTHON_VERSIONS", (*bundling.PYTHON_VERSIONS, RUNNING))
    bytecode = bundling.bytecode_compiler(RUNNING, environ={"PATH": ""})
    settings = {"requirements": ["pkg>=1"], "python_version": RUNNING, "architecture": "arm64"}

    compiled = build_layer(**settings, cache_dir=tmp_path / "one", bytecode=bytecode)
    pyc = (compiled / "python/pkg" / importlib.util.cache_from_source("__init__.py")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01
    assert marshal.loads(pyc[16:]).co_filename == "/opt/python/pkg/__init__.py"

    again = build_layer(**settings, cache_dir=tmp_path / "two", bytecode=bytecode)
    assert again.name == compiled.name and _pycs(again) == _pycs(compiled)
    assert build_layer(**settings, cache_dir=tmp_path / "one").name != compiled.name

    with pytest.raises(BundlingError, match=rf"is Python {RUNNING} and cannot compile bytecode for the Python 3.13"):
        build_layer(**{**settings, "python_version": "3.13"}, cache_dir=tmp_path / "one", bytecode=bytecode)


def test_uncompiled_notice_names_the_cost_and_the_fixes():
    notice = bundling.uncompiled_notice("3.14")

    assert "~650 ms" in notice and "python3.14" in notice and bundling.BUNDLE_PYTHON_ENV in notice
