"""The one prompt builder (evaluation, fine-tuning, the app and the Inside page all use it), and what a
grounded reply may copy from.

Every switch lives in ``PromptConfig`` (``RunConfig.prompt``), recorded in each run's ``summary.json`` and
each adapter's manifest. Small models ramble, echo the question and ignore passages; the defaults were
measured with the embedded SmolLM2-135M (``bench/rag_prompt.py`` re-measures them, on the ``train`` split
unless told otherwise): a terse system prompt, k passages numbered in rank order and fitted to the
context budget, the reply opened with "The answer is:", and greedy decoding constrained to copy a span of
the passage sentences closest to the question (``copy_sources``, ``workbench.answering.copying``), stopped at the
first newline.
"""
from __future__ import annotations

from typing import Any, Sequence

from workbench.answering.copying import CopySource, no_start_words
from workbench.answering.generate import render_prompt
from workbench.core.config import PromptConfig
from workbench.core.language import DEFAULT_LANGUAGE, covers, stopwords
from workbench.core.records import Hit
from workbench.core.text import ABSTAIN, overlap_scores, top_n
from workbench.corpus.chunking import split_sentences

SYSTEM_RAG = (
    "Answer the question with a short phrase copied from the passages: a name, number, date or a few "
    f"words. No full sentence, no explanation. If the passages do not contain the answer, reply: {ABSTAIN}."
)
"""System prompt when passages are given."""

SYSTEM_CLOSED = (
    "Answer the question with a short phrase: a name, number, date or a few words. No full sentence, "
    f"no explanation. If you do not know the answer, reply: {ABSTAIN}."
)
"""System prompt for closed-book answering (base and fine-tuned systems without retrieval)."""

ANSWER_STOPS: tuple[str, ...] = ("\n",)
"""Generation stops at the end of the first line: answers are one short line."""

