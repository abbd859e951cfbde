"""Knowing when not to answer: Wilson and Holm, AURC and thresholds on constructed numbers, generated
unanswerable questions, the calibrator and its leakage guard, confidences from generation, and the harness's
``abstention`` section."""
from __future__ import annotations

import json
import math

import pytest
from eval_fakes import table_system

from workbench.answering.confidence import FEATURES, LOW_CONFIDENCE, LOW_RETRIEVAL, Calibrator, apply_calibrator
from workbench.core.config import EvalConfig, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.text import ABSTAIN
from workbench.corpus.qa import QAItem
from workbench.evaluation.abstention_report import abstention_sentences, abstention_table
from workbench.evaluation.calibrate import calibration_set, calibration_size, fit_calibrator
from workbench.evaluation.evaluate import evaluate
from workbench.evaluation.metrics import holm, wilson
from workbench.evaluation.report import build_report
from workbench.evaluation.selective import (
    at_coverage,
    aurc,
    brier,
    choose_threshold,
    ece,
    own_declines,
    random_aurc,
    reliability,
    risk_coverage,
)
from workbench.evaluation.unanswerable import corpus_words, make_unanswerable

# --- rates and p-values ----------------------------------------------------------------------------

def test_wilson_matches_hand_computed_intervals():
    lo, hi = wilson(0, 36)  # z^2/(n+z^2) = 3.8415/39.8415
    assert lo == 0.0 and hi == pytest.approx(0.09642, abs=1e-4)
    lo, hi = wilson(18, 36)  # centre 0.5, half 1.96*sqrt(0.25/36 + 3.8415/5184)/(1 + 3.8415/36) = 0.1553
    assert (lo, hi) == (pytest.approx(0.3447, abs=1e-4), pytest.approx(0.6553, abs=1e-4))
    assert wilson(5, 0) is None


def test_holm_adjusts_in_rank_order_and_stays_monotone():
    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.30
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.01, 0.011]) == pytest.approx([0.02, 0.02])  # 0.011 x1 lifted to the running max
    assert holm([0.6, 0.9]) == [1.0, 1.0] and holm([]) == []


# --- risk-coverage -----------------------------------------------------------------------------------

def test_aurc_on_constructed_scores():
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [True, True, False, False]
    covered = [True] * 4
    cov, risk = risk_coverage(conf, correct, covered)
    assert cov == [0.25, 0.5, 0.75, 1.0] and risk == pytest.approx([0, 0, 1 / 3, 0.5])
    assert aurc(conf, correct, covered) == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    assert random_aurc(correct, covered) == 0.5
    worst = aurc([0.1, 0.2, 0.8, 0.9], correct, covered)  # wrong ones first: 1, 1, 2/3, 1/2
    assert worst == pytest.approx((1 + 1 + 2 / 3 + 0.5) / 4)
    # a system's own decline is never covered: the curve stops at 3/4
    cov, _ = risk_coverage(conf, correct, [True, True, True, False])
    assert cov[-1] == 0.75


def test_thresholds_for_answerable_declined_and_for_precision():
    conf = [0.9, 0.8, 0.3, 0.2, 0.5]
    right = [True, True, False, False, False]
    answerable = [True, True, False, True, True]
    covered = [True, True, True, True, True]
    # at most 1 of 4 answerable declined: declining below 0.5 takes 0.2 (answerable) and 0.3; below 0.8 would take two
    assert choose_threshold(conf, right, answerable, covered, "answerable_declined", 0.25) == 0.5
    assert choose_threshold(conf, right, answerable, covered, "answerable_declined", 0.0) == 0.2
    assert choose_threshold(conf, right, answerable, covered, "precision", min_precision=0.6) == 0.5
    assert choose_threshold(conf, right, answerable, covered, "precision", min_precision=1.0) == 0.8


