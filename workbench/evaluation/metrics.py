"""Answer-quality metrics and their uncertainty: small pure functions, the same for every system.

Text metrics follow SQuAD: both sides are normalised (case, punctuation, articles, whitespace) and the
best score over the acceptable gold answers counts. ``bootstrap_ci`` gives a percentile interval of a
mean over questions; ``paired_test`` says whether two systems' per-question scores differ by more than
chance (sign-flip permutation test, exact when few questions differ).
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Callable, Sequence

from workbench.core.text import is_abstention as default_is_abstention
from workbench.core.text import normalize_answer


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _best(pred: str, golds: Sequence[str], fn: Callable[[str, str], float]) -> float:
    """Highest score of ``pred`` against any gold answer (0 when there is none)."""
    return max((fn(pred, g) for g in golds), default=0.0)


def exact_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0."""
    p = normalize_answer(pred)
    return _best(pred, golds, lambda _, g: float(p == normalize_answer(g)))


def _overlap_f(pred: str, gold: str, overlap: Callable[[list[str], list[str]], int]) -> float:
    """F-measure of normalised token lists, given how many tokens they share (bag or subsequence)."""
    p, g = _tokens(pred), _tokens(gold)
    if not p or not g:
        return float(p == g)
    n = overlap(p, g)
    if n == 0:
        return 0.0
    precision, recall = n / len(p), n / len(g)
    return 2 * precision * recall / (precision + recall)


def _bag_overlap(p: list[str], g: list[str]) -> int:
    return sum((Counter(p) & Counter(g)).values())


def token_f1(pred: str, golds: Sequence[str]) -> float:
    """SQuAD token-overlap F1 (bag of normalised tokens), best over the gold answers."""
    return _best(pred, golds, lambda p, g: _overlap_f(p, g, _bag_overlap))


