"""Training a small Llama-style model from zero: corpus BPE tokenizer, pre-training, instruction tuning.

The "train your own LLM" path of the comparison. Sizes come from ``FinetuneConfig.scratch_*`` (a CPU
preset of a few million parameters; larger for GPUs). The result is a full model folder with its
tokenizer and a ChatML chat template, so evaluation prompts it exactly like the other systems.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workbench.answering.models import pick_device
from workbench.core.config import FinetuneConfig, RunConfig
from workbench.training.train_data import require_enough, tokenize_examples
from workbench.training.trainer import Trained, train_model
from workbench.training.trainset import build_training_data, corpus_chunks

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` with ChatML special tokens and chat template.

    Byte-level means any text (accents, symbols, other scripts) is representable without unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def scratch_model(cfg: FinetuneConfig, tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised Llama sized by the ``scratch_*`` fields (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    heads = cfg.scratch_heads
    conf = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.scratch_hidden_size,
                       intermediate_size=cfg.scratch_hidden_size * 8 // 3 // 8 * 8,
                       num_hidden_layers=cfg.scratch_layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max(1024, cfg.max_seq_len * 4),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(conf)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def train_scratch(corpus_dir: Path, cfg: FinetuneConfig, work: Path, qa_file: Path, run_cfg: RunConfig,
                  resume: bool = False, progress: bool = True) -> Trained:
    """Tokenizer, pre-training on the chunks, then instruction tuning on the QA examples.

    Each phase checkpoints under ``work`` (``pretrain/``, ``instruct/``); a finished pre-training is
    kept in ``work/pretrained`` so a resumed run goes straight to instruction tuning.

    Returns:
        (model, tokenizer, TrainingData, TrainOutcome of both phases combined, device).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer


    rank0 = int(os.environ.get("RANK", "0")) == 0
    device = pick_device(run_cfg.model.device)
    bf16 = device == "cuda" and run_cfg.model.dtype in ("auto", "bfloat16")
    chunks = corpus_chunks(corpus_dir, run_cfg, progress)
    tok_dir, pre_dir = work / "tokenizer", work / "pretrained"
    if resume and (tok_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer([c.text for c in chunks], cfg.scratch_vocab_size)
        if rank0:  # every rank trains the same tokenizer; one writes it
            tokenizer.save_pretrained(tok_dir)
    data = build_training_data(corpus_dir, cfg, tokenizer, qa_file if qa_file.exists() else None, run_cfg,
                               progress=progress, chunks=chunks)
    pre_rows = tokenize_examples(data.pretrain, tokenizer, cfg.max_seq_len)
    sft_rows = tokenize_examples(data.train, tokenizer, cfg.max_seq_len)
    held_rows = tokenize_examples(data.heldout, tokenizer, cfg.max_seq_len)
    require_enough(len(sft_rows), "training examples")
    if progress:
        print(f"scratch: tokenizer of {len(tokenizer)} tokens; {len(pre_rows)} pre-training rows, "
              f"{len(sft_rows)} instruction examples ({data.source})")

    if resume and (pre_dir / "done.json").exists():
        model = AutoModelForCausalLM.from_pretrained(pre_dir)
        pre = json.loads((pre_dir / "done.json").read_text(encoding="utf-8"))
    else:
        model = scratch_model(cfg, tokenizer, cfg.seed)
        if progress:
            print(f"scratch: model of {sum(p.numel() for p in model.parameters()):,} parameters")
        out = train_model(model, tokenizer, pre_rows, [], cfg, work / "pretrain",
                          epochs=cfg.scratch_pretrain_epochs, learning_rate=cfg.scratch_learning_rate,
                          max_steps=cfg.max_steps, resume=resume, progress=progress, desc="scratch pre-train",
                          device=device, bf16=bf16)
        pre = {"tokens_seen": out.tokens_seen, "train_seconds": out.train_seconds, "log_history": out.log_history}
        if rank0:
            model.save_pretrained(pre_dir)
            (pre_dir / "done.json").write_text(json.dumps(pre), encoding="utf-8")
    inst = train_model(model, tokenizer, sft_rows, held_rows, cfg, work / "instruct", epochs=cfg.epochs,
                       learning_rate=cfg.scratch_learning_rate / 2, max_steps=cfg.max_steps, resume=resume,
                       progress=progress, desc="scratch instruct", device=device, bf16=bf16)
    # one curve for both phases: instruction steps continue after the pre-training steps
    offset = max((h.get("step", 0) for h in pre["log_history"]), default=0)
    history = list(pre["log_history"]) + [{**h, "step": h.get("step", 0) + offset} for h in inst.log_history]
    inst.log_history = history
    inst.tokens_seen += pre["tokens_seen"]
    inst.train_seconds += pre["train_seconds"]
    model.eval()
    return Trained(model, tokenizer, data, inst, device)