def test_own_declines_and_selective_figures_at_fixed_coverage():
    d = own_declines([True, True, False, False], [False, True, True, True])
    assert d["no_ans_acc"] == 1.0 and d["answerable_declined"] == 0.5 and d["discrimination"] == 0.5
    assert d["no_ans_ci95"] == [pytest.approx(x, abs=1e-4) for x in wilson(2, 2)]
    everything = own_declines([True, False], [True, True])
    assert everything["discrimination"] == 0.0  # declining everything tells nothing apart
    conf, right = [0.9, 0.8, 0.7, 0.1], [True, False, True, False]
    score = [1.0, 0.2, 0.6, 0.0]
    half = at_coverage(conf, right, score, [True] * 4, 0.5)
    assert half == {"f1": pytest.approx(0.6), "wrong_rate": 0.5, "n": 2}
    assert at_coverage(conf, right, score, [True, False, False, True], 0.8) is None  # own declines leave 2 of 4


def test_brier_and_ece_match_hand_computed_values():
    conf, right = [0.9, 0.8, 0.3, 0.6], [True, False, False, True]
    assert brier(conf, right) == pytest.approx((0.01 + 0.64 + 0.09 + 0.16) / 4)
    assert ece(conf, right) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)  # one answer per bin
    conf, right = [0.72, 0.78, 0.15, 1.0], [True, False, False, True]
    bins = reliability(conf, right)
    assert [(b["lo"], b["n"]) for b in bins] == [(0.1, 1), (0.7, 2), (0.9, 1)]  # 1.0 falls in the last bin
    assert bins[1]["confidence"] == pytest.approx(0.75) and bins[1]["accuracy"] == 0.5
    assert ece(conf, right) == pytest.approx(0.25 * 0.15 + 0.5 * 0.25 + 0.0)


# --- generated unanswerable questions ------------------------------------------------------------------

CORPUS = ["The Tern-3 buoy weighs 42 kg and was designed in Vesterby.",
          "Kestrelmark ships the Skua-G2 glacier stake to Nordhavn.", "INC-2290 was closed in May."]


def test_generated_questions_name_an_entity_the_corpus_lacks():
    words = corpus_words(CORPUS)
    questions = ["How much does the Tern-3 weigh?", "Where was the Tern-3 designed in Vesterby?",
                 "Who receives the Skua-G2?", "What happened in INC-2290?", "What is this?"]
    made = make_unanswerable(questions, words, n=10, seed=1)
    assert len(made) == 4  # "What is this?" has no entity to change
    for new_q, old_q, entity in made:
        assert entity.casefold() not in words and entity in new_q and new_q != old_q
        assert all(entity.casefold() not in text.casefold() for text in CORPUS)
    assert make_unanswerable(questions, words, n=2, seed=1) == made[:2]  # seeded, in order


def _item(i, q, split="train", answers=("42 kg",)):
    return QAItem(f"q{i}", q, list(answers), True, split)


def test_calibration_set_never_holds_an_eval_question():
    evals = [_item(100, "How much does the Tern-3 weigh?", "eval"),
             QAItem("u1", "How much does the Tern-4 weigh?", [], False, "eval")]
    train = [_item(1, "How much does the Tern-3 weigh?"),        # the eval question itself
             _item(2, "how much does the tern-3 weigh ?"),        # a near-duplicate
             _item(3, "What does the Tern-3 buoy weigh in kilograms?"),
             _item(4, "Where was the Tern-3 designed?", answers=["Vesterby"])]
    cfg = EvalConfig(calibration_questions=8, calibration_unanswerable=0.5)
    calib = calibration_set(train + evals, evals, CORPUS, cfg)
    asked = {q.question.casefold() for q in calib.items}
    assert not asked & {q.question.casefold() for q in evals}
    assert {q.question for q in calib.items if q.answerable} <= {t.question for t in train[2:]}
    assert calib.n_dropped >= 2 and calib.source == "train split"
    assert all(q.split == "calibration" for q in calib.items)
    made = [q for q in calib.items if not q.answerable]
    assert made and all(q.kind == "generated-unanswerable" for q in made)
    with pytest.raises(WorkbenchError, match="no questions to calibrate"):
        calibration_set(evals, evals, CORPUS, cfg)


