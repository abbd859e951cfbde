"""Abstention in the harness: every system also answers the calibration questions, gets its calibrator, and
is scored on when it declines (summary.json's ``abstention`` section).

``calibration_questions`` picks the questions (``workbench.evaluation.calibrate``); the harness answers them with
each system right after its eval questions, while its weights are loaded, so no eval question is generated
twice. ``calibrate_runs`` fits one calibrator per system on its calibration answers and applies it to its
eval answers (declining below the threshold when ``eval.abstain`` is "calibrated"); ``abstention_section``
measures the result.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from workbench.answering.confidence import Calibrator, apply_calibrator
from workbench.core.config import RunConfig
from workbench.core.paths import runs_dir
from workbench.core.text import is_abstention
from workbench.corpus.qa import QAItem, load_qa
from workbench.evaluation.calibrate import CalibrationSet, calibration_set, fit_calibrator
from workbench.evaluation.metrics import mean, score_answers
from workbench.evaluation.selective import risk_coverage, selective_block
from workbench.training.synth import synthesize_rules

SYNTH_CHUNKS = 200
"""Chunks questions are synthesized from when the question file has no train split (a seeded sample)."""


def calibration_questions(qa_path: Path, items: list[QAItem], chunks: Sequence[Any], cfg: RunConfig) -> CalibrationSet:
    """The calibration set of a run: from the question file's train split, else synthesized from ``chunks``."""
    qa = load_qa(qa_path)
    synthesized: list[QAItem] = []
    if not any(q.split == "train" and q.answerable and q.answers for q in qa):
        sample = random.Random(cfg.eval.seed).sample(list(chunks), min(SYNTH_CHUNKS, len(chunks)))
        synthesized = [QAItem(id=f"synth-{i}", question=s.question, answers=[s.answer], split="train", doc=s.doc)
                       for i, s in enumerate(synthesize_rules(sample, cfg.ingest.language, seed=cfg.eval.seed))
                       if s.style == "question"]
    return calibration_set(qa, items, [c.text for c in chunks], cfg.eval, synthesized)


def _scored(answers: Sequence[Any], items: Sequence[QAItem]) -> tuple[list[float | None], list[bool]]:
    """Per question, the F1 of the answer (before any decline) and whether the system itself declined."""
    texts = [getattr(a, "text_before_decline", "") or a.text for a in answers]
    per = score_answers(texts, [q.answers for q in items], [q.answerable for q in items])["per_item"]
    return [p["f1"] for p in per], [p["abstained"] for p in per]


def calibrate_runs(runs: Sequence[Any], calibration_runs: dict[str, Any], calib: CalibrationSet,
                   cfg: RunConfig) -> dict[str, Calibrator]:
    """Fit each system's calibrator on its calibration answers and apply it to its eval answers (in place)."""
    out: dict[str, Calibrator] = {}
    for run in runs:
        cal_answers = calibration_runs[run.name].answers
        f1, declined = _scored(cal_answers, calib.items)
        feats = [getattr(a, "features", None) or {} for a in cal_answers]
        # an adapter was fine-tuned on the train split (or on synthesized questions): its calibration answers
        # are on facts it was trained on, so its confidence is fitted optimistic for new facts
        seen = run.weights != cfg.model.base_model and getattr(run, "build", None) is None
        cal = fit_calibrator(feats, f1, [q.answerable for q in calib.items], declined, cfg.eval,
                             dict(calib.describe(), seen_in_training=bool(seen)))
        apply_calibrator(run.answers, cal, decline=cfg.eval.abstain == "calibrated")
        out[run.name] = cal
    return out


def calibration_rows(calib: CalibrationSet, calibration_runs: dict[str, Any],
                     calibrators: dict[str, Calibrator]) -> list[dict]:
    """calibration.jsonl: per system and calibration question, the answer, its F1, features and confidence
    (what each calibrator was fitted on, for inspection)."""
    rows = []
    for name, run in calibration_runs.items():
        f1, declined = _scored(run.answers, calib.items)
        for q, a, f, d in zip(calib.items, run.answers, f1, declined):
            feats = getattr(a, "features", None) or {}
            rows.append({"system": name, "id": q.id, "question": q.question, "answerable": q.answerable,
                         "gold": q.answers, "kind": q.kind, "prediction": a.text, "f1": f, "declined": d,
                         "confidence": round(calibrators[name].confidence(feats), 4),
                         "features": {k: round(v, 4) for k, v in feats.items()}})
    return rows


