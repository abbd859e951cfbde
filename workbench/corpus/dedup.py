"""Duplicate documents: exact ones by a hash of the cleaned text, near ones by MinHash over word shingles.

The MinHash is the single-hash-function (bottom-k) variant: a document's sketch is the ``k`` smallest
distinct hash values of its word shingles, and the Jaccard similarity of two documents is estimated as
the share of the ``k`` smallest values of the union of both sketches that lie in both. One hash per
shingle (instead of one per shingle and permutation) keeps a 50 MB corpus at well under a second; the
estimate's standard error is about ``sqrt(J (1 - J) / k)`` (0.014 at J = 0.9, k = 256). Hashing is
seeded and deterministic, so a run flags the same pairs every time.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SHINGLE_WORDS = 3
SKETCH_SIZE = 256
# a hash value shared by more documents than this stops being indexed (boilerplate shingles in
# thousands of short documents would otherwise make candidate search quadratic)
MAX_POSTINGS = 2000
_BLOCK_CHARS = 1 << 20
_WORD = re.compile(r"\w+")


def text_hash(text: str) -> str:
    """Hash identifying a cleaned text exactly (exact-duplicate detection)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_word_cache: dict[str, int] = {}


def _word_hashes(words: list[str]) -> "np.ndarray":
    import numpy as np

    if len(_word_cache) > 1_000_000:
        _word_cache.clear()
    for w in set(words).difference(_word_cache):
        digest = hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        _word_cache[w] = int.from_bytes(digest, "little")
    return np.fromiter(map(_word_cache.__getitem__, words), dtype=np.uint64, count=len(words))


def _mix(x: "np.ndarray") -> "np.ndarray":
    """splitmix64 finaliser: spreads the combined shingle hash over all 64 bits (uint64, wraps)."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash(text: str, k: int = SKETCH_SIZE, shingle: int = SHINGLE_WORDS) -> "np.ndarray":
    """Bottom-``k`` MinHash sketch of the lower-cased word ``shingle``-grams of ``text``.

    The text is read in 1 MB blocks, so a 50 MB document never becomes a list of all its words.

    Args:
        text: the cleaned document.
        k: sketch size.
        shingle: words per shingle (a document with fewer words is one shingle).

    Returns:
        Sorted distinct uint64 values, at most ``k`` of them (empty for a text without words).
    """
    import numpy as np

    sketch = np.empty(0, dtype=np.uint64)
    carry: list[str] = []
    n_words = 0
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + _BLOCK_CHARS)
        while end < len(text) and not text[end].isspace():  # do not cut a word in two
            end += 1
        words = carry + _WORD.findall(text[pos:end].lower())
        n_words += len(words) - len(carry)
        pos = end
        if len(words) < shingle:
            carry = words
            continue
        w = _word_hashes(words)
        h = w[: len(w) - shingle + 1].copy()
        for j in range(1, shingle):  # polynomial combination of the shingle's word hashes
            h = h * np.uint64(0x9E3779B97F4A7C15) + w[j: len(w) - shingle + 1 + j]
        h = _mix(h)
        if len(h) > k:
            h = np.partition(h, k - 1)[:k]
        sketch = np.unique(np.concatenate([sketch, h]))[:k]
        carry = words[len(words) - shingle + 1:]
    if 0 < n_words < shingle:  # too short for one shingle: the whole text is the shingle
        w = _word_hashes(carry)
        h = w[:1].copy()
        for j in range(1, len(w)):
            h = h * np.uint64(0x9E3779B97F4A7C15) + w[j: j + 1]
        sketch = _mix(h)
    return sketch


def jaccard_estimate(a: "np.ndarray", b: "np.ndarray", k: int = SKETCH_SIZE) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two bottom-``k`` sketches."""
    import numpy as np

    if len(a) == 0 or len(b) == 0:
        return 0.0
    union = np.union1d(a, b)[:k]
    both = np.intersect1d(a, b, assume_unique=True)
    return float(np.isin(union, both, assume_unique=True).sum() / len(union))


class NearDuplicateIndex:
    """Finds, for each new document, the most similar earlier one at or above a Jaccard threshold.

    Candidates come from an inverted index over sketch values (near-duplicates share most of their
    sketch), so documents are never compared all against all.

    Args:
        threshold: estimated Jaccard similarity at or above which two documents are near-duplicates.
    """

    def __init__(self, threshold: float = 0.9, k: int = SKETCH_SIZE):
        self.threshold = threshold
        self.k = k
        self.names: list[str] = []
        self.sketches: list[np.ndarray] = []
        self.postings: dict[int, list[int]] = {}

    def add(self, name: str, sketch: "np.ndarray") -> tuple[str, float] | None:
        """Index a document; return ``(earlier document, estimated Jaccard)`` of its closest earlier
        near-duplicate, or None."""
        values = sketch.tolist()
        shared: Counter[int] = Counter()
        for v in values:
            shared.update(self.postings.get(v, ()))
        best: tuple[str, float] | None = None
        for i, n in shared.most_common():
            # J >= t implies about t * k shared sketch values; half of that is a safe floor
            if n < 0.5 * self.threshold * min(len(values), len(self.sketches[i])):
                break
            j = jaccard_estimate(sketch, self.sketches[i], self.k)
            if j >= self.threshold and (best is None or j > best[1]):
                best = (self.names[i], j)
        idx = len(self.names)
        self.names.append(name)
        self.sketches.append(sketch)
        for v in values:
            docs = self.postings.setdefault(v, [])
            if len(docs) < MAX_POSTINGS:
                docs.append(idx)
        return best
