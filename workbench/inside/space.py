"""Semantic space: where the embedder puts chunks, queries and phrases.

The embedder maps a text to a unit vector; texts that mean similar things get vectors with a high dot
product (cosine similarity), which is what dense retrieval ranks by. Here the index's chunk vectors and a
query are projected to 2-D (PCA: the two directions in which the chunks vary most; UMAP when the
``umap-learn`` package is installed), a few typed sentences are compared pairwise, and phrase vectors are
combined ("A − B + C") and looked up among the chunks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.records import Chunk, Hit
from workbench.inside.prompt import check_text
from workbench.inside.text import format_table

MAX_SENTENCES = 20


def umap_available() -> bool:
    """Whether UMAP can be offered (the ``umap-learn`` package imports)."""
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def project_2d(vectors: np.ndarray, extra: np.ndarray | None = None, method: str = "pca", seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Project ``vectors`` to 2-D, fitted on them; ``extra`` rows (e.g. a query) go through the same map.

    PCA is exact and deterministic (each axis's sign fixed so its largest loading is positive); UMAP is
    seeded with ``seed``.

    Args:
        vectors: ``(n, dim)``, n >= 2.
        extra: ``(m, dim)`` or None.
        method: "pca" or "umap".

    Returns:
        (``(n, 2)`` coordinates, ``(m, 2)`` coordinates of ``extra`` or None, the share of variance the two
        PCA axes keep (None for UMAP)).
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise WorkbenchError("a projection needs at least two vectors", "index more text")
    if method == "umap":
        if not umap_available():
            raise WorkbenchError("UMAP is not installed", "pip install umap-learn, or use pca")
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1))
        coords = reducer.fit_transform(x)
        return coords, (reducer.transform(np.asarray(extra, dtype=np.float64)) if extra is not None else None), None
    if method != "pca":
        raise WorkbenchError(f"unknown projection {method!r}", "use pca or umap")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2]                                                    # (2, dim)
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    if len(axes) < 2:  # rank-1 data: a flat second axis
        axes = np.vstack([axes, np.zeros_like(axes)])
    kept = float((s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12))
    project = lambda v: (np.asarray(v, dtype=np.float64) - mean) @ axes.T  # noqa: E731
    return project(x), (project(extra) if extra is not None else None), kept


@dataclass
class SpaceMap:
    """Chunks and a query in 2-D.

    Attributes:
        chunks: the chunks drawn (all, or a seeded sample that always holds the neighbours).
        coords: ``(len(chunks), 2)``.
        query: the query text; query_xy: its ``(2,)`` position.
        neighbours: the query's nearest chunks by cosine, best first (``Hit.score`` is the cosine).
        method: "pca" or "umap"; variance_kept: share of variance on the PCA plane.
        notes: e.g. the chunks were sampled.
    """

    chunks: list[Chunk]
    coords: np.ndarray
    query: str
    query_xy: np.ndarray
    neighbours: list[Hit]
    method: str
    variance_kept: float | None = None
    notes: list[str] = field(default_factory=list)


def _nearest_rows(index: Any, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``k`` chunk vectors closest to a unit ``vector`` (exact cosine), and their cosines."""
    scores = np.asarray(index.embeddings, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)  # (n,)
    best = np.argsort(-scores, kind="stable")[:k]
    return best, scores[best]


def nearest_chunks(index: Any, vector: np.ndarray, k: int) -> list[Hit]:
    """The ``k`` chunks of ``index`` closest to a unit ``vector`` (cosine, exact), best first."""
    rows, scores = _nearest_rows(index, vector, k)
    return [Hit(index.chunks[i], float(sc), r) for r, (i, sc) in enumerate(zip(rows, scores), 1)]


def semantic_map(index: Any, embedder: Any, query: str, method: str = "pca", k: int = 5,
                 max_points: int = 2000, seed: int = 0) -> SpaceMap:
    """The index's chunks and ``query`` projected to 2-D, with the query's ``k`` nearest chunks.

    Args:
        index: a loaded index (its embeddings are the chunk vectors).
        embedder: the index's embedder (encodes the query as a query).
        max_points: above this many chunks, draw a sample of this size with ``seed`` (neighbours kept).
    """
    check_text(query, "query")
    if len(index) < 2:
        raise WorkbenchError(f"index {index.name!r} has fewer than two chunks", "index more text")
    q = embedder.encode([query], role="query")[0]
    near, scores = _nearest_rows(index, q, k)
    hits = [Hit(index.chunks[i], float(sc), r) for r, (i, sc) in enumerate(zip(near, scores), 1)]
    rows = np.arange(len(index))
    notes = []
    if len(rows) > max_points:
        rng = np.random.default_rng(seed)
        rest = rng.choice(np.setdiff1d(rows, near), size=max(0, max_points - len(near)), replace=False)
        rows = np.sort(np.concatenate([near, rest]).astype(int))
        notes.append(f"{max_points} of {len(index)} chunks drawn (seed {seed}); the neighbours are always shown")
    coords, qxy, kept = project_2d(np.asarray(index.embeddings)[rows], q[None], method, seed)
    return SpaceMap([index.chunks[i] for i in rows], coords, query, qxy[0], hits, method, kept, notes)


