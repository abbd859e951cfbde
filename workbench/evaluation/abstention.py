"""Abstention in the harness, its own axis of the verdict: every system also answers a few calibration
questions, gets its calibrator, and is scored on when it declines (summary.json's ``abstention`` section).

Accuracy never changes here: every eval answer is scored as given (``systems.*.f1``, answer-all). This module
measures the second axis on the same answers: the model's own declines (NoAns accuracy against answerable
questions declined), how well the confidence ranks answers (AURC against random order, selective F1 and
wrong-answer rate at fixed coverage), whether it is a probability (Brier, ECE), and the calibrated operating
point: what declining below the threshold would cost in answerable F1 and buy in NoAns, reported only where
the calibration set carries a threshold (``workbench.evaluation.calibrate.operating_point``).

``calibrators_for`` finds the calibrators ``ask``, the chat, serve and MCP decline with: from the newest run on
the same corpus and index, matched by content fingerprints, never by name; they decline through
``workbench.answering.confidence.apply_calibrator``, the same rule the operating point is measured with.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from workbench.answering.confidence import Calibrator, apply_calibrator
from workbench.core import catalogue
from workbench.core.config import RunConfig
from workbench.corpus.ingest import corpus_fingerprint
from workbench.corpus.qa import QAItem, load_qa
from workbench.evaluation.calibrate import CalibrationSet, calibration_set, calibration_size, fit_calibrator
from workbench.evaluation.metrics import is_right, mean, paired_test, score_answers
from workbench.evaluation.selective import (
    COVERAGES,
    at_coverage,
    aurc_gap_interval,
    brier,
    discrimination_scores,
    ece,
    own_declines,
    paired_aurc,
    reliability,
    risk_coverage,
)
from workbench.retrieval.index import default_index_name, resolve_index_dir
from workbench.training.synth import synthesize_rules

SYNTH_CHUNKS = 200
"""Chunks questions are synthesized from when the question file has no train split (a seeded sample)."""


def calibration_questions(qa_path: Path, items: list[QAItem], chunks: Sequence[Any], cfg: RunConfig) -> CalibrationSet:
    """The calibration set of a run (``calibration_size`` questions): from the question file's train split,
    else synthesized from ``chunks``."""
    qa = load_qa(qa_path)
    synthesized: list[QAItem] = []
    if not any(q.split == "train" and q.answerable and q.answers for q in qa):
        sample = random.Random(cfg.eval.seed).sample(list(chunks), min(SYNTH_CHUNKS, len(chunks)))
        synthesized = [QAItem(id=f"synth-{i}", question=s.question, answers=[s.answer], split="train", doc=s.doc)
                       for i, s in enumerate(synthesize_rules(sample, cfg.ingest.language, seed=cfg.eval.seed))
                       if s.style == "question"]
    return calibration_set(qa, items, [c.text for c in chunks], cfg.eval, synthesized,
                           n_questions=calibration_size(len(items), cfg.eval))


@dataclass
class Labels:
    """Per question, how a system's answer scores: F1 (0 for an unanswerable question), whether it is right
    (``metrics.is_right``), and whether the system answered at all (False: its own "I don't know")."""

    f1: list[float]
    right: list[bool]
    covered: list[bool]


def labels(answers: Sequence[Any], items: Sequence[QAItem]) -> Labels:
    """Score answers by the one right-answer rule (texts as given: eval answers are never declined here)."""
    per = score_answers([a.text for a in answers], [q.answers for q in items],
                        [q.answerable for q in items])["per_item"]
    covered = [not p["abstained"] for p in per]
    right = [c and q.answerable and is_right(a.text, q.answers) for a, q, c in zip(answers, items, covered)]
    return Labels([p["f1"] or 0.0 for p in per], right, covered)


def calibrate_runs(runs: Sequence[Any], calibration_runs: dict[str, Any], calib: CalibrationSet, cfg: RunConfig,
                   run_name: str) -> dict[str, Calibrator]:
    """Fit each system's calibrator on its calibration answers and set its eval answers' confidence (in place;
    their texts stay as given). Each eval answer also gets ``declined_at_operating_point``: why the operating
    point declines it (through ``apply_calibrator``'s rule), or None."""
    out: dict[str, Calibrator] = {}
    for run in runs:
        cal_answers = calibration_runs[run.name].answers
        lab = labels(cal_answers, calib.items)
        feats = [getattr(a, "features", None) or {} for a in cal_answers]
        # an adapter was fine-tuned on the train split (or on synthesized questions): its calibration answers
        # are on facts it was trained on, so its confidence is fitted optimistic for new facts
        seen = run.weights != cfg.model.base_model and getattr(run, "build", None) is None
        cal = fit_calibrator(feats, lab.right, lab.covered, [q.answerable for q in calib.items], cfg.eval,
                             dict(calib.describe(), seen_in_training=bool(seen)))
        cal.run = run_name
        apply_calibrator(run.answers, cal, decline=False)
        for a in run.answers:
            f = getattr(a, "features", None) or {}
            a.declined_at_operating_point = cal.reason_for(f) if cal.declines(a.text, f) else None
        out[run.name] = cal
    return out


def calibration_rows(calib: CalibrationSet, calibration_runs: dict[str, Any],
                     calibrators: dict[str, Calibrator]) -> list[dict]:
    """calibration.jsonl: per system and calibration question, the answer, whether it is right, its features
    and confidence (what each calibrator was fitted on, for inspection)."""
    rows = []
    for name, run in calibration_runs.items():
        lab = labels(run.answers, calib.items)
        for q, a, f, r, c in zip(calib.items, run.answers, lab.f1, lab.right, lab.covered):
            feats = getattr(a, "features", None) or {}
            rows.append({"system": name, "id": q.id, "question": q.question, "answerable": q.answerable,
                         "gold": q.answers, "kind": q.kind, "prediction": a.text, "f1": f, "right": r,
                         "declined": not c, "confidence": round(calibrators[name].confidence(feats), 4),
                         "features": {k: round(v, 4) for k, v in feats.items()}})
    return rows


def _r(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, list):
        return [_r(v) for v in x]
    if isinstance(x, dict):
        return {k: _r(v) for k, v in x.items()}
    return x


def operating_point_block(cal: Calibrator, answers: Sequence[Any], items: Sequence[QAItem], lab: Labels) -> dict:
    """What the calibrated operating point does on the eval questions, apart from the answer-all figures:
    applied or not and why, the threshold, and (when applied) answerable F1 with its declines scored 0
    against answer-all F1 (``f1_cost``), NoAns accuracy with them against the model's own
    (``noans_gain``), the share of answerable questions declined and the wrong-answer rate of the answers
    left."""
    block: dict[str, Any] = {"applied": cal.applied, "reason": cal.reason, "threshold": cal.threshold,
                             "target": cal.target, "run": cal.run,
                             "calibration": {k: cal.fit_on.get(k) for k in
                                             ("n", "n_right", "n_wrong", "cv_folds", "cv_gain", "cv_gain_ci95")}}
    if not cal.applied:
        return block
    op = [bool(getattr(a, "declined_at_operating_point", None)) for a in answers]
    ans = [i for i, q in enumerate(items) if q.answerable]
    una = [i for i, q in enumerate(items) if not q.answerable]
    kept = [i for i in range(len(items)) if lab.covered[i] and not op[i]]
    all_f1 = mean([lab.f1[i] for i in ans])
    op_f1 = mean([0.0 if op[i] else lab.f1[i] for i in ans])
    own_na = mean([float(not lab.covered[i]) for i in una])
    op_na = mean([float(not lab.covered[i] or op[i]) for i in una])
    block.update(
        declined=sum(op), answerable_f1=op_f1, answerable_f1_answer_all=all_f1,
        f1_cost=None if op_f1 is None else op_f1 - all_f1,
        noans_accuracy=op_na, noans_accuracy_own=own_na, noans_gain=None if op_na is None else op_na - own_na,
        answerable_declined=mean([float(not lab.covered[i] or op[i]) for i in ans]),
        wrong_answer_rate=mean([float(not lab.right[i]) for i in kept]))
    return block


def system_block(run: Any, items: Sequence[QAItem], cal: Calibrator, cfg: RunConfig, calibration_s: float) -> dict:
    """One system's abstention measures on the eval questions (see the module docstring)."""
    lab = labels(run.answers, items)
    answerable = [q.answerable for q in items]
    conf = [float(getattr(a, "confidence", 0.0) or 0.0) for a in run.answers]
    score = [f if a else 0.0 for f, a in zip(lab.f1, answerable)]
    ranked = aurc_gap_interval(conf, lab.right, lab.covered, cfg.eval.bootstrap, cfg.eval.seed) or {}
    cov, risk = risk_coverage(conf, lab.right, lab.covered)
    block = own_declines(answerable, [not c for c in lab.covered])
    block["wrong_answer_rate"] = mean([float(not r) for r, c in zip(lab.right, lab.covered) if c])
    block.update(
        aurc=ranked.get("aurc"), aurc_ci95=ranked.get("aurc_ci95"), aurc_random=ranked.get("aurc_random"),
        aurc_minus_random_ci95=ranked.get("gap_ci95"),
        selective={f"{c:g}": at_coverage(conf, lab.right, score, lab.covered, c) for c in COVERAGES},
        brier=brier(conf, lab.right), ece=ece(conf, lab.right), reliability=reliability(conf, lab.right),
        operating_point=operating_point_block(cal, run.answers, items, lab),
        calibration_s=calibration_s, retrieval=bool(getattr(run, "retrieval", False)),
        curve={"coverage": cov, "risk": risk})
    return {**_r(block), "calibrator": cal.to_dict()}  # unrounded: ask and the chat decline with it


def pairwise(items: Sequence[QAItem], runs: Sequence[Any], cfg: RunConfig) -> dict[str, dict]:
    """Every pair of systems on the abstention axis: the difference in discrimination (NoAns accuracy minus
    the share of answerable questions declined, own declines) with a paired sign-flip test, and the AURC
    difference with a paired bootstrap interval and p-value."""
    answerable = [q.answerable for q in items]
    per = {r.name: (labels(r.answers, items), [float(getattr(a, "confidence", 0.0) or 0.0) for a in r.answers])
           for r in runs}
    out = {}
    for a, b in itertools.combinations(per, 2):
        (la, ca), (lb, cb) = per[a], per[b]
        d: dict[str, Any] = {}
        if 0 < sum(answerable) < len(answerable):
            t = paired_test(discrimination_scores(answerable, [not c for c in la.covered]),
                            discrimination_scores(answerable, [not c for c in lb.covered]),
                            n_resamples=max(2000, cfg.eval.bootstrap), seed=cfg.eval.seed)
            d.update(delta_discrimination=t["delta"], p_value_discrimination=t["p_value"])
        au = paired_aurc((ca, la.right, la.covered), (cb, lb.right, lb.covered), cfg.eval.bootstrap, cfg.eval.seed)
        if au:
            d.update(delta_aurc=au["delta"], ci95_aurc=au["ci95"], p_value_aurc=au["p_value"])
        out[f"{a}_vs_{b}"] = _r(d)
    return out


def abstention_section(items: Sequence[QAItem], runs: Sequence[Any], calibrators: dict[str, Calibrator],
                       calib: CalibrationSet, calibration_runs: dict[str, Any], cfg: RunConfig,
                       fingerprints: dict[str, str | None]) -> dict:
    """summary.json's ``abstention``: the settings and the rule, what the calibration set held, the content
    fingerprints a later ``ask`` matches it by, per system its measures, and the pairwise comparisons."""
    e = cfg.eval
    return {"mode": e.abstain, "target": e.abstain_target, "max_answerable_declined": e.max_answerable_declined,
            "min_precision": e.min_precision,
            "rule": {"min_right": e.calibration_min_each, "min_wrong": e.calibration_min_each,
                     "folds": e.calibration_folds,
                     "gain": "95% bootstrap interval of the cross-validated gain above 0"},
            "calibration": calib.describe(), **fingerprints,
            "systems": {r.name: system_block(r, items, calibrators[r.name], cfg,
                                             round(calibration_runs[r.name].seconds, 3)) for r in runs},
            "pairwise": pairwise(items, runs, cfg)}


# --- the calibration ask, the chat, serve and MCP decline with ------------------------------------------

def index_fingerprint(manifest: dict[str, Any]) -> str:
    """The content fingerprint of an index, from its manifest: the corpus's content, the embedder, the
    chunking and the index settings (two indices with equal fingerprints retrieve the same passages)."""
    keys = ("corpus_fingerprint", "embedder_fingerprint", "chunker_version", "ingest_config", "index_config")
    blob = json.dumps({k: manifest.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def target_fingerprints(target: str | Path | None) -> dict[str, str | None]:
    """``{"corpus_fingerprint", "index_fingerprint"}`` of what ``ask`` or the chat answers over: a corpus folder
    (its documents, and the index built from them under its default name when there is one) or an index (name
    or folder, from its manifest). Unknown parts are None."""
    out: dict[str, str | None] = {"corpus_fingerprint": None, "index_fingerprint": None}
    if target is None:
        return out
    path = Path(target)
    if path.is_dir() and not (path / "manifest.json").exists():
        out["corpus_fingerprint"] = corpus_fingerprint(path)
        manifest = _read_json(resolve_index_dir(default_index_name(path)) / "manifest.json")
        if manifest and manifest.get("corpus_fingerprint") == out["corpus_fingerprint"]:
            out["index_fingerprint"] = index_fingerprint(manifest)
        return out
    manifest = _read_json(resolve_index_dir(target) / "manifest.json")
    if manifest:
        corpus = Path(manifest["corpus"]) if manifest.get("corpus") else None
        recorded = manifest.get("corpus_fingerprint") or (
            corpus_fingerprint(corpus) if corpus and corpus.is_dir() else None)
        out.update(corpus_fingerprint=recorded, index_fingerprint=index_fingerprint(manifest))
    return out


@dataclass
class Calibration:
    """The calibrators found for a corpus and index: per system, the newest matching run's (named in
    ``Calibrator.run``), and for the others why there is none."""

    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    fingerprints: dict[str, str | None] = field(default_factory=dict)

    def note(self, system: str) -> str:
        """One line on how ``system``'s answers are declined here (for ``ask`` and the chat)."""
        cal = self.calibrators.get(system)
        if cal is None:
            return (f"no evaluation run on this corpus and index calibrated {system}: nothing is declined by "
                    "threshold (only the model's own \"I don't know\")")
        if cal.applied:
            return f"declines below confidence {cal.threshold:.2f}, calibrated by run {cal.run} ({cal.target})"
        return f"confidence from run {cal.run}; only the model's own declines: {cal.reason}"


def calibrators_for(target: str | Path | None) -> Calibration:
    """Per system, the calibrator of the newest run under ``runs/`` on the same corpus content (and, for a
    system that retrieves, the same index content) as ``target``; what ``ask``, the chat, serve and MCP
    decline with (``apply_calibrator``). Runs are matched by the fingerprints their summary records, never by
    name; with no match a system has no calibrator and nothing is declined by threshold."""
    fps = target_fingerprints(target)
    found = Calibration(fingerprints=fps)
    if not fps["corpus_fingerprint"]:
        return found
    for run in catalogue.list_runs():  # newest first: a system keeps the first calibrator found
        ab = run.info.get("abstention")
        if not isinstance(ab, dict) or ab.get("corpus_fingerprint") != fps["corpus_fingerprint"]:
            continue
        for name, block in (ab.get("systems") or {}).items():
            if not isinstance(block, dict) or not isinstance(block.get("calibrator"), dict):
                continue
            if block.get("retrieval") and ab.get("index_fingerprint") != fps["index_fingerprint"]:
                continue
            if name not in found.calibrators:
                found.calibrators[name] = Calibrator.from_dict(block["calibrator"])
                found.calibrators[name].run = run.name
    return found
