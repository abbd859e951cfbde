"""The report's verdict is computed from the numbers: checked on a constructed summary."""
from __future__ import annotations

import json

from workbench.evaluation.report import build_report, compare, verdict, worst_failures, write_report


def _sys(f1, ci, abst, p50, weights, retrieval, kinds):
    return {"f1": f1, "em": f1 - 0.05, "contains": f1 + 0.05, "rouge_l": f1, "ci95": {"f1": ci},
            "abstain_unanswerable": abst, "abstain_answerable": 0.02, "n_answerable": 150, "n_unanswerable": 30,
            "latency_p50_s": p50, "latency_p95_s": p50 * 2, "tokens_per_s": 100.0, "answer_s": 60.0,
            "weights": weights, "retrieval": retrieval, "ragas": {"rouge_l": f1},
            "ragas_skipped": {"faithfulness": "no judge configured (set eval.judge_base_url)"},
            "ragas_failures": {},
            "by_kind": {"paraphrase": {"n": 120, "f1": kinds[0]}, "unseen": {"n": 30, "f1": kinds[1]},
                        "unanswerable": {"n": 30, "f1": None, "abstain": abst}}}


SUMMARY = {
    "corpus": "corpora/demo", "qa": "corpora/demo/qa.jsonl", "n_questions": 180, "n_answerable": 150,
    "n_unanswerable": 30, "created": "2025-01-01T00:00:00+00:00",
    "systems": {
        "base": _sys(0.05, [0.03, 0.08], 0.10, 0.20, "SmolLM2-135M-Instruct", False, (0.05, 0.02)),
        "rag": _sys(0.62, [0.55, 0.69], 0.80, 0.40, "SmolLM2-135M-Instruct", True, (0.55, 0.70)),
        "ft": _sys(0.35, [0.28, 0.42], 0.30, 0.20, "demo-sft", False, (0.48, 0.05)),
        "ft_rag": _sys(0.60, [0.52, 0.67], 0.75, 0.40, "demo-sft", True, (0.58, 0.66)),
    },
    "retrieval": {"doc_recall@1": 0.7, "doc_recall@5": 0.9, "answer_recall@5": 0.85, "mrr": 0.78,
                  "mode": "hybrid", "k": 3},
    "cost": {"index_build_s": 12.0, "finetune_s": 300.0, "finetune_tokens": 120000, "peak_rss_mb": 2500.0,
             "adapters": {"demo-sft": {"seconds": 300.0, "tokens": 120000}}},
    "pairwise": {
        "base_vs_rag": {"delta_f1": -0.57, "p_value": 0.0001, "ci95_f1": [-0.64, -0.50]},
        "base_vs_ft": {"delta_f1": -0.30, "p_value": 0.0001, "ci95_f1": [-0.37, -0.23]},
        "base_vs_ft_rag": {"delta_f1": -0.55, "p_value": 0.0001, "ci95_f1": [-0.62, -0.48]},
        "rag_vs_ft": {"delta_f1": 0.27, "p_value": 0.0002, "ci95_f1": [0.2, 0.34]},
        "rag_vs_ft_rag": {"delta_f1": 0.02, "p_value": 0.64, "ci95_f1": [-0.04, 0.08]},
        "ft_vs_ft_rag": {"delta_f1": -0.25, "p_value": 0.0001, "ci95_f1": [-0.3, -0.2]},
    },
    "pairwise_by_kind": {
        "paraphrase": {"rag_vs_ft_rag": {"delta": -0.03, "p_value": 0.55, "ci95": [-0.1, 0.04]}},
        "unseen": {"rag_vs_ft_rag": {"delta": 0.04, "p_value": 0.01, "ci95": [0.01, 0.07]}},
        "unanswerable": {"rag_vs_ft_rag": {"delta": 0.05, "p_value": 0.5, "ci95": [-0.1, 0.2]}},
    },
}

ROWS = [
    {"id": "q1", "system": "rag", "question": "How heavy is the Tern-3?", "kind": "paraphrase", "answerable": True,
     "gold": ["42 kg"], "doc": "buoy.md", "prediction": "<b>9 Ah</b> | battery", "abstained": False,
     "f1": 0.0, "em": 0.0, "retrieved": [{"id": "x#1", "doc": "other.md", "heading": "", "score": 0.5, "rank": 1,
                                         "text": "The battery is 9 Ah."}]},
    {"id": "q2", "system": "rag", "question": "Who leads it?", "kind": "unseen", "answerable": True,
     "gold": ["Ilse Varnholt"], "doc": "p.txt", "prediction": "Ilse", "abstained": False, "f1": 0.67,
     "em": 0.0, "retrieved": []},
    {"id": "q3", "system": "rag", "question": "Top speed of the Tern-9?", "kind": "unanswerable",
     "answerable": False, "gold": [], "doc": None, "prediction": "12 knots", "abstained": False, "f1": None,
     "em": None, "retrieved": []},
    {"id": "q4", "system": "rag", "question": "Founded when?", "kind": "unseen", "answerable": True,
     "gold": ["2011"], "doc": "p.txt", "prediction": "2011", "abstained": False, "f1": 1.0, "em": 1.0,
     "retrieved": []},
]


