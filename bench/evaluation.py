"""Evaluation throughput: the harness's batched answering against one question at a time.

Runs the base (closed book) and rag systems of ``workbench eval`` on the first N eval questions of a
corpus, once with the preset's generation batch size and once with batch size 1, through the same
code path as the harness (``workbench.evaluation.systems.run_system``), and prints questions/s, new tokens/s,
the speed-up and whether the greedy answers agree.

    .venv/bin/python bench/evaluation.py [--corpus corpora/demo] [--n 32] [--systems base,rag]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--n", type=int, default=32, help="eval questions (answerable ones first)")
    ap.add_argument("--systems", default="base,rag")
    ap.add_argument("--preset", default="quick")
    args = ap.parse_args()

    from workbench.core.config import load_preset
    from workbench.evaluation.evaluate import ensure_index, load_eval_items
    from workbench.evaluation.systems import CachedRetriever, SystemContext, resolve_systems, run_system
    from workbench.retrieval.retrieve import Retriever

    cfg = load_preset(args.preset)
    corpus = Path(args.corpus)
    _, items = load_eval_items(corpus, None, None)
    items = sorted(items, key=lambda q: not q.answerable)[: args.n]
    specs = resolve_systems(args.systems.split(","))
    retriever = None
    if any(s.retrieval for s in specs):
        index, _ = ensure_index(corpus, cfg, None, progress=False)
        live = Retriever(index, cfg.retrieve)
        qs = [q.question for q in items]
        retriever = CachedRetriever(live, qs, live.search_batch(qs, k=cfg.retrieve.k))

    print(f"{len(items)} questions from {corpus}, preset {args.preset}, max_new_tokens "
          f"{cfg.generate.max_new_tokens}, torch threads {_threads()}")
    print(f"{'system':8} {'batch':>5} {'seconds':>8} {'questions/s':>12} {'new tokens/s':>13} {'speed-up':>9} "
          f"{'same answers':>13}")
    for spec in specs:
        results = {}
        for bs in (cfg.generate.batch_size, 1):
            c = replace(cfg, generate=replace(cfg.generate, batch_size=bs))
            ctx = SystemContext(cfg=c, retriever=retriever)
            ctx.generator(spec.adapter)                     # load outside the timing
            t0 = time.perf_counter()
            run = run_system(spec, ctx, items)
            secs = time.perf_counter() - t0
            toks = sum(a.n_new_tokens for a in run.answers)
            results[bs] = (secs, toks, [a.text for a in run.answers])
            ctx.release()
        b_a, (o_s, _, o_a) = results[cfg.generate.batch_size][2], results[1]
        same = sum(x == y for x, y in zip(b_a, o_a)) / len(items)
        for bs, (s, t, _) in ((cfg.generate.batch_size, results[cfg.generate.batch_size]), (1, results[1])):
            speed = f"{o_s / s:.1f}x" if bs != 1 else ""
            print(f"{spec.name:8} {bs:>5} {s:>8.1f} {len(items) / s:>12.2f} {t / s:>13.1f} {speed:>9} "
                  f"{(f'{100 * same:.0f}%' if bs != 1 else ''):>13}")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
