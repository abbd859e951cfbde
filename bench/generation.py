"""Batched vs one-at-a-time greedy generation with the embedded base model on RAG prompts.

Builds N RAG prompts (eval questions of a corpus with retrieved passages, through the same
``workbench.answering.prompt.build_prompt`` the evaluation uses, replies copied from the passages as in evaluation),
then answers them twice with greedy decoding: one prompt at a time (batch size 1) and batched (prompts
sorted by length, left-padded, batched as ``GenerateConfig`` says). Prints wall
time, prompts/s, new tokens/s, the speed-up, and whether the outputs are identical.

    .venv/bin/python bench/generation.py                     # corpora/demo, 64 prompts, default batching
    .venv/bin/python bench/generation.py --index demo        # passages from a built index (hybrid)
    .venv/bin/python bench/generation.py --no-stop           # run every reply to max_new_tokens
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_prompts(corpus: Path, n: int, index: str | None, tokenizer, closed_book: bool = False
                  ) -> tuple[list[list[dict[str, str]]], list[list] | None]:
    """``n`` RAG (or closed-book) conversations for the corpus's eval questions (cycled when there are fewer),
    and what each RAG reply may copy from (None for closed book), exactly as evaluation builds them."""
    from workbench.answering.prompt import build_prompt, copy_sources
    from workbench.core.config import RetrieveConfig
    from workbench.corpus.qa import eval_items, load_qa

    questions = [q.question for q in eval_items(load_qa(corpus / "qa.jsonl"))]
    questions = (questions * (n // max(1, len(questions)) + 1))[:n]
    if closed_book:
        return [build_prompt(q, None, tokenizer)[0] for q in questions], None
    if index:
        from workbench.retrieval.index import load_index
        from workbench.retrieval.retrieve import Retriever

        retriever = Retriever(load_index(index), RetrieveConfig())
    else:
        from rag_prompt import BM25Retriever, paragraph_chunks

        retriever = BM25Retriever(paragraph_chunks(corpus))
    k = RetrieveConfig().k
    built = [build_prompt(q, hits, tokenizer) for q, hits in zip(questions, retriever.search_batch(questions, k=k))]
    return [m for m, _ in built], copy_sources(questions, [used for _, used in built],
                                               getattr(retriever, "embedder", None))


def run(gen, prompts, stop, sources) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = gen.generate(prompts, stop=stop, sources=sources)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("corpora/demo"))
    ap.add_argument("--index", default=None, help="index name/folder for passages (default: BM25 fallback)")
    ap.add_argument("-n", type=int, default=64, help="prompts")
    ap.add_argument("--batch-size", type=int, default=None, help="default: GenerateConfig's (with its token cap)")
    ap.add_argument("--free", action="store_true", help="RAG replies written freely (no copy constraint)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: GenerateConfig's")
    ap.add_argument("--no-stop", action="store_true", help="no stop string: every reply runs to the token budget "
                    "unless the model ends its turn")
    ap.add_argument("--closed-book", action="store_true", help="questions without passages (short prompts: "
                    "shows the decode-bound case where batching pays most)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()

    import torch

    from workbench.answering.generate import Generator
    from workbench.answering.models import load_base_model
    from workbench.answering.prompt import ANSWER_STOPS
    from workbench.core.config import GenerateConfig, ModelConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_base_model(ModelConfig())
    prompts, sources = build_prompts(args.corpus, args.n, args.index, tok, args.closed_book)
    sources = None if args.free else sources
    cfg = GenerateConfig()
    max_new = args.max_new_tokens or cfg.max_new_tokens
    bs = args.batch_size or cfg.batch_size
    stop = () if args.no_stop else ANSWER_STOPS
    batched = Generator(model, tok, GenerateConfig(max_new_tokens=max_new, batch_size=bs))
    single = Generator(model, tok, GenerateConfig(max_new_tokens=max_new, batch_size=1))
    n_prompt = sum(len(batched.encode(p)) for p in prompts)
    kind = "closed-book" if args.closed_book else ("RAG (free replies)" if sources is None else "RAG (copied replies)")
    print(f"{len(prompts)} {kind} prompts from {args.corpus} ({n_prompt / len(prompts):.0f} prompt tokens on "
          f"average), greedy, max_new_tokens={max_new}, stop={list(stop)}, batches of up to {bs} prompts and "
          f"{cfg.batch_tokens} tokens, {torch.get_num_threads()} torch threads, device {model.device}", flush=True)
    batched.generate(prompts[:2], stop=stop, sources=sources and sources[:2])  # warm-up
    t_b, out_b = run(batched, prompts, stop, sources)
    t_s, out_s = run(single, prompts, stop, sources)
    rows = []
    for name, secs, out in (("one at a time", t_s, out_s), (f"batched (≤{bs})", t_b, out_b)):
        new = sum(g.n_new_tokens for g in out)
        rows.append((name, secs, len(out) / secs, new / secs, (n_prompt + new) / secs))
    print(f"{'':<16}{'wall s':>9}{'prompts/s':>11}{'new tok/s':>11}{'all tok/s':>11}")
    for name, secs, pps, tps, aps in rows:
        print(f"{name:<16}{secs:>9.1f}{pps:>11.2f}{tps:>11.1f}{aps:>11.1f}")
    same = sum(a.text == b.text for a, b in zip(out_s, out_b))
    print(f"speed-up {t_s / t_b:.2f}x; identical outputs: {same}/{len(prompts)}; "
          f"new tokens per reply {sum(g.n_new_tokens for g in out_b) / len(out_b):.1f}")
    for a, b in zip(out_s, out_b):
        if a.text != b.text:
            print(f"  differs: {a.text!r} vs {b.text!r}")


if __name__ == "__main__":
    main()
