"""What every Inside view shares: the sidebar's models, the question prompt, and per-session memos.

Models, the index and its embedder come from ``engine`` (one copy per server process, shared with the
chat page, each with the lock that serialises work on it). The last result of each view is kept in the
session, so moving a slider that only reshapes a result (temperature, head) does not read the prompt again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import streamlit as st

from workbench.app import artifacts, engine
from workbench.app.text import escape_markdown
from workbench.core.config import DEFAULT_EMBEDDER
from workbench.core.errors import WorkbenchError
from workbench.core.paths import qa_path
from workbench.corpus.qa import eval_items, load_qa
from workbench.inside.prompt import question_prompt as build
from workbench.inside.text import visible
from workbench.retrieval.embed import Embedder

MAX_PROMPT_TOKENS = 1024
"""Tokens of a prompt the views read at most (the model's window is the other limit)."""
_COLOURS = ("blue", "orange", "green", "violet")


@dataclass
class InsideSettings:
    """What the sidebar picks: the models and index every view uses."""

    base_model: str
    index: str | None
    adapter: str | None

    @property
    def chat(self) -> engine.ChatSettings:
        """The chat's settings (the app's preset) over this base model: Inside reads the models the chat loads."""
        preset, cfg = engine.app_preset()
        return engine.ChatSettings.from_preset(cfg, preset, self.base_model)


def sidebar() -> InsideSettings:
    """Base model, index and adapter selectors (only what this project has built)."""
    sb = st.sidebar
    sb.subheader("Models")
    adapters = [a for a in artifacts.list_adapters() if a.info.get("mode") != "scratch"]
    preset_model = engine.app_preset()[1].model.base_model
    base = sb.selectbox("Base model", artifacts.base_model_choices(adapters, preset_model), key="inside_base_model")
    indices = [a.name for a in artifacts.list_indices()]
    index = sb.selectbox("Index", indices, key="inside_index") if indices else None
    if index is None:
        sb.caption("No index built yet: RAG prompts and the semantic space need one.")
    names = [a.name for a in adapters]
    adapter = sb.selectbox("Adapter", names, key="inside_adapter") if names else None
    if adapter is None:
        sb.caption("No LoRA adapter built yet: 'What fine-tuning changed' needs one.")
    return InsideSettings(base, index, adapter)


# --- shared helpers ----------------------------------------------------------------------------

def memo(view: str, key: tuple, compute: Callable[[], Any]) -> Any:
    """The last result of ``view`` if it was computed for ``key``, else ``compute()`` (kept per session)."""
    slot = st.session_state.setdefault("inside_memo", {})
    if view not in slot or slot[view][0] != key:
        slot[view] = (key, compute())
    return slot[view][1]


@st.cache_resource(show_spinner="Loading embedder…", max_entries=2)
def default_embedder(name: str) -> Any:
    """An embedder for views that need one when no index is picked (loaded once per process)."""

    return Embedder(name).warm_up()


def embedder_for(settings: InsideSettings) -> Any:
    """The picked index's embedder (shared with the chat), or the embedded default without an index."""
    if settings.index:
        return engine.get_retriever(settings.index).retriever.embedder
    return default_embedder(DEFAULT_EMBEDDER)


def corpus_questions(manifest: dict[str, Any]) -> list[Any]:
    """Eval questions of the corpus an artifact was built from (empty when it has no qa.jsonl)."""

    corpus = manifest.get("corpus")
    qa = qa_path(corpus)
    if qa is None or not qa.is_file():
        return []
    try:
        return eval_items(load_qa(qa))
    except (WorkbenchError, OSError, json.JSONDecodeError):
        return []


def default_question(settings: InsideSettings) -> str:
    """The first answerable eval question of the index's (or adapter's) corpus, else ""."""
    for kind, name in (("index", settings.index), ("adapter", settings.adapter)):
        if name:
            items = [q for q in corpus_questions(artifacts.resolve(kind, name).info) if q.answerable]
            if items:
                return items[0].question
    return ""


def question_prompt(settings: InsideSettings, key: str) -> tuple[engine.LoadedModel, Any, tuple] | None:
    """A question box and closed-book / RAG choice; returns (model, prompt, memo key) or None when empty."""

    question = st.text_input("Question", default_question(settings), key=f"{key}_question")
    kinds = ["RAG prompt", "Closed book"] if settings.index else ["Closed book"]
    kind = st.radio("Prompt", kinds, horizontal=True, key=f"{key}_prompt_kind",
                    help="The prompt evaluation and the chat build for this question (workbench.answering.prompt).")
    k = st.slider("Passages (k)", 1, 6, 2, key=f"{key}_k") if kind == "RAG prompt" else 0
    if not question.strip():
        st.info("Type a question to see how the model reads its prompt.")
        return None
    loaded = engine.get_model(settings.chat, None)
    retriever = engine.get_retriever(settings.index) if k else None
    mkey = (settings.base_model, settings.index if k else None, question, k)

    def compute() -> Any:
        if retriever is None:
            return build(question, loaded.model, loaded.tokenizer, max_tokens=MAX_PROMPT_TOKENS)
        with retriever.lock:
            return build(question, loaded.model, loaded.tokenizer, retriever.retriever, k=k,
                         max_tokens=MAX_PROMPT_TOKENS)

    prompt = memo(f"{key}_prompt", mkey, compute)
    for note in prompt.notes:
        st.warning(note)
    return loaded, prompt, mkey


def coloured_pieces(pieces: list[str]) -> str:
    """Tokens as markdown, each on its own background colour (cycling), whitespace made visible."""

    return " ".join(f":{_COLOURS[i % len(_COLOURS)]}-background[{escape_markdown(visible(p)) or '∅'}]"
                    for i, p in enumerate(pieces))