WORKED_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("The Larch Street bridge opened in 1932 after six years of work. Its main span is 310 m long and it "
     "carries two tram tracks.", "How long is the main span of the Larch Street bridge?", "310 m"),
    ("Mira Holt became head of the Vesterby library in 2019. The library lends about 40,000 books a year.",
     "Who runs the Vesterby library?", "Mira Holt"),
    ("The Vesterby library lends about 40,000 books a year and opens at 9:00 on weekdays.",
     "How many staff work at the Vesterby library?", ABSTAIN),
)
"""Worked examples (passage, question, answer), invented and domain-neutral, shown as earlier chat turns
of RAG prompts when ``PromptConfig.few_shot`` > 0."""


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` (no special tokens); a chars/4 estimate without a tokenizer."""
    if tokenizer is None:
        return max(1, len(text) // 4)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate(tokenizer: Any, text: str, n_tokens: int) -> str:
    """The start of ``text`` within ``n_tokens`` tokens, cut back to a word boundary, with an ellipsis."""
    if tokenizer is None:
        cut = text[: n_tokens * 4]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
        cut = tokenizer.decode(ids, skip_special_tokens=True)
    if len(cut) < len(text) and " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + " …"


def format_passage(n: int, hit: Hit, text: str | None = None) -> str:
    """``[n] (doc › heading) text``: the number the answer can cite, where the passage comes from."""
    c = hit.chunk
    where = c.doc + (f" › {c.heading}" if c.heading else "")
    return f"[{n}] ({where}) {' '.join((text if text is not None else c.text).split())}"


def _user(question: str, passages: Sequence[str], question_first: bool) -> str:
    if not passages:
        return f"Question: {question.strip()}"
    head = f"Question: {question.strip()}\n\n" if question_first else ""
    return head + "Passages:\n" + "\n\n".join(passages) + f"\n\nQuestion: {question.strip()}"


def _window(tokenizer: Any, context_tokens: int) -> int:
    limit = getattr(tokenizer, "model_max_length", 0) or 0
    return min(context_tokens, limit) if 0 < limit < 1_000_000 else context_tokens


def focus_passages(question: str, texts: Sequence[str], n_sentences: int, language: str = DEFAULT_LANGUAGE
                   ) -> list[str]:
    """Each text cut down to its ``n_sentences`` sentences that best match the question, in text order.

    A sentence scores the summed inverse document frequency (over all sentences of all ``texts``) of the
    question's content words it contains, so rare words such as names and codes weigh most.
    """
    if n_sentences <= 0:
        return list(texts)
    sents = [split_sentences(t, language) for t in texts]
    scores = overlap_scores(question, [s for ss in sents for s in ss], language)
    out = []
    for ss in sents:
        sc, scores = scores[:len(ss)], scores[len(ss):]
        out.append(" ".join(top_n(ss, sc, n_sentences)))
    return out


def _few_shot(cfg: PromptConfig) -> list[dict[str, str]]:
    turns = []
    for passage, question, answer in WORKED_EXAMPLES[:cfg.few_shot]:
        turns.append({"role": "user", "content": _user(question, [f"[1] {passage}"], cfg.question_first)})
        turns.append({"role": "assistant", "content": answer})
    return turns


def _rag_messages(question: str, examples: list[dict[str, str]], passages: list[str],
                  cfg: PromptConfig) -> list[dict[str, str]]:
    start = [{"role": "assistant", "content": cfg.reply_start}] if cfg.reply_start else []
    return [{"role": "system", "content": SYSTEM_RAG}, *examples,
            {"role": "user", "content": _user(question, passages, cfg.question_first)}, *start]


def _passage_budget(question: str, examples: list[dict[str, str]], tokenizer: Any, context_tokens: int,
                    cfg: PromptConfig) -> int:
    """Tokens left for passages once the rest of the prompt and the reply's reserve are counted."""
    m = _rag_messages(question, examples, ["x"], cfg)
    used = count_tokens(tokenizer, render_prompt(tokenizer, m) if tokenizer is not None
                        else "\n".join(x["content"] for x in m))
    return _window(tokenizer, context_tokens) - cfg.answer_reserve - used


def build_prompt(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None, context_tokens: int = 2048,
                 cfg: PromptConfig | None = None) -> tuple[list[dict[str, str]], list[Hit]]:
    """The chat messages for a question and the passages that fit into them.

    Closed book: the system prompt and the question. With passages: the system prompt, the worked
    examples (``cfg.few_shot``), then the passages numbered [1]..[n] in rank order, each cut to its
    ``cfg.passage_sentences`` best-matching sentences, added while the rendered prompt stays within
    ``context_tokens`` (less ``cfg.answer_reserve``); the first passage that does not fit is cut to the
    remaining budget (or dropped when less than ``cfg.min_passage_tokens`` remain) and later ones are left
    out.

    Args:
        question: the user's question.
        hits: retrieved passages in rank order, or None for closed book.
        tokenizer: the model's tokenizer, to count tokens (a chars/4 estimate without one).
        context_tokens: prompt budget; passages are trimmed to fit it and the tokenizer's window.
        cfg: prompt settings (default: ``PromptConfig()``).

    Returns:
        (messages, the hits actually in the prompt, in prompt order).
    """
    cfg = cfg or PromptConfig()
    question = question.strip()
    if hits is None:
        return [{"role": "system", "content": SYSTEM_CLOSED},
                {"role": "user", "content": _user(question, [], cfg.question_first)}], []
    texts = focus_passages(question, [h.chunk.text for h in hits], cfg.passage_sentences)
    first = count_tokens(tokenizer, format_passage(1, hits[0], texts[0])) if hits else 0
    examples = _few_shot(cfg)
    budget = _passage_budget(question, examples, tokenizer, context_tokens, cfg)
    if examples and budget < min(first, 256):  # a tight budget goes to the passages, not the examples
        examples = []
        budget = _passage_budget(question, examples, tokenizer, context_tokens, cfg)
    passages: list[str] = []
    used: list[Hit] = []
    for hit, body in zip(hits, texts):
        n = len(used) + 1
        text = format_passage(n, hit, body)
        cost = count_tokens(tokenizer, text) + 2  # + the blank line between passages
        if cost > budget:
            left = budget - count_tokens(tokenizer, format_passage(n, hit, "")) - 4
            if left >= cfg.min_passage_tokens:
                passages.append(format_passage(n, hit, _truncate(tokenizer, body, left)))
                used.append(hit)
            break
        passages.append(text)
        used.append(hit)
        budget -= cost
    if cfg.best_passage_last:
        passages.reverse()
    return _rag_messages(question, examples, passages, cfg), used


def build_messages(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None, context_tokens: int = 2048,
                   cfg: PromptConfig | None = None) -> list[dict[str, str]]:
    """The chat messages asking ``question``: closed book (``hits`` None) or over numbered passages.

    Fine-tuning (SFT with ``hits=None``, RAFT with passages) calls it too, so a model is trained on
    exactly the prompts it is evaluated with. Arguments as ``build_prompt``.
    """
    return build_prompt(question, hits, tokenizer, context_tokens, cfg)[0]


def copy_sources(questions: Sequence[str], hits: Sequence[Sequence[Hit]], embedder: Any = None,
                 cfg: PromptConfig | None = None, language: str = DEFAULT_LANGUAGE,
                 offer_abstain: bool = True) -> list[list[CopySource]]:
    """What each grounded reply may copy from: the abstention phrase and the passages'
    ``cfg.copy_sentences`` sentences (table rows, headings) closest to the question.

    Closeness is the embedder's cosine similarity (each distinct sentence encoded once per call) or,
    without an embedder or with one known not to cover ``language``, the summed idf of shared question words
    (``overlap_scores``), and then only ``cfg.copy_sentences_uncovered`` sentences are kept. The prompt still
    shows the whole passages; only where the answer is copied from narrows. A reply may not start with a
    stopword of ``language`` or a word of its question; the abstention phrase (left out when not
    ``offer_abstain``) gets ``cfg.abstain_bias``.
    """
    cfg = cfg or PromptConfig()
    uncovered = embedder is not None and covers(embedder.name, language) is False
    n = cfg.copy_sentences_uncovered if uncovered else cfg.copy_sentences
    sents = [[s for h in hs for s in split_sentences(h.chunk.text, language)] for hs in hits]
    if n <= 0:
        texts = [[h.chunk.text for h in hs] for hs in hits]
    elif embedder is None or uncovered:
        texts = [top_n(ss, overlap_scores(q, ss, language), n) for q, ss in zip(questions, sents)]
    else:
        distinct = list(dict.fromkeys(s for ss in sents for s in ss))
        row = {s: i for i, s in enumerate(distinct)}
        vecs = embedder.encode(distinct, role="passage")
        qvecs = embedder.encode(list(questions), role="query")
        texts = [top_n(ss, (vecs[[row[s] for s in ss]] @ qv).tolist(), n) for qv, ss in zip(qvecs, sents)]
    out = []
    for q, kept in zip(questions, texts):
        no_start = no_start_words(q, stopwords(language))
        abstain = [CopySource(ABSTAIN, bias=cfg.abstain_bias)] if offer_abstain else []
        out.append([CopySource(t, no_start) for t in kept] + abstain)
    return out
