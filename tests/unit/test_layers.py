"""The layers, checked on the source: web never imports worker; worker/ml knows nothing of Flask, Celery, SQLAlchemy or
the database; no two of our modules import each other at load time; the web process does not load torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("web", "worker", "shared", "migrations", "benchmarks")
ML_FORBIDDEN = ("flask", "celery", "kombu", "sqlalchemy", "alembic", "psycopg", "redis", "shared.db", "shared.models")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(imports run when the module loads, imports inside functions); ``if TYPE_CHECKING`` blocks count for neither."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    load_time: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, inside_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue
            target = lazy if inside_function else load_time
            if isinstance(child, ast.Import):
                target.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - child.level + 1], base]).strip(".")
                target.add(base)
                target.update(f"{base}.{alias.name}" for alias in child.names)  # `from pkg import module`
            visit(child, inside_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return load_time, lazy


def our_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


MODULES = our_modules()
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def reachable(start: str, lazy_too: bool) -> set[str]:
    """Our modules that importing ``start`` can load (lazy imports included when ``lazy_too``)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        load_time, lazy = IMPORTS[name]
        todo.extend(ours(load_time | lazy if lazy_too else load_time))
    return seen


def matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_the_tree():
    assert {"web.app", "worker.runtime", "shared.lifecycle", "worker.ml.lm.generate"} <= set(MODULES)
    assert "shared.lifecycle" in IMPORTS["worker.runtime"][0]


def test_web_never_imports_worker():
    bad = {
        (name, dep)
        for name in MODULES
        if name.startswith("web")
        for dep in reachable(name, lazy_too=True)
        if dep.startswith("worker")
    }
    assert not bad, f"web reaches worker modules: {sorted(bad)}"


def test_ml_code_knows_nothing_of_web_queue_or_database():
    bad = set()
    for name in MODULES:
        if not name.startswith("worker.ml"):
            continue
        for dep in reachable(name, lazy_too=True):
            load_time, lazy = IMPORTS[dep]
            bad.update((name, dep, imp) for imp in load_time | lazy if matches(imp, ML_FORBIDDEN))
            if matches(dep, ("shared.db", "shared.models", "worker.tasks", "worker.runtime", "worker.celery_app")):
                bad.add((name, dep, "(our module)"))
    assert not bad, f"worker/ml reaches Flask/Celery/SQLAlchemy/database code: {sorted(bad)}"


def test_no_import_cycles_at_load_time():
    graph = {name: ours(IMPORTS[name][0]) - {name} for name in MODULES}
    cycles, state = [], {}

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep) :]
                # a package importing its own submodules (re-exports) is how packages work, not a cycle
                if not all(m.startswith(cycle[0] + ".") or m == cycle[0] for m in cycle):
                    cycles.append([*cycle, dep])
            elif dep not in state:
                dfs(dep, stack)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            dfs(name, [])
    assert not cycles, f"import cycles: {cycles}"


def test_the_web_process_does_not_load_torch(tmp_path):
    code = (
        "import pkgutil, importlib, sys, web\n"
        "for m in pkgutil.walk_packages(web.__path__, 'web.'):\n"
        "    importlib.import_module(m.name)\n"
        "from web.app import create_app\n"
        "create_app()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'worker') if m in sys.modules)\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "GENQUEUE_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_deprecation_warning_from_our_code_fails_the_test():
    import warnings

    import pytest

    with pytest.raises(DeprecationWarning):
        warnings.warn("a deprecated call in our code", DeprecationWarning, stacklevel=1)


def test_worker_threads_spin_briefly_unless_the_operator_says_otherwise():
    """``worker.celery_app`` sets a short OpenMP spin (``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``) before torch is loaded
    (OpenMP reads it at load time), unless the operator set a wait policy of their own."""
    probe = (
        "import os, sys\n"
        "def policy(): return [os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')]\n"
        "class Seen:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch': print('torch', *policy())\n"
        "sys.meta_path.insert(0, Seen())\n"
        "import worker.celery_app\n"
        "print('end', *policy())\n"
    )
    knobs = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
    env = {k: v for k, v in os.environ.items() if k not in knobs}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # never connected to: importing the app only configures it

    def seen() -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    lines = seen()
    brief = "None 10000 1"
    assert lines[-1] == f"end {brief}" and set(lines[:-1]) <= {f"torch {brief}"}, lines  # set before torch loads
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    assert seen()[-1] == "end PASSIVE None None"  # the operator's choice stands
    del env["OMP_WAIT_POLICY"]
    env["GOMP_SPINCOUNT"] = "0"
    assert seen()[-1] == "end None 0 None"


def test_pool_processes_share_the_cpu_threads_unless_the_operator_says_otherwise():
    """With ``--concurrency N``, each pool process takes 1/N of torch's CPU threads when it starts (at least one);
    one pool process keeps torch's default; ``OMP_NUM_THREADS`` set by the operator stands. Driven through Celery's
    own signals, as the worker's main process and each pool process send them."""
    probe = (
        "import sys, torch\n"
        "from celery import signals\n"
        "import worker.celery_app\n"
        "class Worker: concurrency = int(sys.argv[1])\n"
        "before = torch.get_num_threads()\n"
        "signals.worker_init.send(sender=Worker())\n"
        "signals.worker_process_init.send(sender='probe')\n"
        "print(before, torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # never connected to

    def threads(concurrency: int) -> tuple[int, int]:
        cmd = [sys.executable, "-c", probe, str(concurrency)]
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        before, after = map(int, out.stdout.split())
        return before, after

    before, after = threads(2)
    assert after == max(1, before // 2), (before, after)
    before, after = threads(1)
    assert after == before
    env["OMP_NUM_THREADS"] = "2"
    assert threads(4) == (2, 2)  # the operator's choice stands
