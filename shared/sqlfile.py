"""Named SQL blocks loaded from ``.sql`` files kept beside the code that runs them (procrastinate's layout).

A file holds blocks that start with ``-- name: some_query`` lines; everything up to the next such line is the query.
Queries are loaded once, at import, and a missing name fails loudly rather than at the first production call.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(f"no query named {key!r}; known: {', '.join(sorted(self))}")


def load_queries(package: str, filename: str = "queries.sql") -> Queries:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME_RE.split(text)
    queries = Queries()
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in queries:
            raise ValueError(f"{package}/{filename}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries
