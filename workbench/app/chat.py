"""Chat page: one question, answered side by side by every chosen system, each column with its history.

Which systems can be offered follows from what is built: ``base`` always, ``rag`` with an index,
``ft`` with a LoRA adapter, ``ft_rag`` with both, ``raft`` / ``scratch`` with adapters of those modes.
Answers stream in; under each come latency and tokens/s, and for retrieval systems the passages
(score, document, heading, words shared with the answer highlighted) and the citations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import streamlit as st

from workbench.app import artifacts, engine
from workbench.app.artifacts import Artifact
from workbench.app.text import escape_markdown, highlight_overlap
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.evaluation.abstention import calibrators_for
from workbench.evaluation.systems import SYSTEMS

HISTORY_KEY = "chat_history"
PASSAGE_CHARS = 700


@dataclass(frozen=True)
class ChatSystem:
    """A system the chat can run: its name, whether it retrieves, and which adapter (None = base model)."""

    name: str
    description: str
    retrieval: bool
    adapter: str | None


def _spec_info() -> dict[str, tuple[str, bool, str | None]]:
    """name -> (description, retrieval, adapter role) from the evaluation's system registry."""

    return {n: (s.description, s.retrieval, s.adapter) for n, s in SYSTEMS.items() if s.build is None}


def adapters_for_role(role: str, adapters: list[Artifact]) -> list[Artifact]:
    """Adapters that can play a role: "raft" and "scratch" need their mode; "ft" takes any LoRA adapter."""
    if role in ("raft", "scratch"):
        return [a for a in adapters if a.info.get("mode") == role]
    return [a for a in adapters if a.info.get("mode") != "scratch"]


def available_systems(index: str | None, chosen: dict[str, str | None]) -> list[ChatSystem]:
    """The systems the current selections allow, in registry order.

    Args:
        index: the selected index name (None when no index is built).
        chosen: adapter role -> selected adapter name (None when none fits the role).
    """
    out = []
    for name, (desc, retrieval, role) in _spec_info().items():
        if retrieval and index is None:
            continue
        adapter = None
        if role is not None:
            adapter = chosen.get(role)
            if adapter is None:
                continue
        out.append(ChatSystem(name, desc, retrieval, adapter))
    return out


# --- sidebar -------------------------------------------------------------------------------------

def sidebar() -> tuple[list[ChatSystem], str | None, engine.ChatSettings]:
    """Selectors (index, adapters, base model, systems) and generation settings, in the sidebar."""

    sb = st.sidebar
    indices = artifacts.list_indices()
    adapters = artifacts.list_adapters()
    sb.subheader("Artifacts")
    index = None
    if indices:
        by_name = {a.name: a for a in indices}
        index = sb.selectbox("Corpus index", list(by_name), key="chat_index",
                             help="Indices under indices/ (built with `workbench index`).")
        sb.caption(escape_markdown(by_name[index].describe()))
    else:
        sb.caption("No index built yet: retrieval systems are unavailable.")
    chosen: dict[str, str | None] = {}
    for role, label in (("ft", "Fine-tuned adapter"), ("raft", "RAFT adapter"), ("scratch", "From-scratch model")):
        options = adapters_for_role(role, adapters)
        if not options:
            chosen[role] = None
            continue
        by_name = {a.name: a for a in options}
        default = next((i for i, a in enumerate(options) if a.info.get("mode") == "sft"), 0)
        name = sb.selectbox(label, list(by_name), index=default, key=f"chat_adapter_{role}")
        sb.caption(escape_markdown(by_name[name].describe()))
        chosen[role] = name
    try:
        preset, cfg = engine.app_preset()
    except WorkbenchError as e:
        st.error(f"{e} (set ${engine.PRESET_ENV} to a shipped preset name or a YAML file)")
        st.stop()
    bases = artifacts.base_model_choices(adapters, cfg.model.base_model)
    base = sb.selectbox("Base model", bases, key="chat_base_model",
                        help="$WORKBENCH_BASE_MODEL, the preset's base model, the base models of the adapters, or "
                             "the embedded default.")
    systems = available_systems(index, chosen)
    names = [s.name for s in systems]
    default = [n for n in ("base", "rag", "ft", "ft_rag") if n in names]
    picked = sb.multiselect("Systems", names, default=default, key="chat_systems")

    sb.subheader("Settings")
    sb.caption(escape_markdown(preset_line(preset, cfg)))
    rdef, gdef = cfg.retrieve, cfg.generate
    k = sb.slider("Passages (k)", 1, 10, rdef.k, key="chat_k")
    modes = ["hybrid", "dense", "sparse"]
    mode = sb.selectbox("Retrieval mode", modes, index=modes.index(rdef.mode) if rdef.mode in modes else 0,
                        key="chat_mode")
    temperature = sb.slider("Temperature", 0.0, 1.5, float(gdef.temperature), 0.1, key="chat_temperature",
                            help="0 = greedy (deterministic).")
    max_new = sb.number_input("Max new tokens", 4, 1024, int(gdef.max_new_tokens), 8, key="chat_max_tokens")
    copy = sb.checkbox("Copy answers from passages", gdef.copy_spans, key="chat_copy",
                       help="RAG systems reply with a span of the retrieved passages' sentences closest to the "
                            "question (or \"I don't know\"), as in evaluation; off lets the model write freely.")
    found = calibrators_for(index)
    calibrators = found.calibrators
    if calibrators:
        decline = sb.checkbox("Decline when confidence is low", True, key="chat_decline",
                              help="Each system's confidence and, where its calibration supports one, its decline "
                                   "threshold, from the newest evaluation run on this index's content (on "
                                   "questions it did not evaluate). Off: answers are never declined for low "
                                   "confidence, and the confidence shown is the reply's mean token probability.")
        calibrators = calibrators if decline else {}
        if decline:
            sb.caption("  \n".join(escape_markdown(f"{s.name}: {found.note(s.name)}") for s in systems))
    else:
        sb.caption("No evaluation run on this index's content has calibrated confidences: answers show their raw "
                   "confidence and are never declined for low confidence.")
    if sb.button("Clear chat history", key="chat_clear"):
        st.session_state[HISTORY_KEY] = {}
    settings = engine.ChatSettings.from_preset(cfg, preset, base, k=int(k), mode=mode, temperature=float(temperature),
                                               max_new_tokens=int(max_new), copy_spans=bool(copy),
                                               calibrators=calibrators)
    return [s for s in systems if s.name in picked], index, settings


def preset_line(preset: str, cfg: RunConfig) -> str:
    """What the chat answers with by default, as one line: the preset and its answering settings."""
    return (f"Preset {preset} (${engine.PRESET_ENV}): {cfg.generate.max_new_tokens} new tokens, temperature "
            f"{cfg.generate.temperature:g}, k={cfg.retrieve.k} {cfg.retrieve.mode}, copy "
            f"{'on' if cfg.generate.copy_spans else 'off'}, CPU dtype {cfg.model.cpu_dtype}, backend "
            f"{cfg.model.backend}; the same settings evaluation uses.")


# --- rendering -----------------------------------------------------------------------------------

def _metrics_line(turn: engine.Turn) -> str:
    parts = []
    if turn.latency_s is not None:
        parts.append(f"latency {turn.latency_s:.2f} s")
    if turn.first_token_s is not None:
        parts.append(f"first token {turn.first_token_s:.2f} s")
    if turn.retrieval_s is not None:
        parts.append(f"retrieval {1000 * turn.retrieval_s:.0f} ms")
    parts.append(f"{turn.n_new_tokens} tokens")
    if turn.confidence is not None:
        parts.insert(0, f"confidence {turn.confidence:.2f}")
    tps = turn.tokens_per_s
    if tps is not None:
        parts.append(f"{tps:.1f} tokens/s")
    return " · ".join(parts)


