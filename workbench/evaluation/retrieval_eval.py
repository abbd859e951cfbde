"""Retrieval metrics against gold questions: doc_recall@k, answer_recall@k, MRR (answerable items only).

- doc_recall@k: a chunk of the gold document is in the top k (items that name a ``doc``).
- answer_recall@k: a gold answer string occurs in a top-k chunk (SQuAD-normalised, on word boundaries).
- mrr: mean of 1/rank of the first *relevant* hit — one that holds a gold answer and, when the item
  names a doc, comes from that doc — and 0 when none is retrieved.
"""
from __future__ import annotations

from typing import Any

from workbench.core.records import Hit
from workbench.core.text import normalize_answer
from workbench.corpus.qa import QAItem


def _contains_answer(text: str, answers: list[str]) -> bool:
    hay = f" {normalize_answer(text)} "
    return any(f" {a} " in hay for a in (normalize_answer(x) for x in answers) if a)


def item_ranks(item: QAItem, hits: list[Hit]) -> dict[str, Any]:
    """1-based ranks of the first gold-doc hit, first answer-holding hit and first relevant hit (or None)."""
    doc_rank = answer_rank = relevant_rank = None
    for pos, hit in enumerate(hits, 1):
        in_doc = item.doc is not None and hit.chunk.doc == item.doc
        has_answer = _contains_answer(hit.chunk.text, item.answers)
        if in_doc and doc_rank is None:
            doc_rank = pos
        if has_answer and answer_rank is None:
            answer_rank = pos
        if has_answer and (item.doc is None or in_doc) and relevant_rank is None:
            relevant_rank = pos
    return {"id": item.id, "doc_rank": doc_rank, "answer_rank": answer_rank, "relevant_rank": relevant_rank,
            "rr": 1.0 / relevant_rank if relevant_rank else 0.0}


def retrieval_metrics(items: list[QAItem], hits: list[list[Hit]], ks: tuple[int, ...] = (1, 3, 5)) -> dict:
    """Retrieval quality of ``hits`` (one list per item, best first) against the gold items.

    Args:
        items: gold questions; unanswerable ones are skipped.
        hits: retrieved hits per item, aligned with ``items``.
        ks: cut-offs.

    Returns:
        ``{"doc_recall@k": float|None, "answer_recall@k": float|None, ..., "mrr": float|None, "n": int,
        "n_with_doc": int, "per_item": [...]}``; None where no item qualifies.
    """
    if len(items) != len(hits):
        raise ValueError(f"{len(items)} items but {len(hits)} hit lists")
    per = [item_ranks(q, h) for q, h in zip(items, hits) if q.answerable]
    with_doc = [p for p, q in zip(per, (q for q in items if q.answerable)) if q.doc is not None]

    def share(rows: list[dict], key: str, k: int) -> float | None:
        return sum(1 for r in rows if r[key] is not None and r[key] <= k) / len(rows) if rows else None

    out: dict[str, Any] = {}
    for k in ks:
        out[f"doc_recall@{k}"] = share(with_doc, "doc_rank", k)
        out[f"answer_recall@{k}"] = share(per, "answer_rank", k)
    out["mrr"] = sum(p["rr"] for p in per) / len(per) if per else None
    out["n"] = len(per)
    out["n_with_doc"] = len(with_doc)
    out["per_item"] = per
    return out
