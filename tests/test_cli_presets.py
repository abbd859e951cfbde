"""Every command reads its settings from `--preset` (`--profile` is a hidden old name on run and update), and
an option left out keeps the preset's value instead of a default of its own."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def captured(monkeypatch) -> dict:
    """The stage functions `finetune`, `run` and `update` call, replaced by ones that record their config."""
    import workbench.cli.pipeline as pipeline
    import workbench.training.finetune as finetune
    import workbench.update.strategies as strategies

    seen: dict = {}

    class Done:
        def summary(self) -> str:
            return "done"

    def record(name: str, result):
        def fn(*args, **kwargs):
            seen[name] = next(a for a in (*args, *kwargs.values()) if hasattr(a, "finetune"))
            return result
        return fn

    def fake_finetune(corpus, cfg, *args, **kwargs):
        seen["finetune"] = cfg
        return Done()

    monkeypatch.setattr(finetune, "finetune", fake_finetune)
    monkeypatch.setattr(pipeline, "run", record("run", Path("runs/x")))
    monkeypatch.setattr(strategies, "update", record("update", Path("runs/x")))
    return seen


def _preset(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_finetune_mode_defaults_to_the_presets(captured, tmp_path, tiny_corpus):
    preset = _preset(tmp_path, "finetune:\n  mode: cpt\n")
    assert runner.invoke(app, ["finetune", str(tiny_corpus), "--preset", str(preset)]).exit_code == 0
    assert captured["finetune"].mode == "cpt"  # not overridden by a default of the option
    assert runner.invoke(app, ["finetune", str(tiny_corpus), "--preset", str(preset), "--mode", "raft"]).exit_code == 0
    assert captured["finetune"].mode == "raft"


@pytest.mark.parametrize("command", ["run", "update"])
def test_run_and_update_take_preset_and_the_hidden_profile_alias(captured, tmp_path, tiny_corpus, command):
    preset = _preset(tmp_path, "retrieve:\n  k: 7\n")
    extra = [str(tmp_path)] if command == "update" else []
    for flag in ("--preset", "--profile"):
        r = runner.invoke(app, [command, str(tiny_corpus), *extra, flag, str(preset)])
        assert r.exit_code == 0, r.output
        assert captured.pop(command).retrieve.k == 7
    r = runner.invoke(app, [command, str(tiny_corpus), *extra, "--preset", "full", "--profile", str(preset)])
    assert r.exit_code == 2 and "--preset full and --profile" in r.stderr
    help_text = runner.invoke(app, [command, "--help"]).stdout
    assert "--preset" in help_text and "--profile" not in help_text


def test_search_k_defaults_to_the_presets(tmp_path, monkeypatch, tiny_corpus, tiny_st_dir):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "project"))
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_st_dir, encoder)
    assert runner.invoke(app, ["index", str(tiny_corpus), "--embedder", str(encoder), "-q"]).exit_code == 0

    def hits(*args: str) -> int:
        r = runner.invoke(app, ["search", "corpus", "Tern-3 buoy anode", *args])
        assert r.exit_code == 0, r.output
        return len([ln for ln in r.stdout.splitlines() if re.match(r"\d+\. ", ln)])

    assert hits() == 2  # the quick preset's retrieve.k
    assert hits("--preset", str(_preset(tmp_path, "retrieve:\n  k: 3\n"))) == 3
    assert hits("-k", "1") == 1
