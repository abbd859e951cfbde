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

    language = "en"

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


ALT_SYSTEM = (
    None,
    "You are a helpful assistant. Use the passages to answer the question. Reply with only the answer, in as "
    "few words as possible. If the passages do not say, reply: I don't know.",
    "Read the passages and answer the question. Copy the exact words from the passage that answer it.",
)
"""System prompts tried against the default (``sys=N`` in a variant)."""

REPLY_STARTS = ("", "The answer is:", "Answer:")
"""Reply openings tried against the default (``prime=N`` in a variant)."""


class CachedRetriever:
    """Serves the top-k of hits retrieved once (so variants differ only in what is being measured)."""

    def __init__(self, questions: list[str], hits: list[list[Hit]], embedder=None, language: str = "en"):
        self.by_q = dict(zip(questions, hits))
        self.embedder = embedder  # ranks the sentences replies copy from (None: idf overlap)
        self.language = language  # answer cleaning's stopwords

    def search_batch(self, queries: list[str], k: int | None = None) -> list[list[Hit]]:
        return [self.by_q[q][:k] for q in queries]


def parse_variant(text: str) -> dict[str, float]:
    """``"k=3,sentences=2,few_shot=1,qfirst=1"`` -> settings (passages, PASSAGE_SENTENCES, FEW_SHOT on/off,
    QUESTION_FIRST on/off, max_new_tokens, sys: index into ALT_SYSTEM (0 = the default SYSTEM_RAG), rev:
    BEST_PASSAGE_LAST on/off), copy: GenerateConfig.copy_spans on/off (default: the built-in default), prime:
    index into REPLY_STARTS (0 = no opening; default: the built-in REPLY_START), focus: COPY_SENTENCES, abstain:
    ABSTAIN_BIAS."""
    out = {"k": 3, "sentences": None, "few_shot": 0, "max_new_tokens": None, "qfirst": 0, "sys": 0, "rev": 0,
           "copy": None, "prime": None, "focus": None, "abstain": None}
    for part in filter(None, text.split(",")):
        key, _, val = part.partition("=")
        if key.strip() not in out:
            raise SystemExit(f"unknown variant key {key!r}; known: {', '.join(out)}")
        out[key.strip()] = float(val) if key.strip() == "abstain" else int(val)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--qa", type=Path, default=None)
    ap.add_argument("--index", default=None, help="index name/folder: use the project's hybrid Retriever")
    ap.add_argument("--variant", action="append", help='e.g. "k=3,sentences=3,few_shot=1" (repeatable; '
                    "default: the built-in defaults)")
    ap.add_argument("--limit", type=int, default=40, help="answerable questions scored (spread over the file)")
    ap.add_argument("--unanswerable", type=int, default=10, help="unanswerable questions scored")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=None, help="default: GenerateConfig's")
    ap.add_argument("--show", type=int, default=0, help="print this many answers per variant")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--dump", type=Path, default=None, help="write every answer (raw and cleaned) as JSON Lines")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from workbench import answer as A
    from workbench.config import GenerateConfig, ModelConfig, RetrieveConfig
    from workbench.generate import Generator
    from workbench.metrics import contains, exact_match, normalize_answer, token_f1
    from workbench.models import load_base_model
    from workbench.qa import eval_items, load_qa

    torch.manual_seed(0)
    items = eval_items(load_qa(args.qa or args.corpus / "qa.jsonl"))
    ans = [q for q in items if q.answerable]
    una = [q for q in items if not q.answerable]
    step = max(1, len(ans) // max(1, args.limit))  # spread over kinds rather than the first N
    items = ans[::step][: args.limit] + una[: args.unanswerable]
    questions = [q.question for q in items]
    if args.index:
        from workbench.index import load_index
        from workbench.retrieve import Retriever

        base_retriever = Retriever(load_index(args.index), RetrieveConfig())
    else:
        base_retriever = BM25Retriever(paragraph_chunks(args.corpus))
    variants = [parse_variant(v) for v in (args.variant or [""])]
    retriever = CachedRetriever(questions, base_retriever.search_batch(questions, k=max(v["k"] for v in variants)),
                                getattr(base_retriever, "embedder", None), base_retriever.language)
    model, tok = load_base_model(ModelConfig())
    defaults = (A.PASSAGE_SENTENCES, A.FEW_SHOT, A.QUESTION_FIRST, A.SYSTEM_RAG, A.BEST_PASSAGE_LAST, A.REPLY_START,
                A.COPY_SENTENCES, A.ABSTAIN_BIAS)
    print(f"{len(ans[::step][: args.limit])} answerable + {len(una[: args.unanswerable])} unanswerable eval "
          f"questions; retrieval: {'hybrid index ' + args.index if args.index else 'BM25 over paragraphs'}")
    for v in variants:
        A.PASSAGE_SENTENCES = defaults[0] if v["sentences"] is None else v["sentences"]
        A.FEW_SHOT = A.WORKED_EXAMPLES if v["few_shot"] else ()
        A.QUESTION_FIRST = bool(v["qfirst"])
        A.SYSTEM_RAG = ALT_SYSTEM[v["sys"]] or defaults[3]
        A.BEST_PASSAGE_LAST = bool(v["rev"])
        A.REPLY_START = defaults[5] if v["prime"] is None else REPLY_STARTS[v["prime"]]
        A.COPY_SENTENCES = defaults[6] if v["focus"] is None else v["focus"]
        A.ABSTAIN_BIAS = defaults[7] if v["abstain"] is None else v["abstain"]
        copy = GenerateConfig().copy_spans if v["copy"] is None else bool(v["copy"])
        gen = Generator(model, tok, GenerateConfig(max_new_tokens=v["max_new_tokens"] or args.max_new_tokens,
                                                   batch_size=args.batch_size or GenerateConfig().batch_size,
                                                   copy_spans=copy))
        t0 = time.perf_counter()
        answers = A.answer_questions(questions, gen, retriever=retriever, k=v["k"])
        secs = time.perf_counter() - t0
        prompts = {q: [m for m in A.build_messages(q, a.hits, tok) if m["role"] == "user"][-1]["content"]
                   for q, a in zip(questions, answers)}
        a_ans = [(q, a) for q, a in zip(items, answers) if q.answerable]
        in_prompt = [any(normalize_answer(g) in normalize_answer(prompts[q.question]) for g in q.answers)
                     for q, _ in a_ans]
        f1s = [token_f1(a.text, q.answers) for q, a in a_ans]
        f1_in = [f for f, ok in zip(f1s, in_prompt) if ok]
        abst = statistics.mean(A.is_abstention(a.text) for q, a in zip(items, answers) if not q.answerable) \
            if una and args.unanswerable else float("nan")
        n_prompt = statistics.mean(len(tok(prompts[q])["input_ids"]) for q in questions)
        print(f"k={v['k']} sentences={A.PASSAGE_SENTENCES} few_shot={int(bool(A.FEW_SHOT))} "
              f"qfirst={int(A.QUESTION_FIRST)} sys={v['sys']} rev={v['rev']} copy={int(copy)} "
              f"start={A.REPLY_START!r} focus={A.COPY_SENTENCES} abstain={A.ABSTAIN_BIAS}: "
              f"F1 {statistics.mean(f1s):.3f}  EM {statistics.mean(exact_match(a.text, q.answers) for q, a in a_ans):.3f}"
              f"  contains {statistics.mean(contains(a.text, q.answers) for q, a in a_ans):.3f} | answer in prompt "
              f"{statistics.mean(in_prompt):.2f}, F1 then {statistics.mean(f1_in) if f1_in else 0:.3f} | abstains: "
              f"unanswerable {abst:.2f}, answerable {statistics.mean(A.is_abstention(a.text) for _, a in a_ans):.2f}"
              f" | {statistics.mean(len(a.text.split()) for a in answers):.1f} words/answer, {n_prompt:.0f} "
              f"passage tokens | {secs:.0f} s", flush=True)
        if args.dump:
            import json

            with open(args.dump, "a", encoding="utf-8") as f:
                for q, a in zip(items, answers):
                    f.write(json.dumps({"variant": v, "question": q.question, "answers": q.answers, "kind": q.kind,
                                        "raw": a.raw, "text": a.text}, ensure_ascii=False) + "\n")
        for q, a in list(zip(items, answers))[: args.show]:
            score = token_f1(a.text, q.answers) if q.answerable else float(A.is_abstention(a.text))
            print(f"   {score:.2f} {q.question[:60]!r} gold={q.answers[:1]} -> {a.text!r}  raw={a.raw[:60]!r}")
    (A.PASSAGE_SENTENCES, A.FEW_SHOT, A.QUESTION_FIRST, A.SYSTEM_RAG, A.BEST_PASSAGE_LAST, A.REPLY_START,
     A.COPY_SENTENCES, A.ABSTAIN_BIAS) = defaults


if __name__ == "__main__":
    main()