def test_compare_orients_the_pair():
    assert compare(SUMMARY, "rag", "base") == {"delta": 0.57, "p_value": 0.0001, "ci95": [0.50, 0.64]}
    assert compare(SUMMARY, "ft_rag", "rag", "paraphrase")["delta"] == 0.03
    assert compare(SUMMARY, "ft", "nope") is None


def test_verdict_sentences():
    lines = verdict(SUMMARY)
    text = "\n".join(lines)
    assert lines[0] == "**rag** answers best overall: F1 0.62 [95% CI 0.55–0.69] on 150 answerable questions."
    assert "It beats **base** (F1 0.05) by +0.57 (p < 0.001)." in lines
    assert "It beats **ft** (F1 0.35) by +0.27 (p < 0.001)." in lines
    assert ("Its lead over **ft_rag** (F1 0.60, +0.02) is not significant (p = 0.640): on these questions "
            "that difference could be noise.") in lines
    assert "Cost of rag: an index built in 12 s (12 s of set-up); 0.40 s latency p50 vs 0.20 s for base." in lines
    assert ("- *paraphrase* (120 questions): **ft_rag** F1 0.58 vs rag 0.55: ft_rag is ahead by +0.03, "
            "not significant (p = 0.550).") in lines
    assert "- *unseen* (30 questions): **rag** F1 0.70 vs ft_rag 0.66: rag wins by +0.04 (p = 0.010)." in lines
    # unanswerable questions are no accuracy kind: a system that declines them is judged with its answerable
    # declines, in the abstention paragraph
    assert not any(line.startswith("- *unanswerable*") for line in lines)
    # abstention is its own paragraph, judged on answerable and unanswerable questions together
    assert ("On answerable and unanswerable questions together, **rag** tells them apart best by its own \"I don't "
            "know\": it declines 80% of the 30 unanswerable questions and 2% of the answerable ones, against 75% "
            "and 2% for **ft_rag**.") in text


def test_verdict_when_fine_tuning_wins_reports_its_cost():
    s = json.loads(json.dumps(SUMMARY))
    s["systems"]["ft"]["f1"] = 0.7
    s["config"] = {"generate": {"batch_size": 16}}
    s["pairwise"]["rag_vs_ft"] = {"delta_f1": -0.08, "p_value": 0.03, "ci95_f1": [-0.15, -0.01]}
    s["pairwise"]["ft_vs_ft_rag"] = {"delta_f1": 0.1, "p_value": 0.2, "ci95_f1": [-0.05, 0.2]}
    lines = verdict(s)
    assert lines[0].startswith("**ft** answers best overall: F1 0.70")
    assert "It beats **rag** (F1 0.62) by +0.08 (p = 0.030)." in lines
    assert any(line.startswith("Its lead over **ft_rag**") and "not significant (p = 0.200)" in line
               for line in lines)
    assert ("Cost of ft: fine-tuning for 300 s on 120,000 tokens (300 s of set-up); 0.20 s latency p50, "
            "answering up to 16 questions per batch vs 0.20 s for base.") in lines


def test_worst_failures_order():
    fails = worst_failures(ROWS, "rag", n=3)
    assert [r["id"] for r in fails] == ["q1", "q2", "q3"]  # lowest F1 first, then a made-up answer
    assert [r["id"] for r in worst_failures(ROWS, "rag", n=2)] == ["q1", "q3"]


def test_report_layout_and_escaping(tmp_path):
    md = build_report(SUMMARY, ROWS, ["metrics.png"])
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[0] == "## Verdict" and heads[-1] == "## Worst failures"
    assert md.index("## Verdict") < md.index("## Systems") < md.index("## Worst failures")
    assert "| rag | SmolLM2-135M-Instruct | 0.62 [0.55–0.69] |" in md
    assert "| doc_recall@5 | 0.900 |" in md
    assert "skipped: no judge configured" in md
    assert "![metrics](plots/metrics.png)" in md
    # predictions are shown as text: no raw HTML, no table-breaking pipes
    assert "&lt;b&gt;9 Ah&lt;/b&gt; \\| battery" in md and "<b>" not in md
    assert "the gold document buoy.md was not retrieved" in md
    # rebuilt from a run folder
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert write_report(tmp_path).read_text().startswith("# Evaluation: demo")


def test_plots_from_a_summary(tmp_path):
    from workbench.evaluation.plots import make_plots

    paths = make_plots(SUMMARY, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["by_kind.png", "metrics.png", "quality_vs_cost.png",
                                             "retrieval_recall.png"]
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000
