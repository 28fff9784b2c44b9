"""The package's layout follows the flow: no module imports from one downstream of it, the library never imports
Streamlit, and the README's layout table names every module."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "whaleaudit"
#: Upstream to downstream; a module may import from its own step or from one with a lower number.
STEPS = {"errors": 0, "files": 0, "columns": 0, "workspace": 0, "data": 1, "model": 2, "explain": 3, "audit": 4,
         "views": 5, "notebook": 6, "jobs": 6, "demo": 6, "cli": 7, "__main__": 8}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def step(module: str) -> str:
    """``whaleaudit.explain.cam`` -> ``explain``."""
    return module.split(".")[1]


def imports(path: Path) -> list[str]:
    """The whaleaudit modules ``path`` imports, absolute (``from ..data import images`` -> whaleaudit.data.images)."""
    here = ["whaleaudit", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target == "whaleaudit" or (node.level and not node.module):
                found += [f"{target}.{alias.name}" for alias in node.names]
            else:
                found.append(target)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_the_steps_cover_the_package():
    assert {step("whaleaudit." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in MODULES} <= set(STEPS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_downstream(path):
    mine = STEPS[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
    for target in imports(path):
        if path.name != "cli.py":  # `whaleaudit dashboard` starts the Streamlit server; nothing else may
            assert target.split(".")[0] != "streamlit", f"{path.name} imports Streamlit: the library never does"
        if target.startswith("whaleaudit.") and step(target) in STEPS:
            assert STEPS[step(target)] <= mine, f"{path.relative_to(ROOT)} imports {target}, which is downstream"


def test_the_readme_layout_table_names_every_module():
    readme = ROOT / "README.md"
    table = readme.read_text().split("## Code layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/.]+)`", table))
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        assert rel.name in named or f"whaleaudit/{rel.as_posix()}" in named or f"{rel.parent}/" in named and \
            rel.name == "__init__.py", f"README's code layout does not name {rel}"
    for folder in [p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]:
        assert f"whaleaudit/{folder.name}/" in named or f"{folder.name}/" in named, folder.name
