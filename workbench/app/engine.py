"""Models, indices and retrievers for the app: loaded once per server process, shared by sessions.

Every setting comes from a preset (``$WORKBENCH_PRESET``, else ``quick``), the one evaluation and the
command line read, and models load through the one loader (``workbench.answering.loader``), so a chat
answer is the answer a run scores. ``st.cache_resource`` keeps one loaded model per (model settings,
adapter) and one retriever per index; a cache key also carries the artifact's manifest time, so a
rebuilt artifact is loaded afresh instead of being served stale. Every loaded model carries its own
``threading.Lock``: generation on one model is serialised, so concurrent sessions neither crash nor
interleave outputs, while different models still answer in parallel.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Iterator

import streamlit as st

from workbench.answering.answer import finish, prepare
from workbench.answering.confidence import Calibrator, apply_calibrator
from workbench.answering.loader import load_generator
from workbench.answering.prompt import ANSWER_STOPS
from workbench.app import artifacts
from workbench.core.config import (
    GenerateConfig,
    ModelConfig,
    PromptConfig,
    RetrieveConfig,
    RunConfig,
    from_dict,
    load_preset,
    to_dict,
)
from workbench.core.errors import WorkbenchError
from workbench.core.language import DEFAULT_LANGUAGE
from workbench.retrieval.index import load_index
from workbench.retrieval.retrieve import Retriever

PRESET_ENV = "WORKBENCH_PRESET"
"""Environment variable naming the preset the app answers with (default ``quick``)."""
DEFAULT_PRESET = "quick"


@dataclass
class LoadedModel:
    """A generator from the one loader, with the lock that serialises generation on its model."""

    generator: Any
    label: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> Any:
        """The loaded model (Inside reads its layers and logits)."""
        return self.generator.model

    @property
    def tokenizer(self) -> Any:
        return self.generator.tokenizer


@dataclass
class LoadedRetriever:
    """A retriever over one index, with a lock (the embedder and FAISS are shared by sessions)."""

    retriever: Any
    index_name: str
    lock: threading.Lock = field(default_factory=threading.Lock)


def app_preset() -> tuple[str, RunConfig]:
    """The preset the app answers with: ``$WORKBENCH_PRESET`` (a shipped name or a YAML file), else ``quick``.

    Raises:
        WorkbenchError: an unknown preset name, or a preset file that does not load.
    """
    name = os.environ.get(PRESET_ENV) or DEFAULT_PRESET
    return name, load_preset(name)


@dataclass
class ChatSettings:
    """What one question is answered with: the preset's settings, with the sidebar's choices applied.

    Attributes:
        model: base model, device, dtype, cpu_dtype and backend (the one loader reads them).
        generate: reply budget, temperature, context budget, copy constraint.
        retrieve: passages (k) and retrieval mode.
        prompt: prompt and post-processing settings (the same ``RunConfig.prompt`` evaluation records).
        calibrators: per system name, the calibrator of the newest evaluation run on the same index content
            (``evaluation.abstention.calibrators_for``; declines only where its operating point is applied);
            none: the raw confidence, nothing declined.
        preset: the preset's name, shown on the page.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    preset: str = ""

    @property
    def base_model(self) -> str:
        return self.model.base_model

    @classmethod
    def from_preset(cls, cfg: RunConfig, preset: str = "", base_model: str | None = None, **choices: Any
                    ) -> "ChatSettings":
        """The preset's settings with the sidebar's choices: ``base_model``, and any of ``k``, ``mode``
        (retrieval), ``temperature``, ``max_new_tokens``, ``copy_spans`` (generation), ``calibrators``."""
        gen_keys, ret_keys = {"temperature", "max_new_tokens", "copy_spans"}, {"k", "mode"}
        unknown = set(choices) - gen_keys - ret_keys - {"calibrators"}
        if unknown:
            raise TypeError(f"unknown chat settings: {', '.join(sorted(unknown))}")
        return cls(model=replace(cfg.model, base_model=base_model or cfg.model.base_model),
                   generate=replace(cfg.generate, **{k: v for k, v in choices.items() if k in gen_keys}),
                   retrieve=replace(cfg.retrieve, **{k: v for k, v in choices.items() if k in ret_keys}),
                   prompt=cfg.prompt, calibrators=choices.get("calibrators") or {}, preset=preset)


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
def _load_model(model_settings: str, adapter: str | None, stamp: str) -> LoadedModel:
    cfg = from_dict(ModelConfig, json.loads(model_settings), "model")
    folder = None if adapter is None else artifacts.resolve("adapter", adapter).path
    return LoadedModel(load_generator(cfg, adapter=folder), label=adapter or cfg.base_model)


def get_model(settings: ChatSettings, adapter: str | None) -> LoadedModel:
    """The shared model for the base model (``adapter`` None) or an adapter listed under ``adapters/``.

    Raises:
        WorkbenchError: the adapter is not in this project, or loading it failed with a clear reason.
    """
    stamp = ""
    if adapter is not None:
        art = artifacts.resolve("adapter", adapter)
        stamp = str(art.info.get("created", ""))
    return _load_model(json.dumps(to_dict(settings.model), sort_keys=True), adapter, stamp)


@st.cache_resource(show_spinner="Loading index…", max_entries=6)
def _load_retriever(index: str, stamp: str, retrieve_settings: str) -> LoadedRetriever:
    folder = artifacts.resolve("index", index).path
    cfg = from_dict(RetrieveConfig, json.loads(retrieve_settings), "retrieve")
    # load the query embedder now, so the first question's retrieval time is not its loading time
    return LoadedRetriever(Retriever(load_index(folder), cfg).warm_up(), index)


def get_retriever(index: str) -> LoadedRetriever:
    """The shared retriever over ``indices/INDEX`` with the app preset's retrieval settings (one per index;
    k and the mode are chosen per search).

    Raises:
        WorkbenchError: the index is not in this project, or it cannot be loaded.
    """
    art = artifacts.resolve("index", index)
    cfg = to_dict(app_preset()[1].retrieve)
    return _load_retriever(index, str(art.info.get("created", "")), json.dumps(cfg, sort_keys=True))


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
        settings: model, generation, retrieval and prompt settings.

    Yields:
        Pieces of the raw answer text.
    """
    t0 = time.perf_counter()
    hits = None
    if retriever is not None:
        with retriever.lock:
            hits = retriever.retriever.search(turn.question, k=settings.retrieve.k, mode=settings.retrieve.mode)
        turn.retrieval_s = time.perf_counter() - t0
    gen = loaded.generator.with_config(settings.generate)
    language = retriever.retriever.language if retriever is not None else DEFAULT_LANGUAGE
    embedder = retriever.retriever.embedder if retriever is not None else None
    with retriever.lock if retriever is not None else contextlib.nullcontext():  # the embedder is shared
        p = prepare([turn.question], [hits], gen.tokenizer, gen.cfg.context_tokens, settings.prompt,
                    copy=gen.cfg.copy_spans, embedder=embedder, language=language)[0]
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
