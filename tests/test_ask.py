"""``workbench ask``: one question through base / rag / ft systems, with sources and latency."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.records import Chunk, Hit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StubRetriever:
    language = "en"

    def __init__(self):
        text = "The Tern-3 buoy weighs 42 kg. It runs on a 9 Ah battery."
        self.hits = [Hit(Chunk("buoy.md#0", text, "buoy.md", (0, len(text)), "Tern-3 buoy"), 0.9, 1)]
        self.k = None

    def check_query(self, q):
        return q

    def search_batch(self, queries, k=None):
        self.k = k
        return [self.hits for _ in queries]


def test_ask_base_with_a_local_model(tiny_corpus, tiny_lm_dir):
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "--system", "base",
                                   "--base", str(tiny_lm_dir), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert re.search(r"^confidence [01]\.\d\d, latency \d+\.\d\d s, \d new tokens \(\d+\.\d tokens/s\)$", res.output, re.M)
    assert "sources:" not in res.output


def test_ask_rag_prints_sources(monkeypatch, tiny_corpus, tiny_lm_dir):
    import workbench.evaluation.systems

    stub = StubRetriever()
    monkeypatch.setattr(workbench.evaluation.systems, "open_retriever", lambda target, cfg, progress=True: stub)
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "-k", "2",
                                   "--base", str(tiny_lm_dir), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "sources:" in res.output and "[1] buoy.md › Tern-3 buoy  (score 0.900, buoy.md#0)" in res.output
    assert stub.k == 2  # -k went into the retrieval config, which evaluation's path reads


@pytest.mark.parametrize("args, message", [
    (["   "], "the question is empty"),
    (["Weight?", "--system", "oracle"], "unknown system 'oracle'"),
    (["Weight?", "--system", "base", "--base", "./no/such/model"], "does not exist"),
    (["Weight?", "-k", "0"], "k must be at least 1"),
])
def test_ask_bad_input(tiny_corpus, args, message):
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("system, adapter, mode", [("ft", "corpus-sft", "sft"), ("ft_rag", "corpus-sft", "sft"),
                                                   ("raft", "corpus-raft", "raft"),
                                                   ("scratch", "corpus-scratch", "scratch")])
def test_ask_takes_every_registered_system_and_names_its_missing_adapter(tiny_corpus, tmp_path, monkeypatch,
                                                                         tiny_lm_dir, system, adapter, mode):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), "Weight?", "--system", system, "--base",
                                   str(tiny_lm_dir)])
    assert res.exit_code == 2, res.output
    assert adapter in res.output and f"workbench finetune {tiny_corpus} --mode {mode}" in res.output


@pytest.mark.slow
def test_ask_rag_with_the_embedded_models(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), "How much does the Tern-3 buoy weigh?", "-k", "2"])
    assert res.exit_code == 0, res.output
    assert "buoy.md" in res.output and "latency" in res.output
    # progress and build messages go to stderr; the answer is the first line on stdout
    assert "42" in res.stdout.splitlines()[0]


def _run_with_calibrator(home, name, created, fingerprint, intercept, applied=True):
    import json

    from workbench.answering.confidence import FEATURES

    n = len(FEATURES)
    cal = {"features": list(FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "weights": [0.0] * n,
           "intercept": intercept, "threshold": 0.5, "applied": applied,
           "reason": "calibrated: test" if applied else "not calibrated: 4 of 48 calibration answers right"}
    (home / "runs" / name).mkdir(parents=True)
    (home / "runs" / name / "summary.json").write_text(json.dumps(
        {"created": created, "systems": {"base": {}},
         "abstention": {"corpus_fingerprint": fingerprint, "index_fingerprint": None,
                        "systems": {"base": {"calibrator": cal, "retrieval": False}}}}))


def _fixed_reply(monkeypatch):
    """``ask`` answers "42 kg" (the tiny model's reply may be empty, which is a decline of its own)."""
    from workbench.answering.answer import Answer
    from workbench.evaluation import systems

    monkeypatch.setattr(systems, "ask", lambda target, question, *a, **k: Answer(question, "42 kg", [], [], 0.01, 2,
                                                                                 "42 kg", {}, 0.5))


def test_ask_declines_with_the_newest_run_on_the_same_corpus_content(tiny_corpus, tiny_lm_dir, tmp_path, monkeypatch):
    from workbench.corpus.ingest import corpus_fingerprint

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    fp = corpus_fingerprint(tiny_corpus)
    _run_with_calibrator(tmp_path, "old", "2025-01-01", fp, 5.0)
    _run_with_calibrator(tmp_path, "new", "2026-01-01", fp, -5.0)
    _run_with_calibrator(tmp_path, tiny_corpus.name, "2027-01-01", "another-corpus", 5.0)  # same name, other text
    _fixed_reply(monkeypatch)
    args = ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "--system", "base", "--base", str(tiny_lm_dir),
            "--max-new-tokens", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "declines below confidence 0.50, calibrated by run new" in res.stderr
    assert res.stdout.startswith("I don't know")
    assert "(declined: low answer confidence (0.01 < 0.50, calibrated by run new)" in res.stdout
    res = CliRunner().invoke(app, args + ["--no-decline"])
    assert "calibrated by run" not in res.stderr + res.stdout


def test_ask_never_declines_with_a_calibrator_from_another_corpus(tiny_corpus, tiny_lm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    _fixed_reply(monkeypatch)
    _run_with_calibrator(tmp_path, tiny_corpus.name, "2026-01-01", "another-corpus", -5.0)
    args = ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "--system", "base", "--base", str(tiny_lm_dir),
            "--max-new-tokens", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert ("no evaluation run on this corpus and index calibrated base: nothing is declined by threshold"
            in res.stderr)
    assert res.stdout.startswith("42 kg") and "(declined:" not in res.stdout


def test_ask_keeps_the_models_own_declines_when_the_run_could_not_calibrate(tiny_corpus, tiny_lm_dir, tmp_path,
                                                                            monkeypatch):
    from workbench.corpus.ingest import corpus_fingerprint

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    _fixed_reply(monkeypatch)
    _run_with_calibrator(tmp_path, "weak", "2026-01-01", corpus_fingerprint(tiny_corpus), -5.0, applied=False)
    res = CliRunner().invoke(app, ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "--system", "base",
                                   "--base", str(tiny_lm_dir), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "confidence from run weak; only the model's own declines: not calibrated: 4 of 48" in res.stderr
    assert res.stdout.startswith("42 kg") and re.search(r"confidence 0\.01, latency", res.stdout)
