"""Cold start of every Lambda handler module (issue 16, item 6).

A Lambda's cold start runs the handler module's imports before the first event, so each function is imported in a
fresh interpreter (nothing cached in ``sys.modules``), timed with ``perf_counter`` around the import, ``--runs``
times; the median is reported. Interpreter start-up itself (``site``) is not included.

Two columns, because bytecode decides most of it: "with .pyc" finds every module (ours and the dependencies)
already compiled, in a private ``PYTHONPYCACHEPREFIX`` warmed by one import first; "no .pyc" compiles every module
from source on each import, which is what a Lambda does with today's artifacts (``infra/bundling.py`` installs the
layer with ``--no-compile`` and ships no ``__pycache__``, and ``/opt`` and ``/var/task`` are read-only, so the
runtime cannot write any). The local ``PYTHONDONTWRITEBYTECODE`` setting does not matter to either.

A further run with ``python -X importtime`` (with .pyc) attributes the time: the top-level packages whose modules
took the most time of their own (``self`` column, summed per package), which is where moving an import off the
init path can help.

    PYTHONPATH=. .venv/bin/python bench/cold_start.py [--runs 5] [function ...]

``--bundle-python python3.X`` measures the artifacts themselves instead: ``infra.bundling`` builds the layer (for
this machine's architecture) and the code for that interpreter's version twice, as source and compiled by it
(unchecked-hash bytecode), and each function is imported from them by that interpreter with writing bytecode off
(as on Lambda's read-only ``/opt`` and ``/var/task``). boto3, which the Lambda runtime provides, is pip-installed
for that interpreter beside them, compiled, as the runtime's own is::

    PYTHONPATH=. .venv/bin/python bench/cold_start.py --bundle-python /root/.pyenv/versions/3.12.1/bin/python3.12
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 250.0


def functions() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "functions").glob("*/handler.py"))


def _env(pycache: str, *, write: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONPYCACHEPREFIX"] = pycache
    env.pop("PYTHONIMPORTTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def import_ms(function: str, env: dict[str, str]) -> float:
    code = (
        "import time; t = time.perf_counter(); "
        f"import functions.{function}.handler; "
        "print((time.perf_counter() - t) * 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def heaviest(function: str, env: dict[str, str], top: int = 3) -> list[tuple[str, float]]:
    """Top-level packages by the import time their own modules took (ms), from one ``-X importtime`` run."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import functions.{function}.handler"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )
    by_package: Counter[str] = Counter()
    start = False
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        # Only what the handler's import pulled in: the interpreter's start-up lines come first and end with `site`.
        if name == "site":
            start = True
            continue
        if start:
            by_package[name.split(".")[0]] += int(self_us)
    return [(name, us / 1000) for name, us in by_package.most_common(top)]


BENCH_BUILD = ROOT / ".build" / "bench"


def _bundles(python: str) -> tuple[str, dict[str, dict[str, str]]]:
    """Build the source and the compiled artifacts for ``python``'s version; the environment to import each."""
    from infra.bundling import build_layer, bytecode_compiler, runtime_requirements, stage_code

    probe = [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
    version = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    bytecode = bytecode_compiler(version, environ={**os.environ, "CONVEYOR_BUNDLE_PYTHON": python})
    architecture = {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x86_64")
    sdk = BENCH_BUILD / f"sdk-py{version}"
    if not (sdk / "boto3").is_dir():
        install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(sdk), "boto3"]
        subprocess.run(install, check=True)
    requirements = runtime_requirements(ROOT / "pyproject.toml")
    envs = {}
    for label, compiler in (("source", None), ("compiled", bytecode)):
        code = stage_code(project_root=ROOT, cache_dir=BENCH_BUILD, bytecode=compiler)
        layer = build_layer(
            requirements=requirements, python_version=version, architecture=architecture, cache_dir=BENCH_BUILD,
            bytecode=compiler,
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join([str(code), str(layer / "python"), str(sdk)])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        envs[label] = env
    return version, envs


def bundle_import_ms(python: str, function: str, env: dict[str, str], cwd: str) -> float:
    code = (
        "import time; t = time.perf_counter(); "
        f"import functions.{function}.handler; "
        "print((time.perf_counter() - t) * 1000)"
    )
    out = subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{function}: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main_bundle(python: str, names: list[str], runs: int) -> int:
    version, envs = _bundles(python)
    print(f"Python {version} ({python}), artifacts built by infra.bundling; median of {runs} runs, interleaved")
    print(f"{'function':<26} {'source':>7} {'compiled':>9} {'saved':>6}")
    saved = []
    with tempfile.TemporaryDirectory() as cwd:  # not the checkout: only the artifacts are on the path
        for name in names:
            times: dict[str, list[float]] = {"source": [], "compiled": []}
            for _ in range(runs):
                for label, env in envs.items():
                    times[label].append(bundle_import_ms(python, name, env, cwd))
            source, compiled = (statistics.median(times[k]) for k in ("source", "compiled"))
            saved.append(source - compiled)
            print(f"{name:<26} {source:>7.0f} {compiled:>9.0f} {source - compiled:>6.0f}", flush=True)
    print(f"\nsaved per cold start: median {statistics.median(saved):.0f} ms, range {min(saved):.0f}-{max(saved):.0f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bundle-python", help="time imports from the built artifacts, source vs compiled")
    parser.add_argument("function", nargs="*", help="default: every functions/*/handler.py")
    args = parser.parse_args(argv)
    names = args.function or functions()
    if args.bundle_python:
        return main_bundle(args.bundle_python, names, args.runs)
    with tempfile.TemporaryDirectory(prefix="cold-pyc-") as compiled, tempfile.TemporaryDirectory() as empty:
        warm, cold = _env(compiled, write=True), _env(empty, write=False)
        heading = "heaviest imports with .pyc (self time per package, ms)"
        print(f"{'function':<26} {'with .pyc':>9} {'no .pyc':>8}  {heading}")
        print(f"{'':<26} {'median ms':>9} {'median':>8}")
        over = []
        for name in names:
            import_ms(name, warm)  # compiles into the private prefix
            compiled_ms = statistics.median(import_ms(name, warm) for _ in range(args.runs))
            source_ms = statistics.median(import_ms(name, cold) for _ in range(args.runs))
            if compiled_ms > TARGET_MS:
                over.append(name)
            top = ", ".join(f"{pkg} {ms:.0f}" for pkg, ms in heaviest(name, warm))
            print(f"{name:<26} {compiled_ms:>9.0f} {source_ms:>8.0f}  {top}", flush=True)
    print(f"\nover the {TARGET_MS:.0f} ms target with .pyc: {', '.join(over) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
