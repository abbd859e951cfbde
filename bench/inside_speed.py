"""Time of each Inside view with the embedded models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2).

Each view is timed as the page computes it on one interaction, models already loaded (the app loads
them once and shares them with the chat page), on the RAG prompt of a demo eval question cut to at most
``--prompt-tokens`` tokens (k passages, 512 by default: the target's worst case). Target: every view
<= 3 s on the 2-core CPU.

    .venv/bin/python bench/inside_speed.py                      # in-memory index of corpora/demo
    .venv/bin/python bench/inside_speed.py --index demo --adapter demo-sft
    .venv/bin/python bench/inside_speed.py --threads 1        # on a machine other jobs keep busy

Without ``--adapter`` the fine-tuning view compares the base model with a LoRA adapter (r=16 on every
linear layer) whose weights are random: it costs the same as a trained one (the adapter is merged into
the weights, as the app loads it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 3.0


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], list[float], Any]:
    """Wall times and process CPU times of ``repeats`` calls of ``fn``, and its last result.

    On a machine other jobs keep busy the wall time grows with their load; with one torch thread the CPU
    time stays close to what the view takes on one idle core.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return walls, cpus, out


def demo_index(corpus: Path, embedder: Any) -> Any:
    """An in-memory index of ``corpus`` chunked by the ingest stage and encoded by ``embedder``."""
    from workbench.core.config import IngestConfig
    from workbench.corpus.ingest import ingest_corpus
    from workbench.retrieval.index import index_from_chunks, passage_text

    chunks = ingest_corpus(corpus, IngestConfig()).chunks
    return index_from_chunks(chunks, embedder.encode([passage_text(c) for c in chunks]), kind="flat",
                             manifest={"embedder": embedder.name, "embedder_fingerprint": embedder.fingerprint})


def random_lora(base_cfg: Any) -> tuple[Any, Any]:
    """The base model with a LoRA adapter (r=16, all linear layers, random weights) merged in."""
    import torch
    from peft import LoraConfig, get_peft_model

    from workbench.answering.models import load_base_model

    model, tok = load_base_model(base_cfg, progress=False)
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return peft.merge_and_unload().eval(), tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "corpora" / "demo")
    ap.add_argument("--index", default=None, help="a built index (default: in-memory index of --corpus)")
    ap.add_argument("--adapter", default=None, help="a built LoRA adapter (default: random LoRA weights)")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("-k", type=int, default=4, help="passages in the RAG prompt before the cut")
    ap.add_argument("--questions", type=int, nargs="+", default=[8, 16],
                    help="eval questions in the fine-tuning batch view (the page's default is 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's, one per core); on "
                    "a machine other jobs keep busy, 1 avoids threads spinning while they wait for a core")
    args = ap.parse_args()

    import os

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig
    from workbench.corpus.qa import eval_items, load_qa
    from workbench.inside import attention, changes, nexttoken, space, tokens
    from workbench.inside.prompt import question_prompt
    from workbench.retrieval.embed import Embedder
    from workbench.retrieval.retrieve import Retriever

    cfg = ModelConfig()
    t0 = time.perf_counter()
    model, tok = load_base_model(cfg)
    load_s = time.perf_counter() - t0
    if args.adapter:
        from workbench.training.adapters import load_finetuned

        tuned, tuned_tok, _ = load_finetuned(args.adapter, cfg)
    else:
        tuned, tuned_tok = random_lora(cfg)
    if args.index:
        from workbench.retrieval.index import load_index

        retriever = Retriever(load_index(args.index))
    else:
        embedder = Embedder().warm_up()
        retriever = Retriever(demo_index(args.corpus, embedder), embedder=embedder)
    embedder = retriever.embedder.warm_up()
    items = [q for q in eval_items(load_qa(args.corpus / "qa.jsonl")) if q.answerable and q.answers]
    question = items[0].question
    prompt = question_prompt(question, model, tok, retriever, k=args.k, max_tokens=args.prompt_tokens)
    print(f"base model loaded in {load_s:.1f} s; index {len(retriever.index)} chunks; prompt {prompt.n_tokens} "
          f"tokens ({len(prompt.hits)} passages){'; ' + prompt.notes[0] if prompt.notes else ''}")

    def next_token_view() -> Any:
        p = question_prompt(question, model, tok, retriever, k=args.k, max_tokens=args.prompt_tokens)
        return nexttoken.top_tokens(nexttoken.read_prompt(model, p).logits, tok, 10, 0.8, 40, 0.95)

    prefill = nexttoken.read_prompt(model, prompt)  # the page reads the prompt once per question
    logits = prefill.logits

    def attention_view() -> Any:
        from workbench.app.inside_views import heatmap_png

        view = attention.attention_view(model, tok, prompt, layer=-1)
        view.segment_shares(view.layer), view.segment_shares(None), view.top_words(10, view.layer)
        heatmap_png(view, None)  # the PNG the page shows
        return view

    text = " ".join(c.text for c in retriever.index.chunks[:3])
    views: list[tuple[str, Callable[[], Any]]] = [
        ("tokens (base + embedder)", lambda: tokens.split_all(text, [("base", tok, None), (
            "embedder", embedder.model.tokenizer, embedder.max_tokens)])),
        ("next token: retrieve, prompt, logits, top 10", next_token_view),
        ("next token: reshape (a slider move)", lambda: nexttoken.top_tokens(logits, tok, 10, 0.5, 20, 0.9)),
        ("next token: sample 3 x 12 tokens", lambda: nexttoken.sample_continuations(
            model, tok, prompt, 3, 12, 0.8, prefill=prefill)),
        ("attention: one layer, shares, heatmap", attention_view),
        ("fine-tuning: one answer, base vs adapter", lambda: changes.compare_answer(
            (model, tok), (tuned, tuned_tok), question, items[0].answers[0])),
        *[(f"fine-tuning: {n} eval questions", lambda n=n: changes.compare_items(
            (model, tok), (tuned, tuned_tok), items, n)) for n in args.questions],
        ("space: PCA map of all chunks + query", lambda: space.semantic_map(retriever.index, embedder, question)),
        ("space: similarity of 3 sentences", lambda: space.similarity_matrix(embedder, [
            "The buoy weighs 42 kg.", "The float has a mass of 42 kilograms.", "Economy class for short flights."])),
        ("space: A - B + C", lambda: space.vector_arithmetic(retriever.index, embedder, "buoy battery", "battery",
                                                             "anode")),
    ]
    print(f"{'view':<44} {'median s':>9} {'max s':>7} {'CPU s':>6}  target <= {TARGET_S:.0f} s (wall)")
    worst = 0.0
    for name, fn in views:
        times, cpus, _ = timed(fn, args.repeats)
        worst = max(worst, max(times))
        ok = "ok" if max(times) <= TARGET_S else "SLOW"
        print(f"{name:<44} {statistics.median(times):>9.2f} {max(times):>7.2f} {statistics.median(cpus):>6.2f}  {ok}")
    verdict = "meets" if worst <= TARGET_S else "misses"
    print(f"load average {os.getloadavg()[0]:.1f}; slowest view: {worst:.2f} s ({verdict} the {TARGET_S:.0f} s target)")


if __name__ == "__main__":
    main()
