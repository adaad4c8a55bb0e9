"""Every module imports on its own, first, in a fresh interpreter: an import cycle that the usual import order
hides (a module that works only once another has been imported) fails here."""

import importlib
import multiprocessing
import pkgutil
import traceback

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
