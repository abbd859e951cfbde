"""`workbench finetune` through the CLI: a run, and each bad input by exit code 2 and its message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def preset(tmp_path) -> Path:
    """A full preset sized for the tiny LM."""
    p = tmp_path / "tiny.yaml"
    p.write_text("finetune:\n  max_steps: 2\n  batch_size: 2\n  lora_r: 4\n  lora_alpha: 8\n  paraphrases: 1\n"
                 "  max_seq_len: 128\n  save_steps: 50\n", encoding="utf-8")
    return p


pytestmark = pytest.mark.usefixtures("home")


def invoke(*args):
    return runner.invoke(app, ["finetune", *map(str, args)])


def test_cli_trains_and_then_reuses(tiny_corpus, tiny_lm_dir, preset, home):
    r = invoke(tiny_corpus, "--mode", "sft", "--base", tiny_lm_dir, "--preset", preset, "--name", "t1", "-q")
    assert r.exit_code == 0, r.output
    assert "adapter t1 (sft, gold data" in r.output
    m = json.loads((home / "adapters" / "t1" / "manifest.json").read_text())
    assert m["global_step"] == 2 and m["hyperparameters"]["lora_r"] == 4
    r = invoke(tiny_corpus, "--base", tiny_lm_dir, "--preset", preset, "--name", "t1", "-q")
    assert r.exit_code == 0 and "is current" in r.output and "reused" in r.output


def test_no_train_split_and_synthesis_disabled(tiny_corpus, tiny_lm_dir, tmp_path):
    qa = tiny_corpus / "qa.jsonl"
    rows = [json.loads(x) for x in qa.read_text().splitlines()]
    qa.write_text("".join(json.dumps({**r, "split": "eval"}) + "\n" for r in rows), encoding="utf-8")
    p = tmp_path / "never.yaml"
    p.write_text("finetune:\n  synthesize: never\n  max_steps: 1\n", encoding="utf-8")
    r = invoke(tiny_corpus, "--base", tiny_lm_dir, "--preset", p)
    assert r.exit_code == 2
    assert "no `split: train` questions" in r.output and "synthesize" in r.output
    assert "Traceback" not in r.output


def test_missing_base_model(tiny_corpus, preset, tmp_path):
    r = invoke(tiny_corpus, "--base", tmp_path / "no-such-model", "--preset", preset)
    assert r.exit_code == 2 and "no-such-model" in r.output and "Traceback" not in r.output


def test_missing_corpus(tmp_path, preset, tiny_lm_dir):
    r = invoke(tmp_path / "nowhere", "--base", tiny_lm_dir, "--preset", preset)
    assert r.exit_code == 2 and "nowhere" in r.output


def test_corpus_too_small(tmp_path, tiny_lm_dir, preset, home):
    corpus = tmp_path / "small"
    corpus.mkdir()
    (corpus / "note.txt").write_text("Hello there.\n", encoding="utf-8")
    r = invoke(corpus, "--base", tiny_lm_dir, "--preset", preset)
    assert r.exit_code == 2 and "corpus too small" in r.output
    assert not (home / "adapters" / "small-sft").exists()


def test_unknown_mode(tiny_corpus, tiny_lm_dir, preset):
    r = invoke(tiny_corpus, "--mode", "dpo", "--base", tiny_lm_dir, "--preset", preset)
    assert r.exit_code == 2 and "dpo" in r.output


def test_cuda_out_of_memory_names_the_knob(tiny_corpus, tiny_lm_dir, preset, monkeypatch, home):
    import torch
    from transformers import Trainer

    def oom(self, *a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "train", oom)
    r = invoke(tiny_corpus, "--base", tiny_lm_dir, "--preset", preset)
    assert r.exit_code == 2
    assert "out of GPU memory" in r.output and "finetune.batch_size" in r.output and "grad_accum" in r.output
    assert not (home / "adapters" / "corpus-sft").exists()            # nothing half-written


def test_resume_with_changed_settings_is_refused(tiny_corpus, tiny_lm_dir, preset, home, tmp_path):
    work = home / "adapters" / ".corpus-sft.work"
    work.mkdir(parents=True)
    (work / "run.json").write_text(json.dumps({"finetune": {}, "other": 1}), encoding="utf-8")
    r = invoke(tiny_corpus, "--base", tiny_lm_dir, "--preset", preset, "--resume")
    assert r.exit_code == 2 and "other settings" in r.output and "--restart" in r.output
    assert (work / "run.json").exists()  # nothing discarded
