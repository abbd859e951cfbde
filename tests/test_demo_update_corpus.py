"""The shipped demo update folder and the general-ability probe honour the update contract and promised sizes."""
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "corpora" / "demo"
UPDATE = ROOT / "corpora" / "demo-update"
DATA = ROOT / "workbench" / "evaluation" / "data"
DOC_EXT = {".md", ".txt", ".rst", ".html", ".htm"}


def _docs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in root.rglob("*")
            if p.suffix in DOC_EXT and p.name != "README.md" and p.name != "removed.txt"}


@pytest.fixture(scope="module")
def base():
    return _docs(BASE)


@pytest.fixture(scope="module")
def update():
    return _docs(UPDATE)


@pytest.fixture(scope="module")
def removed():
    return [line.strip() for line in (UPDATE / "removed.txt").read_text(encoding="utf-8").splitlines()
            if line.strip()]


@pytest.fixture(scope="module")
def merged(base, update, removed):
    docs = {**base, **update}
    for rel in removed:
        docs.pop(rel)
    return docs


@pytest.fixture(scope="module")
def items():
    lines = (UPDATE / "qa.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_changed_new_and_removed_documents(base, update, removed):
    changed = [d for d in update if d in base]
    new = [d for d in update if d not in base]
    assert len(changed) >= 8 and len(new) >= 4
    assert all(update[d] != base[d] for d in changed)
    assert not (UPDATE / "README.md").exists()  # it would be ingested as a document
    assert 1 <= len(removed) <= 2 and len(set(removed)) == len(removed)
    assert all(r in base and r not in update for r in removed)


def test_schema_and_unique_ids(items):
    assert len({q["id"] for q in items}) == len(items)
    for q in items:
        assert set(q) <= {"id", "question", "answers", "answerable", "split", "doc", "fact_id", "kind",
                          "old_answers"}
        assert q["answerable"] is True and q["answers"] and all(isinstance(a, str) and a for a in q["answers"])
        assert q["split"] in {"train", "eval"} and q["kind"] in {"updated", "new"} and q["fact_id"]
        if q["kind"] == "updated":
            assert q["old_answers"] and all(isinstance(a, str) and a for a in q["old_answers"])
        else:
            assert "old_answers" not in q


def test_counts_and_wordings(items):
    by_fact = defaultdict(list)
    for q in items:
        by_fact[q["fact_id"]].append(q)
    kinds = Counter({q["kind"] for q in qs}.pop() for qs in by_fact.values())  # one kind per fact
    assert kinds["updated"] >= 30 and kinds["new"] >= 20
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    for fact, qs in by_fact.items():
        assert Counter(q["split"] for q in qs) == {"train": 2, "eval": 1}, fact
        assert len({q["doc"] for q in qs}) == 1 and len({tuple(q["answers"]) for q in qs}) == 1, fact
        assert len({norm(q["question"]) for q in qs}) == 3, fact  # the eval wording is not a train wording
    all_train = {norm(q["question"]) for q in items if q["split"] == "train"}
    assert not [q["id"] for q in items if q["split"] == "eval" and norm(q["question"]) in all_train]


def test_answers_in_updated_docs_old_answers_only_in_base(items, base, update, merged):
    for q in items:
        assert q["doc"] in merged, q["id"]
        assert q["doc"] in update, q["id"]  # a fact of the update lives in a changed or new document
        for a in q["answers"]:
            assert a in merged[q["doc"]], (q["id"], a)
        if q["kind"] == "updated":
            assert q["doc"] in base, q["id"]
            for old in q["old_answers"]:
                assert old in base[q["doc"]], (q["id"], old)
                assert old not in merged[q["doc"]], (q["id"], old)
            assert not set(q["answers"]) & set(q["old_answers"]), q["id"]
        else:
            assert q["doc"] not in base, q["id"]


def test_some_updated_facts_were_trained_in_the_demo(items):
    demo = [json.loads(line) for line in (BASE / "qa.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    trained = {(q["doc"], a) for q in demo if q["split"] == "train" for a in q["answers"]}
    known = {(q["doc"], a) for q in demo if q.get("answerable", True) for a in q["answers"]}
    updated = {q["fact_id"]: q for q in items if q["kind"] == "updated"}
    stale_trained = [f for f, q in updated.items() if any((q["doc"], a) in trained for a in q["old_answers"])]
    stale_known = [f for f, q in updated.items() if any((q["doc"], a) in known for a in q["old_answers"])]
    assert len(stale_trained) >= 10
    assert len(updated) * 0.4 <= len(stale_known) <= len(updated) * 0.8  # about half ask what the demo asked


def test_removed_documents_hold_no_update_fact(items, removed):
    assert not {q["doc"] for q in items} & set(removed)


def test_general_probe():
    lines = (DATA / "general_probe.jsonl").read_text(encoding="utf-8").splitlines()
    probe = [json.loads(line) for line in lines if line.strip()]
    assert len(probe) >= 100
    assert len({p["id"] for p in probe}) == len(probe)
    assert len({p["question"].strip().lower() for p in probe}) == len(probe)
    for p in probe:
        assert set(p) == {"id", "question", "answers"}
        assert p["question"].strip() and p["answers"] and all(isinstance(a, str) and a.strip() for a in p["answers"])


def test_general_text():
    text = (DATA / "general_text.txt").read_text(encoding="utf-8")
    assert len(text.split()) >= 1_000
    assert "Kestrelmark" not in text
