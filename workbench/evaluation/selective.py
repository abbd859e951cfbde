"""Selective question answering: how well a system knows when not to answer (pure functions).

A system *covers* a question when it answers it rather than declining. An answer is *right* by the one
right-answer rule (``workbench.evaluation.metrics.is_right``: its question is answerable and the answer holds a
gold value); any answer to an unanswerable question is wrong. Following Kamath, Jia & Liang (ACL 2020),
answers are ranked by confidence: covering the most confident first traces a risk–coverage curve (risk: the
share of covered answers that are wrong), and its area (AURC, lower is better) says how well the confidence
orders right answers before wrong ones. Brier score and expected calibration error (Guo et al., ICML 2017)
say whether the confidence is a probability.
"""
from __future__ import annotations

import math
from typing import Sequence

from workbench.evaluation.metrics import mean, wilson

COVERAGES = (0.5, 0.8)
"""Selective figures are reported when each system answers this share of the questions, its most confident."""
ECE_BINS = 10


def risk_coverage(confidence: Sequence[float], right: Sequence[bool],
                  covered: Sequence[bool]) -> tuple[list[float], list[float]]:
    """The risk–coverage curve: cover the answers most confident first (only those in ``covered``: a
    system's own declines are never covered); at each step, coverage = covered / all questions and risk =
    wrong / covered. Ties keep question order."""
    n = len(confidence)
    order = sorted((i for i in range(n) if covered[i]), key=lambda i: -confidence[i])
    cov, risk, wrong = [], [], 0
    for j, i in enumerate(order, 1):
        wrong += not right[i]
        cov.append(j / n)
        risk.append(wrong / j)
    return cov, risk


def aurc(confidence: Sequence[float], right: Sequence[bool], covered: Sequence[bool]) -> float | None:
    """Area under the risk–coverage curve: the mean risk over its steps (None when nothing is covered).

    Answering in a random order has an expected AURC equal to the covered answers' error rate
    (``random_aurc``): every prefix of a random order has that expected risk."""
    _, risk = risk_coverage(confidence, right, covered)
    return mean(risk)


def random_aurc(right: Sequence[bool], covered: Sequence[bool]) -> float | None:
    """Expected AURC of a random order: the error rate of the covered answers."""
    return mean([float(not c) for c, v in zip(right, covered) if v])


def _resamples(n: int, n_boot: int, seed: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n)).tolist() if n else []


def aurc_gap_interval(confidence: Sequence[float], right: Sequence[bool], covered: Sequence[bool],
                      n_boot: int = 1000, seed: int = 0) -> dict | None:
    """AURC and its random-order value with 95% bootstrap intervals over questions, and the interval of their
    difference (AURC minus random: below 0 means the confidence ranks right answers first)."""
    base = aurc(confidence, right, covered)
    if base is None:
        return None
    vals, gaps = [], []
    for idx in _resamples(len(confidence), n_boot, seed):
        c, r, v = [confidence[i] for i in idx], [right[i] for i in idx], [covered[i] for i in idx]
        a, ra = aurc(c, r, v), random_aurc(r, v)
        if a is not None and ra is not None:
            vals.append(a)
            gaps.append(a - ra)
    return {"aurc": base, "aurc_random": random_aurc(right, covered),
            "aurc_ci95": _percentiles(vals), "gap_ci95": _percentiles(gaps)}


def paired_aurc(a: tuple[Sequence[float], Sequence[bool], Sequence[bool]],
                b: tuple[Sequence[float], Sequence[bool], Sequence[bool]], n_boot: int = 1000,
                seed: int = 0) -> dict | None:
    """Paired bootstrap of AURC(a) - AURC(b) over the same resampled questions.

    Args:
        a, b: each system's ``(confidence, right, covered)`` on the same questions.

    Returns:
        ``{"delta", "ci95", "p_value"}`` (two-sided bootstrap p: twice the smaller share of resamples on
        either side of 0), or None when either system covers nothing.
    """
    da, db = aurc(*a), aurc(*b)
    if da is None or db is None:
        return None
    deltas = []
    for idx in _resamples(len(a[0]), n_boot, seed):
        x = aurc(*([s[i] for i in idx] for s in a))
        y = aurc(*([s[i] for i in idx] for s in b))
        if x is not None and y is not None:
            deltas.append(x - y)
    if not deltas:
        return {"delta": da - db, "ci95": None, "p_value": 1.0}
    below = sum(d <= 0 for d in deltas) / len(deltas)
    above = sum(d >= 0 for d in deltas) / len(deltas)
    return {"delta": da - db, "ci95": _percentiles(deltas), "p_value": min(1.0, 2 * min(below, above))}


def _percentiles(values: Sequence[float]) -> list[float] | None:
    if not values:
        return None
    import numpy as np

    lo, hi = np.quantile(np.asarray(values, dtype=float), [0.025, 0.975])
    return [float(lo), float(hi)]


def at_coverage(confidence: Sequence[float], right: Sequence[bool], score: Sequence[float],
                covered: Sequence[bool], coverage: float) -> dict | None:
    """Answer only the ``coverage`` share of all questions that the system is most confident about.

    Args:
        confidence: per question.
        right: per question, whether the answer is right.
        score: per question, the answer's F1 (0 for an unanswerable question answered).
        covered: per question, whether the system answered at all (its own declines cannot be answered).
        coverage: share of questions to answer.

    Returns:
        ``{"f1": mean F1 of the answered, "wrong_rate": share of them wrong, "n": how many}``, or None when
        the system's own declines leave fewer questions than that.
    """
    n = math.ceil(coverage * len(confidence) - 1e-9)
    order = sorted((i for i in range(len(confidence)) if covered[i]), key=lambda i: -confidence[i])
    if n == 0 or len(order) < n:
        return None
    kept = order[:n]
    return {"f1": mean([score[i] for i in kept]), "wrong_rate": mean([float(not right[i]) for i in kept]), "n": n}


