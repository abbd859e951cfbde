"""The harness on fake systems (no models): summary.json schema and values, results rows, atomic runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fakes import passage, table_system

from workbench.core.config import EvalConfig, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.corpus.qa import QAItem
from workbench.evaluation.evaluate import build_results, evaluate
from workbench.evaluation.systems import SYSTEMS, SystemContext, run_system

ITEMS = [
    QAItem("q1", "How heavy is the Tern-3?", ["42 kg"], True, "eval", "buoy.md", "f1", "paraphrase"),
    QAItem("q2", "Who leads Kestrelmark?", ["Ilse Varnholt"], True, "eval", "people.txt", "f2", "unseen"),
    QAItem("q3", "When was it founded?", ["2011"], True, "eval", "people.txt", "f3", "unseen"),
    QAItem("q4", "What is the Tern-9 top speed?", [], False, "eval", None, "u1", "unanswerable"),
]
GOOD = {"How heavy is the Tern-3?": "42 kg", "Who leads Kestrelmark?": "Ilse Varnholt",
        "When was it founded?": "It was founded in 2011"}
BAD = {"How heavy is the Tern-3?": "42 kg", "Who leads Kestrelmark?": "Bob",
       "What is the Tern-9 top speed?": "12 knots"}
HITS = {"How heavy is the Tern-3?": [passage("buoy.md", "The Tern-3 buoy weighs 42 kg."),
                                     passage("page.html", "Economy class is required.", 2)]}


def _runs(cfg):
    ctx = SystemContext(cfg=cfg)
    return [run_system(table_system("good", GOOD, retrieval=True, hits=HITS), ctx, ITEMS),
            run_system(table_system("bad", BAD, latency=0.5), ctx, ITEMS)]


def check_summary_schema(s: dict) -> None:
    """The summary.json contract of design.md (plus the additive keys this harness writes)."""
    for key, typ in (("corpus", str), ("qa", str), ("n_questions", int), ("created", str), ("config", dict),
                     ("systems", dict), ("retrieval", dict), ("cost", dict), ("pairwise", dict)):
        assert isinstance(s[key], typ), key
    for name, b in s["systems"].items():
        for m in ("f1", "em", "contains"):
            assert b[m] is None or 0.0 <= b[m] <= 1.0
        assert set(b["ci95"]) >= {"f1", "em", "contains"}
        for v in b["ci95"].values():
            assert v is None or (len(v) == 2 and v[0] <= v[1])
        assert b["abstain_unanswerable"] is None or 0 <= b["abstain_unanswerable"] <= 1
        for m in ("latency_p50_s", "latency_p95_s", "tokens_per_s"):
            assert isinstance(b[m], float)
        assert isinstance(b["ragas"], dict) and all(isinstance(v, float) for v in b["ragas"].values())
        for kind, d in b["by_kind"].items():
            assert isinstance(d["n"], int) and (d["f1"] is None or isinstance(d["f1"], float))
    for pair, d in s["pairwise"].items():
        a, b = pair.split("_vs_")
        assert a in s["systems"] and b in s["systems"]
        if "delta_f1" in d:
            assert isinstance(d["delta_f1"], float) and 0 < d["p_value"] <= 1


def test_build_results_values():
    cfg = RunConfig(eval=EvalConfig(bootstrap=200))
    rows, s = build_results(ITEMS, _runs(cfg), cfg, corpus="c", qa="c/qa.jsonl",
                            reference_contexts=[["The Tern-3 buoy weighs 42 kg."], [], [], []])
    check_summary_schema(s)
    good, bad = s["systems"]["good"], s["systems"]["bad"]
    # good: EM 1, 1, 0 (a sentence); F1 1, 1, then [it was founded in 2011] vs [2011]: P = 1/5, R = 1
    # -> 2 * 0.2 / 1.2 = 1/3; mean 7/9
    assert good["em"] == pytest.approx(2 / 3, abs=1e-4) and good["f1"] == pytest.approx(7 / 9, abs=1e-4)
    assert good["contains"] == 1.0 and good["abstain_unanswerable"] == 1.0
    # bad: right, wrong, declined; and it makes up an answer to the unanswerable one
    assert bad["f1"] == pytest.approx(1 / 3, abs=1e-4) and bad["abstain_unanswerable"] == 0.0
    assert bad["abstain_answerable"] == pytest.approx(1 / 3, abs=1e-4)
    assert good["by_kind"]["unseen"] == {"n": 2, "f1": pytest.approx(2 / 3, abs=1e-4), "em": 0.5, "contains": 1.0, "abstain": None,
                                         "f1_ci95": good["by_kind"]["unseen"]["f1_ci95"]}
    assert good["by_kind"]["unanswerable"]["abstain"] == 1.0 and good["by_kind"]["unanswerable"]["f1"] is None
    assert bad["latency_p50_s"] == 0.5 and good["retrieval"] and not bad["retrieval"]
    p = s["pairwise"]["good_vs_bad"]
    assert p["delta_f1"] == pytest.approx(7 / 9 - 1 / 3, abs=1e-4)
    assert p["delta_abstain"] == 1.0
    assert s["pairwise_by_kind"]["unanswerable"]["good_vs_bad"]["metric"] == "abstain"
    # ragas: string metrics for both; context metrics only where passages were retrieved; judge skipped
    assert good["ragas"]["context_recall"] == 1.0 and good["ragas_n"]["context_recall"] == 1
    assert "context_recall" not in bad["ragas"] and "retrieves no passages" in bad["ragas_skipped"]["context_recall"]
    assert "faithfulness" not in good["ragas"] and "no judge" in good["ragas_skipped"]["faithfulness"]
    assert good["ragas"]["rouge_l"] > 0.5
    # one row per (question, system)
    assert len(rows) == 8 and {r["system"] for r in rows} == {"good", "bad"}
    r = next(r for r in rows if r["system"] == "good" and r["id"] == "q1")
    assert r["prediction"] == "42 kg" and r["f1"] == 1.0 and r["retrieved"][0]["doc"] == "buoy.md"
    assert r["retrieved"][0]["text"].startswith("The Tern-3") and r["latency_s"] == 0.1
    json.dumps(rows), json.dumps(s)  # everything is JSON-serialisable


@pytest.fixture
def fake_systems(monkeypatch):
    monkeypatch.setitem(SYSTEMS, "good", table_system("good", GOOD, retrieval=True, hits=HITS))
    monkeypatch.setitem(SYSTEMS, "bad", table_system("bad", BAD))


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "doc.md").write_text("The Tern-3 buoy weighs 42 kg.\n", encoding="utf-8")
    (root / "qa.jsonl").write_text("".join(json.dumps(q.to_json()) + "\n" for q in ITEMS), encoding="utf-8")
    return root


def test_evaluate_writes_a_complete_run(tmp_path, fake_systems):
    cfg = RunConfig(eval=EvalConfig(systems=["good", "bad"], bootstrap=100))
    out = evaluate(_corpus(tmp_path), cfg, out=tmp_path / "run", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["calibration.jsonl", "manifest.json", "plots", "report.md", "results.jsonl",
                                                     "summary.json"]
    s = json.loads((out / "summary.json").read_text())
    check_summary_schema(s)
    assert list(s["systems"]) == ["good", "bad"] and s["n_questions"] == 4
    assert s["cost"]["peak_rss_mb"] > 10 and s["cost"]["eval_s"] > 0
    assert s["config"]["eval"]["systems"] == ["good", "bad"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 8
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["by_kind.png", "metrics.png", "quality_vs_cost.png", "reliability_bad.png", "reliability_good.png",
                     "risk_coverage.png"]  # no recall plot; a reliability diagram per system
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    report = (out / "report.md").read_text()
    assert report.startswith("# Evaluation: corpus") and "**good** answers best overall" in report


def test_limit_and_systems_order(tmp_path, fake_systems):
    cfg = RunConfig(eval=EvalConfig(systems=["bad", "good"], limit=2, bootstrap=50))
    out = evaluate(_corpus(tmp_path), cfg, out=tmp_path / "run", progress=False)
    s = json.loads((out / "summary.json").read_text())
    assert s["n_questions"] == 2 and list(s["systems"]) == ["bad", "good"]
    assert "bad_vs_good" in s["pairwise"]


def test_failed_run_keeps_previous_run(tmp_path, fake_systems, monkeypatch):
    corpus = _corpus(tmp_path)
    cfg = RunConfig(eval=EvalConfig(systems=["good"], bootstrap=50))
    out = evaluate(corpus, cfg, out=tmp_path / "run", progress=False)
    before = (out / "summary.json").read_text()

    def boom(ctx):
        raise RuntimeError("model crashed")

    from workbench.evaluation.systems import SystemSpec

    monkeypatch.setitem(SYSTEMS, "good", SystemSpec("good", "crashes", False, build=boom))
    with pytest.raises(RuntimeError):
        evaluate(corpus, cfg, out=tmp_path / "run", progress=False)
    assert (out / "summary.json").read_text() == before
    # a crash while writing (e.g. in the report) leaves no half-written folder either
    monkeypatch.setitem(SYSTEMS, "good", table_system("good", GOOD))
    import workbench.evaluation.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "build_report", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        evaluate(corpus, cfg, out=tmp_path / "run", progress=False)
    assert (out / "summary.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "run"]


def test_out_folder_that_is_not_a_run_is_refused(tmp_path, fake_systems):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    cfg = RunConfig(eval=EvalConfig(systems=["good"]))
    with pytest.raises(WorkbenchError, match="exists and is not a workbench run"):
        evaluate(_corpus(tmp_path), cfg, out=precious, progress=False)
    assert (precious / "thesis.txt").exists()


def test_unknown_system(tmp_path):
    with pytest.raises(WorkbenchError, match="unknown system 'nope'.*known systems: base, rag"):
        evaluate(_corpus(tmp_path), RunConfig(eval=EvalConfig(systems=["nope"])), progress=False)


def test_missing_adapter_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    corpus = _corpus(tmp_path)
    with pytest.raises(WorkbenchError) as e:
        evaluate(corpus, RunConfig(eval=EvalConfig(systems=["base", "ft"])), progress=False)
    msg = str(e.value)
    assert "system 'ft' needs adapter 'corpus-sft'" in msg
    assert "workbench finetune" in msg and "--mode sft --name corpus-sft" in msg
    with pytest.raises(WorkbenchError, match="'raft' needs adapter 'corpus-raft'.*--mode raft"):
        evaluate(corpus, RunConfig(eval=EvalConfig(systems=["raft"])), progress=False)


def test_cached_retriever_serves_its_hits_and_lends_the_live_embedder():
    from workbench.evaluation.systems import CachedRetriever

    class Live:
        embedder = object()

        def search(self, query, k=None):
            return [f"live:{query}"]

    live = Live()
    cached = CachedRetriever(live, ["q1"], [["a", "b"]])
    assert cached.search_batch(["q1", "q2"], k=1) == [["a"], ["live:q2"]]
    assert cached.embedder is live.embedder  # evaluation ranks copyable sentences like the app does
