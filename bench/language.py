"""Retrieval by corpus language: answer recall of BM25 analyses and hybrid weightings on one question split.

Ingests a corpus (its language detected, or ``--language``), embeds its chunks once with the embedder, then
for each variant builds an in-memory index and scores ``Retriever.search_batch`` on the chosen split:
answer_recall@1/3/5/10, doc_recall@5 and MRR (``workbench.evaluation.retrieval_eval``). Tune on ``--split train`` and
report ``--split eval``.

    .venv/bin/python bench/language.py ../shared/corpora/squad-pt-dev --split train \\
        --variant analyzer=plain --variant analyzer=auto --variant analyzer=auto,dense_weight=0.5
    .venv/bin/python bench/language.py corpora/demo --split train --variant analyzer=plain --variant analyzer=pt

Variant keys: ``analyzer`` (plain: words only; auto: the corpus language's; nostem / nostop / nofold: auto less
one step; or a language code), ``dense_weight`` (fusion weight of the dense ranking; default: the
Retriever's), ``mode`` (hybrid, dense, sparse), ``k`` (final passages, default 10).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.core.language import TermAnalyzer, analyzer_for  # noqa: E402


def parse_variant(text: str) -> dict[str, str]:
    out = {"analyzer": "auto", "dense_weight": "", "mode": "hybrid", "k": "10"}
    for part in filter(None, text.split(",")):
        key, _, val = part.partition("=")
        if key not in out:
            raise SystemExit(f"unknown variant key {key!r}; known: {', '.join(out)}")
        out[key] = val
    return out


def make_analyzer(name: str, language: str) -> TermAnalyzer:
    """A named analyzer: plain, auto (the language's), nostem / nostop / nofold (auto less one step), or the
    analyzer of another language code."""
    if name == "plain":
        return TermAnalyzer(language=language)
    auto = analyzer_for(language)
    full = analyzer_for("pt") if language == "en" else auto  # English's own analyzer is plain; test the steps
    if language == "en" and name in {"nostem", "nostop", "nofold", "full"}:
        full = TermAnalyzer(language="en", stem="english", stopwords=True, fold_accents=True)
    steps = {"auto": auto, "full": full, "nostem": dataclasses.replace(full, stem=""),
             "nostop": dataclasses.replace(full, stopwords=False),
             "nofold": dataclasses.replace(full, fold_accents=False)}
    return steps.get(name) or analyzer_for(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--split", default="train", choices=("train", "eval"))
    ap.add_argument("--language", default="auto")
    ap.add_argument("--chunk-tokens", type=int, default=None, help="ingest.chunk_tokens (default: IngestConfig's)")
    ap.add_argument("--variant", action="append")
    args = ap.parse_args()

    from workbench.core.config import IngestConfig, RetrieveConfig
    from workbench.core.records import Hit
    from workbench.corpus.ingest import ingest_corpus
    from workbench.corpus.qa import load_qa, split_items
    from workbench.evaluation.retrieval_eval import retrieval_metrics
    from workbench.retrieval.embed import Embedder
    from workbench.retrieval.index import index_from_chunks, passage_text
    from workbench.retrieval.retrieve import Retriever

    ingest_cfg = IngestConfig(language=args.language)
    if args.chunk_tokens:
        ingest_cfg = IngestConfig(language=args.language, chunk_tokens=args.chunk_tokens)
    ingested = ingest_corpus(args.corpus, ingest_cfg, progress=False)
    language = ingested.report.language
    items = [q for q in split_items(load_qa(args.corpus / "qa.jsonl"), args.split) if q.answerable]
    embedder = Embedder()
    t0 = time.perf_counter()
    emb = embedder.encode([passage_text(c) for c in ingested.chunks])
    anywhere = retrieval_metrics(items, [[Hit(c, 0.0, 1) for c in ingested.chunks]] * len(items),
                                 ks=(len(ingested.chunks),))[f"answer_recall@{len(ingested.chunks)}"]
    print(f"{args.corpus.name}: language {language} {ingested.report.languages}, {len(ingested.chunks)} chunks of "
          f"{ingest_cfg.chunk_tokens} tokens; {anywhere:.3f} of the answers occur in some chunk; "
          f"(encoded in {time.perf_counter() - t0:.0f} s), {len(items)} answerable {args.split} questions")
    for v in [parse_variant(x) for x in (args.variant or [""])]:
        analyzer = make_analyzer(v["analyzer"], language)
        index = index_from_chunks(ingested.chunks, emb, analyzer=analyzer,
                                  manifest={"embedder": embedder.stored_name})
        cfg = RetrieveConfig(mode=v["mode"], k=int(v["k"]),
                             dense_weight=float(v["dense_weight"]) if v["dense_weight"] else None)
        retriever = Retriever(index, cfg, embedder=embedder)
        hits = retriever.search_batch([q.question for q in items])
        m = retrieval_metrics(items, hits, ks=(1, 3, 5, 10))
        print(f"{v['analyzer']:>7} {analyzer.stem or '-':>10} stop={int(analyzer.stopwords)} "
              f"fold={int(analyzer.fold_accents)} {v['mode']:>6} dense_w={retriever.dense_weight():.2f}: "
              + "  ".join(f"ans@{k} {m[f'answer_recall@{k}']:.3f}" for k in (1, 3, 5, 10))
              + f"  doc@5 {m['doc_recall@5']:.3f}  mrr {m['mrr']:.3f}", flush=True)


if __name__ == "__main__":
    main()
