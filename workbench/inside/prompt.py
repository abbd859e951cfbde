"""The prompt a model really reads for a question, token by token, with its parts labelled.

A question's prompt is built by ``workbench.answering.prompt.build_prompt`` (closed book, or over retrieved
passages: the builder evaluation, fine-tuning and the chat use) and rendered with the model's chat
template by ``workbench.answering.generate.render_prompt``. Each token keeps the character span it covers, and the
tokens are grouped into segments (instructions, passage 1..n, question, reply start) so attention can be
summed per passage. A prompt longer than the model's window loses its first tokens, as in generation,
and says so in ``notes``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from workbench.answering.answer import check_question
from workbench.answering.generate import Generator, render_prompt
from workbench.answering.loader import load_generator
from workbench.answering.prompt import build_prompt
from workbench.core.config import ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import Hit
from workbench.retrieval.index import load_index
from workbench.retrieval.retrieve import Retriever

MAX_TEXT_CHARS = 20_000
"""Longest raw text a view accepts (a 512-token prompt is ~2,000 characters)."""


@dataclass
class Segment:
    """A labelled run of prompt tokens: ``ids[start:end]`` (token positions, end exclusive)."""

    label: str
    start: int
    end: int


@dataclass
class Prompt:
    """A prompt as token ids, with what each token covers.

    Attributes:
        text: the rendered prompt the model reads (after any truncation).
        ids: its token ids.
        offsets: per token, the ``(start, end)`` characters of ``text`` it covers ((0, 0) for added
            special tokens).
        segments: labelled parts: "instructions", "passage N", "question", "reply start".
        hits: the passages in the prompt, in prompt order ([n] is ``hits[n-1]``); empty when closed book.
        notes: what a user should know (e.g. the prompt was truncated to the window).
    """

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    segments: list[Segment] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def pieces(self) -> list[str]:
        """The text each token covers."""
        return [self.text[a:b] for a, b in self.offsets]

    def segment_of(self, position: int) -> str:
        """The label of the segment holding token ``position`` ("template" for chat markup)."""
        return next((s.label for s in self.segments if s.start <= position < s.end), "template")


def check_text(text: str, what: str = "text") -> str:
    """``text`` unchanged, or a WorkbenchError when it is empty or longer than ``MAX_TEXT_CHARS``."""
    if not isinstance(text, str) or not text.strip():
        raise WorkbenchError(f"the {what} is empty", f"type a {what}")
    if len(text) > MAX_TEXT_CHARS:
        raise WorkbenchError(f"the {what} is {len(text):,} characters long (at most {MAX_TEXT_CHARS:,})",
                             f"use a shorter {what}")
    return text


def model_window(model: Any, tokenizer: Any) -> int:
    """Tokens the model reads at most (its position embeddings, else the tokenizer's limit)."""

    return Generator(model, tokenizer).window()


def encode_text(text: str, model: Any, tokenizer: Any, *, chat: bool | None = None,
                max_tokens: int | None = None) -> Prompt:
    """Tokenize a rendered prompt as generation does, cutting it to the model's window from the left.

    Args:
        text: the prompt text (a rendered chat, or any raw text).
        model, tokenizer: the model that will read it.
        chat: whether ``text`` is a rendered chat (it then holds its own special tokens); default: the
            tokenizer has a chat template. A plain text gets the tokenizer's BOS, as in generation.
        max_tokens: read at most this many tokens (default and cap: the model's window).

    Raises:
        WorkbenchError: an empty text.
    """
    check_text(text, "prompt")
    chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    window = model_window(model, tokenizer)
    limit = min(window, max_tokens) if max_tokens else window
    notes = []
    if len(ids) > limit:
        cut = len(ids) - limit
        notes.append(f"the prompt is {len(ids)} tokens, more than the {limit} read here"
                     f"{' (the model window)' if limit == window else ''}: its first {cut} tokens were cut")
        ids, offsets = ids[cut:], offsets[cut:]
        shift = next((a for a, b in offsets if b > a), 0)
        text = text[shift:]
        offsets = [(max(0, a - shift), max(0, b - shift)) if b > a else (0, 0) for a, b in offsets]
    return Prompt(text, ids, offsets, notes=notes)


def question_prompt(question: str, model: Any, tokenizer: Any, retriever: Any = None, k: int = 2,
                    mode: str = "hybrid", context_tokens: int = 2048, max_tokens: int | None = None) -> Prompt:
    """The real prompt of a question: closed book (no ``retriever``) or RAG over its top-``k`` passages.

    Args:
        question: the user's question.
        model, tokenizer: the model that answers.
        retriever: a ``workbench.retrieval.retrieve.Retriever`` for a RAG prompt, None for closed book.
        k, mode: passages and retrieval mode (as in the chat's sidebar).
        context_tokens: prompt budget handed to the prompt builder.
        max_tokens: read at most this many tokens (see ``encode_text``).

    Raises:
        WorkbenchError: an empty or over-long question.
    """

    question = check_question(question)
    hits = retriever.search(retriever.check_query(question), k=k, mode=mode) if retriever is not None else None
    messages, used = build_prompt(question, hits, tokenizer, context_tokens=context_tokens)
    full = render_prompt(tokenizer, messages)
    prompt = encode_text(full, model, tokenizer, max_tokens=max_tokens)
    prompt.hits = list(used)
    spans = _segment_spans(full, messages, len(used))
    shift = len(full) - len(prompt.text)  # characters cut from the front by truncation
    prompt.segments = _to_tokens([(label, a - shift, b - shift) for label, a, b in spans], prompt.offsets)
    return prompt


def load_question_prompt(question: str, base_model: str | None = None, index: str | None = None, k: int = 2,
                         model_cfg: ModelConfig | None = None) -> tuple[Any, Any, Prompt]:
    """Load a base model through the one loader and, with ``index``, a retriever over it, and build the
    question's prompt (what ``workbench inspect next`` and ``attention`` read).

    Args:
        base_model: the base model (default: ``model_cfg``'s, the embedded one).
        model_cfg: device, dtype and CPU answering settings (default: the built-in ones).

    Returns:
        (model, tokenizer, prompt).
    """

    retriever = Retriever(load_index(index)) if index else None
    cfg = model_cfg or ModelConfig()
    generator = load_generator(replace(cfg, base_model=base_model or cfg.base_model))
    model, tokenizer = generator.model, generator.tokenizer
    return model, tokenizer, question_prompt(question, model, tokenizer, retriever, k=k)


def _segment_spans(text: str, messages: Sequence[dict[str, str]], n_passages: int) -> list[tuple[str, int, int]]:
    """Character spans of the prompt's parts, found by their text in the rendered prompt."""
    spans: list[tuple[str, int, int]] = []
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    s = text.find(system) if system else -1
    if s >= 0:
        spans.append(("instructions", s, s + len(system)))
    u = text.rfind(user)
    if u < 0:  # a template that rewrites the message: no segments beyond the instructions
        return spans
    pos = 0
    for n in range(1, n_passages + 1):  # passages are "[n] (doc › heading) text", one per paragraph
        start = user.find(f"[{n}] (", pos)
        if start < 0:
            break
        end = user.find("\n\n", start)
        end = len(user) if end < 0 else end
        spans.append((f"passage {n}", u + start, u + end))
        pos = end
    q = user.rfind("Question: ")
    if q >= pos:
        end = user.find("\n", q)
        spans.append(("question", u + q, u + (len(user) if end < 0 else end)))
    reply_start = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    if reply_start:
        r = text.rfind(reply_start)
        if r >= 0:
            spans.append(("reply start", r, r + len(reply_start)))
    return spans


def _to_tokens(spans: list[tuple[str, int, int]], offsets: list[tuple[int, int]]) -> list[Segment]:
    """Character spans as token ranges: a token belongs to the span its first character falls in."""
    out = []
    for label, a, b in spans:
        inside = [i for i, (x, y) in enumerate(offsets) if y > x and a <= x < b]
        if inside:
            out.append(Segment(label, inside[0], inside[-1] + 1))
    return out