# --- the calibrator --------------------------------------------------------------------------------------

def _feats(good: bool, retrieval: float = 1.0) -> dict:
    f = {n: 0.0 for n in FEATURES}
    f.update(answer_logprob=-0.2 if good else -3.0, abstain_logprob=-6.0 if good else -1.0,
             top_score=retrieval, question_coverage=retrieval)
    return f


def _separable(n_right: int, n_wrong_ans: int, n_una: int):
    """Calibration answers whose features separate right from wrong (a little noise, no ties)."""
    feats = ([_feats(True) | {"first_logprob": -0.01 * i} for i in range(n_right)]
             + [_feats(False) | {"answer_logprob": -1.5, "first_logprob": -0.01 * i} for i in range(n_wrong_ans)]
             + [_feats(False, 0.2) | {"first_logprob": -0.01 * i} for i in range(n_una)])
    right = [True] * n_right + [False] * (n_wrong_ans + n_una)
    answerable = [True] * (n_right + n_wrong_ans) + [False] * n_una
    return feats, right, [True] * len(right), answerable


def test_calibrator_applies_a_threshold_the_calibration_set_carries():
    feats, right, covered, answerable = _separable(12, 6, 12)
    cal = fit_calibrator(feats, right, covered, answerable, EvalConfig(), {"source": "test"})
    good, una = cal.confidence(_feats(True)), cal.confidence(_feats(False, 0.2))
    assert cal.applied and cal.reason.startswith("calibrated: threshold")
    assert 0 <= una < cal.threshold <= good <= 1
    assert cal.fit_on["n"] == 30 and cal.fit_on["n_right"] == 12 and cal.fit_on["n_wrong"] == 18
    assert cal.fit_on["cv_gain"] > 0 and cal.fit_on["cv_gain_ci95"][0] > 0
    assert cal.target == "answerable_declined<=0.1"
    assert Calibrator.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal

    class A:
        def __init__(self, text, features):
            self.text, self.features, self.citations = text, features, ["c"]
    cal.run = "run-1"
    answers = apply_calibrator([A("42 kg", _feats(True)), A("12 knots", _feats(False, 0.2)), A(ABSTAIN, _feats(False))],
                               cal)
    assert answers[0].text == "42 kg" and not getattr(answers[0], "declined", None)
    assert answers[1].text == ABSTAIN and answers[1].text_before_decline == "12 knots"
    assert answers[1].declined.split(" (")[0] in {LOW_RETRIEVAL, LOW_CONFIDENCE} and answers[1].citations == []
    assert "calibrated by run run-1" in answers[1].declined
    assert answers[2].text == ABSTAIN and not getattr(answers[2], "declined", None)  # the model's own
    kept = apply_calibrator([A("12 knots", _feats(False, 0.2))], cal, decline=False)[0]
    assert kept.text == "12 knots" and 0 <= kept.confidence < cal.threshold


def test_too_few_right_calibration_answers_apply_no_threshold_and_say_why():
    feats, right, covered, answerable = _separable(4, 20, 24)
    cal = fit_calibrator(feats, right, covered, answerable, EvalConfig())
    assert not cal.applied and cal.reason.startswith("not calibrated: 4 of 48 calibration answers right")

    class A:
        text, features, citations = "12 knots", _feats(False, 0.2), []
    assert apply_calibrator([A()], cal)[0].text == "12 knots"  # a threshold that is not applied declines nothing
    feats, right, covered, answerable = _separable(20, 3, 0)
    assert fit_calibrator(feats, right, covered, answerable, EvalConfig()).reason.startswith(
        "not calibrated: 3 of 23 calibration answers wrong")
    model_only = fit_calibrator(*_separable(12, 6, 12), EvalConfig(abstain="model"))
    assert not model_only.applied and "eval.abstain is model" in model_only.reason


