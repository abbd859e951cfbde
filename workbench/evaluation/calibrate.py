"""Calibrated confidence without peeking at the eval questions.

Each system answers a small calibration set as well as the eval questions: answerable questions from the
question file's ``train`` split (or, without one, questions synthesized from the corpus) and unanswerable
ones made from them by changing an entity into one the corpus lacks (``workbench.evaluation.unanswerable``). A
logistic regression from the answers' confidence features (``workbench.answering.confidence``) to "the reply is a
right answer" is fitted on those, and the decline threshold is chosen on them for the configured target.
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
from workbench.evaluation.selective import best_threshold, is_correct
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


def calibration_set(qa: Sequence[QAItem], eval_items: Sequence[QAItem], corpus_texts: Sequence[str],
                    cfg: EvalConfig, synthesized: Sequence[QAItem] = ()) -> CalibrationSet:
    """The calibration questions: never an eval question.

    Args:
        qa: every gold question of the question file (only its ``train`` split is used).
        eval_items: the questions that will be scored (kept out, near-duplicates too).
        corpus_texts: the corpus's chunk texts (a generated question's entity must be absent from them).
        cfg: ``calibration_questions`` and ``calibration_unanswerable``, ``seed``.
        synthesized: questions synthesized from the corpus, used when ``qa`` has no train split.

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
    n_una = max(1, round(cfg.calibration_questions * cfg.calibration_unanswerable))
    n_ans = max(1, cfg.calibration_questions - n_una)
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


def fit_calibrator(features: Sequence[dict[str, float]], f1: Sequence[float | None], answerable: Sequence[bool],
                   declined: Sequence[bool], cfg: EvalConfig, fit_on: dict[str, Any] | None = None) -> Calibrator:
    """A logistic regression from confidence features to "the reply is a right answer", and its threshold.

    Args:
        features: per calibration question, its answer's features.
        f1: per question, the answer's F1 (None when unanswerable).
        answerable: per question.
        declined: per question, whether the system itself declined.
        cfg: the threshold target (``abstain_target``, ``min_precision``).
        fit_on: a description of the questions, recorded with the calibrator.

    Questions are weighted so unanswerable ones make up ``cfg.unanswerable_prior`` of the total, for the
    regression and the threshold alike. A set whose answers are all right (or all wrong) cannot separate
    them: the calibrator then gives every answer that share as its confidence.
    """
    import numpy as np

    x = np.array([[float(f.get(n, 0.0)) for n in FEATURES] for f in features], dtype=float)
    y = np.array([is_correct(v, a, d) for v, a, d in zip(f1, answerable, declined)], dtype=int)
    w = prior_weights(answerable, cfg.unanswerable_prior)
    if x.shape[0] == 0:
        raise WorkbenchError("no calibration answers to fit on", "check the calibration questions")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    if y.min() == y.max():
        rate = min(max(float(y.mean()), 1e-3), 1 - 1e-3)
        weights, intercept = [0.0] * len(FEATURES), float(np.log(rate / (1 - rate)))
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=CALIBRATION_C, max_iter=1000)
        model.fit((x - mean) / scale, y, sample_weight=np.asarray(w))
        weights, intercept = [float(w) for w in model.coef_[0]], float(model.intercept_[0])
    cal = Calibrator(list(FEATURES), mean.tolist(), scale.tolist(), weights, intercept,
                     fit_on=dict(fit_on or {}, n=len(y), n_right=int(y.sum()), unanswerable_prior=cfg.unanswerable_prior))
    conf = [cal.confidence(f) for f in features]
    cal.threshold, value = best_threshold(conf, f1, answerable, declined, cfg.abstain_target, cfg.min_precision, w)
    cal.target = "overall_f1" if cfg.abstain_target == "overall_f1" else f"precision>={cfg.min_precision}"
    cal.fit_on["target_value_on_calibration"] = round(value, 4)
    return cal
