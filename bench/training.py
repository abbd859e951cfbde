"""Training throughput: padded vs length-grouped vs packed batches, side by side, with peak memory.

Runs the real engine (``workbench.finetune.train_model``: HF Trainer + LoRA) for a few steps per batching
strategy on the SFT examples of a corpus's gold train split, each strategy in its own process so peak
memory is its own. "Useful" tokens are the non-padding ones; padded strategies also spend compute on
padding. On CUDA it trains in bf16 and reports ``torch.cuda.max_memory_allocated``.

    .venv/bin/python bench/training.py corpora/demo --steps 8
    .venv/bin/python bench/training.py corpora/demo --base HuggingFaceTB/SmolLM2-360M-Instruct --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import random
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
    """Tokenized SFT rows for the gold train split (``prompts``: closed or raft-like with passages)."""
    from workbench.qa import load_qa
    from workbench.train_data import sft_examples, tokenize_examples

    items = [q for q in load_qa(corpus / "qa.jsonl") if q.split == "train"]
    exs = sft_examples(items, tokenizer)
    if prompts == "passages":  # long, uneven prompts as RAFT makes them: 1-3 documents' worth of context
        rng = random.Random(0)
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(corpus.rglob("*.md"))]
        for e in exs:
            ctx = " ".join(rng.choice(docs)[:rng.randint(200, 1500)] for _ in range(rng.randint(1, 3)))
            e.messages[-1]["content"] = f"Passages:\n{ctx}\n\n{e.messages[-1]['content']}"
    return tokenize_examples(exs, tokenizer, max_len)


def run_one(args: argparse.Namespace) -> dict:
    """Train ``args.steps`` steps with one strategy; returns its measurements."""
    import torch

    from workbench.config import FinetuneConfig, ModelConfig
    from workbench.finetune import _lora_model, train_model
    from workbench.models import load_base_model, pick_device, pick_dtype

    mcfg = ModelConfig(base_model=args.base)
    device = pick_device(mcfg.device)
    model, tok = load_base_model(mcfg, progress=False)
    rows = examples(Path(args.corpus), tok, args.max_len, args.prompts)
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
    ap.add_argument("--prompts", choices=["closed", "passages"], default="closed",
                    help="closed: the SFT prompts; passages: long RAFT-like prompts of uneven length")
    ap.add_argument("--only", nargs="*", choices=list(STRATEGIES), default=list(STRATEGIES))
    ap.add_argument("--one", choices=list(STRATEGIES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args)))
        return
    results = []
    for strategy in args.only:
        cmd = [sys.executable, __file__, args.corpus, "--base", args.base, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--max-len", str(args.max_len), "--prompts", args.prompts,
               "--one", strategy]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{strategy} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
    base = next((r for r in results if r["strategy"] == "padded"), results[0])
    print(f"\n{args.corpus}: {results[0]['n_rows']} SFT examples ({args.prompts} prompts), mean "
          f"{results[0]['mean_len']:.0f} tokens; batch {args.batch_size}; {args.steps} steps each; "
          f"device {results[0]['device']}; base {args.base}\n")
    print(f"{'strategy':<10}{'useful tok/s':>14}{'vs padded':>11}{'train s':>9}{'peak MB':>10}  what")
    for r in results:
        print(f"{r['strategy']:<10}{r['tokens_per_s']:>14.0f}{r['tokens_per_s'] / base['tokens_per_s']:>10.2f}x"
              f"{r['train_s']:>9.1f}{r['peak_mb']:>10.0f}  {STRATEGIES[r['strategy']]}")


if __name__ == "__main__":
    main()