def brier(confidence: Sequence[float], right: Sequence[bool]) -> float | None:
    """Brier score: mean squared difference between the confidence and whether the answer is right."""
    return mean([(c - float(r)) ** 2 for c, r in zip(confidence, right)])


def reliability(confidence: Sequence[float], right: Sequence[bool], bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins (the last one closed): per non-empty bin its range, count, mean
    confidence and share right (the points of a reliability diagram)."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(confidence):
        groups.setdefault(min(bins - 1, int(c * bins)), []).append(i)
    return [{"lo": b / bins, "hi": (b + 1) / bins, "n": len(idx),
             "confidence": mean([confidence[i] for i in idx]), "accuracy": mean([float(right[i]) for i in idx])}
            for b, idx in sorted(groups.items())]


def ece(confidence: Sequence[float], right: Sequence[bool], bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy over the
    ``reliability`` bins."""
    n = len(confidence)
    if not n:
        return None
    return sum(b["n"] / n * abs(b["confidence"] - b["accuracy"]) for b in reliability(confidence, right, bins))


def own_declines(answerable: Sequence[bool], declined: Sequence[bool]) -> dict:
    """How a system's own "I don't know" falls: the share of unanswerable questions declined (NoAns
    accuracy), the share of answerable ones declined, both with Wilson intervals, and their difference
    (``discrimination``: 1 declines exactly the unanswerable ones, 0 cannot tell them apart, e.g. declining
    everything or nothing; negative declines answerable questions more often)."""
    n_ans = sum(answerable)
    n_una = len(answerable) - n_ans
    k_una = sum(d for d, a in zip(declined, answerable) if not a)
    k_ans = sum(d for d, a in zip(declined, answerable) if a)
    no_ans = k_una / n_una if n_una else None
    ans = k_ans / n_ans if n_ans else None
    return {"no_ans_acc": no_ans, "no_ans_ci95": _ci(wilson(k_una, n_una)),
            "answerable_declined": ans, "answerable_declined_ci95": _ci(wilson(k_ans, n_ans)),
            "discrimination": None if no_ans is None or ans is None else no_ans - ans,
            "n_answerable": n_ans, "n_unanswerable": n_una}


def discrimination_scores(answerable: Sequence[bool], declined: Sequence[bool]) -> list[float]:
    """Per question, a score whose mean is ``own_declines``' discrimination (for paired tests): a declined
    unanswerable question adds 1 / n_unanswerable, a declined answerable one subtracts 1 / n_answerable
    (both scaled by the number of questions)."""
    n = len(answerable)
    n_ans = sum(answerable)
    n_una = n - n_ans
    return [(-n / n_ans if a else n / n_una) * float(d) if (n_ans and n_una) else 0.0
            for a, d in zip(answerable, declined)]


def choose_threshold(confidence: Sequence[float], right: Sequence[bool], answerable: Sequence[bool],
                     covered: Sequence[bool], target: str, max_answerable_declined: float = 0.1,
                     min_precision: float = 0.8, weights: Sequence[float] | None = None) -> float:
    """The decline threshold for a target (replies strictly below it are declined; only covered ones).

    "answerable_declined": the highest threshold that declines at most ``max_answerable_declined`` of the
    answerable questions. "precision": the lowest threshold whose remaining answers are right at least
    ``min_precision`` of the time (``weights``-weighted), or the most precise one when none is.
    """
    w = list(weights) if weights is not None else [1.0] * len(confidence)
    cands = sorted({0.0, *(float(c) for c, v in zip(confidence, covered) if v)})
    if target == "answerable_declined":
        n_ans = sum(answerable)
        best = 0.0
        for t in cands:
            k = sum(1 for c, a, v in zip(confidence, answerable, covered) if a and v and c < t)
            if n_ans and k > max_answerable_declined * n_ans + 1e-9:
                break
            best = t
        return best
    best_t, best_p = 0.0, -1.0
    for t in cands:
        kept = [(float(r), x) for c, r, v, x in zip(confidence, right, covered, w) if v and c >= t]
        total = sum(x for _, x in kept)
        p = sum(r * x for r, x in kept) / total if total > 0 else 0.0
        if p >= min_precision:
            return t
        if p > best_p + 1e-12:
            best_t, best_p = t, p
    return best_t


def threshold_gains(confidence: Sequence[float], right: Sequence[bool], covered: Sequence[bool], threshold: float,
                    weights: Sequence[float] | None = None) -> list[float]:
    """Per question, what declining below ``threshold`` gains: +weight for a wrong answer withheld,
    -weight for a right one withheld, 0 where nothing changes."""
    w = list(weights) if weights is not None else [1.0] * len(confidence)
    return [(x if not r else -x) if (v and c < threshold) else 0.0
            for c, r, v, x in zip(confidence, right, covered, w)]


def _ci(ci: tuple[float, float] | None) -> list[float] | None:
    return [round(ci[0], 4), round(ci[1], 4)] if ci else None
