"""Grounded answering: the one prompt builder (evaluation, fine-tuning and the app all use it), answer
cleaning, abstention detection and citations.

Small models ramble, echo the question and ignore passages. The defaults below were tuned with the
embedded SmolLM2-135M on the demo corpus (``bench/rag_prompt.py`` re-measures them): a terse system
prompt with worked examples answered in a few words, numbered passages fitted to the context budget, a
short reply budget, and ``clean_answer`` cutting what is left after the answer phrase.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from workbench.records import Hit

ABSTAIN = "I don't know"
"""What the model is asked to reply when the passages (or its memory) do not hold the answer."""

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

ANSWER_RESERVE = 48
"""Tokens of the context budget kept free for the reply."""
MIN_PASSAGE_TOKENS = 24
"""A passage that would have to be cut shorter than this is left out instead."""

_CITE = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")


@dataclass
class Citation:
    """A passage an answer rests on: its number in the prompt, document, chunk id and heading."""

    n: int
    doc: str
    chunk_id: str
    heading: str = ""


@dataclass
class Answer:
    """One answered question.

    Attributes:
        question: the question.
        text: the cleaned answer (``clean_answer`` of the raw reply).
        hits: the passages in the prompt, in prompt order ([n] is ``hits[n-1]``); empty when closed book.
        citations: passages the answer cites ([n] markers) or, failing those, that contain it.
        latency_s: generation wall time of its batch plus its share of retrieval time.
        n_new_tokens: tokens generated.
        raw: the reply before cleaning.
    """

    question: str
    text: str
    hits: list[Hit] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    latency_s: float = 0.0
    n_new_tokens: int = 0
    raw: str = ""


# --- prompt ----------------------------------------------------------------------------------------

def _count(tokenizer: Any, text: str) -> int:
    if tokenizer is None:
        return max(1, len(text) // 4)  # rough chars-per-token when no tokenizer is at hand
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


def _user(question: str, passages: Sequence[str]) -> str:
    if not passages:
        return f"Question: {question.strip()}"
    return "Passages:\n" + "\n\n".join(passages) + f"\n\nQuestion: {question.strip()}"


def _window(tokenizer: Any, context_tokens: int) -> int:
    limit = getattr(tokenizer, "model_max_length", 0) or 0
    return min(context_tokens, limit) if 0 < limit < 1_000_000 else context_tokens


def build_prompt(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None,
                 context_tokens: int = 2048) -> tuple[list[dict[str, str]], list[Hit]]:
    """The chat messages for a question and the passages that fit into them.

    Passages are numbered [1]..[n] in rank order and added while the rendered prompt stays within
    ``context_tokens`` (less ``ANSWER_RESERVE``); the first passage that does not fit is cut to the
    remaining budget (or dropped when less than ``MIN_PASSAGE_TOKENS`` remain) and later ones are left
    out.

    Returns:
        (messages, the hits actually in the prompt, in prompt order).
    """
    from workbench.generate import render_prompt

    system = SYSTEM_CLOSED if hits is None else SYSTEM_RAG
    msgs = lambda ps: [{"role": "system", "content": system}, {"role": "user", "content": _user(question, ps)}]  # noqa: E731
    if not hits:
        return msgs([]), []
    overhead = _count(tokenizer, render_prompt(tokenizer, msgs(["x"])) if tokenizer is not None
                      else system + _user(question, ["x"]))
    budget = _window(tokenizer, context_tokens) - ANSWER_RESERVE - overhead
    passages: list[str] = []
    used: list[Hit] = []
    for hit in hits:
        n = len(used) + 1
        text = format_passage(n, hit)
        cost = _count(tokenizer, text) + 2  # + the blank line between passages
        if cost > budget:
            room = budget - _count(tokenizer, format_passage(n, hit, "")) - 4
            if room >= MIN_PASSAGE_TOKENS:
                passages.append(format_passage(n, hit, _truncate(tokenizer, hit.chunk.text, room)))
                used.append(hit)
            break
        passages.append(text)
        used.append(hit)
        budget -= cost
    return msgs(passages), used


def build_messages(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None,
                   context_tokens: int = 2048) -> list[dict[str, str]]:
    """The chat messages asking ``question``: closed book (``hits`` None) or over numbered passages.

    The one prompt builder: evaluation, fine-tuning (SFT with ``hits=None``, RAFT with passages) and
    the app all call it, so a model is trained on exactly the prompts it is evaluated with.

    Args:
        question: the user's question.
        hits: retrieved passages in rank order, or None for closed book.
        tokenizer: the model's tokenizer, to count tokens (a chars/4 estimate without one).
        context_tokens: prompt budget; passages are trimmed to fit it and the tokenizer's window.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    return build_prompt(question, hits, tokenizer, context_tokens)[0]


# --- replies ---------------------------------------------------------------------------------------

_PREFIX = re.compile(r"^\s*(?:(?:final\s+)?answer|a|response|reply)\s*[:\-–]\s*", re.I)
_LEADIN = re.compile(r"^\s*(?:the\s+(?:short\s+)?answer\s+is\s*:?\s*|according\s+to\s+(?:the\s+)?passages?\s*"
                     r"(?:\[\d+\])?\s*,\s*)", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_ABBREV = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|St|Mt|No|Nr|Fig|approx|ca|vs|etc|Inc|Ltd|Co)\.|\b[A-Z]\.)$")


