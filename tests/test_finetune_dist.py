"""Two training processes under torchrun (DDP, gloo on CPU) produce one loadable adapter."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from workbench.core.config import ModelConfig


# ~45 s on the loaded 2-core machine (two extra processes importing torch), so not marked slow.
def test_torchrun_two_processes_write_a_loadable_adapter(tiny_corpus, tiny_lm_dir, tmp_path, monkeypatch):
    from workbench.training.adapters import load_finetuned

    preset = tmp_path / "tiny.yaml"
    preset.write_text("finetune:\n  max_steps: 2\n  batch_size: 2\n  lora_r: 4\n  lora_alpha: 8\n  paraphrases: 1\n"
                      "  max_seq_len: 128\n", encoding="utf-8")
    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "workbench.cli", "finetune", str(tiny_corpus), "--base", str(tiny_lm_dir), "--preset", str(preset),
           "--name", "ddp", "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    m = json.loads((home / "adapters" / "ddp" / "manifest.json").read_text())
    assert m["world_size"] == 2 and m["global_step"] == 2
    # both ranks fed the model: tokens seen are gathered over the two processes
    rows = [json.loads(x) for x in (home / "adapters" / "ddp" / "train_data.jsonl").read_text().splitlines()]
    assert m["tokens_seen"] > 0 and len(rows) == m["n_train_examples"] + m["n_heldout_examples"]
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    model, tok, manifest = load_finetuned("ddp", ModelConfig(base_model=str(tiny_lm_dir)), merge=False)
    assert manifest["name"] == "ddp"
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
