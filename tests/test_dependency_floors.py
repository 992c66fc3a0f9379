"""The minimum versions .ci/run's second run installs are exactly the floors pyproject.toml declares."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _floors() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    requirements = re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)', text)
    floors: dict[str, str] = {}
    for name, version in requirements:
        assert floors.setdefault(name.lower(), version) == version, f"{name} has two floors in pyproject.toml"
    return floors


def _pins() -> dict[str, str]:
    lines = (ROOT / ".ci" / "constraints-min.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


def _same(floor: str, pin: str) -> bool:
    def parts(v):
        return [int(p) for p in v.split(".")]
    a, b = parts(floor), parts(pin)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) == b + [0] * (width - len(b))


def test_every_floor_is_pinned_at_its_minimum():
    floors, pins = _floors(), _pins()
    tested = {name for name in floors if name != "setuptools"}  # the build tool
    assert tested <= set(pins), f"not installed at their floor by .ci/run: {sorted(tested - set(pins))}"
    wrong = {name: (floors[name], pins[name]) for name in tested if not _same(floors[name], pins[name])}
    assert not wrong, f"floor in pyproject.toml vs pin in .ci/constraints-min.txt: {wrong}"


def test_imported_third_party_packages_are_declared():
    declared = set(_floors())
    imported = set()
    for path in (ROOT / "raybt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    stdlib_and_own = {"raybt", "__future__"} | set(__import__("sys").stdlib_module_names)
    assert imported - stdlib_and_own <= declared, f"imported but not declared: {imported - stdlib_and_own - declared}"
