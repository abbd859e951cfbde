"""The package's layers, read from its imports (AST): who may import whom, no cycles, and in-function
imports only where the imported module loads a heavy library at import.

This table is the one statement of the layer rule (the README and the architecture page point here).
Each subpackage of ``workbench`` is one layer; left to right:

    core -> corpus -> retrieval -> answering -> training -> evaluation -> update -> inside -> serving -> faces

A stage imports only core and the stages to its left; faces (the CLI, with ``workbench run`` and
``doctor`` inside it, and the Streamlit app) import stages and never another face.

Run it alone with ``python -m pytest tests/test_layers.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"

LAYERS: dict[str, list[str]] = {
    "core": ["core"],
    "corpus": ["corpus"],
    "retrieval": ["retrieval"],
    "answering": ["answering"],
    "training": ["training"],
    "evaluation": ["evaluation"],
    "update": ["update"],
    "inside": ["inside"],
    "serving": ["serving"],
    "faces": ["cli", "app"],
}
"""Layer -> the subpackages in it."""
ORDER = list(LAYERS)
LEAVES = {"workbench.core.errors"}
"""Core modules that import nothing of the project at all."""
HEAVY = {"torch", "faiss", "spacy", "streamlit", "transformers", "peft", "sentence_transformers", "ragas",
         "datasets", "matplotlib", "accelerate", "trl", "tokenizers", "bm25s", "langchain_community"}
"""Libraries slow to import: imported inside functions, and modules importing them at top level may be
imported lazily in turn."""
LAZY_FACES = {"workbench.cli"}
"""Faces that import each command's stage when the command runs, so ``workbench --help`` stays fast
(``tests/test_cli_ingest.py`` holds it under 0.5 s of CPU)."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name if name and name != "workbench" else None


def _layer(module: str) -> str:
    first = module.split(".")[1] if "." in module else ""
    for layer, names in LAYERS.items():
        if first in names:
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def _in_type_checking(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def _imports(module: str) -> list[tuple[str, bool, int, bool]]:
    """(imported project module or external top-level package, at top level, line, is project)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    hidden = _in_type_checking(tree)
    top_nodes = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in hidden:
            continue
        top = id(node) in top_nodes
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod.startswith("workbench"):
                targets = {_resolve(f"{mod}.{a.name}") or _resolve(mod) for a in node.names}
                out += [(t, top, node.lineno, True) for t in targets if t]
            else:
                out.append((mod.split(".")[0], top, node.lineno, False))
        else:
            for a in node.names:
                if a.name.startswith("workbench"):
                    if _resolve(a.name):
                        out.append((_resolve(a.name), top, node.lineno, True))
                else:
                    out.append((a.name.split(".")[0], top, node.lineno, False))
    return out


IMPORTS = {m: _imports(m) for m in MODULES if m != "workbench"}


def _heavy_at_import() -> set[str]:
    heavy = {m for m, imps in IMPORTS.items() if any(top and not proj and t in HEAVY for t, top, _, proj in imps)}
    grew = True
    while grew:
        grew = False
        for m, imps in IMPORTS.items():
            if m not in heavy and any(top and proj and t in heavy for t, top, _, proj in imps):
                heavy.add(m)
                grew = True
    return heavy


def test_every_module_has_a_layer():
    for m in IMPORTS:
        _layer(m)


def test_stages_import_only_core_and_stages_to_their_left():
    bad = []
    for m, imps in IMPORTS.items():
        mine = ORDER.index(_layer(m))
        for t, _, line, proj in imps:
            if proj and ORDER.index(_layer(t)) > mine:
                bad.append(f"{m}:{line} imports {t} ({_layer(t)} is right of {_layer(m)})")
    assert not bad, "\n".join(bad)


def test_nothing_imports_a_face_and_faces_import_no_other_face():
    bad = [f"{m}:{line} imports {t}" for m, imps in IMPORTS.items()
           for t, _, line, proj in imps
           if proj and _layer(t) == "faces" and t.split(".")[1] != m.split(".")[1]]
    assert not bad, "\n".join(bad)


def test_core_leaves_import_nothing_of_the_project():
    bad = [f"{m}:{line} imports {t}" for m, imps in IMPORTS.items() if m in LEAVES
           for t, _, line, proj in imps if proj]
    assert not bad, "\n".join(bad)


def test_metrics_never_import_models_and_ingestion_never_imports_torch():
    reach: dict[str, set[str]] = {}

    def closure(m: str) -> set[str]:
        if m not in reach:
            reach[m] = set()
            for t, _, _, proj in IMPORTS[m]:
                reach[m] |= ({t} | closure(t)) if proj else {t}
        return reach[m]

    assert not closure("workbench.evaluation.metrics") & {"workbench.answering.models", "workbench.answering.generate", "torch", "transformers"}
    for m in IMPORTS:
        if _layer(m) == "corpus":
            assert "torch" not in closure(m), f"{m} reaches torch"


def test_no_import_cycles():
    graph = {m: {t for t, _, _, proj in imps if proj and t != m} for m, imps in IMPORTS.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_in_function_imports_only_of_modules_heavy_at_import():
    heavy = _heavy_at_import()
    bad = [f"{m}:{line} imports {t} inside a function: import it at the top (it loads no heavy library)"
           for m, imps in IMPORTS.items() if m not in LAZY_FACES
           for t, top, line, proj in imps if proj and not top and t not in heavy]
    assert not bad, "\n".join(bad)
