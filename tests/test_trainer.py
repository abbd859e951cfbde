"""The training loop's batching and precision: length-grouped batches carry less padding than random ones,
and bfloat16 autocast on CPU only when asked for and the CPU computes it natively."""
from __future__ import annotations

import pytest

from workbench.core.config import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(n: int = 24) -> list[dict[str, list[int]]]:
    """Answer-only rows of very different lengths (5 to 60 tokens), in a shuffled order."""
    import random

    lengths = [5 + (i * 37) % 56 for i in range(n)]
    random.Random(0).shuffle(lengths)
    return [{"input_ids": [7] * k, "attention_mask": [1] * k, "labels": [-100] * (k - 2) + [7, 7]} for k in lengths]


def _train(tiny_lm_dir, tmp_path, monkeypatch, cfg: FinetuneConfig, native: bool, device: str = "cpu"):
    """Two steps of train_model on the tiny model; returns the TrainingArguments it used and the padded
    token count of the batches it trained on."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.training import trainer

    seen: dict = {}
    real_args = transformers.TrainingArguments

    def spy_args(**kw):
        seen["args"] = kw
        return real_args(**kw)

    padded = []
    real_loss = trainer.answer_only_loss

    def spy_loss(model, inputs, num_items=None):
        padded.append(int(inputs["input_ids"].numel()))
        return real_loss(model, inputs, num_items)

    monkeypatch.setattr(transformers, "TrainingArguments", spy_args)
    monkeypatch.setattr(trainer, "answer_only_loss", spy_loss)
    monkeypatch.setattr(trainer, "native_bf16_cpu", lambda: native)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    trainer.train_model(model, tok, _rows(), [], cfg, tmp_path, epochs=1, learning_rate=1e-3, max_steps=-1,
                        resume=False, progress=False, desc="t", device=device, bf16=False)
    return seen["args"], sum(padded)


def test_length_grouped_batches_carry_less_padding_than_random(tiny_lm_dir, tmp_path, monkeypatch):
    cfg = FinetuneConfig(batch_size=6, packing=False, save_steps=1000)
    args, grouped = _train(tiny_lm_dir, tmp_path / "g", monkeypatch, cfg, native=False)
    assert args["train_sampling_strategy"] == "group_by_length"
    useful = sum(len(r["input_ids"]) for r in _rows())
    from workbench.training import trainer

    real = trainer.train_model

    def random_batches(*a, **kw):
        return real(*a, **{**kw, "sampling": "random"})

    monkeypatch.setattr(trainer, "train_model", random_batches)
    _, shuffled = _train(tiny_lm_dir, tmp_path / "r", monkeypatch, cfg, native=False)
    assert useful <= grouped < shuffled  # grouping pads less; the same rows and steps either way


def test_packing_samples_randomly_and_pads_nothing(tiny_lm_dir, tmp_path, monkeypatch):
    args, packed = _train(tiny_lm_dir, tmp_path, monkeypatch, FinetuneConfig(batch_size=6, save_steps=1000),
                          native=False)
    assert args["train_sampling_strategy"] == "random"
    assert packed == sum(len(r["input_ids"]) for r in _rows())


@pytest.mark.parametrize("asked, native, device, expected", [
    (True, True, "cpu", True),      # asked for, native: autocast
    (True, False, "cpu", False),    # emulated bf16 would be slower than float32
    (False, True, "cpu", False),    # off by default
])
def test_cpu_bf16_autocast_only_where_asked_and_native(tiny_lm_dir, tmp_path, monkeypatch, asked, native, device,
                                                       expected):
    cfg = FinetuneConfig(batch_size=6, save_steps=1000, cpu_bf16=asked)
    args, _ = _train(tiny_lm_dir, tmp_path, monkeypatch, cfg, native=native, device=device)
    assert args["bf16"] is expected and args["use_cpu"] is True


def test_an_adapter_trained_before_a_setting_existed_counts_as_its_default(tiny_corpus, monkeypatch, tmp_path):
    """Adding a fine-tuning setting (here cpu_bf16) does not make every existing adapter stale; changing it does."""
    import json

    from workbench.core.config import to_dict
    from workbench.training import adapters

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    folder = tmp_path / "adapters" / "a"
    folder.mkdir(parents=True)
    old = {k: v for k, v in to_dict(FinetuneConfig()).items() if k != "cpu_bf16"}  # written before it existed
    monkeypatch.setattr(adapters, "read_adapter_manifest", lambda f: {
        "mode": "sft", "hyperparameters": old, "corpus_fingerprint": "c", "qa_hash": None})
    monkeypatch.setattr(adapters, "corpus_fingerprint", lambda d: "c")
    monkeypatch.setattr(adapters, "hash_file", lambda p: None)
    (folder / "manifest.json").write_text(json.dumps({}))
    qa = tmp_path / "none.jsonl"
    assert adapters.adapter_status("a", tiny_corpus, FinetuneConfig(), qa_path=qa) == "current"
    assert adapters.adapter_status("a", tiny_corpus, FinetuneConfig(cpu_bf16=True), qa_path=qa) == \
        "stale: settings changed (cpu_bf16)"
