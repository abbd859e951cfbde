"""Answer metrics against hand-computed values; bootstrap and paired test against known answers."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.evaluation.metrics import (
    bootstrap_ci,
    contains,
    exact_match,
    normalize_answer,
    paired_test,
    rouge_l,
    score_answers,
    token_f1,
)


def _idk(text: str) -> bool:
    return "don't know" in text.lower()


@pytest.mark.parametrize("raw, norm", [
    ("The  Tern-3 buoy!", "tern 3 buoy"),
    ("An answer, a test.", "answer test"),
    ("Sølvi BREKKE", "sølvi brekke"),
    ("«Orrvik» – 2011", "orrvik 2011"),
    ("1413 µS/cm", "1413 μs cm"),          # NFKC: micro sign -> Greek mu
    ("  ", ""),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match():
    assert exact_match("the 42 kg.", ["42 kg"]) == 1.0
    assert exact_match("42 kg", ["41 kg", "42 KG"]) == 1.0
    assert exact_match("It weighs 42 kg", ["42 kg"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_token_f1_hand_computed():
    # pred [it, weighs, 42, kg] vs gold [42, kg]: P = 2/4, R = 2/2 -> F1 = 2/3
    assert token_f1("It weighs 42 kg", ["42 kg"]) == pytest.approx(2 / 3)
    # pred [kg, 42, weighs] vs [42, kg]: bag overlap 2, P = 2/3, R = 1 -> 0.8
    assert token_f1("kg 42 weighs", ["42 kg"]) == pytest.approx(0.8)
    # best over golds: "Ilse" vs ["Ilse Varnholt", "Ilse"] -> 1.0 against the second
    assert token_f1("Ilse", ["Ilse Varnholt", "Ilse"]) == 1.0
    assert token_f1("Ilse", ["Ilse Varnholt"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    # repeated tokens count once each side: pred [kg, kg] vs [kg]: common 1, P = 1/2, R = 1 -> 2/3
    assert token_f1("kg kg", ["kg"]) == pytest.approx(2 / 3)
    assert token_f1("nothing shared", ["42 kg"]) == 0.0
    assert token_f1("", ["42 kg"]) == 0.0


def test_contains_whole_tokens():
    assert contains("It weighs 42 kg.", ["42 kg"]) == 1.0
    assert contains("It weighs 420 kg.", ["42 kg"]) == 0.0
    assert contains("The answer is Orrvik", ["Bergen", "orrvik"]) == 1.0
    assert contains("anything", [""]) == 0.0


def test_rouge_l_hand_computed():
    # pred [kg, 42, weighs] vs gold [42, kg]: LCS 1, P = 1/3, R = 1/2 -> F = 2PR/(P+R) = 0.4
    assert rouge_l("kg 42 weighs", ["42 kg"]) == pytest.approx(0.4)
    # pred [it, weighs, 42, kg] vs [42, kg]: LCS 2, P = 1/2, R = 1 -> 2/3
    assert rouge_l("It weighs 42 kg", ["42 kg"]) == pytest.approx(2 / 3)
    # [a b c d e] vs [a c e x]: LCS (a c e) = 3 -> P = 3/5, R = 3/4 -> 2/3
    assert rouge_l("p q r s t", ["p r t x"]) == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert rouge_l("42 kg", ["42 kg"]) == 1.0


def test_score_answers_splits_answerable_and_unanswerable():
    preds = ["42 kg", "I don't know", "Orrvik", "I don't know."]
    golds = [["42 kg"], ["Ilse Varnholt"], [], []]
    out = score_answers(preds, golds, is_abstention=_idk)
    s = out["score"]
    assert s["em"] == 0.5 and s["f1"] == 0.5 and s["contains"] == 0.5 and s["rouge_l"] == 0.5
    assert s["abstain_unanswerable"] == 0.5          # declined 1 of the 2 unanswerable
    assert s["abstain_answerable"] == 0.5            # wrongly declined 1 of the 2 answerable
    assert (s["n_answerable"], s["n_unanswerable"]) == (2, 2)
    assert out["per_item"][2] == {"abstained": False, "em": None, "f1": None, "contains": None,
                                  "rouge_l": None}
    assert out["per_item"][0]["f1"] == 1.0


def test_score_answers_without_unanswerable_gives_none_not_nan():
    s = score_answers(["x"], [["x"]], is_abstention=_idk)["score"]
    assert s["abstain_unanswerable"] is None
    s = score_answers(["I don't know"], [[]], is_abstention=_idk)["score"]
    assert s["f1"] is None and s["abstain_unanswerable"] == 1.0


def test_score_answers_length_mismatch():
    with pytest.raises(ValueError):
        score_answers(["a"], [["a"], ["b"]], is_abstention=_idk)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.lists(st.text(max_size=20), min_size=1, max_size=3))
def test_metrics_are_bounded_and_consistent(pred, golds):
    em, f1, c, r = (exact_match(pred, golds), token_f1(pred, golds), contains(pred, golds),
                    rouge_l(pred, golds))
    for v in (em, f1, c, r):
        assert 0.0 <= v <= 1.0
    if em == 1.0 and normalize_answer(pred):
        assert f1 == 1.0 and c == 1.0 and r == 1.0
    assert r <= f1 + 1e-9  # an LCS never exceeds the bag overlap


# --- uncertainty ---------------------------------------------------------------------------------

def test_bootstrap_constant_values_give_a_point():
    assert bootstrap_ci([0.7] * 30) == pytest.approx((0.7, 0.7))
    assert bootstrap_ci([]) is None


def test_bootstrap_matches_normal_theory():
    # 400 Bernoulli(0.5) outcomes: sd of the mean = 0.5 / sqrt(400) = 0.025 -> 95% CI ~ 0.5 +- 0.049
    lo, hi = bootstrap_ci([0.0, 1.0] * 200, n_resamples=4000, seed=1)
    assert lo == pytest.approx(0.451, abs=0.01) and hi == pytest.approx(0.549, abs=0.01)
    assert bootstrap_ci([0.0, 1.0] * 200, seed=3) == bootstrap_ci([0.0, 1.0] * 200, seed=3)


def test_paired_test_exact_small_samples():
    # 5 questions, A right and B wrong on all: only the all-+ and all-- sign patterns reach |5|
    r = paired_test([1] * 5, [0] * 5)
    assert r["exact"] and r["p_value"] == pytest.approx(2 / 32) and r["delta"] == 1.0
    assert paired_test([1] * 6, [0] * 6)["p_value"] == pytest.approx(2 / 64)
    # differences (1, 1, 1, -1): |sum| >= 2 for k in {0, 1, 3, 4} plus signs -> (1+4+4+1)/16
    assert paired_test([1, 1, 1, 0], [0, 0, 0, 1])["p_value"] == pytest.approx(10 / 16)
    # ties (zero differences) do not change the test
    assert paired_test([1] * 5 + [0.5] * 20, [0] * 5 + [0.5] * 20)["p_value"] == pytest.approx(2 / 32)


def test_paired_test_identical_and_empty():
    r = paired_test([0.3, 0.9, 0.1], [0.3, 0.9, 0.1])
    assert r["p_value"] == 1.0 and r["delta"] == 0.0 and r["ci95"] == [0.0, 0.0]
    assert paired_test([], [])["delta"] is None
    with pytest.raises(ValueError):
        paired_test([1], [1, 2])


def test_paired_test_monte_carlo_matches_binomial():
    # 60 differences of +1 and 40 of -1: exact two-sided p = P(|2K - 100| >= 20), K ~ Bin(100, 1/2)
    exact = 2 * sum(math.comb(100, k) for k in range(60, 101)) / 2 ** 100
    r = paired_test([1] * 60 + [0] * 40, [0] * 60 + [1] * 40, n_resamples=20000, seed=0)
    assert not r["exact"]
    assert r["p_value"] == pytest.approx(exact, abs=0.008)   # 0.0569
    assert r["delta"] == pytest.approx(0.2)
    lo, hi = r["ci95"]
    assert lo < 0.2 < hi and lo > 0.0 - 0.05


def test_paired_test_clear_difference_is_significant():
    r = paired_test([1] * 100, [0] * 100, n_resamples=2000)
    assert r["p_value"] == pytest.approx(1 / 2001)
