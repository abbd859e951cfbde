"""Calibrated confidence without peeking at the eval questions.

Each system answers a small calibration set as well as the eval questions: answerable questions from the
question file's ``train`` split (or, without one, questions synthesized from the corpus) and unanswerable
ones made from them by changing an entity into one the corpus lacks (``workbench.evaluation.unanswerable``). A
logistic regression from the answers' confidence features (``workbench.answering.confidence``) to "the reply is a
right answer" is fitted on those, and the decline threshold is chosen on them for the configured target. The
threshold is applied only where the set carries it: at least ``calibration_min_each`` right and as many wrong
answers, and a gain that holds under k-fold cross-validation on the set (its 95% interval above zero).
Eval questions never reach the calibrator: any calibration question that asks an eval question, or a
near-duplicate of one, is dropped first (the same guard that keeps them out of fine-tuning data).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from workbench.answering.confidence import FEATURES, Calibrator
from workbench.core.config import EvalConfig
from workbench.core.errors import WorkbenchError
from workbench.corpus.qa import QAItem
from workbench.evaluation.metrics import bootstrap_ci, mean
from workbench.evaluation.selective import choose_threshold, threshold_gains
from workbench.evaluation.unanswerable import corpus_words, make_unanswerable
from workbench.training.train_data import Example, leakage_guard

CALIBRATION_C = 1.0
"""Inverse L2 strength of the logistic regression (features are standardised first)."""


@dataclass
class CalibrationSet:
    """The questions calibrators are fitted on.

    Attributes:
        items: answerable questions, then generated unanswerable ones (``kind`` "generated-unanswerable").
        source: where the answerable ones come from: "train split" or "synthesized".
        n_dropped: candidates dropped because they ask an eval question or a near-duplicate.
    """

    items: list[QAItem]
    source: str
    n_dropped: int = 0

    def describe(self) -> dict[str, Any]:
        n_una = sum(not q.answerable for q in self.items)
        return {"source": self.source, "n_answerable": len(self.items) - n_una, "n_unanswerable": n_una,
                "unanswerable_made_by": "an entity of an answerable question changed into one the corpus lacks",
                "n_dropped_as_eval_duplicates": self.n_dropped}


def _guard(items: list[QAItem], eval_questions: list[str]) -> tuple[list[QAItem], int]:
    examples = [Example(messages=None, completion="", source="", question=q.question, meta={"i": i})
                for i, q in enumerate(items)]
    kept, dropped = leakage_guard(examples, eval_questions)
    return [items[e.meta["i"]] for e in kept], len(dropped)


def calibration_size(n_eval: int, cfg: EvalConfig) -> int:
    """How many calibration questions a run answers: ``calibration_budget`` of all answered questions
    (n_cal <= budget / (1 - budget) x n_eval), capped at ``calibration_questions`` and never below
    2 x ``calibration_min_each`` (fewer could never pass the rule)."""
    share = int(cfg.calibration_budget / (1 - cfg.calibration_budget) * n_eval + 1e-9)
    return min(cfg.calibration_questions, max(2 * cfg.calibration_min_each, share))


def calibration_set(qa: Sequence[QAItem], eval_items: Sequence[QAItem], corpus_texts: Sequence[str],
                    cfg: EvalConfig, synthesized: Sequence[QAItem] = (),
                    n_questions: int | None = None) -> CalibrationSet:
    """The calibration questions: never an eval question.

    Args:
        qa: every gold question of the question file (only its ``train`` split is used).
        eval_items: the questions that will be scored (kept out, near-duplicates too).
        corpus_texts: the corpus's chunk texts (a generated question's entity must be absent from them).
        cfg: ``calibration_questions`` and ``calibration_unanswerable``, ``seed``.
        synthesized: questions synthesized from the corpus, used when ``qa`` has no train split.
        n_questions: how many to make (default ``cfg.calibration_questions``; see ``calibration_size``).

    Raises:
        WorkbenchError: no question to start from.
    """
    eval_ids = {q.id for q in eval_items}
    train = [q for q in qa if q.split == "train" and q.answerable and q.answers and q.id not in eval_ids]
    source = "train split"
    if not train:
        train = [q for q in synthesized if q.answers]
        source = "synthesized"
    eval_questions = [q.question for q in eval_items]
    train, n_dropped = _guard(train, eval_questions)
    if not train:
        raise WorkbenchError("no questions to calibrate confidence on (no train split, nothing synthesized)",
                             "add train questions to qa.jsonl, or set eval.abstain: model")
    n_total = n_questions or cfg.calibration_questions
    n_una = max(1, round(n_total * cfg.calibration_unanswerable))
    n_ans = max(1, n_total - n_una)
    rng = random.Random(cfg.seed)
    answerable = rng.sample(train, min(n_ans, len(train)))
    made = make_unanswerable([q.question for q in train], corpus_words(corpus_texts), n_una, cfg.seed,
                             avoid=eval_questions + [q.question for q in train])
    unanswerable = [QAItem(id=f"calibration-unanswerable-{i}", question=q, answers=[], answerable=False,
                           split="calibration", kind="generated-unanswerable")
                    for i, (q, _, _) in enumerate(made)]
    unanswerable, n_more = _guard(unanswerable, eval_questions)
    items = [QAItem(id=f"calibration-{q.id}", question=q.question, answers=list(q.answers), split="calibration",
                    doc=q.doc, fact_id=q.fact_id, kind=q.kind) for q in answerable] + unanswerable
    return CalibrationSet(items, source, n_dropped + n_more)


def prior_weights(answerable: Sequence[bool], prior: float) -> list[float]:
    """Per question, a weight that makes unanswerable questions ``prior`` of the total (mean weight 1)."""
    n = len(answerable)
    n_una = n - sum(answerable)
    if n_una == 0 or n_una == n:
        return [1.0] * n
    return [n * (1 - prior) / (n - n_una) if a else n * prior / n_una for a in answerable]


def fit_logistic(features: Sequence[dict[str, float]], right: Sequence[bool], weights: Sequence[float]) -> Calibrator:
    """A logistic regression from confidence features to "the reply is a right answer" (no threshold yet).

    A set whose answers are all right (or all wrong) cannot separate them: the calibrator then gives every
    answer that share as its confidence.
    """
    import numpy as np

    x = np.array([[float(f.get(n, 0.0)) for n in FEATURES] for f in features], dtype=float)
    y = np.array([int(bool(r)) for r in right], dtype=int)
    if x.shape[0] == 0:
        raise WorkbenchError("no calibration answers to fit on", "check the calibration questions")
    mu = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    if y.min() == y.max():
        rate = min(max(float(y.mean()), 1e-3), 1 - 1e-3)
        coef, intercept = [0.0] * len(FEATURES), float(np.log(rate / (1 - rate)))
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=CALIBRATION_C, max_iter=1000)
        model.fit((x - mu) / scale, y, sample_weight=np.asarray(weights))
        coef, intercept = [float(v) for v in model.coef_[0]], float(model.intercept_[0])
    return Calibrator(list(FEATURES), mu.tolist(), scale.tolist(), coef, intercept)


def _threshold(cal: Calibrator, features: Sequence[dict[str, float]], right: Sequence[bool], covered: Sequence[bool],
               answerable: Sequence[bool], weights: Sequence[float], cfg: EvalConfig) -> float:
    conf = [cal.confidence(f) for f in features]
    return choose_threshold(conf, right, answerable, covered, cfg.abstain_target, cfg.max_answerable_declined,
                            cfg.min_precision, weights)


def _folds(right: Sequence[bool], covered: Sequence[bool], k: int, seed: int) -> list[int]:
    """A fold per question, stratified by right / wrong / declined so every fold sees each kind."""
    rng = random.Random(seed)
    fold = [0] * len(right)
    for group in (True, False, None):
        idx = [i for i in range(len(right)) if (right[i] if covered[i] else None) is group]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def _pick(values: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [values[i] for i in idx]


def cross_validated_gains(features: Sequence[dict[str, float]], right: Sequence[bool], covered: Sequence[bool],
                          answerable: Sequence[bool], cfg: EvalConfig) -> list[float]:
    """Per calibration question, the gain of declining below the threshold when the calibrator and
    threshold were fitted on the other folds (``selective.threshold_gains``, prior-weighted)."""
    w = prior_weights(answerable, cfg.unanswerable_prior)
    fold = _folds(right, covered, cfg.calibration_folds, cfg.seed)
    gains = [0.0] * len(right)
    for f in range(cfg.calibration_folds):
        train = [i for i in range(len(right)) if fold[i] != f]
        test = [i for i in range(len(right)) if fold[i] == f]
        if not train or not test:
            continue
        cal = fit_logistic(_pick(features, train), _pick(right, train), _pick(w, train))
        t = _threshold(cal, _pick(features, train), _pick(right, train), _pick(covered, train),
                       _pick(answerable, train), _pick(w, train), cfg)
        held = threshold_gains([cal.confidence(features[i]) for i in test], _pick(right, test), _pick(covered, test),
                               t, _pick(w, test))
        for i, g in zip(test, held):
            gains[i] = g
    return gains


def operating_point(cal: Calibrator, features: Sequence[dict[str, float]], right: Sequence[bool],
                    covered: Sequence[bool], answerable: Sequence[bool], cfg: EvalConfig) -> None:
    """Set the calibrator's threshold, and whether it is applied and why (in place).

    The rule: at least ``cfg.calibration_min_each`` right answers and as many wrong ones (answered but not
    right) among the calibration answers, and a cross-validated gain whose 95% bootstrap interval lies above
    zero; with ``cfg.abstain`` other than "calibrated" nothing is applied.
    """
    n = len(right)
    n_right = sum(1 for r, v in zip(right, covered) if v and r)
    n_wrong = sum(1 for r, v in zip(right, covered) if v and not r)
    w = prior_weights(answerable, cfg.unanswerable_prior)
    cal.threshold = _threshold(cal, features, right, covered, answerable, w, cfg)
    cal.target = (f"answerable_declined<={cfg.max_answerable_declined}" if cfg.abstain_target == "answerable_declined"
                  else f"precision>={cfg.min_precision}")
    cal.fit_on.update(n=n, n_right=n_right, n_wrong=n_wrong, n_declined=n - n_right - n_wrong,
                      unanswerable_prior=cfg.unanswerable_prior)
    need = cfg.calibration_min_each
    if cfg.abstain != "calibrated":
        cal.applied, cal.reason = False, f"not applied: eval.abstain is {cfg.abstain}"
        return
    if n_right < need or n_wrong < need:
        k, what = (n_right, "right") if n_right < need else (n_wrong, "wrong")
        cal.applied = False
        cal.reason = (f"not calibrated: {k} of {n} calibration answers {what} "
                      f"(needs at least {need} right and {need} wrong)")
        return
    gains = cross_validated_gains(features, right, covered, answerable, cfg)
    g = mean(gains) or 0.0
    ci = bootstrap_ci(gains, 1000, cfg.seed)
    cal.fit_on.update(cv_folds=cfg.calibration_folds, cv_gain=round(g, 4),
                      cv_gain_ci95=[round(ci[0], 4), round(ci[1], 4)] if ci else None)
    txt = f"{cfg.calibration_folds}-fold cross-validated gain {g:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] per question"
    if not any(gains):
        cal.applied, cal.reason = False, "not calibrated: out of sample the threshold declines no calibration answer"
    elif ci[0] <= 0:
        cal.applied, cal.reason = False, f"not calibrated: the threshold's gain does not hold out of sample ({txt})"
    else:
        cal.applied, cal.reason = True, f"calibrated: threshold {cal.threshold:.2f} for {cal.target} ({txt})"


def fit_calibrator(features: Sequence[dict[str, float]], right: Sequence[bool], covered: Sequence[bool],
                   answerable: Sequence[bool], cfg: EvalConfig, fit_on: dict[str, Any] | None = None) -> Calibrator:
    """A system's calibrator and operating point from its calibration answers.

    Args:
        features: per calibration question, its answer's features.
        right: per question, whether the answer is right (``metrics.is_right``; never for a decline).
        covered: per question, whether the system answered (False: its own "I don't know").
        answerable: per question.
        cfg: the target, the rule and the prior (``EvalConfig``).
        fit_on: a description of the questions, recorded with the calibrator.

    Questions are weighted so unanswerable ones make up ``cfg.unanswerable_prior`` of the total, for the
    regression, the precision target and the gain alike.
    """
    cal = fit_logistic(features, right, prior_weights(answerable, cfg.unanswerable_prior))
    cal.fit_on = dict(fit_on or {})
    operating_point(cal, features, right, covered, answerable, cfg)
    return cal
