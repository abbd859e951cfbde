"""How sure an answer is: features read off one generation, and a fitted calibrator that turns them into a
confidence in [0, 1] and a decision to decline.

Every feature comes from what answering already has, so nothing is generated twice: the reply's token
log-probabilities (under the model, and among the tokens copy-constrained decoding allowed), the
log-probability of starting the abstention phrase instead, and, for systems that read passages, the top
passage's retrieval score, its margin over the next, whether the answer occurs in a passage and how much of
the question the passages cover. A ``Calibrator`` (a logistic regression fitted by
``workbench.evaluation.calibrate`` on questions that are never evaluated) maps them to the probability that the reply
is a correct answer; below its threshold (only where the calibration set supports one) the reply is replaced
by the abstention phrase, with the reason and the run it was calibrated by.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from workbench.core.language import content_terms
from workbench.core.text import ABSTAIN, is_abstention, normalize_answer

FLOOR = -30.0
"""Log-probabilities are clipped here (a token copying forbade has -inf)."""

GENERATION_FEATURES = ("answer_logprob", "first_logprob", "copy_first_logprob", "abstain_logprob", "declined")
RETRIEVAL_FEATURES = ("top_score", "score_margin", "in_passage", "question_coverage")
FEATURES = GENERATION_FEATURES + RETRIEVAL_FEATURES
"""The calibrator's inputs, in order (retrieval ones are 0 for closed-book systems)."""

LOW_RETRIEVAL = "low retrieval score"
LOW_CONFIDENCE = "low answer confidence"


def _lp(x: float | None) -> float:
    return FLOOR if x is None or not math.isfinite(x) else max(FLOOR, float(x))


def answer_features(question: str, text: str, generation: Any, hits: Sequence[Any], language: str) -> dict[str, float]:
    """The confidence features of one reply.

    Args:
        question: the question.
        text: the cleaned answer.
        generation: its ``workbench.answering.generate.Generation`` (log-probabilities), or None (all generation
            features at their floor).
        hits: the passages in the prompt (empty when closed book).
        language: the corpus language (question coverage ignores its stopwords).
    """
    lps = list(getattr(generation, "logprobs", None) or [])
    copy = list(getattr(generation, "copy_logprobs", None) or [])
    first = _lp(lps[0]) if lps else FLOOR
    abstain = getattr(generation, "copy_abstain_logprob", None) if copy else None
    if abstain is None:
        abstain = getattr(generation, "abstain_logprob", None)
    feats = {
        "answer_logprob": sum(_lp(x) for x in lps) / len(lps) if lps else FLOOR,
        "first_logprob": first,
        "copy_first_logprob": _lp(copy[0]) if copy else first,
        "abstain_logprob": _lp(abstain),
        "declined": float(is_abstention(text)),
    }
    scores = [float(h.score) for h in hits]
    passages = " ".join(h.chunk.text for h in hits)
    answer = normalize_answer(text)
    q_terms = content_terms(question, language)
    feats.update(
        top_score=scores[0] if scores else 0.0,
        score_margin=scores[0] - scores[1] if len(scores) > 1 else 0.0,
        in_passage=float(bool(answer) and not feats["declined"] and f" {answer} " in f" {normalize_answer(passages)} "),
        question_coverage=(len(q_terms & content_terms(passages, language)) / len(q_terms)) if hits and q_terms else 0.0,
    )
    return feats


def raw_confidence(features: dict[str, float]) -> float:
    """A confidence without a calibrator: the reply's mean token probability (0 for a decline)."""
    if features.get("declined"):
        return 0.0
    return math.exp(features.get("answer_logprob", FLOOR))


@dataclass
class Calibrator:
    """A fitted logistic regression from confidence features to P(the reply is a correct answer), and the
    operating point: the threshold below which a reply is declined, where the calibration set supports one.

    Attributes:
        features: feature names, in the order of ``weights``.
        mean, scale: the standardisation fitted on the calibration questions.
        weights, intercept: the logistic regression.
        threshold: replies with a lower confidence are declined when ``applied``.
        target: what the threshold was chosen for ("answerable_declined<=S" or "precision>=P").
        fit_on: what it was fitted on (counts, source of the questions, the cross-validated gain).
        applied: whether the threshold declines anything (enough right and wrong calibration answers, and a
            gain that holds out of sample); otherwise the system keeps only its own declines.
        reason: why the threshold is or is not applied, in words (e.g. "not calibrated: 4 of 48 calibration
            answers right").
        run: the evaluation run it comes from (named in every decline).
    """

    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    intercept: float
    threshold: float = 0.0
    target: str = ""
    fit_on: dict[str, Any] = field(default_factory=dict)
    applied: bool = False
    reason: str = ""
    run: str | None = None

    def _terms(self, feats: dict[str, float]) -> list[float]:
        return [w * (feats.get(n, 0.0) - m) / s for n, m, s, w in zip(self.features, self.mean, self.scale, self.weights)]

    def confidence(self, feats: dict[str, float]) -> float:
        z = self.intercept + sum(self._terms(feats))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def declines(self, text: str, feats: dict[str, float]) -> bool:
        """The one decline rule: an operating point that is applied, a reply that is not already a decline,
        and a confidence below the threshold."""
        return self.applied and not is_abstention(text) and self.confidence(feats) < self.threshold

    def reason_for(self, feats: dict[str, float]) -> str:
        """Why a reply was declined: the group of features that pulled its confidence down the most, the
        confidence against the threshold, and the run that calibrated it."""
        terms = dict(zip(self.features, self._terms(feats)))
        retrieval = sum(v for n, v in terms.items() if n in RETRIEVAL_FEATURES)
        generation = sum(v for n, v in terms.items() if n not in RETRIEVAL_FEATURES)
        why = LOW_RETRIEVAL if retrieval < generation else LOW_CONFIDENCE
        return f"{why} ({self.confidence(feats):.2f} < {self.threshold:.2f}, calibrated by run {self.run or '?'})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibrator":
        """A calibrator as summary.json holds it; one written before operating points existed is never applied."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def apply_calibrator(answers: Sequence[Any], calibrator: Calibrator | None, decline: bool = True) -> list[Any]:
    """The one place replies are declined by confidence (evaluation, ``ask``, the chat, serve and MCP).

    Sets each answer's ``confidence`` and, when ``decline`` and ``calibrator.declines``, replaces the reply by
    the abstention phrase (``declined`` says why and which run calibrated it; ``text_before_decline`` keeps
    the reply). Without a calibrator the confidence is ``raw_confidence`` and nothing is declined. Answers are
    changed in place and returned."""
    for a in answers:
        feats = getattr(a, "features", None) or {}
        if calibrator is None:
            a.confidence = raw_confidence(feats)
            continue
        a.confidence = calibrator.confidence(feats)
        if decline and calibrator.declines(a.text, feats):
            a.declined = calibrator.reason_for(feats)
            a.text_before_decline, a.text = a.text, ABSTAIN
            a.citations = []
    return list(answers)