def test_a_threshold_whose_gain_does_not_hold_out_of_sample_is_not_applied():
    # features say nothing about rightness: any threshold withholds right and wrong answers alike
    feats = [_feats(True) | {"first_logprob": -0.01 * i} for i in range(40)]
    right = [i % 2 == 0 for i in range(40)]
    cal = fit_calibrator(feats, right, [True] * 40, [True] * 40,
                         EvalConfig(abstain_target="precision", min_precision=0.9))
    assert not cal.applied and cal.reason.startswith("not calibrated:")


def test_calibration_size_keeps_to_its_budget():
    cfg = EvalConfig()  # budget 10%: at most n_eval / 9, never under 2 x 10, at most 48
    assert calibration_size(160, cfg) == 20 and calibration_size(270, cfg) == 30 and calibration_size(5000, cfg) == 48


def test_calibrator_falls_back_to_the_base_rate_when_it_cannot_separate():
    cal = fit_calibrator([_feats(True)] * 4, [True] * 4, [True] * 4, [True] * 4, EvalConfig())
    assert cal.weights == [0.0] * len(FEATURES) and cal.confidence(_feats(False)) > 0.99 and not cal.applied


def test_decline_reason_names_retrieval_when_the_passages_pull_confidence_down():
    f = list(FEATURES)
    cal = Calibrator(f, [0.0] * len(f), [1.0] * len(f), [2.0 if n == "top_score" else 0.1 for n in f], 0.0, 0.5)
    low_retrieval = {n: 0.0 for n in f} | {"top_score": -3.0}
    assert cal.reason_for(low_retrieval).startswith(LOW_RETRIEVAL)
    assert cal.reason_for({n: 0.0 for n in f} | {"answer_logprob": -20.0}).startswith(LOW_CONFIDENCE)


# --- confidences from generation -----------------------------------------------------------------------

def test_generation_records_token_logprobs_that_match_the_model(tiny_lm_dir, one_torch_thread):
    import torch

    from workbench.answering.generate import Generator
    from workbench.answering.models import load_base_model
    from workbench.core.config import GenerateConfig, ModelConfig

    model, tok = load_base_model(ModelConfig(base_model=str(tiny_lm_dir), device="cpu"), progress=False)
    gen = Generator(model, tok, GenerateConfig(max_new_tokens=5, batch_size=4))
    convs = [[{"role": "user", "content": q}] for q in ("How heavy is the buoy?", "Who is it?")]
    free = gen.generate(convs)
    for conv, g in zip(convs, free):
        ids = gen.encode(conv)
        new = tok(g.text, add_special_tokens=False)["input_ids"]
        assert len(g.logprobs) == g.n_new_tokens and all(lp <= 0 for lp in g.logprobs)
        assert g.copy_logprobs == [] and g.abstain_logprob is not None and g.abstain_logprob <= 0
        if g.n_new_tokens and new:  # the first token's log-prob, recomputed with one forward pass
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            first = torch.log_softmax(logits.float(), -1)
            assert g.logprobs[0] == pytest.approx(float(first.max()), abs=1e-4)  # greedy: the best token
    copied = gen.generate(convs, sources=[["the buoy weighs 42 kg", ABSTAIN]] * 2)
    for g in copied:
        assert len(g.copy_logprobs) == g.n_new_tokens
        assert all(c >= m - 1e-5 for c, m in zip(g.copy_logprobs, g.logprobs))  # renormalised over fewer tokens
        assert g.copy_abstain_logprob is not None and g.copy_abstain_logprob <= 0


# --- the harness -----------------------------------------------------------------------------------------

