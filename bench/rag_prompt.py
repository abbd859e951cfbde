"""Measure the grounded-answering defaults (prompt, passages, decoding) with the real base model.

Retrieves passages for the eval questions of a corpus (the project's hybrid Retriever over a built
index when one is given, else a plain BM25 over paragraph chunks), answers them with the embedded
SmolLM2 through ``workbench.answer.answer_questions`` and prints SQuAD token-F1 / EM / containment on
answerable questions, abstention on unanswerable ones, answer length and speed.

    .venv/bin/python bench/rag_prompt.py corpora/demo --limit 60 --k 3
    .venv/bin/python bench/rag_prompt.py corpora/demo --index demo --k 2 --k 3 --k 4
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from workbench.records import Chunk, Hit


def paragraph_chunks(corpus: Path, words: int = 180) -> list[Chunk]:
    """Paragraphs of each document packed into chunks of about ``words`` words (fallback chunker)."""
    from bs4 import BeautifulSoup

    chunks = []
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or path.name == "qa.jsonl" or path.name.startswith(".") or path.suffix not in {
                ".md", ".txt", ".rst", ".html", ".htm"} or path.name == "README.md":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix in {".html", ".htm"}:
            soup = BeautifulSoup(text, "html.parser")
            for t in soup(["script", "style", "nav", "footer"]):
                t.decompose()
            text = soup.get_text("\n")
        doc = path.relative_to(corpus).as_posix()
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        buf: list[str] = []
        for p in paras + [None]:
            if p is None or (buf and len(" ".join(buf).split()) + len(p.split()) > words):
                if buf:
                    chunks.append(Chunk(f"{doc}#{len(chunks)}", "\n".join(buf), doc, (0, 0)))
                buf = []
            if p is not None:
                buf.append(p)
    return chunks


class BM25Retriever:
    """``search_batch`` over paragraph chunks with bm25s (used when no index is given)."""

    def __init__(self, chunks: list[Chunk], k: int = 3):
        import bm25s

        self.chunks, self.k = chunks, k
        self.bm25 = bm25s.BM25()
        self.bm25.index(bm25s.tokenize([c.text for c in chunks], stopwords="en", show_progress=False),
                        show_progress=False)

    def search_batch(self, queries: list[str], k: int | None = None) -> list[list[Hit]]:
        import bm25s

        k = k or self.k
        ids, scores = self.bm25.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=k,
                                         show_progress=False)
        return [[Hit(self.chunks[int(i)], float(s), r + 1) for r, (i, s) in enumerate(zip(row, srow))]
                for row, srow in zip(ids, scores)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--qa", type=Path, default=None)
    ap.add_argument("--index", default=None, help="index name/folder: use the project's Retriever")
    ap.add_argument("--k", type=int, action="append", help="passages per question (repeatable)")
    ap.add_argument("--limit", type=int, default=60, help="answerable questions scored")
    ap.add_argument("--unanswerable", type=int, default=15, help="unanswerable questions scored")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--show", type=int, default=0, help="print this many answers")
    args = ap.parse_args()

    import torch

    from workbench.answer import answer_questions, is_abstention
    from workbench.config import GenerateConfig, ModelConfig, RetrieveConfig
    from workbench.generate import Generator
    from workbench.metrics import contains, exact_match, token_f1
    from workbench.models import load_base_model
    from workbench.qa import eval_items, load_qa

    torch.manual_seed(0)
    items = eval_items(load_qa(args.qa or args.corpus / "qa.jsonl"))
    ans = [q for q in items if q.answerable]
    una = [q for q in items if not q.answerable]
    step = max(1, len(ans) // max(1, args.limit))  # spread over kinds rather than the first N
    items = ans[::step][: args.limit] + una[: args.unanswerable]
    if args.index:
        from workbench.index import load_index
        from workbench.retrieve import Retriever

        retriever = Retriever(load_index(args.index), RetrieveConfig())
    else:
        retriever = BM25Retriever(paragraph_chunks(args.corpus))
    model, tok = load_base_model(ModelConfig())
    gen = Generator(model, tok, GenerateConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    for k in args.k or [3]:
        t0 = time.perf_counter()
        answers = answer_questions([q.question for q in items], gen, retriever=retriever, k=k)
        secs = time.perf_counter() - t0
        a_ans = [(q, a) for q, a in zip(items, answers) if q.answerable]
        f1 = statistics.mean(token_f1(a.text, q.answers) for q, a in a_ans)
        em = statistics.mean(exact_match(a.text, q.answers) for q, a in a_ans)
        cont = statistics.mean(contains(a.text, q.answers) for q, a in a_ans)
        recall = statistics.mean(any(any(g.lower() in h.chunk.text.lower() for g in q.answers) for h in a.hits)
                                 for q, a in a_ans)
        f1_hit = [token_f1(a.text, q.answers) for q, a in a_ans
                  if any(any(g.lower() in h.chunk.text.lower() for g in q.answers) for h in a.hits)]
        abst = statistics.mean(is_abstention(a.text) for q, a in zip(items, answers) if not q.answerable) \
            if una and args.unanswerable else float("nan")
        false_abst = statistics.mean(is_abstention(a.text) for q, a in a_ans)
        words = statistics.mean(len(a.text.split()) for a in answers)
        print(f"k={k}: F1 {f1:.3f}  EM {em:.3f}  contains {cont:.3f}  | answer in passages {recall:.2f}, "
              f"F1 when it is {statistics.mean(f1_hit) if f1_hit else 0:.3f} | abstains: unanswerable {abst:.2f}, "
              f"answerable {false_abst:.2f} | {words:.1f} words/answer | {len(items)} q in {secs:.0f} s",
              flush=True)
        for q, a in list(zip(items, answers))[: args.show]:
            print(f"   {token_f1(a.text, q.answers) if q.answerable else is_abstention(a.text):.2f} "
                  f"{q.question[:70]!r} gold={q.answers[:1]} -> {a.text!r}   raw={a.raw[:80]!r}")


if __name__ == "__main__":
    main()
