"""A text corpus built at run time from text already on the machine: the standard library's docstrings.

Nothing is copied into the repository and nothing is downloaded; the corpus is whatever the local Python ships,
so it works offline (the demo, tests, benchmarks).
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Small, stable, pure-Python modules with plenty of prose in their docstrings.
DEFAULT_MODULES = (
    "argparse",
    "calendar",
    "collections/__init__",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email/message",
    "fractions",
    "functools",
    "heapq",
    "http/client",
    "inspect",
    "json/__init__",
    "logging/__init__",
    "pathlib",
    "pickle",
    "pprint",
    "queue",
    "random",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest/case",
    "urllib/parse",
    "uuid",
    "zipfile/__init__",
    "zipfile",
)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                yield doc.strip()


def stdlib_documents(modules: tuple[str, ...] = DEFAULT_MODULES, max_chars: int | None = None) -> list[str]:
    """Docstrings (one document each) of the given stdlib modules, up to ``max_chars`` in total."""
    docs: list[str] = []
    total = 0
    for name in modules:
        path = stdlib_dir() / f"{name}.py"
        if not path.exists():
            continue
        for doc in _docstrings(path):
            docs.append(doc)
            total += len(doc)
            if max_chars is not None and total >= max_chars:
                return docs
    return docs


def stdlib_corpus_text(max_chars: int | None = 400_000) -> str:
    """The corpus as one ``.txt`` payload: documents separated by blank lines (the dataset format)."""
    return "\n\n".join(d.replace("\n\n", "\n") for d in stdlib_documents(max_chars=max_chars)) + "\n"
