"""Retrieval over an index: dense (FAISS), sparse (BM25) or hybrid (reciprocal-rank fusion), then an
optional cross-encoder reranker.

Hybrid is the default: BM25 catches rare identifiers and non-English terms an English embedder blurs,
the embedder catches paraphrases BM25 misses, and RRF needs no score calibration between the two. When the
embedder does not cover the corpus language (the embedded English MiniLM on a Portuguese corpus), its ranking
counts less in the fusion (``RetrieveConfig.dense_weight``, :data:`UNCOVERED_DENSE_WEIGHT`: measured, not
at all).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from workbench.core.config import RetrieveConfig
from workbench.core.errors import WorkbenchError
from workbench.core.hub import pick_device, quiet_hf_progress, resolve_model_path
from workbench.core.language import covers
from workbench.core.records import Hit
from workbench.retrieval.embed import Embedder
from workbench.retrieval.index import Index, dense_search, passage_text, sparse_search

UNCOVERED_DENSE_WEIGHT = 0.0
"""Fusion weight of the dense ranking (BM25's is 1) when the embedder is known not to cover the corpus
language: BM25 ranks, and dense hits only fill in below BM25's. Tuned with ``bench/language.py`` on the 200
train questions of a Portuguese corpus (squad-pt-dev) with the English MiniLM: answer_recall@1 / @5 with
weight 1: 0.505 / 0.785, 0.5: 0.580 / 0.815, 0.3: 0.635 / 0.835, 0.1: 0.720 / 0.840, 0: 0.755 / 0.845."""


def rrf_fuse(rankings: list[list[int]], rrf_k: int = 60,
             weights: list[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: ``score(d) = sum over rankings of w / (rrf_k + rank(d))`` (ranks from 1).

    Args:
        rankings: row ids, best first, one list per retriever.
        rrf_k: damping constant (60 in Cormack et al. 2009).
        weights: one weight per ranking (default: all 1).

    Returns:
        ``(row, score)`` best first; ties keep the order in which rows first appear.
    """
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, row in enumerate(ranking, 1):
            scores[row] = scores.get(row, 0.0) + w / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


class Retriever:
    """Finds passages for questions in one index.

    Args:
        index: a loaded :class:`~workbench.retrieval.index.Index`.
        cfg: mode, k, candidates, RRF constant, reranker, query length limit.
        embedder: query encoder; default: the index's own embedder (loaded on first dense search). One
            whose files or dimension differ from the index's is refused.
    """

    def __init__(self, index: Index, cfg: RetrieveConfig | None = None, embedder: Any = None):
        self.index = index
        self.cfg = cfg or RetrieveConfig()
        self._embedder = embedder
        self._checked = False
        self._reranker: Any = None
        self._lock = threading.Lock()

    # -- models (lazy) --

    @property
    def embedder(self) -> Any:
        """The query embedder, checked against the index once."""
        with self._lock:
            if self._embedder is None:
                name = self.index.manifest.get("embedder")
                if not name:
                    raise WorkbenchError(f"index {self.index.name!r} records no embedder",
                                         "pass an embedder or rebuild the index")
                self._embedder = Embedder(name)
            if not self._checked:
                self._check_embedder(self._embedder)
                self._checked = True
        return self._embedder

    def _check_embedder(self, embedder: Any) -> None:
        m = self.index.manifest
        want_fp, want_dim = m.get("embedder_fingerprint"), self.index.dim
        got_fp = embedder.fingerprint
        if (want_fp and got_fp != want_fp) or embedder.dim != want_dim:
            raise WorkbenchError(
                f"index {self.index.name!r} was built with embedder {m.get('embedder')!r} (dim {want_dim}, "
                f"files {want_fp}); the query embedder {embedder.name!r} is different (dim {embedder.dim}, "
                f"files {got_fp})",
                "query with the index's embedder, or rebuild the index with this one "
                "(`workbench index CORPUS_DIR --embedder NAME --rebuild`)")

    @property
    def reranker(self) -> Any:
        """The cross-encoder named by ``cfg.reranker`` (loaded once), or None."""
        if self.cfg.reranker is None:
            return None
        with self._lock:
            if self._reranker is None:
                from sentence_transformers import CrossEncoder


                path = resolve_model_path(self.cfg.reranker, "reranker")
                try:
                    with quiet_hf_progress():
                        self._reranker = CrossEncoder(str(path), device=pick_device("auto"), local_files_only=True)
                except Exception as e:  # noqa: BLE001 - a broken user model is a user error
                    raise WorkbenchError(f"reranker {self.cfg.reranker!r} failed to load: {e}",
                                         "pass a cross-encoder folder or id, or drop the reranker") from None
        return self._reranker

    @property
    def language(self) -> str:
        """The corpus language of the index (answering cleans replies with its stopwords)."""
        return self.index.language

    def dense_weight(self) -> float:
        """The dense ranking's fusion weight: ``cfg.dense_weight``, or by default 1 when the index's embedder
        covers its language (or is not known) and :data:`UNCOVERED_DENSE_WEIGHT` when it does not."""
        if self.cfg.dense_weight is not None:
            return self.cfg.dense_weight
        known = covers(str(self.index.manifest.get("embedder") or ""), self.index.language)
        return UNCOVERED_DENSE_WEIGHT if known is False else 1.0

    def warm_up(self) -> "Retriever":
        """Load the embedder (and reranker) now."""
        if self.cfg.mode != "sparse":
            _ = self.embedder
        _ = self.reranker
        return self

    # -- search --

    def check_query(self, query: str) -> str:
        """The query stripped, or a WorkbenchError for an empty or over-long one."""
        if not isinstance(query, str) or not query.strip():
            raise WorkbenchError("the query is empty", "type a question")
        q = query.strip()
        if len(q) > self.cfg.max_query_chars:
            raise WorkbenchError(
                f"the query is {len(q):,} characters long; the limit is {self.cfg.max_query_chars:,}",
                "shorten it: the embedder reads only its first few hundred tokens (or raise "
                "retrieve.max_query_chars)")
        return q

    def search(self, query: str, k: int | None = None, mode: str | None = None) -> list[Hit]:
        """Top-``k`` chunks for one query.

        Args:
            query: the question.
            k: how many hits (default ``cfg.k``).
            mode: dense, sparse or hybrid (default ``cfg.mode``).

        Returns:
            Hits best first with 1-based ranks; scores are cosine (dense), BM25 (sparse), RRF (hybrid)
            or the cross-encoder's (reranked).
        """
        return self.search_batch([query], k, mode)[0]

    def search_batch(self, queries: list[str], k: int | None = None, mode: str | None = None) -> list[list[Hit]]:
        """Top-``k`` chunks for each query (queries are embedded in one batch)."""
        mode = mode or self.cfg.mode
        if mode not in {"dense", "sparse", "hybrid"}:
            raise WorkbenchError(f"unknown retrieval mode {mode!r}", "use dense, sparse or hybrid")
        k = self.cfg.k if k is None else k
        if k < 1:
            raise WorkbenchError(f"k={k}", "ask for at least 1 passage")
        queries = [self.check_query(q) for q in queries]
        if not queries:
            return []
        k = min(k, len(self.index))
        n_cand = max(self.cfg.candidates, k)
        dense_ids = None
        weights = [self.dense_weight(), 1.0]
        if mode != "sparse":
            qv = self.embedder.encode(queries, role="query")  # (q, dim)
            dense_scores, dense_ids = dense_search(self.index, qv, n_cand)
        out = []
        for i, q in enumerate(queries):
            if mode == "dense":
                keep = dense_ids[i] >= 0
                ranked = list(zip(dense_ids[i][keep].tolist(), dense_scores[i][keep].tolist()))
            elif mode == "sparse":
                s, ids = sparse_search(self.index, q, n_cand)
                ranked = list(zip(ids.tolist(), s.tolist()))
            else:
                _, ids = sparse_search(self.index, q, n_cand)
                dense = [int(r) for r in dense_ids[i] if r >= 0]
                ranked = rrf_fuse([dense, ids.tolist()], self.cfg.rrf_k, weights)
            if self.cfg.reranker:
                ranked = self._rerank(q, ranked[:n_cand])
            out.append([Hit(self.index.chunks[row], float(score), rank)
                        for rank, (row, score) in enumerate(ranked[:k], 1)])
        return out

    def _rerank(self, query: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Reorder candidates by cross-encoder score (query, passage)."""
        if not ranked:
            return ranked
        rows = [row for row, _ in ranked]
        pairs = [(query, passage_text(self.index.chunks[r])) for r in rows]
        scores = np.asarray(self.reranker.predict(pairs, show_progress_bar=False), dtype=np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        return [(rows[j], float(scores[j])) for j in order]


def format_hits(hits: list[Hit], width: int = 300) -> str:
    """Hits as terminal text: rank, score, document > heading, chunk id, then the text (shortened)."""
    if not hits:
        return "no matching passages"
    lines = []
    for h in hits:
        c = h.chunk
        where = f"{c.doc} > {c.heading}" if c.heading else c.doc
        text = " ".join(c.text.split())
        lines.append(f"{h.rank}. {h.score:.4f}  {where}  [{c.id}]")
        lines.append(f"   {text if len(text) <= width else text[:width - 1] + '…'}")
    return "\n".join(lines)