def _corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "doc.md").write_text("# Buoys\n\nThe Tern-3 buoy weighs 42 kg. The Skua-G2 stake weighs 3 kg.\n"
                                 "The Plover-P4 handheld weighs 600 g.\n", encoding="utf-8")
    rows = [QAItem("e1", "How heavy is the Tern-3?", ["42 kg"]), QAItem("e2", "How heavy is the Skua-G2?", ["3 kg"]),
            QAItem("e3", "What is the Tern-9 top speed?", [], False)]
    rows += [QAItem(f"t{i}", q, [a], split="train") for i, (q, a) in enumerate(
        [("What does the Tern-3 buoy weigh?", "42 kg"), ("What is the weight of the Skua-G2 stake?", "3 kg"),
         ("How much does the Plover-P4 handheld weigh?", "600 g"), ("What does a Plover-P4 weigh?", "600 g")])]
    (root / "qa.jsonl").write_text("".join(json.dumps(q.to_json()) + "\n" for q in rows), encoding="utf-8")
    return root


def test_every_system_gets_confidences_and_the_summary_an_abstention_section(tmp_path, monkeypatch):
    from workbench.evaluation import systems

    seen: list[str] = []
    answers = {"How heavy is the Tern-3?": "42 kg", "How heavy is the Skua-G2?": "7 kg",
               "What is the Tern-9 top speed?": "12 knots"}
    spec = table_system("fake", answers)
    build = spec.build

    def spying(ctx):
        inner = build(ctx)
        return lambda items: (seen.extend(q.question for q in items), inner(items))[1]
    monkeypatch.setitem(systems.SYSTEMS, "fake", spec.__class__(**{**spec.__dict__, "build": spying}))
    cfg = RunConfig(eval=EvalConfig(systems=["fake"], bootstrap=50, calibration_questions=8))
    out = evaluate(_corpus(tmp_path), cfg, out=tmp_path / "run", progress=False)
    s = json.loads((out / "summary.json").read_text())
    ab = s["abstention"]
    assert ab["mode"] == "calibrated" and ab["calibration"]["source"] == "train split"
    assert ab["calibration"]["n_answerable"] >= 1 and ab["calibration"]["n_unanswerable"] >= 1
    block = ab["systems"]["fake"]
    for key in ("no_ans_acc", "answerable_declined", "wrong_answer_rate", "aurc", "aurc_ci95", "aurc_random",
                "selective", "brier", "ece", "reliability", "operating_point", "calibrator", "curve"):
        assert key in block, key
    assert set(block["selective"]) == {"0.5", "0.8"}
    op = block["operating_point"]  # 8 calibration answers cannot carry a threshold
    assert op["applied"] is False and op["reason"].startswith("not calibrated:") and "answerable_f1" not in op
    assert s["systems"]["fake"]["f1"] == pytest.approx(0.75)  # answer-all: "42 kg" F1 1, "7 kg" for "3 kg" F1 0.5
    assert ab["corpus_fingerprint"] and ab["index_fingerprint"] is None
    assert (out / "plots" / "reliability_fake.png").exists()
    assert block["calibrator"]["features"] == list(FEATURES)
    eval_questions = {"How heavy is the Tern-3?", "How heavy is the Skua-G2?", "What is the Tern-9 top speed?"}
    calib_questions = seen[3:]
    assert set(seen[:3]) == eval_questions and calib_questions and not eval_questions & set(calib_questions)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["confidence"] <= 1.0 for r in rows)
    assert s["cost"]["calibration_s"] >= 0 and 0 <= s["cost"]["calibration_share"] <= 1
    assert s["cost"]["calibration_questions"] == len(calib_questions)
    assert "f1_before_decline" not in s["systems"]["fake"]
    report = (out / "report.md").read_text()
    assert "## Knowing when not to answer" in report


def test_bad_abstain_settings_are_refused():
    with pytest.raises(WorkbenchError, match="unknown abstain mode"):
        EvalConfig(abstain="sometimes")
    with pytest.raises(WorkbenchError, match="min_precision"):
        EvalConfig(min_precision=0.0)
    with pytest.raises(WorkbenchError, match="too few"):
        EvalConfig(calibration_questions=2)
    assert math.isclose(EvalConfig().calibration_unanswerable, 0.33)


UNITS = [7 * k + 3 for k in range(30)]
"""Entities of the constructed corpus: sparse numbers, so a shifted digit names a unit the corpus lacks."""


