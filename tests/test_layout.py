"""The layout holds: layers import only downwards, no module imports itself in a circle, and no source file
outside the tests grows past 600 lines."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 600
# Bottom to top. A module may import from its own layer's package and from the layers below; k8s and aws
# are one layer, side by side, and neither imports the other.
LAYERS: list[tuple[str, ...]] = [
    # The staging Job's script runs in its pod with its own package only: it may import nothing else of the project.
    ("vllm_platform.staging",),
    ("vllm_platform.contract",),
    ("vllm_platform.pins", "vllm_platform.catalog", "vllm_platform.names"),
    ("vllm_platform.config",),
    ("vllm_platform.plan",),
    ("vllm_platform.k8s", "vllm_platform.aws"),
    ("vllm_platform.components",),
    ("vllm_platform.program",),
    ("tools",),
]


def sources() -> list[Path]:
    found = [*ROOT.glob("vllm_platform/**/*.py"), *ROOT.glob("tools/**/*.py"), *ROOT.glob("policies/*.py"), ROOT / "__main__.py"]
    return sorted(p for p in found if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_from(path: Path, node: ast.ImportFrom) -> str:
    """The full name of the module a `from ... import` reads: a relative one (`from . import x`, `from ..plan
    import y`) resolved against the file's own package, as Python resolves it."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


@lru_cache(maxsize=None)
def project_imports(path: Path) -> frozenset[str]:
    """The project modules a file imports, by full name (`from a.b import c` counts a.b, and a.b.c if it is one),
    relative imports included."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = imported_from(path, node)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    if path.parent == ROOT / "policies":
        # The pack runs with its own folder on sys.path and imports its modules by bare name (`from props import`).
        names |= {f"policies.{name}" for name in names}
    known = {module_name(p) for p in sources()}
    return frozenset(n for n in names if n in known)


def layer_of(module: str) -> tuple[int, str]:
    if module == "vllm_platform":
        return 0, module  # the package itself: a docstring, importing nothing
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} belongs to no layer")


@pytest.mark.parametrize("path", [p for p in sources() if module_name(p).startswith(("vllm_platform", "tools"))], ids=module_name)
def test_every_module_imports_only_from_its_layer_and_below(path: Path) -> None:
    rank, package = layer_of(module_name(path))
    for imported in project_imports(path):
        imported_rank, imported_package = layer_of(imported)
        assert imported_rank < rank or imported_package == package, f"{module_name(path)} imports {imported} from a layer above or beside its own"


def test_the_packs_bare_imports_of_its_own_modules_are_seen() -> None:
    """Else a cycle among policies/*.py would pass the cycle test unseen."""
    assert {"policies.props", "policies.gateway_rules", "policies.infrastructure_rules"} <= project_imports(ROOT / "policies/rules.py")


def test_the_pack_and_the_program_entry_import_only_what_they_may() -> None:
    for pack_file in ROOT.glob("policies/*.py"):
        assert all(m.startswith("vllm_platform.contract") for m in project_imports(pack_file) if m.startswith("vllm_platform"))
    assert project_imports(ROOT / "__main__.py") == {"vllm_platform.program"}
    # The staging Job's ConfigMap carries the whole staging package (k8s/staging.script_files), nothing else.
    for script in ROOT.glob("vllm_platform/staging/*.py"):
        outside = {m for m in project_imports(script) if m != "vllm_platform.staging" and not m.startswith("vllm_platform.staging.")}
        assert outside == set(), f"{script.name} runs in the staging Job's pod with its package only"


@pytest.mark.parametrize(
    ("file", "statement", "module"),
    [
        ("vllm_platform/plan/sizing.py", "from . import fit", "vllm_platform.plan"),
        ("vllm_platform/plan/sizing.py", "from .fit import x", "vllm_platform.plan.fit"),
        ("vllm_platform/k8s/probes.py", "from ..components import model", "vllm_platform.components"),
        ("vllm_platform/plan/__init__.py", "from .fit import x", "vllm_platform.plan.fit"),
        ("vllm_platform/plan/sizing.py", "from vllm_platform.plan import fit", "vllm_platform.plan"),
    ],
)
def test_a_relative_import_counts_as_the_module_it_names(file: str, statement: str, module: str) -> None:
    """Else `from . import fit` in sizing.py would make a cycle, or `from ..components` an upward import, unseen."""
    [node] = ast.parse(statement).body
    assert isinstance(node, ast.ImportFrom)
    assert imported_from(ROOT / file, node) == module


def test_no_module_imports_itself_in_a_circle() -> None:
    graph = {module_name(p): {m for m in project_imports(p) if m != module_name(p)} for p in sources()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in graph.get(module, ()):
            assert state.get(imported) != "open", " -> ".join([*path, module, imported])
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("path", sources(), ids=module_name)
def test_no_source_file_outside_the_tests_passes_600_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
