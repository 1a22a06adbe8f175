"""Imports run one way: `ebmlab.api` sits on top, and only the package's front doors use it.

The front doors are the package itself (`ebmlab/__init__.py` re-exports the API), the CLI, the
scikit-learn estimators (which train and load through the API) and the bench (which trains,
loads and evaluates whole runs). Everything the API calls (the trainer, the report, the tasks,
the metrics) takes what it needs as arguments, so none of them imports the API, not even for a
type hint: that is what kept the report and the tasks in a circle with it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ebmlab

PACKAGE = Path(ebmlab.__file__).parent
#: modules (paths relative to the package) allowed to use ebmlab.api, each of which does
FRONT_DOORS = {"__init__.py", "cli.py", "estimator.py"} | {
    f"bench/{name}.py" for name in ("__init__", "figures", "worker")
}
#: the package's own modules and subpackages: `from ebmlab import <one of them>` is no API use
SUBMODULES = {path.stem for path in PACKAGE.glob("*.py")} | {
    path.parent.name for path in PACKAGE.glob("*/__init__.py")
}


def api_uses(source: str) -> list[int]:
    """Line numbers where `source` reaches ebmlab.api: importing it or the package's re-exports
    of it (`import ebmlab`, `from ebmlab import train`), or naming `ebmlab.api` (under
    TYPE_CHECKING or in a function body as much as at the top)."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if _reaches_api(node)]


def _reaches_api(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name in ("ebmlab", "ebmlab.api") for alias in node.names)
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        reexports = node.module == "ebmlab" and any(a.name not in SUBMODULES for a in node.names)
        return node.module == "ebmlab.api" or reexports
    if isinstance(node, ast.Attribute):
        return node.attr == "api" and isinstance(node.value, ast.Name) and node.value.id == "ebmlab"
    return False


def package_modules() -> dict[str, str]:
    return {
        path.relative_to(PACKAGE).as_posix(): path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_only_the_front_doors_use_the_api():
    offenders = {
        name: lines
        for name, source in package_modules().items()
        if name not in FRONT_DOORS and name != "api.py" and (lines := api_uses(source))
    }
    assert offenders == {}


def test_every_front_door_on_the_list_does_use_the_api():
    """A stale entry would let a new circle in unnoticed, so the list holds only real users."""
    modules = package_modules()
    assert {name for name in FRONT_DOORS if api_uses(modules[name])} == FRONT_DOORS


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from ebmlab.api import Run", [1]),
        ("import ebmlab.api", [1]),
        ("import ebmlab\nebmlab.api.load('x')", [1, 2]),
        ("if TYPE_CHECKING:\n    from ebmlab.api import Run", [2]),
        ("def f():\n    from ebmlab import load", [2]),
        ("from ebmlab import checkpoints, distributed", []),
        ("from ebmlab.config import RunConfig", []),
        ("from ebmlab.apiary import x", []),
    ],
)
def test_api_uses_sees_every_way_in(source, found):
    assert sorted(api_uses(source)) == found