def _units_corpus(tmp_path):
    root = tmp_path / "units"
    root.mkdir()
    (root / "units.md").write_text("# Units\n\n" + " ".join(f"The Unit-{n} weighs {n} kg." for n in UNITS) + "\n",
                                   encoding="utf-8")
    rows = [QAItem(f"e{n}", f"How heavy is the Unit-{n}?", [f"{n} kg"]) for n in UNITS[:6]]
    rows += [QAItem(f"u{i}", f"How heavy is the Unit-{n}?", [], False) for i, n in enumerate((1000, 2000, 3001))]
    rows += [QAItem(f"t{n}", f"What does the Unit-{n} weigh?", [f"{n} kg"], split="train") for n in UNITS[6:]]
    (root / "qa.jsonl").write_text("".join(json.dumps(q.to_json()) + "\n" for q in rows), encoding="utf-8")
    return root


def _units_system():
    """Right on odd units with a sure reply, wrong on even ones with a hesitant one, and sure-ish nonsense
    with poor passages for units the corpus lacks."""
    import re

    from eval_fakes import FakeAnswer

    from workbench.evaluation.systems import SystemSpec

    def reply(question, i):
        n = int(re.search(r"Unit-(\d+)", question).group(1))
        noise = {"first_logprob": -0.01 * (i % 7)}
        if n not in UNITS:
            return "blue", _feats(False, 0.2) | noise
        if n % 2:
            return f"{n} kg", _feats(True) | noise
        return "green", _feats(False) | {"answer_logprob": -1.5} | noise

    def build(ctx):
        def answer(items):
            out = []
            for i, q in enumerate(items):
                text, feats = reply(q.question, i)
                a = FakeAnswer(q.question, text)
                a.features = feats
                out.append(a)
            return out
        return answer
    return SystemSpec("units", "fake units", retrieval=False, build=build)


def test_an_applied_operating_point_is_reported_apart_and_declines_as_ask_does(tmp_path, monkeypatch):
    from workbench.evaluation import systems

    monkeypatch.setitem(systems.SYSTEMS, "units", _units_system())
    cfg = RunConfig(eval=EvalConfig(systems=["units"], bootstrap=200, calibration_budget=0.9,
                                    calibration_questions=36))
    out = evaluate(_units_corpus(tmp_path), cfg, out=tmp_path / "run", progress=False)
    s = json.loads((out / "summary.json").read_text())
    block = s["abstention"]["systems"]["units"]
    op = block["operating_point"]
    assert op["applied"], op["reason"]
    assert op["run"] == "run" and op["calibration"]["n_right"] >= 10 and op["calibration"]["n_wrong"] >= 10
    # accuracy is answer-all: 3 of 6 answerable right (odd units), whatever the operating point declines
    assert s["systems"]["units"]["f1"] == pytest.approx(0.5) and op["answerable_f1_answer_all"] == pytest.approx(0.5)
    assert op["noans_accuracy"] == 1.0 and op["noans_accuracy_own"] == 0.0 and op["noans_gain"] == 1.0
    assert op["f1_cost"] == pytest.approx(op["answerable_f1"] - 0.5)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows if not r["answerable"]] == ["blue"] * 3  # scored as given
    # the one decline rule: the run's calibrator through apply_calibrator declines exactly what eval reported
    cal = Calibrator.from_dict(block["calibrator"])

    class A:
        def __init__(self, row):
            self.text, self.features, self.citations = row["prediction"], row["confidence_features"], []
    decided = apply_calibrator([A(r) for r in rows], cal)
    declined = [bool(getattr(a, "declined", None)) for a in decided]
    assert declined == [bool(r["declined_at_operating_point"]) for r in rows]
    assert any(r["declined_at_operating_point"] for r in rows)
    report = (out / "report.md").read_text()
    assert "### Operating point" in report and "At the calibrated operating point, **units** declines 100%" in report