def abstention_section(items: Sequence[QAItem], runs: Sequence[Any], calibrators: dict[str, Calibrator],
                       calib: CalibrationSet, calibration_runs: dict[str, Any], cfg: RunConfig) -> dict:
    """summary.json's ``abstention``: per system HasAns F1, NoAns accuracy, wrong-answer rate, overall F1,
    AURC (and its random-order value), the threshold and calibrator with what they were fitted on, the
    oracle threshold (in-sample, for reference), and the risk–coverage curve; plus the comparison at equal
    coverage."""
    answerable = [q.answerable for q in items]
    systems: dict[str, dict] = {}
    for run in runs:
        f1, model_declined = _scored(run.answers, items)
        conf = [float(getattr(a, "confidence", 0.0) or 0.0) for a in run.answers]
        declined = [is_abstention(a.text) for a in run.answers]
        block = selective_block(conf, f1, answerable, declined, model_declined)
        cov, risk = risk_coverage(conf, [a and (v or 0) >= 0.5 for a, v in zip(answerable, f1)],
                                  [not d for d in model_declined])
        cal = calibrators[run.name]
        block.update(
            threshold=cal.threshold, declined_by_threshold=sum(bool(getattr(a, "declined", None)) for a in run.answers),
            declined_by_model=sum(model_declined), calibrator=cal.to_dict(),
            calibration_s=round(calibration_runs[run.name].seconds, 3),
            f1_before_decline=mean([v or 0.0 for v, a in zip(f1, answerable) if a]),
            curve={"coverage": [round(c, 4) for c in cov], "risk": [round(r, 4) for r in risk]})
        systems[run.name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in block.items()}
    return {"mode": cfg.eval.abstain, "target": cfg.eval.abstain_target, "min_precision": cfg.eval.min_precision,
            "calibration": calib.describe(), "systems": systems, "equal_coverage": equal_coverage(systems)}


EQUAL_COVERAGE = 0.5
"""Systems are compared at this coverage: each answering its most confident half of the questions."""


def equal_coverage(systems: dict[str, dict]) -> dict:
    """Each system's risk when every system answers the same share of questions, its most confident ones:
    ``EQUAL_COVERAGE``, or the largest share all of them reach when one declines more on its own."""
    reach = [max(s["curve"]["coverage"], default=0.0) for s in systems.values()]
    if not reach or min(reach) <= 0:
        return {"coverage": None, "risk": {}}
    c = min(EQUAL_COVERAGE, min(reach))
    risk = {}
    for name, s in systems.items():
        cov, rk = s["curve"]["coverage"], s["curve"]["risk"]
        risk[name] = next((r for x, r in zip(cov, rk) if x >= c - 1e-9), None)
    return {"coverage": round(c, 4), "risk": risk}


def latest_calibrators(index: str | None = None) -> tuple[str | None, dict[str, Calibrator]]:
    """The newest run under ``runs/`` with calibrated confidences (one that answered over ``index`` when
    it used an index) and its calibrator per system, or ``(None, {})``: what ``workbench ask`` and the
    app's chat decline with."""
    found: list[tuple[str, str, dict]] = []
    folder = runs_dir()
    for run in folder.iterdir() if folder.is_dir() else []:
        try:
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        systems = (summary.get("abstention") or {}).get("systems") if isinstance(summary, dict) else None
        used = (summary.get("config") or {}).get("index") if isinstance(summary, dict) else None
        if isinstance(systems, dict) and systems and (index is None or used in (None, index)):
            found.append((str(summary.get("created", "")), run.name, systems))
    if not found:
        return None, {}
    _, name, systems = max(found)
    return name, {n: Calibrator.from_dict(b["calibrator"]) for n, b in systems.items()
                  if isinstance(b, dict) and isinstance(b.get("calibrator"), dict)}
