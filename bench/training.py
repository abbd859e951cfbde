"""Training throughput: padded vs length-grouped vs packed batches, side by side, with peak memory.

Runs the real engine (``workbench.training.trainer.train_model``: HF Trainer + LoRA) for a few steps per batching
strategy on the training questions of a corpus's gold train split, each strategy in its own process so peak
memory is its own, twice: as closed-book SFT prompts (short and even: little padding to save) and as RAFT
prompts over retrieved passages (long and uneven: where grouping and packing pay). "Useful" tokens are the non-padding ones; padded strategies also spend compute on
padding. On CUDA it trains in bf16 and reports ``torch.cuda.max_memory_allocated``.

    .venv/bin/python bench/training.py corpora/demo --steps 8
    .venv/bin/python bench/training.py corpora/demo --prompts raft --only padded grouped
    .venv/bin/python bench/training.py corpora/demo --base HuggingFaceTB/SmolLM2-360M-Instruct --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STRATEGIES = {
    "padded": "random batches, right-padded to the longest example",
    "grouped": "length-grouped batches (similar lengths together), padded",
    "packed": "packed: the batch flattened into one row, position ids reset per example, no padding",
}


def examples(corpus: Path, tokenizer, max_len: int, prompts: str) -> list[dict]:
    """Tokenized training rows from the corpus's gold train split: ``closed`` SFT prompts, or ``raft``
    prompts (the same questions over retrieved passages, as ``workbench finetune --mode raft`` builds them;
    the corpus's index is built first if it is missing)."""
    from workbench.core.config import FinetuneConfig
    from workbench.training.train_data import tokenize_examples
    from workbench.training.trainset import build_training_data

    data = build_training_data(corpus, FinetuneConfig(mode="sft" if prompts == "closed" else "raft",
                                                      paraphrases=0, heldout_fraction=0.0), tokenizer)
    return tokenize_examples(data.train, tokenizer, max_len)


def run_one(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps with one strategy; returns its measurements."""
    import torch

    from workbench.answering.models import load_base_model, pick_device, pick_dtype
    from workbench.core.config import FinetuneConfig, ModelConfig
    from workbench.training.finetune import _lora_model
    from workbench.training.trainer import train_model

    mcfg = ModelConfig(base_model=args.base)
    device = pick_device(mcfg.device)
    model, tok = load_base_model(mcfg, progress=False)
    rows = examples(Path(args.corpus), tok, args.max_len, args.prompts[0])
    cfg = FinetuneConfig(batch_size=args.batch_size, packing=args.one == "packed", max_seq_len=args.max_len,
                         save_steps=10_000, heldout_fraction=0.0, lora_r=16, lora_alpha=32)
    model = _lora_model(model, cfg)
    useful = sum(len(r["input_ids"]) for r in rows)
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        out = train_model(model, tok, rows, [], cfg, Path(work), epochs=1, learning_rate=1e-4,
                          max_steps=args.steps, resume=False, progress=False, desc=args.one, device=device,
                          bf16=str(pick_dtype(mcfg.dtype, device)).endswith("bfloat16"),
                          sampling="random" if args.one == "padded" else None)
        wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"strategy": args.one, "device": device, "steps": out.global_step, "train_s": out.train_seconds,
            "wall_s": wall, "useful_tokens": out.tokens_seen, "tokens_per_s": out.tokens_seen / out.train_seconds,
            "peak_mb": peak, "mean_len": useful / len(rows), "n_rows": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", default="corpora/demo")
    ap.add_argument("--base", default="SmolLM2-135M-Instruct")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--prompts", nargs="+", choices=["closed", "raft"], default=["closed", "raft"],
                    help="closed: the SFT prompts (short, even); raft: the same questions over retrieved passages "
                         "(long, uneven)")
    ap.add_argument("--only", nargs="*", choices=list(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--one", choices=list(STRATEGIES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)))
        return
    for prompts in args.prompts:
        table(args, prompts)


def table(args: argparse.Namespace, prompts: str) -> None:
    """Run every strategy on one kind of prompt, each in its own process, and print them side by side."""
    results = []
    for strategy in args.only:
        cmd = [sys.executable, __file__, args.corpus, "--base", args.base, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--max-len", str(args.max_len), "--prompts", prompts,
               "--one", strategy]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{strategy} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
    base = next((r for r in results if r["strategy"] == "padded"), results[0])
    print(f"\n{args.corpus}: {results[0]['n_rows']} training rows ({prompts} prompts), mean "
          f"{results[0]['mean_len']:.0f} tokens; batch {args.batch_size}; {args.steps} steps each; "
          f"device {results[0]['device']}; base {args.base}\n")
    print(f"{'strategy':<10}{'useful tok/s':>14}{'vs padded':>11}{'train s':>9}{'peak MB':>10}  what")
    for r in results:
        print(f"{r['strategy']:<10}{r['tokens_per_s']:>14.0f}{r['tokens_per_s'] / base['tokens_per_s']:>10.2f}x"
              f"{r['train_s']:>9.1f}{r['peak_mb']:>10.0f}  {STRATEGIES[r['strategy']]}", flush=True)


if __name__ == "__main__":
    main()
