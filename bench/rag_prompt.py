"""Measure grounded-answering settings (``PromptConfig``, passages, decoding) with the real base model.

Retrieves passages for a corpus's questions (the project's hybrid Retriever over a built index when one
is given, else a plain BM25 over paragraph chunks), answers them with the embedded SmolLM2 through
``workbench.answering.answer.answer_questions`` and prints SQuAD token-F1 / EM / containment on answerable
questions, abstention on unanswerable ones, answer length and speed.

Settings are tuned on the ``train`` split (the default). The ``eval`` split is what reports score, so
it is refused unless asked for with ``--split eval``, and figures on it are held-out only for settings
that were not chosen on it.

    .venv/bin/python bench/rag_prompt.py corpora/demo --index demo --variant "focus=3" --variant "focus=4"
    .venv/bin/python bench/rag_prompt.py corpora/demo --index demo --split eval   # the held-out check
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

from workbench.core.records import Chunk, Hit


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


REPLY_STARTS = ("", "The answer is:", "Answer:")
"""Reply openings tried against the default (``prime=N`` in a variant)."""


VARIANT_KEYS = {"k": "passages", "sentences": "passage_sentences", "few_shot": "few_shot", "qfirst": "question_first",
                "rev": "best_passage_last", "prime": "reply_start", "focus": "copy_sentences",
                "abstain": "abstain_bias", "copy": "copy_spans", "max_new_tokens": "max_new_tokens"}
"""Variant keys -> what they set: ``k`` passages, ``copy`` and ``max_new_tokens`` the GenerateConfig, the rest
the PromptConfig field named (``prime`` indexes REPLY_STARTS)."""


def parse_variant(text: str) -> tuple[int, dict, dict]:
    """``"k=3,focus=2,abstain=-1.5"`` -> (k, PromptConfig changes, GenerateConfig changes)."""
    k, prompt, generate = 2, {}, {}
    for part in filter(None, text.split(",")):
        key, _, val = part.partition("=")
        key = key.strip()
        if key not in VARIANT_KEYS:
            raise SystemExit(f"unknown variant key {key!r}; known: {', '.join(VARIANT_KEYS)}")
        if key == "k":
            k = int(val)
        elif key in ("copy", "max_new_tokens"):
            generate[VARIANT_KEYS[key]] = bool(int(val)) if key == "copy" else int(val)
        elif key == "prime":
            prompt["reply_start"] = REPLY_STARTS[int(val)]
        elif key == "abstain":
            prompt["abstain_bias"] = float(val)
        elif key in ("qfirst", "rev"):
            prompt[VARIANT_KEYS[key]] = bool(int(val))
        else:
            prompt[VARIANT_KEYS[key]] = int(val)
    return k, prompt, generate


def pick_items(qa: Path, split: str, limit: int, unanswerable: int) -> tuple[list, int, int]:
    """The questions of ``split``: answerable ones spread over the file, then unanswerable ones."""
    from workbench.corpus.qa import load_qa, split_items

    items = split_items(load_qa(qa), split)
    if not items:
        raise SystemExit(f"{qa} has no {split!r} questions: tune on a train split (mark questions "
                         '"split": "train"), or pass --split eval to measure held-out figures')
    ans = [q for q in items if q.answerable]
    una = [q for q in items if not q.answerable]
    step = max(1, len(ans) // max(1, limit))  # spread over kinds rather than the first N
    chosen = ans[::step][:limit] + una[:unanswerable]
    return chosen, len(ans[::step][:limit]), len(una[:unanswerable])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--qa", type=Path, default=None)
    ap.add_argument("--split", choices=("train", "eval"), default="train",
                    help="questions to measure on: train (tuning, the default) or eval (held-out check)")
    ap.add_argument("--index", default=None, help="index name/folder: use the project's hybrid Retriever")
    ap.add_argument("--variant", action="append", help='e.g. "k=3,focus=3,abstain=-1.5" (repeatable; default: '
                    "the built-in defaults); keys: " + ", ".join(VARIANT_KEYS))
    ap.add_argument("--limit", type=int, default=40, help="answerable questions scored (spread over the file)")
    ap.add_argument("--unanswerable", type=int, default=10, help="unanswerable questions scored")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=None, help="default: GenerateConfig's")
    ap.add_argument("--show", type=int, default=0, help="print this many answers per variant")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--dump", type=Path, default=None, help="write every answer (raw and cleaned) as JSON Lines")
    args = ap.parse_args()

    import dataclasses

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from workbench.answering.answer import answer_questions
    from workbench.answering.generate import Generator
    from workbench.answering.models import load_base_model
    from workbench.answering.prompt import build_messages
    from workbench.core.config import GenerateConfig, ModelConfig, PromptConfig, RetrieveConfig
    from workbench.core.text import is_abstention, normalize_answer
    from workbench.evaluation.metrics import contains, exact_match, token_f1
    from workbench.evaluation.systems import CachedRetriever

    torch.manual_seed(0)
    items, n_ans, n_una = pick_items(args.qa or args.corpus / "qa.jsonl", args.split, args.limit, args.unanswerable)
    questions = [q.question for q in items]
    if args.index:
        from workbench.retrieval.index import load_index
        from workbench.retrieval.retrieve import Retriever

        base_retriever = Retriever(load_index(args.index), RetrieveConfig())
    else:
        base_retriever = BM25Retriever(paragraph_chunks(args.corpus))
    variants = [parse_variant(v) for v in (args.variant or [""])]
    retriever = CachedRetriever(base_retriever, questions,
                                base_retriever.search_batch(questions, k=max(k for k, _, _ in variants)))
    model, tok = load_base_model(ModelConfig())
    print(f"{n_ans} answerable + {n_una} unanswerable {args.split} questions"
          f"{' (held out: do not tune on these figures)' if args.split == 'eval' else ''}; retrieval: "
          f"{'hybrid index ' + args.index if args.index else 'BM25 over paragraphs'}")
    for k, prompt_changes, gen_changes in variants:
        prompt = dataclasses.replace(PromptConfig(), **prompt_changes)
        gen_cfg = dataclasses.replace(GenerateConfig(), max_new_tokens=args.max_new_tokens,
                                      batch_size=args.batch_size or GenerateConfig().batch_size, **gen_changes)
        gen = Generator(model, tok, gen_cfg)
        t0 = time.perf_counter()
        answers = answer_questions(questions, gen, retriever=retriever, k=k, prompt=prompt)
        secs = time.perf_counter() - t0
        prompts = {q: [m for m in build_messages(q, a.hits, tok, cfg=prompt) if m["role"] == "user"][-1]["content"]
                   for q, a in zip(questions, answers)}
        a_ans = [(q, a) for q, a in zip(items, answers) if q.answerable]
        in_prompt = [any(normalize_answer(g) in normalize_answer(prompts[q.question]) for g in q.answers)
                     for q, _ in a_ans]
        f1s = [token_f1(a.text, q.answers) for q, a in a_ans]
        f1_in = [f for f, ok in zip(f1s, in_prompt) if ok]
        abst = statistics.mean(is_abstention(a.text) for q, a in zip(items, answers) if not q.answerable) \
            if n_una else float("nan")
        n_prompt = statistics.mean(len(tok(prompts[q])["input_ids"]) for q in questions)
        changed = ", ".join(f"{key}={val!r}" for key, val in {**prompt_changes, **gen_changes}.items()) or "defaults"
        print(f"[{args.split}] k={k} {changed}: "
              f"F1 {statistics.mean(f1s):.3f}  EM {statistics.mean(exact_match(a.text, q.answers) for q, a in a_ans):.3f}"
              f"  contains {statistics.mean(contains(a.text, q.answers) for q, a in a_ans):.3f} | answer in prompt "
              f"{statistics.mean(in_prompt):.2f}, F1 then {statistics.mean(f1_in) if f1_in else 0:.3f} | abstains: "
              f"unanswerable {abst:.2f}, answerable {statistics.mean(is_abstention(a.text) for _, a in a_ans):.2f}"
              f" | {statistics.mean(len(a.text.split()) for a in answers):.1f} words/answer, {n_prompt:.0f} "
              f"passage tokens | {secs:.0f} s", flush=True)
        if args.dump:
            import json

            with open(args.dump, "a", encoding="utf-8") as f:
                for q, a in zip(items, answers):
                    f.write(json.dumps({"split": args.split, "k": k, "prompt": prompt_changes, "question": q.question,
                                        "answers": q.answers, "kind": q.kind, "raw": a.raw, "text": a.text},
                                       ensure_ascii=False) + "\n")
        for q, a in list(zip(items, answers))[: args.show]:
            score = token_f1(a.text, q.answers) if q.answerable else float(is_abstention(a.text))
            print(f"   {score:.2f} {q.question[:60]!r} gold={q.answers[:1]} -> {a.text!r}  raw={a.raw[:60]!r}")


if __name__ == "__main__":
    main()