def _constructed_summary() -> dict:
    """rag tells answerable from unanswerable apart; mute declines everything; ft declines answerable
    questions more often than unanswerable ones."""
    def ab_block(no_ans, ans_declined, aurc_, gap_hi, op=None):
        return {"no_ans_acc": no_ans, "no_ans_ci95": list(wilson(round(no_ans * 40), 40)),
                "answerable_declined": ans_declined, "answerable_declined_ci95": [0.0, 0.2],
                "wrong_answer_rate": 0.3, "aurc": aurc_, "aurc_ci95": [0.1, 0.4] if aurc_ is not None else None,
                "aurc_random": 0.45, "aurc_minus_random_ci95": [-0.3, gap_hi] if aurc_ is not None else None,
                "selective": {"0.5": {"f1": 0.8, "wrong_rate": 0.1, "n": 80}, "0.8": None},
                "brier": 0.2, "ece": 0.1,
                "operating_point": op or {"applied": False, "reason": "not calibrated: 4 of 48 calibration answers right"}}
    rag_op = {"applied": True, "reason": "calibrated: threshold 0.30", "threshold": 0.3, "answerable_f1": 0.58,
              "answerable_f1_answer_all": 0.6, "f1_cost": -0.02, "noans_accuracy": 0.7, "noans_accuracy_own": 0.5,
              "noans_gain": 0.2, "answerable_declined": 0.12}
    ab = {"rag": ab_block(0.5, 0.1, 0.2, -0.1, rag_op), "mute": ab_block(1.0, 1.0, None, None),
          "ft": ab_block(0.2, 0.3, 0.15, -0.2)}
    sys = {"rag": {"f1": 0.6, "ci95": {"f1": [0.5, 0.7]}, "abstain_unanswerable": 0.5, "abstain_answerable": 0.1},
           "mute": {"f1": 0.0, "ci95": {"f1": [0.0, 0.0]}, "abstain_unanswerable": 1.0, "abstain_answerable": 1.0},
           "ft": {"f1": 0.3, "ci95": {"f1": [0.2, 0.4]}, "abstain_unanswerable": 0.2, "abstain_answerable": 0.3}}
    for b in sys.values():
        b.update(n_answerable=120, n_unanswerable=40)
    return {"n_questions": 160, "n_answerable": 120, "n_unanswerable": 40, "systems": sys,
            "pairwise": {"rag_vs_mute": {"delta_f1": 0.6, "p_value": 0.0001, "ci95_f1": [0.5, 0.7]},
                         "rag_vs_ft": {"delta_f1": 0.3, "p_value": 0.001, "ci95_f1": [0.2, 0.4]}},
            "abstention": {"mode": "calibrated", "target": "answerable_declined", "max_answerable_declined": 0.1,
                           "rule": {"min_right": 10, "min_wrong": 10, "folds": 5},
                           "calibration": {"source": "train split", "n_answerable": 32, "n_unanswerable": 16},
                           "systems": ab,
                           "pairwise": {"rag_vs_mute": {"delta_discrimination": 0.4, "p_value_discrimination": 0.001}}}}


def test_a_system_that_declines_everything_is_called_best_at_nothing():
    summary = _constructed_summary()
    verdict = build_report(summary, [])
    verdict = verdict[verdict.index("## Verdict"):verdict.index("## Systems")]
    claims = [line for line in verdict.replace(". ", ".\n").splitlines() if "best" in line or "least" in line
              or "most" in line or "declines" in line]
    assert claims and not [c for c in claims if "**mute**" in c or "**ft**" in c]
    assert "**rag** answers best overall: F1 0.60" in verdict
    assert ("**rag** tells them apart best by its own \"I don't know\": it declines 50% [35%–65%] of the 40 "
            "unanswerable questions and 10% of the answerable ones.") in verdict
    assert "2 other systems decline answerable questions as often as unanswerable ones, or more." in verdict
    assert "**rag** puts its right answers first best: AURC 0.20" in verdict and "ft also beat" not in verdict
    assert ("At the calibrated operating point, **rag** declines 70% of the unanswerable questions (its own: 50%) "
            "for answerable F1 0.58 against 0.60 answering all (-0.02).") in verdict