def clean_answer(text: str) -> str:
    """The answer phrase of a raw reply: no echoed question, label, citation marker or trailing sentences.

    Keeps the first non-empty line (after an ``Answer:`` label when the model echoed the question), drops
    "[n]" markers, markdown emphasis and wrapping quotes, and keeps only the first sentence.
    """
    text = (text or "").replace("\r", "")
    m = re.search(r"(?im)^\s*(?:final\s+)?answer\s*:\s*(\S.*)$", text)
    if m and re.search(r"(?im)^\s*question\s*:", text[: m.start()] or "x"):
        text = m.group(1)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip() and not re.match(r"(?i)^\s*question\s*:", ln)]
    line = lines[0] if lines else ""
    line = _LEADIN.sub("", _PREFIX.sub("", line))
    line = _CITE.sub("", line).replace("**", "").replace("__", "")
    # first sentence only (but "Dr. Berg" and "v4.2" stay whole)
    start = 0
    for m in _SENTENCE_END.finditer(line):
        if not _ABBREV.search(line[start:m.start()]):
            line = line[: m.start()]
            break
    line = " ".join(line.split()).strip(" \"'`“”‘’")
    return line.rstrip(" .;:,") if not re.search(r"\b[A-Z]\.$|\.\.\.$", line) else line


_ABSTAIN = re.compile(
    r"(?:\bi\s+(?:do\s*not|don'?t|cannot|can'?t|am\s+not\s+sure|have\s+no)\b.{0,20}\b(?:know|say|answer|information|tell|find)"
    r"|\bnot\s+(?:mentioned|stated|specified|provided|given|found|available|included|listed|contained)\b"
    r"|\b(?:passages?|context|texts?|documents?|sources?)\s+(?:do(?:es)?\s*(?:not|n'?t)|did\s*n'?o?t)\s+"
    r"(?:say|mention|contain|state|provide|specify|include|give|answer)"
    r"|\bno\s+(?:information|answer|mention|data|details)\b|\bcannot\s+(?:be\s+)?(?:answer|determin)"
    r"|\bunable\s+to\s+(?:answer|find|determine)|^\s*(?:unknown|n/?a|none)\s*$)",
    re.I)


def is_abstention(text: str) -> bool:
    """Whether a reply declines to answer ("I don't know", "not mentioned in the passages", empty...)."""
    t = (text or "").replace("’", "'").strip()
    return not t or bool(_ABSTAIN.search(t))


def cite(raw: str, hits: Sequence[Hit], answer: str | None = None) -> list[Citation]:
    """The passages an answer rests on, as citations mapped back to documents.

    Explicit "[n]" markers in the reply win; failing those, the passages whose text contains the
    (cleaned) answer, in prompt order. Abstentions cite nothing.
    """
    answer = clean_answer(raw) if answer is None else answer
    if is_abstention(answer):
        return []
    nums: list[int] = []
    for m in _CITE.finditer(raw or ""):
        nums += [int(x) for x in m.group(1).split(",") if 1 <= int(x) <= len(hits)]
    if not nums:
        from workbench.metrics import normalize_answer

        a = normalize_answer(answer)
        nums = [i + 1 for i, h in enumerate(hits) if a and f" {a} " in f" {normalize_answer(h.chunk.text)} "]
    out: list[Citation] = []
    for n in dict.fromkeys(nums):
        c = hits[n - 1].chunk
        out.append(Citation(n, c.doc, c.id, c.heading))
    return out


# --- batched answering -----------------------------------------------------------------------------

def answer_questions(questions: Sequence[str], generator: Any, retriever: Any = None, k: int | None = None,
                     progress: bool = False) -> list[Answer]:
    """Answer questions in batches: closed book, or over the retriever's top-k passages.

    Args:
        questions: the questions, answered in this order.
        generator: a ``workbench.generate.Generator`` (its config sets the reply and context budgets).
        retriever: a ``workbench.retrieve.Retriever`` (``search_batch``), or None for closed book.
        k: passages per question (None: the retriever's configured k).
        progress: show progress bars.

    Returns:
        One ``Answer`` per question.
    """
    questions = list(questions)
    hits_per_q: list[list[Hit] | None] = [None] * len(questions)
    retrieval_share = 0.0
    if retriever is not None and questions:
        t0 = time.perf_counter()
        hits_per_q = list(retriever.search_batch(questions, k=k))
        retrieval_share = (time.perf_counter() - t0) / len(questions)
    prompts = [build_prompt(q, h, generator.tokenizer, generator.cfg.context_tokens)
               for q, h in zip(questions, hits_per_q)]
    gens = generator.generate([m for m, _ in prompts], progress=progress, stop=ANSWER_STOPS)
    out = []
    for q, (_, used), g in zip(questions, prompts, gens):
        text = clean_answer(g.text)
        out.append(Answer(q, text, list(used), cite(g.text, used, text), g.latency_s + retrieval_share,
                          g.n_new_tokens, g.text))
    return out
