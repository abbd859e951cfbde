"""Test doubles for the retrieval tests: a seeded hash-of-words embedder, chunks, filler sentences."""
from __future__ import annotations

import hashlib

import numpy as np

from workbench.core.records import Chunk
from workbench.retrieval.index import bm25_tokenize

WORDS = ("buoy battery anode seal grease calibration probe standard winter harbour mooring sensor firmware "
         "release travel policy expense laptop office kettle pump valve pressure filter cable antenna").split()


class StubEmbedder:
    """Deterministic bag-of-words embedder: each word maps to a seeded Gaussian vector; a text is the
    normalised sum. Texts sharing words are close, so dense search behaves like a lexical matcher.

    Args:
        dim: vector size.
        skip_digits: ignore tokens containing digits (so part numbers are invisible to dense search,
            like an English embedder blurring identifiers).
        name: recorded in the manifest; also seeds the fingerprint.
    """

    def __init__(self, dim: int = 64, skip_digits: bool = False, name: str = "stub-hash"):
        self.dim = dim
        self.skip_digits = skip_digits
        self.name = self.stored_name = name
        self.fingerprint = hashlib.sha256(f"{name}/{dim}/{skip_digits}".encode()).hexdigest()[:16]
        self.encoded: list[str] = []  # every text passed to encode, to check incremental builds

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.name}:{w}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def _vec(self, text: str) -> np.ndarray:
        toks = [t for t in bm25_tokenize(text) if not (self.skip_digits and any(ch.isdigit() for ch in t))]
        v = sum((self._word(t) for t in toks), np.zeros(self.dim, np.float32))
        n = np.linalg.norm(v)
        return v / n if n > 0 else np.full(self.dim, 1 / np.sqrt(self.dim), np.float32)

    def iter_encode(self, texts, progress=False, role="passage", desc=""):
        texts = list(texts)
        self.encoded.extend(texts)
        for start in range(0, len(texts), 8):
            idx = np.arange(start, min(start + 8, len(texts)))
            yield idx, np.stack([self._vec(texts[i]) for i in idx])

    def encode(self, texts, progress=False, role="passage"):
        out = np.zeros((len(texts), self.dim), np.float32)
        for idx, vecs in self.iter_encode(texts, progress, role):
            out[idx] = vecs
        return out


def make_chunks(texts: list[str], doc_of=lambda i: f"doc{i}.md") -> list[Chunk]:
    """One chunk per text, each in its own document unless ``doc_of`` says otherwise."""
    out, counts = [], {}
    for i, t in enumerate(texts):
        doc = doc_of(i)
        n = counts[doc] = counts.get(doc, -1) + 1
        out.append(Chunk(id=f"{doc}#{n}", text=t, doc=doc, span=(0, len(t)), heading="", n_tokens=len(t.split())))
    return out


def filler_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of common words (background chunks)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) + f" note {i}." for i in range(n)]
