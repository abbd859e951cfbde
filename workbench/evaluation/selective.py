"""Selective question answering: how well a system knows when not to answer (pure functions).

A system *covers* a question when it answers it rather than declining. Following SQuAD 2.0, a question's
overall score is its F1 when answerable and answered, 1 when unanswerable and declined, else 0. Following
Kamath, Jia & Liang (ACL 2020), answers are ranked by confidence: covering the most confident first traces
a risk–coverage curve (risk: the share of covered answers that are wrong), and its area (AURC, lower is
better) says how well the confidence orders right answers before wrong ones. A covered answer is right when
its question is answerable and its F1 is at least ``CORRECT_F1``; any answer to an unanswerable question is
wrong.
"""
from __future__ import annotations

from typing import Sequence

from workbench.evaluation.metrics import mean, wilson

CORRECT_F1 = 0.5
"""An answer with at least this token F1 against a gold answer counts as right."""


def is_correct(f1: float | None, answerable: bool, declined: bool) -> bool:
    """A covered answer that is right (declines are never "right answers")."""
    return answerable and not declined and (f1 or 0.0) >= CORRECT_F1


def overall_scores(f1: Sequence[float | None], answerable: Sequence[bool], declined: Sequence[bool]) -> list[float]:
    """SQuAD 2.0 per-question score: F1 if answerable and answered, 1 if unanswerable and declined, else 0."""
    return [(0.0 if d else (f or 0.0)) if a else float(d) for f, a, d in zip(f1, answerable, declined)]


def risk_coverage(confidence: Sequence[float], correct: Sequence[bool],
                  covered: Sequence[bool]) -> tuple[list[float], list[float]]:
    """The risk–coverage curve: cover the answers most confident first (only those in ``covered``: a
    system's own declines are never covered); at each step, coverage = covered / all questions and risk =
    wrong / covered. Ties keep question order."""
    n = len(confidence)
    order = sorted((i for i in range(n) if covered[i]), key=lambda i: -confidence[i])
    cov, risk, wrong = [], [], 0
    for j, i in enumerate(order, 1):
        wrong += not correct[i]
        cov.append(j / n)
        risk.append(wrong / j)
    return cov, risk


def aurc(confidence: Sequence[float], correct: Sequence[bool], covered: Sequence[bool]) -> float | None:
    """Area under the risk–coverage curve: the mean risk over its steps (None when nothing is covered).

    Answering in a random order has an expected AURC equal to the covered answers' error rate
    (``random_aurc``): every prefix of a random order has that expected risk."""
    _, risk = risk_coverage(confidence, correct, covered)
    return mean(risk)


def random_aurc(correct: Sequence[bool], covered: Sequence[bool]) -> float | None:
    """Expected AURC of a random order: the error rate of the covered answers."""
    return mean([float(not c) for c, v in zip(correct, covered) if v])


def _wmean(values: Sequence[float], weights: Sequence[float]) -> float | None:
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total if total > 0 else None


def best_threshold(confidence: Sequence[float], f1: Sequence[float | None], answerable: Sequence[bool],
                   declined: Sequence[bool], target: str = "overall_f1", min_precision: float = 0.8,
                   weights: Sequence[float] | None = None) -> tuple[float, float]:
    """The decline threshold for a target, and the value it reaches on these questions.

    Candidates are 0 and every confidence (declining what is strictly below). "overall_f1" maximises the
    (``weights``-weighted) mean SQuAD 2.0 overall score (ties: the lowest threshold, declining least);
    "precision" takes the lowest threshold whose answers are right at least ``min_precision`` of the time
    (the most precise one if none is), and reports that precision.
    """
    w = list(weights) if weights is not None else [1.0] * len(confidence)
    cands = sorted({0.0, *map(float, confidence)})
    best: tuple[float, float] | None = None
    for t in cands:
        dec = [d or c < t for c, d in zip(confidence, declined)]
        if target == "overall_f1":
            value = _wmean(overall_scores(f1, answerable, dec), w) or 0.0
        else:
            kept = [(float(is_correct(f, a, d)), x) for f, a, d, x in zip(f1, answerable, dec, w) if not d]
            value = (_wmean([r for r, _ in kept], [x for _, x in kept]) or 0.0) if kept else 0.0
            if value >= min_precision:
                return t, value
        if best is None or value > best[1] + 1e-12:
            best = (t, value)
    return best if best is not None else (0.0, 0.0)


def selective_block(confidence: Sequence[float], f1: Sequence[float | None], answerable: Sequence[bool],
                    declined: Sequence[bool], model_declined: Sequence[bool]) -> dict:
    """A system's abstention measures on the eval questions.

    Args:
        confidence: per question, the answer's confidence (before any decline).
        f1: per question, the F1 of the answer before any threshold decline (None for unanswerable ones).
        answerable: per question.
        declined: per question, whether the final reply declines (the model's own or the threshold's).
        model_declined: per question, whether the model itself declined (never covered on the curve).

    Returns:
        HasAns F1, NoAns accuracy and the wrong-answer rate on answerable questions (Wilson intervals for
        the rates), overall F1, coverage, AURC, the random-order AURC, and the oracle: the threshold that
        would have maximised overall F1 on these very questions, and that F1 (in-sample by construction,
        for reference only).
    """
    oracle_t, oracle_f1 = best_threshold(confidence, f1, answerable, model_declined)
    n_ans = sum(answerable)
    n_una = len(answerable) - n_ans
    no_ans_k = sum(d for d, a in zip(declined, answerable) if not a)
    wrong_k = sum(1 for f, a, d in zip(f1, answerable, declined) if a and not d and (f or 0.0) < CORRECT_F1)
    correct = [is_correct(f, a, False) for f, a in zip(f1, answerable)]
    covered = [not d for d in model_declined]
    return {
        "has_ans_f1": mean([0.0 if d else (f or 0.0) for f, a, d in zip(f1, answerable, declined) if a]),
        "no_ans_acc": no_ans_k / n_una if n_una else None,
        "no_ans_ci95": _ci(wilson(no_ans_k, n_una)),
        "wrong_answer_rate": wrong_k / n_ans if n_ans else None,
        "wrong_answer_ci95": _ci(wilson(wrong_k, n_ans)),
        "overall_f1": mean(overall_scores(f1, answerable, declined)),
        "coverage": mean([float(not d) for d in declined]),
        "aurc": aurc(confidence, correct, covered),
        "aurc_random": random_aurc(correct, covered),
        "oracle_threshold": oracle_t, "oracle_overall_f1": oracle_f1,
        "n_answerable": n_ans, "n_unanswerable": n_una,
    }


def _ci(ci: tuple[float, float] | None) -> list[float] | None:
    return [round(ci[0], 4), round(ci[1], 4)] if ci else None
