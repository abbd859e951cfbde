"""Models, indices and retrievers for the app: loaded once per server process, shared by sessions.

``st.cache_resource`` keeps one loaded model per (base model, adapter, device, dtype) and one retriever
per index; a cache key also carries the artifact's manifest time, so a rebuilt artifact is
loaded afresh instead of being served stale. Every loaded model carries its own ``threading.Lock``:
generation on one model is serialised, so concurrent sessions neither crash nor interleave outputs,
while different models still answer in parallel.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterator

import streamlit as st

from workbench.answering.answer import finish, prepare
from workbench.answering.confidence import Calibrator, apply_calibrator
from workbench.answering.generate import Generator
from workbench.answering.models import load_base_model
from workbench.answering.prompt import ANSWER_STOPS
from workbench.app import artifacts
from workbench.core.config import GenerateConfig, ModelConfig, PromptConfig
from workbench.core.errors import WorkbenchError
from workbench.core.language import DEFAULT_LANGUAGE
from workbench.retrieval.index import load_index
from workbench.retrieval.retrieve import Retriever
from workbench.training.adapters import load_finetuned


@dataclass
class LoadedModel:
    """A model ready to generate, with the lock that serialises generation on it."""

    model: Any
    tokenizer: Any
    label: str
    manifest: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class LoadedRetriever:
    """A retriever over one index, with a lock (the embedder and FAISS are shared by sessions)."""

    retriever: Any
    index_name: str
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ChatSettings:
    """What the sidebar sets for one question."""

    base_model: str
    k: int = 2
    mode: str = "hybrid"
    temperature: float = 0.0
    max_new_tokens: int = 32
    context_tokens: int = 2048
    copy_spans: bool = True
    device: str = "auto"
    dtype: str = "auto"
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt and post-processing settings (the same ``RunConfig.prompt`` evaluation records)."""
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    """Per system name, the calibrator of the newest evaluation run (confidence and declines); none: the
    raw confidence, nothing declined."""


@dataclass
class Turn:
    """One question answered by one system (what a chat column shows and keeps in its history).

    Attributes:
        system: system name (base, rag, ft, ...).
        question: the user's question.
        answer: the cleaned answer ("" until generation ends).
        hits: retrieved passages (rag systems), as plain dicts (id, doc, heading, score, rank, text).
        citations: cited passages [(number, doc, heading)]: "[n]" markers, else passages holding the answer.
        retrieval_s: retrieval time.
        first_token_s: time from the question to the first streamed text.
        latency_s: time from the question to the end of the answer.
        n_new_tokens: generated tokens.
        weights: base model or adapter that answered.
        error: a user-facing error instead of an answer.
        confidence: the answer's confidence (calibrated when the system has a calibrator).
        declined: why the answer was declined (low retrieval score, low answer confidence), or None.
        answer_before_decline: what the system would have answered ("" when nothing was declined).
    """

    system: str
    question: str
    answer: str = ""
    hits: list[dict[str, Any]] = field(default_factory=list)
    citations: list[tuple[int, str, str]] = field(default_factory=list)
    retrieval_s: float | None = None
    first_token_s: float | None = None
    latency_s: float | None = None
    n_new_tokens: int = 0
    weights: str = ""
    error: str | None = None
    confidence: float | None = None
    declined: str | None = None
    answer_before_decline: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        """Generated tokens per second of generation (retrieval time excluded)."""
        if not self.latency_s or not self.n_new_tokens:
            return None
        gen_s = self.latency_s - (self.retrieval_s or 0.0)
        return self.n_new_tokens / gen_s if gen_s > 0 else None


# --- cached loading ------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading model…", max_entries=6)
def _load_model(base_model: str, adapter: str | None, stamp: str, device: str, dtype: str) -> LoadedModel:
    cfg = ModelConfig(base_model=base_model, device=device, dtype=dtype)
    if adapter is None:
        model, tokenizer = load_base_model(cfg)
        return LoadedModel(model, tokenizer, label=base_model)

    folder = artifacts.resolve("adapter", adapter).path
    model, tokenizer, manifest = load_finetuned(str(folder), cfg)
    return LoadedModel(model, tokenizer, label=adapter, manifest=manifest)


def get_model(settings: ChatSettings, adapter: str | None) -> LoadedModel:
    """The shared model for the base model (``adapter`` None) or an adapter listed under ``adapters/``.

    Raises:
        WorkbenchError: the adapter is not in this project, or loading it failed with a clear reason.
    """
    stamp = ""
    if adapter is not None:
        art = artifacts.resolve("adapter", adapter)
        stamp = str(art.info.get("created", ""))
    return _load_model(settings.base_model, adapter, stamp, settings.device, settings.dtype)


