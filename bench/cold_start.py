"""Cold start of every Lambda handler module (issue 16, item 6).

A Lambda's cold start runs the handler module's imports before the first event, so each function is imported in a
fresh interpreter (nothing cached in ``sys.modules``), timed with ``perf_counter`` around the import, ``--runs``
times; the median is reported. A further run with ``python -X importtime`` attributes the time: the top-level
packages whose modules took the most time of their own (``self`` column, summed per package), which is where moving
an import off the init path can help. Interpreter start-up itself (``site``) is not included in either.

    PYTHONPATH=. .venv/bin/python bench/cold_start.py [--runs 5] [function ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 250.0


def functions() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "functions").glob("*/handler.py"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONIMPORTTIME", None)
    return env


def import_ms(function: str) -> float:
    code = (
        "import time; t = time.perf_counter(); "
        f"import functions.{function}.handler; "
        "print((time.perf_counter() - t) * 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def heaviest(function: str, top: int = 3) -> list[tuple[str, float]]:
    """Top-level packages by the import time their own modules took (ms), from one ``-X importtime`` run."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import functions.{function}.handler"],
        env=_env(), cwd=ROOT, capture_output=True, text=True, check=True,
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
    print(f"{'function':<26} {'median ms':>9}  {'min':>5} {'max':>5}  heaviest imports (self time per package, ms)")
    over = []
    for name in names:
        times = [import_ms(name) for _ in range(args.runs)]
        median = statistics.median(times)
        if median > TARGET_MS:
            over.append(name)
        top = ", ".join(f"{pkg} {ms:.0f}" for pkg, ms in heaviest(name))
        print(f"{name:<26} {median:>9.0f}  {min(times):>5.0f} {max(times):>5.0f}  {top}", flush=True)
    print(f"\nover the {TARGET_MS:.0f} ms target: {', '.join(over) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
