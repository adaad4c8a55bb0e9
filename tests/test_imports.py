"""Every module imports on its own, first, in a fresh interpreter: an import cycle that the usual import order
hides (a module that works only once another has been imported) fails here. And no module-level import cycle at
all: one that works only because a name is read at call time breaks as soon as someone reads it at import time."""

import ast
import importlib
import multiprocessing
import pkgutil
import traceback
from pathlib import Path

from conftest import REPO

import acdistill

# acdistill.__main__ runs the CLI when imported, as `python -m acdistill` needs.
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(acdistill.__path__, "acdistill.") if m.name != "acdistill.__main__"
)
# Third-party modules preloaded in the fork server, so that each fresh child pays only for acdistill's own imports.
PRELOAD = ["torch", "numpy", "pydantic", "typer", "rich", "yaml", "safetensors.torch", "tabulate"]


def import_alone(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - the report names whatever went wrong
        return f"{name}: {traceback.format_exc().strip().splitlines()[-1]}"
    return None


def test_every_module_imports_alone_in_a_fresh_interpreter():
    assert len(MODULES) > 40 and "acdistill.pipeline.training" in MODULES and "acdistill.cli.distill" in MODULES
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    with context.Pool(2, maxtasksperchild=1) as pool:  # one module per child: each import is the first
        failures = [f for f in pool.map(import_alone, MODULES) if f]
    assert failures == []


PACKAGE = REPO / "acdistill"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_at_module_level(path: Path, modules: set[str]) -> set[str]:
    """The acdistill modules a module imports when it is imported (its top-level imports, `from x import y` as the
    module x.y where that is one). A parent package counts for the modules outside it, and wherever it is imported
    by name (`import acdistill` in acdistill.provenance)."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                # a parent package is imported first, but for its own modules it is being imported already
                explicit = i == len(parts)
                if name in modules and name != own and (explicit or not own.startswith(f"{name}.")):
                    found.add(name)
    return found


def test_acdistill_has_no_import_cycle():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: imports_at_module_level(p, set(paths)) for m, p in paths.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        assert module not in trail, "import cycle: " + " -> ".join([*trail[trail.index(module) :], module])
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