def contains(pred: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold answer appears as whole tokens inside the normalised prediction.

    A looser measure than EM for small models that answer in a sentence ("It weighs 42 kg.").
    """
    p = f" {normalize_answer(pred)} "

    def one(_: str, g: str) -> float:
        g = normalize_answer(g)
        return float(bool(g) and f" {g} " in p)

    return _best(pred, golds, one)


RIGHT_F1 = 0.5
"""The one right-answer rule: an answer counts as right (holds a gold value) when it contains one, or its token F1 with one is at least this."""


def match(pred: str, golds: Sequence[str]) -> float:
    """How well ``pred`` gives one of ``golds``: 1 when it contains one, else the best token F1."""
    return max(contains(pred, golds), token_f1(pred, golds)) if golds else 0.0


def is_right(pred: str, golds: Sequence[str]) -> bool:
    """Whether an answer gives a gold value (contains it, or token F1 >= ``RIGHT_F1``)."""
    return match(pred, golds) >= RIGHT_F1


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) dynamic programme)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, golds: Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common token subsequence) on normalised tokens, best over golds."""
    return _best(pred, golds, lambda p, g: _overlap_f(p, g, _lcs))


ANSWER_METRICS = ("em", "f1", "contains", "rouge_l")


def score_answers(predictions: Sequence[str], golds: Sequence[Sequence[str]],
                  answerable: Sequence[bool] | None = None,
                  is_abstention: Callable[[str], bool] | None = None) -> dict:
    """Score predictions against gold answers: one code path for every system.

    Args:
        predictions: one answer text per question.
        golds: the acceptable answers per question (empty for unanswerable ones).
        answerable: per question; defaults to "has gold answers".
        is_abstention: decides whether a prediction declines to answer; defaults to
            ``workbench.core.text.is_abstention`` (the same rule the prompt asks the model to follow).

    Returns:
        ``{"score": {...}, "per_item": [...]}``. ``score`` holds the means of em, f1, contains and rouge_l
        over answerable questions (None when there are none), ``abstain_unanswerable`` (share of
        unanswerable questions declined; None when there are none), ``abstain_answerable`` (share of
        answerable questions wrongly declined) and the two counts. ``per_item`` holds, per question,
        ``abstained`` and, for answerable questions, the four metric values (None otherwise).
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answer lists")
    answerable = [bool(g) for g in golds] if answerable is None else list(answerable)
    abstains = is_abstention or default_is_abstention
    per_item = []
    for pred, gold, ok in zip(predictions, golds, answerable):
        row = {"abstained": bool(abstains(pred))}
        if ok:
            row.update(em=exact_match(pred, gold), f1=token_f1(pred, gold), contains=contains(pred, gold),
                       rouge_l=rouge_l(pred, gold))
        else:
            row.update({m: None for m in ANSWER_METRICS})
        per_item.append(row)
    ans = [r for r, ok in zip(per_item, answerable) if ok]
    una = [r for r, ok in zip(per_item, answerable) if not ok]
    score = {m: mean([r[m] for r in ans]) for m in ANSWER_METRICS}
    score["abstain_unanswerable"] = mean([float(r["abstained"]) for r in una])
    score["abstain_answerable"] = mean([float(r["abstained"]) for r in ans])
    score["n_answerable"], score["n_unanswerable"] = len(ans), len(una)
    return {"score": score, "per_item": per_item}


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, or None for an empty sequence (never NaN)."""
    return sum(values) / len(values) if len(values) else None


def bootstrap_ci(values: Sequence[float], n_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling questions with replacement.

    Args:
        values: one score per question.
        n_resamples: bootstrap replicates.
        seed: RNG seed (the interval is reproducible).
        confidence: interval mass, e.g. 0.95.

    Returns:
        ``(lo, hi)``, or None when ``values`` is empty.
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)  # (n_resamples,)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


EXACT_LIMIT = 16
"""Up to this many differing pairs, the sign-flip test enumerates all 2**m sign patterns (exact p)."""


def paired_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, seed: int = 0,
                confidence: float = 0.95) -> dict:
    """Is system A's mean score different from B's on the same questions?

    Two-sided sign-flip permutation test on the per-question differences: under the null hypothesis
    each difference is as likely to have either sign. Exact when at most ``EXACT_LIMIT`` questions
    differ; otherwise Monte-Carlo with the +1 correction (so p is never 0). Also a paired bootstrap
    interval of the mean difference.

    Args:
        a: per-question scores of system A.
        b: per-question scores of system B, same questions in the same order.
        n_resamples: Monte-Carlo permutations and bootstrap replicates.
        seed: RNG seed.
        confidence: mass of the interval of the difference.

    Returns:
        ``{"delta": mean(a) - mean(b), "p_value": float, "ci95": [lo, hi], "n": int, "exact": bool}``;
        with no questions, delta and ci95 are None and p_value is 1.0.
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return {"delta": None, "p_value": 1.0, "ci95": None, "n": 0, "exact": True}
    observed = abs(d.sum())
    nz = d[d != 0]  # zero differences are unchanged by a sign flip
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if nz.size <= EXACT_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=nz.size)))  # (2**m, m)
        sums = np.abs(signs @ nz) if nz.size else np.zeros(1)
        p = float(np.mean(sums >= observed - tol))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(n_resamples, nz.size))
        hits = int(np.sum(np.abs(signs @ nz) >= observed - tol))
        p = (hits + 1) / (n_resamples + 1)
        exact = False
    ci = bootstrap_ci(d, n_resamples=min(n_resamples, 2000), seed=seed, confidence=confidence)
    return {"delta": float(d.mean()), "p_value": min(1.0, p), "ci95": list(ci), "n": int(d.size),
            "exact": exact}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval of a rate ``k / n`` (95% by default); None when ``n`` is 0.

    Unlike a bootstrap of the questions, it is not degenerate at 0 or n: 0 declines out of 36 gives
    [0, 0.096], not [0, 0].
    """
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): the i-th smallest of m is multiplied by
    ``m - i`` (i from 0), made non-decreasing in that order, and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
