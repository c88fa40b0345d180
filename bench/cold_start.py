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
"""

from __future__ import annotations

import argparse
import os
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("function", nargs="*", help="default: every functions/*/handler.py")
    args = parser.parse_args(argv)
    names = args.function or functions()
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
