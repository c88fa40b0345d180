"""Lambda artifacts built without Docker: runtime requirements, staged code, and the dependency layer."""

from __future__ import annotations

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