def test_no_system_is_named_when_none_tells_the_questions_apart():
    summary = _constructed_summary()
    del summary["systems"]["rag"], summary["abstention"]["systems"]["rag"]
    said = " ".join(abstention_sentences(summary))
    assert "none knows when not to answer" in said and "**" not in said
    del summary["abstention"]  # a run without the section: the same rule from systems.*
    assert "none knows when not to answer" in " ".join(abstention_sentences(summary))


def test_report_section_keeps_the_operating_point_apart():
    table = "\n".join(abstention_table(_constructed_summary()))
    assert "## Knowing when not to answer" in table and "### Operating point" in table
    assert ("| rag | 50% [35%–65%] | 10% [0%–20%] | 30% | 0.20 [0.10–0.40] (0.45) | 0.80 / 10% | – | 0.20 | 0.10 |"
            in table)
    assert "| rag | yes | 0.30 | 0.58 (0.60, -0.02) | 70% (50%, +20 pts) | 12% |" in table
    assert "| mute | no | – | – | – | – | not calibrated: 4 of 48 calibration answers right |" in table
    assert "32 answerable questions from the train split" in table and "10 right and 10 wrong" in table


def test_never_mode_does_not_offer_the_abstention_phrase_to_copying():
    from eval_fakes import passage

    from workbench.answering.answer import prepare
    from workbench.core.config import PromptConfig

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text.split())))}

    hits = [[passage("buoy.md", "The Tern-3 buoy weighs 42 kg.")]]
    offered = prepare(["How heavy is the Tern-3?"], hits, Tok(), 512, PromptConfig())[0].sources
    never = prepare(["How heavy is the Tern-3?"], hits, Tok(), 512, PromptConfig(), offer_abstain=False)[0].sources
    assert any(s.text == ABSTAIN for s in offered) and not any(s.text == ABSTAIN for s in never)


# --- real text (slow: the embedded models; the lead runs it) ------------------------------------------------

SQUAD_EN = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "corpora" / "squad-en-dev"


@pytest.mark.slow
@pytest.mark.skipif(not (SQUAD_EN / "qa-no-train.jsonl").exists(), reason="the shared squad-en-dev corpus is absent")
def test_no_train_split_on_real_text_keeps_the_headline_at_answer_all(tmp_path, monkeypatch):
    """30 SQuAD 2.0 questions on one Wikipedia article, no train split (synthesized calibration): declines
    never change accuracy, and the report says whether the operating point was applied and why."""
    import shutil

    from typer.testing import CliRunner

    from workbench.cli import app
    from workbench.evaluation.metrics import mean

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "squad"
    shutil.copytree(SQUAD_EN / "docs", corpus / "docs")
    rows = [json.loads(line) for line in (SQUAD_EN / "qa-no-train.jsonl").read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if r.get("answerable", True)][:22] + [r for r in rows if r.get("answerable") is False][:8]
    (corpus / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    res = CliRunner().invoke(app, ["eval", str(corpus), "--systems", "base,rag", "--name", "squad30"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "home" / "runs" / "squad30"
    s = json.loads((out / "summary.json").read_text())
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for name in ("base", "rag"):
        answer_all = mean([r["f1"] for r in results if r["system"] == name and r["answerable"]])
        assert s["systems"][name]["f1"] == pytest.approx(answer_all, abs=1e-4), name
        op = s["abstention"]["systems"][name]["operating_point"]
        assert op["reason"] and (op["applied"] or op["reason"].startswith("not "))
        if op["applied"]:
            assert op["answerable_f1_answer_all"] == pytest.approx(answer_all, abs=1e-4)
    assert s["abstention"]["calibration"]["source"] == "synthesized"
    assert s["cost"]["calibration_questions"] == 20  # the floor: 2 x calibration_min_each
    report = (out / "report.md").read_text()
    assert "### Operating point" in report and "Knowing when not to answer" in report