@st.cache_resource(show_spinner="Loading index…", max_entries=6)
def _load_retriever(index: str, stamp: str) -> LoadedRetriever:
    folder = artifacts.resolve("index", index).path
    # load the query embedder now, so the first question's retrieval time is not its loading time
    return LoadedRetriever(Retriever(load_index(folder)).warm_up(), index)


def get_retriever(index: str) -> LoadedRetriever:
    """The shared retriever over ``indices/INDEX`` (one per index; the mode is chosen per search).

    Raises:
        WorkbenchError: the index is not in this project, or it cannot be loaded.
    """
    art = artifacts.resolve("index", index)
    return _load_retriever(index, str(art.info.get("created", "")))


# --- answering -----------------------------------------------------------------------------------

def hit_dict(hit: Any) -> dict[str, Any]:
    """A retrieved passage as plain data (kept in session history; no model objects)."""
    c = hit.chunk
    return {"id": c.id, "doc": c.doc, "heading": c.heading or "", "score": float(hit.score),
            "rank": int(hit.rank), "text": c.text}


def stream_answer(turn: Turn, loaded: LoadedModel, retriever: LoadedRetriever | None,
                  settings: ChatSettings) -> Iterator[str]:
    """Answer ``turn.question``, yielding text as it is generated and filling ``turn`` in as it goes.

    The same path as evaluation: retrieval (when ``retriever`` is given), then ``workbench.answering.answer.prepare``
    (the prompt and, with passages, what the reply may copy), generation streamed through
    ``Generator.stream`` with the evaluation's stop strings while holding the model's lock, then
    ``workbench.answering.answer.finish`` (cleaning, quantity phrases, citations).

    Args:
        turn: the turn to fill (answer, hits, citations, timings).
        loaded: the model to answer with.
        retriever: passages source for rag systems, None for closed book.
        settings: k, temperature, max new tokens, context budget, prompt settings.

    Yields:
        Pieces of the raw answer text.
    """
    t0 = time.perf_counter()
    hits = None
    if retriever is not None:
        with retriever.lock:
            hits = retriever.retriever.search(turn.question, k=settings.k, mode=settings.mode)
        turn.retrieval_s = time.perf_counter() - t0
    gen = Generator(loaded.model, loaded.tokenizer,
                    GenerateConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                   batch_size=1, context_tokens=settings.context_tokens,
                                   copy_spans=settings.copy_spans))
    language = retriever.retriever.language if retriever is not None else DEFAULT_LANGUAGE
    embedder = retriever.retriever.embedder if retriever is not None else None
    with retriever.lock if retriever is not None else contextlib.nullcontext():  # the embedder is shared
        p = prepare([turn.question], [hits], loaded.tokenizer, settings.context_tokens, settings.prompt,
                    copy=settings.copy_spans, embedder=embedder, language=language)[0]
    turn.hits = [hit_dict(h) for h in p.hits]  # the passages in the prompt: [n] is hits[n-1]
    pieces: list[str] = []
    stats: dict[str, Any] = {}
    with loaded.lock:  # one generation at a time on this model
        for piece in gen.stream(p.messages, stop=ANSWER_STOPS, sources=p.sources, stats=stats):
            if not piece:
                continue
            if turn.first_token_s is None:
                turn.first_token_s = time.perf_counter() - t0
            pieces.append(piece)
            yield piece
    raw = "".join(pieces)
    turn.latency_s = time.perf_counter() - t0
    turn.n_new_tokens = len(loaded.tokenizer(raw, add_special_tokens=False)["input_ids"]) if raw else 0
    done = finish(p, raw, settings.prompt, turn.latency_s, turn.n_new_tokens, SimpleNamespace(**stats))
    apply_calibrator([done], settings.calibrators.get(turn.system))
    turn.answer, turn.confidence, turn.declined = done.text, done.confidence, done.declined
    turn.answer_before_decline = done.text_before_decline
    turn.citations = [(c.n, c.doc, c.heading or "") for c in done.citations]


def answer_once(turn: Turn, loaded: LoadedModel, retriever: LoadedRetriever | None,
                settings: ChatSettings) -> Turn:
    """``stream_answer`` run to the end (for callers that do not display the stream)."""
    for _ in stream_answer(turn, loaded, retriever, settings):
        pass
    return turn


def user_message(err: BaseException) -> str:
    """What a chat column shows for a failure: the WorkbenchError's line, or the exception's type and text."""
    if isinstance(err, WorkbenchError):
        return str(err)
    return f"{type(err).__name__}: {err}"
