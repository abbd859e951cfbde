"""The shipped demo corpus honours the corpus and qa.jsonl contracts and the promised proportions."""
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from workbench.corpus.qa import load_qa

DEMO = Path(__file__).resolve().parent.parent / "corpora" / "demo"
DOC_EXT = {".md", ".txt", ".rst", ".html", ".htm"}


@pytest.fixture(scope="module")
def items():
    return load_qa(DEMO / "qa.jsonl")


@pytest.fixture(scope="module")
def docs():
    return {p.relative_to(DEMO).as_posix(): p.read_text(encoding="utf-8")
            for p in DEMO.rglob("*") if p.suffix in DOC_EXT and p.name != "README.md"}


def test_documents_size_and_formats(docs):
    assert len(docs) >= 30
    assert sum(len(t.split()) for t in docs.values()) >= 15_000
    exts = Counter(Path(d).suffix for d in docs)
    assert exts[".md"] > len(docs) / 2 and exts[".txt"] >= 2 and exts[".html"] >= 2
    assert any(not t.isascii() for t in docs.values())
    html = [t for d, t in docs.items() if d.endswith(".html")]
    assert all("<nav" in t and "<script" in t for t in html)


def test_near_duplicate_present(docs):
    a, b = docs["policies/travel-policy-2025.md"], docs["archive/travel-policy-2025-draft.md"]
    wa, wb = set(a.split()), set(b.split())
    assert a != b and len(wa & wb) / len(wa | wb) > 0.9


def test_schema_and_unique_ids(items):
    assert len({q.id for q in items}) == len(items)
    for q in items:
        assert q.split in {"train", "eval"} and q.kind and q.fact_id
        assert q.answerable == bool(q.answers)


def test_answers_verbatim_in_their_docs(items, docs):
    for q in items:
        if q.answerable:
            assert q.doc in docs, q.id
            assert q.answers[0] in docs[q.doc], (q.id, q.answers[0], q.doc)


def test_counts(items):
    by_fact = defaultdict(list)
    for q in items:
        by_fact[q.fact_id].append(q)
    trained = [f for f, qs in by_fact.items() if any(q.split == "train" for q in qs)]
    assert len(trained) >= 80
    for f in trained:
        splits = Counter(q.split for q in by_fact[f])
        assert splits["train"] >= 2 and splits["eval"] >= 1, f
        assert all(q.kind == "paraphrase" for q in by_fact[f] if q.split == "eval")
    kinds = Counter(q.kind for q in items if q.split == "eval")
    assert kinds["unseen"] >= 20 and kinds["unanswerable"] >= 30 and kinds["multi-hop"] >= 3
    unseen_facts = {q.fact_id for q in items if q.kind == "unseen"}
    assert not unseen_facts & set(trained)
    assert all(not q.answerable for q in items if q.kind == "unanswerable")


def test_no_eval_question_in_train(items):
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    train = {norm(q.question) for q in items if q.split == "train"}
    assert not [q.id for q in items if q.split == "eval" and norm(q.question) in train]


def test_unanswerable_have_no_doc(items):
    assert all(q.doc is None for q in items if not q.answerable)
