"""``workbench export ADAPTER --merged OUT``: a merged safetensors folder that transformers loads and that
answers as base + adapter does; OUT is never a folder the workbench did not write."""
from __future__ import annotations

import pytest
from serve_project import one_error_line
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def adapter(tmp_path, tiny_lm_dir, monkeypatch):
    from app_project import build_tiny_adapter, write_corpus

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    build_tiny_adapter(tmp_path, tiny_lm_dir, write_corpus(tmp_path))
    return "tiny-sft"


def _greedy(model, tokenizer, text: str) -> list[int]:
    import torch

    ids = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_export_round_trip(adapter, tmp_path, tiny_lm_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "exports" / "tiny-merged"
    result = runner.invoke(app, ["export", adapter, "--merged", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    assert list(out.glob("*.safetensors")) and (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("adapter_*"))  # a plain model, no PEFT files
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
                                     str(tmp_path / "adapters" / adapter)).eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).eval()
    prompt = "The Tern-3 buoy weighs"
    assert _greedy(merged, tok, prompt) == _greedy(base, tok, prompt)
    merged_w, plain_w = merged.state_dict(), plain.state_dict()
    changed = [k for k in plain_w if not (merged_w[k] == plain_w[k]).all()]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)  # the LoRA targets, merged in
    # exporting again replaces the earlier export
    assert runner.invoke(app, ["export", adapter, "--merged", str(out)]).exit_code == 0


def test_export_refuses_bad_input_and_touches_nothing(adapter, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = one_error_line(runner.invoke(app, ["export", adapter, "--merged", str(mine)]))
    assert "is not a workbench merged-model" in line and (mine / "notes.txt").read_text() == "keep me"
    assert "no adapter 'nope'" in one_error_line(runner.invoke(app, ["export", "nope", "--merged",
                                                                      str(tmp_path / "x")]))
    assert not (tmp_path / "x").exists()
    assert "invalid export folder name '.hidden'" in one_error_line(
        runner.invoke(app, ["export", adapter, "--merged", str(tmp_path / ".hidden")]))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.fixture
def bf16_adapter(adapter, tmp_path, tiny_lm_dir):
    """An adapter like ``adapter``'s, on a copy of the tiny LM stored in bfloat16."""
    import torch
    from app_project import build_tiny_adapter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(tiny_lm_dir).to(torch.bfloat16).save_pretrained(base)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(base)
    build_tiny_adapter(tmp_path, base, tmp_path / "corpora" / "tiny", name="bf16-sft")
    return "bf16-sft"


def _stored_dtypes(folder) -> set[str]:
    from safetensors import safe_open

    dtypes = set()
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as weights:
            dtypes |= {str(weights.get_slice(k).get_dtype()) for k in weights.keys()}
    return dtypes


def test_export_keeps_the_base_dtype_and_writes_readable_files(bf16_adapter, adapter, tmp_path):
    import json
    import os

    umask = os.umask(0o022)
    try:
        bf16, fp32 = tmp_path / "bf16-merged", tmp_path / "fp32-merged"
        result = runner.invoke(app, ["export", bf16_adapter, "--merged", str(bf16)])
        assert result.exit_code == 0, result.output
        assert "bfloat16" in result.stdout
        assert runner.invoke(app, ["export", adapter, "--merged", str(fp32)]).exit_code == 0
    finally:
        os.umask(umask)
    assert _stored_dtypes(bf16) == {"BF16"} and _stored_dtypes(fp32) == {"F32"}
    assert json.loads((bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((bf16 / "manifest.json").read_text())["dtype"] == "bfloat16"
    modes = {p.name: p.stat().st_mode & 0o777 for p in bf16.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
