"""The engine's layout rules, checked statically from the source files (nothing is imported):

- ``modeling/`` (the plain network) imports nothing of the package but itself and ``config``;
- the layers only import downwards: config <- modeling <- runtime <- io <- engine <- faces;
- no import cycles between modules, function-level imports included;
- no module over 400 lines;
- ``import edgetam_kit`` has no side effects and does not import torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "edgetam_kit"
MAX_LINES = 400

# layer of each top-level name (module or subpackage); a layer may import its own and lower ones.
# plugins/ (specs and the manager) may be consulted by any layer above modeling.
LAYERS = {
    "config": 0, "progress": 0, "transforms": 0,
    "modeling": 1,
    "plugins": 2,  # hookspecs + manager; the built-ins module reaches up, loaded by name only
    "runtime": 3,
    "io": 4,
    "engine": 5, "testing": 5, "training": 5,
    "cli": 6, "napari": 6, "fiftyone": 6, "fiftyone_zoo": 6, "notebook": 6,
}
REACHES_UP = {"edgetam_kit.plugins.builtin"}  # loaded through the entry-point group, never imported


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of the package's modules that ``path`` imports (anywhere in the file)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edgetam_kit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("edgetam_kit"):
                target = node.module
            else:
                continue
            found.add(target)
            for alias in node.names:  # `from . import x` may name a module
                found.add(f"{target}.{alias.name}")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    modules = set(files)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for target in imports_of(path):
            while target and target not in modules:  # `pkg.mod.attr` -> `pkg.mod`
                target = target.rpartition(".")[0]
            if target and target != name and target != "edgetam_kit":
                deps.add(target)
        edges[name] = deps
    return edges


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_modeling_imports_only_itself_and_config(graph: dict[str, set[str]]) -> None:
    bad = {m: sorted(d for d in deps if not (d.startswith("edgetam_kit.modeling") or d == "edgetam_kit.config"))
           for m, deps in graph.items() if m.startswith("edgetam_kit.modeling")}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_layers_import_downwards(graph: dict[str, set[str]]) -> None:
    unknown = sorted(m for m in graph if m != "edgetam_kit" and layer_of(m) is None)
    assert not unknown, f"modules outside the known layers (add them to LAYERS): {unknown}"
    upward = []
    for m, deps in graph.items():
        if m in REACHES_UP or m == "edgetam_kit":
            continue
        for d in deps:
            if layer_of(d) is not None and layer_of(d) > layer_of(m):
                upward.append(f"{m} -> {d}")
    assert not upward, "imports that reach up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # package __init__ files that only re-export their own submodules are part of their package
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + "."):  # a package importing its own submodule
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_import_is_lazy_and_has_no_side_effects() -> None:
    code = ("import sys; before = set(sys.modules); import edgetam_kit as ek; "
            "new = set(sys.modules) - before; "
            "assert 'torch' not in new and 'numpy' not in new, sorted(new); "
            "assert 'triton' not in sys.modules; "
            "assert ek.ImagePredictor.__name__ == 'ImagePredictor'; "
            "assert 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cli_help_does_not_import_torch() -> None:
    code = ("import sys; from edgetam_kit.cli import main; rc = main(['--help']); "
            "assert 'torch' not in sys.modules, 'torch imported by --help'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr
