"""Fine-tuning end to end on the tiny LM: every mode writes a loadable artifact; LoRA trains only LoRA;
reuse, staleness, resume after an interruption, and the adapter/base check."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from workbench.core.artifacts import hash_tree
from workbench.core.config import FinetuneConfig, ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import Hit

TINY = dict(max_steps=3, batch_size=2, save_steps=2, lora_r=4, lora_alpha=8, paraphrases=2, max_seq_len=128,
            learning_rate=5e-3, scratch_vocab_size=300, scratch_hidden_size=32, scratch_layers=1, scratch_heads=2)


class OverlapRetriever:
    """A stand-in retriever for RAFT: ranks the corpus chunks by word overlap with the question."""

    def __init__(self, corpus: Path):
        from workbench.core.config import RunConfig
        from workbench.training.trainset import corpus_chunks

        self.chunks = corpus_chunks(corpus, RunConfig())

    def search_batch(self, queries, k=None):
        def words(s):
            return set(re.findall(r"\w+", s.lower()))

        out = []
        for q in queries:
            ranked = sorted(self.chunks, key=lambda c: -len(words(q) & words(c.text)))[:k]
            out.append([Hit(c, float(len(words(q) & words(c.text))), i + 1) for i, c in enumerate(ranked)])
        return out


def run_ft(corpus: Path, lm: Path, mode: str = "sft", **kw):
    from workbench.training.finetune import finetune

    extra = {k: kw.pop(k) for k in ("resume", "rebuild", "name") if k in kw}
    retriever = OverlapRetriever(corpus) if mode == "raft" else None
    return finetune(corpus, FinetuneConfig(mode=mode, **{**TINY, **kw}), ModelConfig(base_model=str(lm)),
                    progress=False, retriever=retriever, **extra)


@pytest.mark.parametrize("mode", ["sft", "cpt", "raft", "scratch"])
def test_each_mode_writes_a_loadable_artifact(mode, tiny_corpus, tiny_lm_dir, home):
    import torch
    from transformers import AutoModelForCausalLM

    before = hash_tree(tiny_lm_dir)
    res = run_ft(tiny_corpus, tiny_lm_dir, mode)
    assert res.path == home / "adapters" / f"corpus-{mode}" and not res.reused
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["kind"] == "adapter" and m["mode"] == mode and m["global_step"] == 3
    assert m["tokens_seen"] == res.tokens_seen > 0 and m["train_loss"] > 0
    assert m["data_source"] == {"cpt": "corpus"}.get(mode, "gold")
    assert m["hyperparameters"]["lora_r"] == 4 and m["corpus_fingerprint"] and m["qa_hash"]
    assert m["libraries"]["peft"] and m["train_seconds"] > 0
    curve = (res.path / "training_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,epoch,loss") and len(curve) > 2
    assert (res.path / "training_curve.png").stat().st_size > 1000
    assert list((res.path / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (home / "adapters" / f".corpus-{mode}.work").exists()      # checkpoints cleaned up
    assert not [p for p in (home / "adapters").iterdir() if ".tmp-" in p.name]
    assert hash_tree(tiny_lm_dir) == before                                # base files untouched
    if mode == "scratch":
        assert m["base_model"] is None
        model = AutoModelForCausalLM.from_pretrained(res.path)
        assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(res.path)
        assert "<|im_start|>assistant" in tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
        return
    from peft import PeftModel

    assert m["base_model"] == str(tiny_lm_dir) and m["base_model_hash"]
    assert (res.path / "adapter_config.json").exists() and (res.path / "adapter_model.safetensors").exists()
    # a path-based base is named by its absolute path; the weights are readable as any new file is
    peft_cfg = json.loads((res.path / "adapter_config.json").read_text())
    assert peft_cfg["base_model_name_or_path"] == str(tiny_lm_dir.resolve())
    umask = os.umask(0o022)
    os.umask(umask)
    assert (res.path / "adapter_model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    original = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, res.path)
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)        # LoRA B starts at zero: it trained
    for name, p in peft_model.base_model.model.state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        torch.testing.assert_close(p, original[key], rtol=0, atol=0)   # base weights did not change


def test_trained_examples_and_loader(tiny_corpus, tiny_lm_dir, home):
    from workbench.training.adapters import load_finetuned

    res = run_ft(tiny_corpus, tiny_lm_dir, "sft")
    rows = [json.loads(x) for x in (res.path / "train_data.jsonl").read_text().splitlines()]
    qs = {r["question"] for r in rows}
    assert {"How much does the Tern-3 weigh?", "What is the weight of a Tern-3 buoy?"} <= qs
    assert "Tell me the mass of the Tern-3." not in qs                     # eval question never trained on
    assert all(r["target"] == "42 kg" for r in rows)
    model, tok, manifest = load_finetuned(res.name, ModelConfig(base_model=str(tiny_lm_dir)))
    assert manifest["name"] == "corpus-sft" and not model.training
    assert tok.padding_side == "left"


def test_reuse_and_staleness(tiny_corpus, tiny_lm_dir, home):
    from workbench.training.adapters import adapter_status

    first = run_ft(tiny_corpus, tiny_lm_dir, "sft")
    cfg = FinetuneConfig(mode="sft", **TINY)
    model_cfg = ModelConfig(base_model=str(tiny_lm_dir))
    assert adapter_status("corpus-sft", tiny_corpus, cfg, model_cfg) == "current"
    again = run_ft(tiny_corpus, tiny_lm_dir, "sft")
    assert again.reused and again.path == first.path and again.tokens_seen == first.tokens_seen
    assert adapter_status("corpus-sft", tiny_corpus, FinetuneConfig(mode="sft", **{**TINY, "lora_r": 8}),
                          model_cfg) == "stale: settings changed (lora_r)"
    (tiny_corpus / "buoy.md").write_text("# Tern-3\n\nThe Tern-3 buoy weighs 43 kg now.\n", encoding="utf-8")
    assert adapter_status("corpus-sft", tiny_corpus, cfg, model_cfg) == "stale: the corpus changed since it was trained"
    assert adapter_status("nope", tiny_corpus) == "missing"


def test_resume_continues_from_the_checkpoint(tiny_corpus, tiny_lm_dir, home, monkeypatch):
    import workbench.training.trainer as ft

    real = ft._progress_callback

    def interrupting(enabled, desc):
        cb = real(enabled, desc)
        step_end = cb.on_step_end

        def on_step_end(args, state, control, **kw):
            step_end(args, state, control, **kw)
            if state.global_step == 3:
                raise KeyboardInterrupt  # Ctrl-C after step 3; the last checkpoint is step 2

        cb.on_step_end = on_step_end
        return cb

    monkeypatch.setattr(ft, "_progress_callback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_ft(tiny_corpus, tiny_lm_dir, "sft", max_steps=4)
    work = home / "adapters" / ".corpus-sft.work"
    assert not (home / "adapters" / "corpus-sft").exists()                 # nothing under the final name
    assert (work / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(ft, "_progress_callback", real)
    with pytest.raises(WorkbenchError, match="other settings"):
        run_ft(tiny_corpus, tiny_lm_dir, "sft", max_steps=4, lora_r=8, resume=True)
    res = run_ft(tiny_corpus, tiny_lm_dir, "sft", max_steps=4, resume=True)
    m = json.loads((res.path / "manifest.json").read_text())
    assert m["resumed_from_step"] == 2 and m["global_step"] == 4
    steps = [int(s) for s in re.findall(r"^(\d+),", (res.path / "training_curve.csv").read_text(), re.M)]
    assert max(steps) == 4


def test_adapter_on_another_base_is_refused(tiny_corpus, tiny_lm_dir, home, tmp_path):
    from tiny_models import build_tiny_lm

    from workbench.training.adapters import load_finetuned

    res = run_ft(tiny_corpus, tiny_lm_dir, "sft")
    other = build_tiny_lm(tmp_path / "other-lm", seed=1)
    with pytest.raises(WorkbenchError, match="trained on base model") as e:
        load_finetuned(res.name, ModelConfig(base_model=str(other)))
    assert str(tiny_lm_dir) in e.value.hint


def test_synthesized_data_never_contains_eval_questions(tiny_corpus, tiny_lm_dir, home):
    """With synthesis on, a planted eval question that the synthesizer produces verbatim is dropped."""
    from transformers import AutoTokenizer

    from workbench.training.synth import synthesize_rules
    from workbench.training.train_data import question_tokens
    from workbench.training.trainset import build_training_data

    cfg = FinetuneConfig(mode="sft", synthesize="always", paraphrases=2)
    made = synthesize_rules(OverlapRetriever(tiny_corpus).chunks, max_per_chunk=4)
    planted = next(s.question for s in made if s.style == "question")
    rows = [json.loads(x) for x in (tiny_corpus / "qa.jsonl").read_text().splitlines()]
    rows.append({"id": "leak", "question": planted, "answers": ["x"], "split": "eval"})
    (tiny_corpus / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    data = build_training_data(tiny_corpus, cfg, tok)
    assert data.source == "gold+synthesized" and data.n_leakage_dropped >= 1
    evals = [question_tokens(r["question"]) for r in rows if r.get("split", "eval") == "eval"]
    for ex in data.train + data.heldout:
        assert question_tokens(ex.question) not in evals
    assert planted not in {ex.question for ex in data.train + data.heldout}


def test_training_data_reads_the_chunks_of_a_current_index(tiny_corpus, home, monkeypatch):
    """A run ingests the corpus once: with the corpus's index current, training data takes its chunks."""
    from rag_fakes import StubEmbedder

    import workbench.training.trainset as trainset
    from workbench.core.config import IndexConfig, IngestConfig, RunConfig
    from workbench.retrieval.index import build_index

    cfg = RunConfig(ingest=IngestConfig(tokenizer="whitespace"))
    built = build_index(tiny_corpus, IndexConfig(), cfg.ingest, embedder=StubEmbedder(), progress=False)

    def no_ingestion(*args, **kwargs):
        raise AssertionError("the corpus was ingested again")

    monkeypatch.setattr(trainset, "ingest_corpus", no_ingestion)
    chunks = trainset.corpus_chunks(tiny_corpus, cfg)
    assert [c.id for c in chunks] == [c.id for c in trainset.read_chunks(built.path / "chunks.jsonl")]
    (tiny_corpus / "buoy.md").write_text("# Tern-3\n\nThe Tern-3 buoy weighs 43 kg now.\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="ingested again"):  # a stale index is not used
        trainset.corpus_chunks(tiny_corpus, cfg)