def render_sources(turn: engine.Turn, expanded: bool = False) -> None:
    """Citations and retrieved passages of a turn (document text escaped; shared words highlighted)."""
    if turn.citations:
        cites = "; ".join(f"[{n}] {escape_markdown(doc)}" + (f" › {escape_markdown(h)}" if h else "")
                          for n, doc, h in turn.citations)
        st.markdown(f"**Cites:** {cites}")
    elif turn.hits:
        st.caption("The answer cites no passage (no [n] marker, and no passage contains it).")
    if not turn.hits:
        return
    with st.expander(f"Sources ({len(turn.hits)} passages)", expanded=expanded):
        for n, h in enumerate(turn.hits, 1):  # [n] as numbered in the prompt
            head = f" › {escape_markdown(h['heading'])}" if h.get("heading") else ""
            st.markdown(f"**[{n}]** score `{h['score']:.4f}` · {escape_markdown(h['doc'])}{head}")
            st.markdown(highlight_overlap(h["text"], turn.answer, max_chars=PASSAGE_CHARS))


def render_turn(turn: engine.Turn) -> None:
    """A finished turn: question, answer (escaped), metrics, sources."""
    st.markdown(f"**You:** {escape_markdown(turn.question)}")
    if turn.error:
        st.error(turn.error)
        return
    st.markdown(escape_markdown(turn.answer) if turn.answer else "_(empty answer)_")
    _decline_note(turn)
    st.caption(_metrics_line(turn))
    render_sources(turn)


def _decline_note(turn: engine.Turn) -> None:
    if turn.declined:
        st.caption(f"Declined: {escape_markdown(turn.declined)}. It would have answered: "
                   f"{escape_markdown(turn.answer_before_decline)}")


def _history() -> dict[str, list[dict[str, Any]]]:
    return st.session_state.setdefault(HISTORY_KEY, {})


def _column_key(system: ChatSystem) -> str:
    return system.name if system.adapter is None else f"{system.name}:{system.adapter}"


def ask(system: ChatSystem, question: str, index: str | None, settings: engine.ChatSettings) -> engine.Turn:
    """Answer one question with one system inside the current column, streaming into a placeholder."""
    turn = engine.Turn(system=system.name, question=question, weights=system.adapter or settings.base_model)
    st.markdown(f"**You:** {escape_markdown(question)}")
    slot = st.empty()
    try:
        loaded = engine.get_model(settings, system.adapter)
        retriever = engine.get_retriever(index) if system.retrieval and index else None
        text = ""
        for piece in engine.stream_answer(turn, loaded, retriever, settings):
            text += piece
            slot.markdown(escape_markdown(text) + " ▌")
    except Exception as err:  # shown in the column; other columns still answer
        turn.error = engine.user_message(err)
        slot.error(turn.error)
        return turn
    slot.markdown(escape_markdown(turn.answer) if turn.answer else "_(empty answer)_")
    _decline_note(turn)
    st.caption(_metrics_line(turn))
    render_sources(turn, expanded=False)
    return turn


def page(empty_project: bool) -> None:
    """The chat page."""
    systems, index, settings = sidebar()
    st.title("Chat with every system")
    if empty_project:
        from workbench.app.build import empty_project_guide

        empty_project_guide()
    if not systems:
        st.info("Pick at least one system in the sidebar.")
        return
    question = st.chat_input("Ask a question; every selected system answers side by side", key="chat_question")
    history = _history()
    cols = st.columns(len(systems))
    for col, system in zip(cols, systems):
        with col:
            st.subheader(system.name)
            st.caption(escape_markdown(f"{system.description} · {system.adapter or settings.base_model}"))
            for t in history.get(_column_key(system), []):
                render_turn(engine.Turn(**t))
            if question and question.strip():
                turn = ask(system, question.strip(), index, settings)
                history.setdefault(_column_key(system), []).append(asdict(turn))
