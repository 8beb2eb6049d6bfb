"""The import rules of docs/ARCHITECTURE.md, read from the source (AST): a newcomer who adds an
import the wrong way round finds out here, not at the first import cycle."""

import ast
import importlib
import pkgutil
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _modules(folder: str):
    for p in sorted((ROOT / folder).rglob("*.py")):
        rel = p.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        package = ".".join(parts[:-1] if parts[-1] != "__init__" else parts[:-1])
        if parts[-1] == "__init__":
            package = ".".join(parts)
        yield p, package


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path, package in _modules(folder):
        for name in _imports(path, package):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_store_never_imports_the_layers_above_it():
    assert _violations("engine/store", ("engine.retrieval", "engine.check", "engine.encoder")) == []


def test_retrieval_does_not_import_the_checker():
    assert _violations("engine/retrieval", ("engine.check",)) == []


def test_engine_imports_none_of_its_users():
    assert _violations("engine", ("indexer", "training", "ui", "glb")) == []


def test_public_names_survive_importing_every_engine_module():
    # a subpackage named like a public function (engine.search) would replace it on import
    for mod in pkgutil.walk_packages(engine.__path__, "engine."):
        importlib.import_module(mod.name)
    assert callable(engine.search) and callable(engine.open) and callable(engine.load_encoder)
    assert isinstance(engine.Index, type)
