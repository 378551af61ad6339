"""The layer order of sn7: a module imports only from its own floor or the floors below it,
never from a higher one, so the low layers stay usable (and testable) without the stages above
them. Every import counts, also one inside a function (a lazy import is still a dependency) and
one under TYPE_CHECKING.

    0  sn7/utils/, sn7/errors.py, sn7/constants.py, sn7/__init__.py
    1  sn7/data/, sn7/models/, sn7/metrics/, sn7/testing/ (synthetic data for tests/benchmarks)
    2  sn7/inference/, sn7/evaluation/, sn7/lit/, sn7/viz/, sn7/checks.py (checks data options)
    3  stages: sn7/prepare.py, train.py, evaluate.py, predict.py (+ predict_scene.py,
       building_frames.py), convert.py, series.py
    4  entry points at the repository root (prepare.py, train.py, ...): nothing may import them

sn7/testing/ is off to the side: only tests/ and benchmarks/ may import it, no module of sn7.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sn7"

FLOORS = {
    "sn7": 0,  # the package itself (__init__ registers the config resolvers)
    "sn7.utils": 0,
    "sn7.errors": 0,
    "sn7.constants": 0,
    "sn7.data": 1,
    "sn7.models": 1,
    "sn7.metrics": 1,
    "sn7.testing": 1,
    "sn7.inference": 2,
    "sn7.evaluation": 2,
    "sn7.lit": 2,
    "sn7.viz": 2,
    "sn7.checks": 2,
    "sn7.prepare": 3,
    "sn7.train": 3,
    "sn7.evaluate": 3,
    "sn7.predict": 3,
    "sn7.predict_scene": 3,
    "sn7.building_frames": 3,
    "sn7.convert": 3,
    "sn7.release": 3,
    "sn7.series": 3,
}
ENTRY_POINTS = {p.stem for p in REPO.glob("*.py")}


def module_name(path: Path, repo: Path = REPO) -> str:
    parts = path.relative_to(repo).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    """The floor of the longest FLOORS prefix of `module`; an unknown module fails the test."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in FLOORS and (n > 1 or len(parts) == 1):
            return FLOORS[prefix]
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in tests/test_layers.py")


def imports(path: Path, repo: Path = REPO) -> set[str]:
    """Every sn7 module (or root entry point) that `path` imports, relative imports resolved."""
    package = module_name(path, repo).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            # `from sn7.data import masks` imports the module sn7.data.masks
            found.update(f"{module}.{alias.name}" for alias in node.names)
    ours = {m for m in found if m == "sn7" or m.startswith("sn7.")}
    return ours | {m for m in found if m.split(".")[0] in ENTRY_POINTS}


def existing(module: str) -> bool:
    path = REPO / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_imports_a_higher_floor(path):
    me = module_name(path)
    upward = []
    for target in sorted(imports(path)):
        if target.split(".")[0] in ENTRY_POINTS and target.split(".")[0] != "sn7":
            upward.append(f"{target} (a root entry point)")
        elif existing(target) and floor(target) > floor(me):
            upward.append(f"{target} (floor {floor(target)})")
    assert not upward, f"{me} (floor {floor(me)}) imports upward: {', '.join(upward)}"


TEST_ONLY = "sn7.testing"


def test_only_tests_and_benchmarks_import_sn7_testing():
    users = [
        module_name(path)
        for path in MODULES
        if not module_name(path).startswith(TEST_ONLY)
        and any(t == TEST_ONLY or t.startswith(TEST_ONLY + ".") for t in imports(path))
    ]
    users += [p.name for p in REPO.glob("*.py") if any(t.startswith(TEST_ONLY) for t in imports(p))]
    assert not users, f"{TEST_ONLY} is for tests and benchmarks only; imported by {users}"


def test_every_module_is_on_a_floor():
    for path in MODULES:
        floor(module_name(path))


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    """The checker itself: an import inside a function and a relative one are both found."""
    probe = tmp_path / "sn7" / "data" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from sn7.viz.report import x\nfrom ..metrics import pixel\n")
    assert imports(probe, tmp_path) == {
        "sn7.viz.report",
        "sn7.viz.report.x",
        "sn7.metrics",
        "sn7.metrics.pixel",
    }
    assert floor("sn7.viz.report") > floor("sn7.data.probe")
