"""tools/mutants.toml, the mutation-testing targets (docs/testing.md): every file in scope has a
target, and every target names test files that exist and hold tests. Reads files only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("toml")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["cd", "icd", "shortrun", "dsm", "gebm", "bidvl", "bounds", "dualmcmc"]


def targets() -> dict[str, dict]:
    return tomllib.loads((ROOT / "tools" / "mutants.toml").read_text())["targets"]


def test_every_file_in_scope_has_a_target():
    scope = {f"ebmlab/methods/{m}.py" for m in METHODS}
    scope |= {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "ebmlab" / "samplers").glob("*.py")
        if p.name != "__init__.py"
    }
    scope |= {"ebmlab/nets/jacobian.py", "ebmlab/metrics/toy2d.py"}
    assert scope <= set(targets())


@pytest.mark.parametrize("target", sorted(targets()))
def test_each_target_exists_and_names_test_files_with_tests(target):
    assert (ROOT / target).is_file()
    tests = targets()[target]["tests"]
    assert tests
    for test in tests:
        file, _, name = test.partition("::")
        source = (ROOT / file).read_text()
        assert re.search(r"^def test_", source, re.M), file
        if name:  # a node id: the test function is there
            assert re.search(rf"^def {re.escape(name.split('[')[0])}\(", source, re.M), test
