"""One direction of dependencies (issue 15): a module imports only from its own layer or below.

The layer table is here and only here; README's layout table describes it. Every import of a
project module counts, at module level or inside a function. Imports inside functions are
allowed only in the CLI (start-up time) and for the optional heavy dependencies in ``LAZY``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lmuformer", "export", "backends")

# bottom to top: (layer, module prefixes); a module belongs to the layer of its longest prefix
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("lmuformer", "lmuformer.functional", "lmuformer.model", "lmuformer.data",
              "lmuformer.checkpoint", "lmuformer.training", "lmuformer.files", "lmuformer.errors",
              "lmuformer.validation", "lmuformer.reference_import")),
    ("export", ("export",)),
    ("backends", ("backends",)),
    ("analysis", ("lmuformer.analysis",)),
    ("jobs", ("lmuformer.jobs",)),
    ("cli", ("lmuformer.cli",)),
)

# project imports inside functions outside the CLI: (importer, imported) -> the heavy optional dependency
LAZY = {
    ("lmuformer.functional.lif", "lmuformer.functional.lif_triton"): "triton (CUDA only)",
    ("backends.lava.backend", "backends.lava.lowering"): "lava",
    ("backends.lava.backend", "backends.lava.processes"): "lava",
}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the longest matching prefix; None for a module outside the table."""
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    return found


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every project import of a file; ``from a
    import b`` names ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(), str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    known = project_modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and (name, node.lineno, id(node) in nested) not in out:
                out.append((name, node.lineno, id(node) in nested))
    return out


def test_every_module_has_a_layer():
    missing = [m for m in project_modules() if layer_of(m) is None]
    assert not missing, f"modules outside the layer table: {missing}"


def test_no_upward_import():
    upward = []
    for module, path in project_modules().items():
        mine = layer_of(module)
        for name, line, _ in imports(module, path):
            theirs = layer_of(name)
            if theirs is not None and mine is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {module} ({LAYERS[mine][0]}) imports "
                              f"{name} ({LAYERS[theirs][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_lazy_imports_only_for_heavy_optional_dependencies():
    hidden = []
    cli = LAYERS.index(next(entry for entry in LAYERS if entry[0] == "cli"))
    for module, path in project_modules().items():
        if layer_of(module) == cli:
            continue
        for name, line, inside in imports(module, path):
            if inside and (module, name) not in LAZY:
                hidden.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name} inside a function")
    assert not hidden, "imports hidden in functions:\n" + "\n".join(hidden)


def test_the_walker_sees_upward_and_nested_imports(tmp_path):
    """The checks above can fail: a nested upward import is found and classified."""
    src = tmp_path / "m.py"
    src.write_text("import export.io\n\ndef f():\n    from lmuformer.jobs import simulate\n")
    found = imports("lmuformer.model.m", src)
    assert ("export.io", 1, False) in found
    assert ("lmuformer.jobs.simulate", 4, True) in found
    assert layer_of("lmuformer.model.m") < layer_of("export.io") < layer_of("lmuformer.jobs.simulate")
    assert layer_of("lmuformer.cli.map") == len(LAYERS) - 1 and layer_of("numpy") is None


def test_tests_and_benchmarks_share_helpers_not_test_modules():
    """A test module imports no other test module (shared code: tests/conftest.py, graphs.py,
    helpers.py); a benchmark imports nothing from tests/."""
    bad = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    into_tests = folder == "benchmarks" and name.split(".")[0] == "tests"
                    if into_tests or name.startswith("tests.test_"):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not bad, "\n".join(bad)
