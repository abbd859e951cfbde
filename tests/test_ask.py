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


def test_ask_uses_the_newest_runs_calibrator(tiny_corpus, tiny_lm_dir, tmp_path, monkeypatch):
    import json

    from workbench.answering.confidence import FEATURES

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    n = len(FEATURES)
    for name, created, intercept in (("old", "2025-01-01", 5.0), ("new", "2026-01-01", -5.0)):
        cal = {"features": list(FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "weights": [0.0] * n,
               "intercept": intercept, "threshold": 0.5}
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps(
            {"created": created, "config": {"index": tiny_corpus.name}, "systems": {"base": {}},
             "abstention": {"systems": {"base": {"calibrator": cal}}}}))
    args = ["ask", str(tiny_corpus), "How much does the Tern-3 weigh?", "--system", "base", "--base", str(tiny_lm_dir),
            "--max-new-tokens", "4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "calibrated by run new" in res.stderr and re.search(r"^confidence 0\.01, latency", res.stdout, re.M)
    res = CliRunner().invoke(app, args + ["--no-decline"])
    assert "calibrated by run" not in res.stderr
