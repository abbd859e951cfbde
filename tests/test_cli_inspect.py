"""`workbench inspect ...`: tables of tokens, next tokens, attention, fine-tuning changes and the embedding
space on a tiny project; bad input gives one error line and exit code 2."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory, tiny_lm_dir, tiny_embedder_dir) -> Path:
    from app_project import build_tiny_project

    return build_tiny_project(tmp_path_factory.mktemp("inspect") / "project", tiny_lm_dir, tiny_embedder_dir)


@pytest.fixture
def inspect(project_dir, tiny_lm_dir, monkeypatch):
    """Run `workbench inspect ARGS` in the tiny project ("BASE" in ARGS stands for the tiny LM's folder)."""
    monkeypatch.setenv("WORKBENCH_HOME", str(project_dir))

    def invoke(*args: str):
        return runner.invoke(app, ["inspect", *[str(tiny_lm_dir) if a == "BASE" else a for a in args]])

    return invoke


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def test_tokens_side_by_side(inspect, tiny_embedder_dir, tiny_lm_dir):
    from transformers import AutoTokenizer

    text = "The Tern-3 buoy weighs 42 kg."
    r = inspect("tokens", text, "--base", "BASE", "--embedder", str(tiny_embedder_dir))
    assert r.exit_code == 0, r.output
    n = len(AutoTokenizer.from_pretrained(tiny_lm_dir)(text, add_special_tokens=False)["input_ids"])
    assert f"base model {tiny_lm_dir}: {n} tokens for {len(text)} characters" in r.stdout
    assert f"embedder {tiny_embedder_dir}:" in r.stdout and "words that cost the most tokens" in r.stdout
    assert re.search(r"^Tern-3\s+\d+\s+\d+$", r.stdout, re.M)
    empty = inspect("tokens", " ", "--base", "BASE", "--embedder", str(tiny_embedder_dir))
    assert "the text is empty" in error_line(empty)


def test_next_token_table_and_samples(inspect):
    r = inspect("next", "How much does the Tern-3 weigh?", "--base", "BASE", "--index", "tiny", "--top", "5",
                "--temperature", "0.7", "--top-k", "3", "--samples", "2", "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    assert re.search(r"prompt: \d+ tokens, 2 passages", r.stdout)
    rows = [line.split() for line in r.stdout.splitlines() if re.match(r"^\s*[1-5]\s", line)][:5]
    assert len(rows) == 5
    reshaped = [float(row[-1]) for row in rows]
    assert sum(reshaped[:3]) == pytest.approx(1.0, abs=2e-4) and reshaped[3:] == [0.0, 0.0]  # top-k 3
    assert "sampled continuations:" in r.stdout and "  2. " in r.stdout
    closed = inspect("next", "How much does the Tern-3 weigh?", "--base", "BASE", "--samples", "0")
    assert closed.exit_code == 0 and "closed book" in closed.stdout and "sampled" not in closed.stdout
    bad = inspect("next", "Why?", "--base", "BASE", "--temperature", "-1")
    assert "temperature -1.0 is negative" in error_line(bad)
    assert "question is empty" in error_line(inspect("next", "  ", "--base", "BASE"))


def test_attention_shares(inspect):
    r = inspect("attention", "How do I grease the seals?", "--base", "BASE", "--index", "tiny", "--layer", "0",
                "--head", "1")
    assert r.exit_code == 0, r.output
    assert "layer 0 of 2 (head 1)" in r.stdout and "eager" in r.stdout
    shares = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(passage \d|question|template|instructions"
                                                                   r"|reply start)\s+([\d.]+)\s", r.stdout, re.M)}
    assert {"passage 1", "question", "template"} <= set(shares)
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)
    assert "layer 7 does not exist" in error_line(inspect("attention", "Why?", "--base", "BASE", "--layer", "7"))


def test_what_finetuning_changed(inspect):
    r = inspect("changed", "tiny-sft", "--question", "How much does the Tern-3 weigh?", "--answer", "42 kg")
    assert r.exit_code == 0, r.output
    assert "gold token" in r.stdout and "log-ratio" in r.stdout and "<|im_end|>" in r.stdout
    batch = inspect("changed", "tiny-sft")  # the eval questions of the adapter's corpus
    assert batch.exit_code == 0, batch.output
    assert "median log p base" in batch.stdout and re.search(r"^e1\s", batch.stdout, re.M)
    assert "go together" in error_line(inspect("changed", "tiny-sft", "--question", "Why?"))
    assert "no adapter" in error_line(inspect("changed", "missing-sft"))


def test_space_similar_and_arithmetic(inspect, tiny_embedder_dir):
    r = inspect("space", "tiny", "How heavy is the buoy?", "-k", "3")
    assert r.exit_code == 0, r.output
    assert "chunks projected with PCA" in r.stdout and re.search(r"^query\s", r.stdout, re.M)
    ranks = [line.split()[0] for line in r.stdout.splitlines() if re.match(r"^[123]\s+-?[01]\.\d{3}\s", line)]
    assert ranks == ["1", "2", "3"]
    if importlib.util.find_spec("umap") is None:
        assert "UMAP is not installed" in error_line(inspect("space", "tiny", "buoy", "--method", "umap"))
    sim = inspect("similar", "The buoy weighs 42 kg.", "The buoy weighs 42 kg.", "Flights need economy class.",
                  "--embedder", str(tiny_embedder_dir))
    assert sim.exit_code == 0, sim.output
    row1 = next(line.split() for line in sim.stdout.splitlines() if line.startswith("1 "))
    assert row1[1:3] == ["1.000", "1.000"]
    assert "1 sentences given" in error_line(inspect("similar", "only one", "--embedder", str(tiny_embedder_dir)))
    arith = inspect("arithmetic", "tiny", "buoy battery", "battery", "anode", "-k", "2")
    assert arith.exit_code == 0 and "cosine to 'buoy battery'" in arith.stdout
    assert "nope" in error_line(inspect("space", "nope", "buoy"))
