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
from workbench.evaluation.abstention import equal_coverage
from workbench.evaluation.abstention_report import abstention_sentences, abstention_table
from workbench.evaluation.calibrate import calibration_set, fit_calibrator
from workbench.evaluation.evaluate import evaluate
from workbench.evaluation.metrics import holm, wilson
from workbench.evaluation.selective import aurc, best_threshold, random_aurc, risk_coverage, selective_block
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


def test_best_threshold_for_overall_f1_and_for_precision():
    conf = [0.9, 0.8, 0.3, 0.2]
    f1 = [1.0, 1.0, None, 0.0]
    answerable = [True, True, False, True]
    declined = [False] * 4
    t, value = best_threshold(conf, f1, answerable, declined, "overall_f1")
    assert t == 0.8 and value == pytest.approx(0.75)  # answer the two right ones, decline the others
    t, value = best_threshold(conf, f1, answerable, declined, "precision", min_precision=0.6)
    assert t == 0.3 and value == pytest.approx(2 / 3)


def test_selective_block_counts_declines_and_wrong_answers():
    b = selective_block(confidence=[0.9, 0.2, 0.1, 0.8], f1=[1.0, 0.0, None, None],
                        answerable=[True, True, False, False], declined=[False, True, True, False],
                        model_declined=[False, False, False, False])
    assert b["has_ans_f1"] == 0.5 and b["no_ans_acc"] == 0.5 and b["wrong_answer_rate"] == 0.0
    assert b["overall_f1"] == pytest.approx((1 + 0 + 1 + 0) / 4) and b["coverage"] == 0.5
    assert b["no_ans_ci95"] == [pytest.approx(x, abs=1e-4) for x in wilson(1, 2)]
    assert b["aurc"] == pytest.approx((0 + 0.5 + 2 / 3 + 3 / 4) / 4)  # order 0.9 ok, 0.8 x, 0.2 x, 0.1 x


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


def test_calibrator_orders_right_answers_first_and_declines_below_its_threshold():
    feats = [_feats(True)] * 6 + [_feats(False, 0.2)] * 4
    f1 = [1.0] * 6 + [None] * 4
    answerable = [True] * 6 + [False] * 4
    cal = fit_calibrator(feats, f1, answerable, [False] * 10, EvalConfig(), {"source": "test"})
    good, bad = cal.confidence(_feats(True)), cal.confidence(_feats(False, 0.2))
    assert 0 <= bad < cal.threshold <= good <= 1
    assert cal.fit_on["n"] == 10 and cal.fit_on["n_right"] == 6 and cal.target == "overall_f1"
    assert Calibrator.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal

    class A:
        def __init__(self, text, features):
            self.text, self.features, self.citations = text, features, ["c"]
    answers = apply_calibrator([A("42 kg", _feats(True)), A("12 knots", _feats(False, 0.2)), A(ABSTAIN, _feats(False))],
                               cal)
    assert answers[0].text == "42 kg" and not getattr(answers[0], "declined", None)
    assert answers[1].text == ABSTAIN and answers[1].text_before_decline == "12 knots"
    assert answers[1].declined in {LOW_RETRIEVAL, LOW_CONFIDENCE} and answers[1].citations == []
    assert answers[2].text == ABSTAIN and not getattr(answers[2], "declined", None)  # the model's own
    kept = apply_calibrator([A("12 knots", _feats(False, 0.2))], cal, decline=False)[0]
    assert kept.text == "12 knots" and 0 <= kept.confidence < cal.threshold


def test_calibrator_falls_back_to_the_base_rate_when_it_cannot_separate():
    cal = fit_calibrator([_feats(True)] * 4, [1.0] * 4, [True] * 4, [False] * 4, EvalConfig())
    assert cal.weights == [0.0] * len(FEATURES) and cal.confidence(_feats(False)) > 0.99


def test_decline_reason_names_retrieval_when_the_passages_pull_confidence_down():
    f = list(FEATURES)
    cal = Calibrator(f, [0.0] * len(f), [1.0] * len(f), [2.0 if n == "top_score" else 0.1 for n in f], 0.0, 0.5)
    low_retrieval = {n: 0.0 for n in f} | {"top_score": -3.0}
    assert cal.reason(low_retrieval) == LOW_RETRIEVAL
    assert cal.reason({n: 0.0 for n in f} | {"answer_logprob": -20.0}) == LOW_CONFIDENCE


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
    for key in ("has_ans_f1", "no_ans_acc", "wrong_answer_rate", "overall_f1", "aurc", "aurc_random", "threshold",
                "oracle_overall_f1", "calibrator", "curve"):
        assert key in block, key
    assert block["calibrator"]["features"] == list(FEATURES)
    eval_questions = {"How heavy is the Tern-3?", "How heavy is the Skua-G2?", "What is the Tern-9 top speed?"}
    calib_questions = seen[3:]
    assert set(seen[:3]) == eval_questions and calib_questions and not eval_questions & set(calib_questions)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["confidence"] <= 1.0 for r in rows)
    assert s["cost"]["calibration_s"] >= 0 and 0 <= s["cost"]["calibration_share"] <= 1
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


def _constructed_summary() -> dict:
    def block(risk, no_ans):
        cov = [0.25, 0.5, 0.75, 1.0]
        return {"has_ans_f1": 0.6, "no_ans_acc": no_ans, "no_ans_ci95": list(wilson(round(no_ans * 36), 36)),
                "wrong_answer_rate": 0.1, "wrong_answer_ci95": [0.05, 0.2], "overall_f1": 0.62, "coverage": 0.8,
                "aurc": sum(risk) / 4, "aurc_random": 0.4, "threshold": 0.3, "oracle_overall_f1": 0.7,
                "declined_by_threshold": 5, "n_unanswerable": 36, "curve": {"coverage": cov, "risk": risk}}
    systems = {"rag": block([0.0, 0.1, 0.2, 0.3], 0.75), "ft": block([0.2, 0.4, 0.5, 0.6], 0.25)}
    return {"systems": {"rag": {"f1_before_decline": 0.63}, "ft": {"f1_before_decline": 0.62}},
            "abstention": {"mode": "calibrated", "target": "overall_f1",
                           "calibration": {"source": "train split", "n_answerable": 32, "n_unanswerable": 16},
                           "systems": systems, "equal_coverage": equal_coverage(systems)}}


def test_equal_coverage_compares_at_half_or_at_what_all_reach():
    s = _constructed_summary()["abstention"]
    assert s["equal_coverage"] == {"coverage": 0.5, "risk": {"rag": 0.1, "ft": 0.4}}
    s["systems"]["ft"]["curve"] = {"coverage": [0.25], "risk": [0.2]}  # ft declined 3/4 on its own
    assert equal_coverage(s["systems"]) == {"coverage": 0.25, "risk": {"rag": 0.0, "ft": 0.2}}


def test_report_section_on_a_constructed_summary():
    summary = _constructed_summary()
    said = " ".join(abstention_sentences(summary))
    assert "answering its 50% most confident questions), **rag** hallucinates least: 10% of its answers are wrong, "\
           "against 40% for **ft**" in said
    assert "**rag** declines most often: 75% [59%–86%] (Wilson 95% interval)" in said
    assert "rag -0.03, ft -0.02" in said
    table = "\n".join(abstention_table(summary))
    assert "## Knowing when not to answer" in table and "| rag | 0.60 | 75% [59%–86%] | 10% [5%–20%] | 0.62 |" in table
    assert "oracle" in table and "in-sample" in table and "32 answerable questions from the train split" in table


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