def embed_sentences(embedder: Any, sentences: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Non-empty sentences (2 to ``MAX_SENTENCES``) and their unit vectors."""
    kept = [s.strip() for s in sentences if s and s.strip()]
    if not 2 <= len(kept) <= MAX_SENTENCES:
        raise WorkbenchError(f"{len(kept)} sentences given", f"type 2 to {MAX_SENTENCES} non-empty sentences")
    for s in kept:
        check_text(s, "sentence")
    return kept, embedder.encode(kept, role="passage")


def similarity_matrix(embedder: Any, sentences: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Cosine similarity of every pair of sentences: ``(n, n)``, 1 on the diagonal, symmetric."""
    kept, vecs = embed_sentences(embedder, sentences)
    sim = vecs.astype(np.float64) @ vecs.T.astype(np.float64)
    return kept, sim


def vector_arithmetic(index: Any, embedder: Any, a: str, b: str, c: str, k: int = 5
                      ) -> tuple[list[Hit], dict[str, float]]:
    """Chunks nearest to ``e(a) - e(b) + e(c)`` (renormalised), and the result's cosine to each phrase.

    Returns:
        (hits best first, ``{phrase: cosine}`` for a, b and c).
    """
    for phrase in (a, b, c):
        check_text(phrase, "phrase")
    va, vb, vc = embedder.encode([a, b, c], role="query")
    v = va - vb + vc
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        raise WorkbenchError("A − B + C is the zero vector", "use different phrases")
    v = v / norm
    return nearest_chunks(index, v, k), {a: float(v @ va), b: float(v @ vb), c: float(v @ vc)}


def format_map(m: SpaceMap) -> str:
    """Terminal view: the query's position and its neighbours' (with cosine and document)."""
    where = f" ({100 * m.variance_kept:.0f}% of the variance kept)" if m.variance_kept is not None else ""
    out = [f"{len(m.chunks)} chunks projected with {m.method.upper()}{where}"] + [f"note: {n}" for n in m.notes]
    pos = {c.id: xy for c, xy in zip(m.chunks, m.coords)}
    rows = [("query", "", f"{m.query_xy[0]:.3f}", f"{m.query_xy[1]:.3f}", m.query[:50])]
    rows += [(h.rank, f"{h.score:.3f}", f"{pos[h.chunk.id][0]:.3f}", f"{pos[h.chunk.id][1]:.3f}",
              f"{h.chunk.doc} · {' '.join(h.chunk.text.split())[:40]}") for h in m.neighbours]
    out.append(format_table(["", "cosine", "x", "y", "text"], rows, right=(1, 2, 3)))
    return "\n".join(out)


def format_similarity(sentences: list[str], sim: np.ndarray) -> str:
    """Terminal view: the cosine-similarity matrix with numbered sentences."""
    out = [f"{i}. {s}" for i, s in enumerate(sentences, 1)]
    rows = [[i] + [f"{v:.3f}" for v in row] for i, row in enumerate(sim, 1)]
    out.append(format_table([""] + [str(i) for i in range(1, len(sentences) + 1)], rows,
                            right=range(len(sentences) + 1)))
    return "\n".join(out)


def format_arithmetic(a: str, b: str, c: str, hits: list[Hit], cosines: dict[str, float]) -> str:
    """Terminal view: the result's cosine to each phrase, and the nearest chunks."""
    out = [f"{a!r} - {b!r} + {c!r}: cosine to " + ", ".join(f"{p!r} {v:.3f}" for p, v in cosines.items())]
    rows = [(h.rank, f"{h.score:.3f}", h.chunk.doc, " ".join(h.chunk.text.split())[:60]) for h in hits]
    out.append(format_table(["rank", "cosine", "document", "text"], rows, right=(0, 1)))
    return "\n".join(out)
