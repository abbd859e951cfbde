"""The one artifact catalogue: what is built, by name, under the one name rule; the newest run for a corpus."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.core import catalogue
from workbench.core.errors import WorkbenchError


def _artifact(root: Path, folder: str, name: str, info: dict, marker: str = "manifest.json") -> Path:
    path = root / folder / name
    path.mkdir(parents=True)
    (path / marker).write_text(json.dumps(info), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    _artifact(root, "indices", "demo", {"kind": "index", "corpus": "/c/demo"})
    _artifact(root, "indices", "_scratch-1", {"kind": "index"})  # the name rule allows a leading underscore
    _artifact(root, "indices", "a+b", {"kind": "index"})  # ...and no '+': never listed, never resolvable
    _artifact(root, "indices", ".demo.tmp-0123abcd", {"kind": "index"})  # a build in progress
    _artifact(root, "indices", "wrong-kind", {"kind": "adapter"})
    _artifact(root, "adapters", "demo-sft", {"kind": "adapter", "mode": "sft"})
    corpus = root / "corpora" / "demo"
    corpus.mkdir(parents=True)
    (corpus / "a.md").write_text("# A\n\ntext\n", encoding="utf-8")
    runs = [("demo-1", "2025-01-01T00:00:00", corpus), ("demo-2", "2025-03-01T00:00:00", corpus),
            ("other-1", "2025-06-01T00:00:00", root / "corpora" / "other")]
    for name, created, corpus_path in runs:
        _artifact(root, "runs", name, {"created": created, "corpus": str(corpus_path), "systems": {"rag": {}},
                                       "config": {"index": "demo" if name != "demo-1" else None}}, "summary.json")
    return root


def test_lists_only_built_artifacts_with_plain_names(project):
    assert catalogue.names("index") == ["_scratch-1", "demo"]
    assert catalogue.names("adapter") == ["demo-sft"]
    assert catalogue.names("run") == ["other-1", "demo-2", "demo-1"]  # newest first
    assert catalogue.names("corpus") == ["demo"]
    assert catalogue.resolve("index", "demo").path == project / "indices" / "demo"
    assert catalogue.resolve("adapter", "demo-sft").info["mode"] == "sft"


@pytest.mark.parametrize("kind,name,message", [
    ("index", "a+b", "invalid index name 'a+b'"),
    ("index", "../adapters/demo-sft", "invalid index name"),
    ("index", "wrong-kind", "no index 'wrong-kind' is built in this project (built: _scratch-1, demo)"),
    ("run", "nope", "no run 'nope' is built in this project"),
    ("model", "demo", "unknown artifact kind 'model'"),
])
def test_resolve_refuses_what_is_not_listed(project, kind, name, message):
    with pytest.raises(WorkbenchError) as e:
        catalogue.resolve(kind, name)
    assert message in str(e.value)


def test_newest_run_for_a_corpus(project):
    assert catalogue.newest_run().name == "other-1"
    assert catalogue.newest_run(project / "corpora" / "demo").name == "demo-2"
    assert catalogue.newest_run("demo").name == "demo-2"  # a corpus folder's name
    assert catalogue.newest_run("demo", lambda s: s["config"]["index"] is None).name == "demo-1"
    assert catalogue.newest_run("missing") is None


def test_empty_project(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    assert catalogue.is_empty_project() and catalogue.newest_run() is None and catalogue.names("run") == []
