"""Inside page, continued: attention, what fine-tuning changed, and the semantic space.

Heatmaps of prompts (hundreds of tokens a side) are drawn with matplotlib (one image, not a chart with a
mark per cell); the small interactive charts (scatter plots, similarity matrix) are Altair, which
Streamlit renders in the browser with no network.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import streamlit as st

from workbench.app import artifacts, engine
from workbench.app.inside_common import InsideSettings, corpus_questions, default_question, memo, question_prompt
from workbench.app.text import escape_markdown
from workbench.core.figures import pyplot
from workbench.inside import changes, space
from workbench.inside.attention import attention_view as compute_view
from workbench.inside.text import visible

MAX_LABELLED_TOKENS = 48
"""Heatmaps label their axes with the tokens up to this prompt length."""
HEATMAP_DPI = 110
"""Resolution of the heatmap image (st.pyplot's 200 takes 3x longer to encode for no visible gain)."""


# --- attention ---------------------------------------------------------------------------------

def attention_heatmap(view: Any, head: int | None) -> Any:
    """A matplotlib figure of one layer's attention (one head, or the mean), passages and question marked."""

    plt = pyplot()
    data = view.heatmap(head)                                  # (T, T)
    size = 5.5 if view.prompt.n_tokens > MAX_LABELLED_TOKENS else 8
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data ** 0.5, cmap="magma", interpolation="nearest")  # sqrt: small weights stay visible
    for seg in view.prompt.segments:
        ax.axvspan(seg.start - 0.5, seg.end - 0.5, ymin=0, ymax=0.015, color="#4fc3f7")
        ax.text((seg.start + seg.end) / 2, -1, seg.label, ha="center", va="bottom", fontsize=7, rotation=30)
    if view.prompt.n_tokens <= MAX_LABELLED_TOKENS:
        labels = [visible(p) for p in view.prompt.pieces()]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("token read (key)")
    ax.set_ylabel("token reading (query)")
    ax.set_title(f"layer {view.layer}, {'mean over heads' if head is None else f'head {head}'} (colour: √weight)",
                 fontsize=9, pad=28)
    fig.tight_layout()
    return fig


def heatmap_png(view: Any, head: int | None) -> bytes:
    """``attention_heatmap`` as PNG bytes at ``HEATMAP_DPI`` (the figure is closed)."""
    fig = attention_heatmap(view, head)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=HEATMAP_DPI, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def highlight_words(text: str, start: int, end: int, words: list[tuple[int, int]]) -> str:
    """``text[start:end]`` as escaped markdown with the character spans ``words`` highlighted."""
    out, pos = [], start
    for a, b in sorted(w for w in words if start <= w[0] and w[1] <= end):
        out += [escape_markdown(text[pos:a]), f":orange-background[{escape_markdown(text[a:b])}]"]
        pos = b
    return "".join(out) + escape_markdown(text[pos:end])


def attention_view(settings: InsideSettings) -> None:
    """Attention maps per layer and head, and where the answer's first token looks."""
    import pandas as pd

    got = question_prompt(settings, "inside_att")
    if got is None:
        return
    loaded, prompt, mkey = got
    n_layers = int(loaded.model.config.num_hidden_layers)
    n_heads = int(loaded.model.config.num_attention_heads)
    c1, c2 = st.columns(2)
    layer = c1.slider("Layer", 0, n_layers - 1, n_layers - 1, key="inside_layer")
    head_name = c2.selectbox("Head", ["mean of heads"] + [str(h) for h in range(n_heads)], key="inside_head")
    head = None if head_name == "mean of heads" else int(head_name)

    def compute() -> Any:
        with loaded.lock:  # the eager switch must not meet a generation on the shared model
            return compute_view(loaded.model, loaded.tokenizer, prompt, layer)

    view = memo("inside_attention", (*mkey, layer), compute)
    for note in view.notes:
        if note not in prompt.notes:
            st.info(note)
    st.caption(f"{prompt.n_tokens} prompt tokens. Each row of the map is a softmax over the tokens before it "
               f"(it sums to 1). The last row produces the answer's first token (greedy: "
               f"{escape_markdown(view.answer_token)}).")
    st.image(heatmap_png(view, head), width="content")
    shares = pd.DataFrame({"part": [s for s, _ in view.segment_shares(layer, head)],
                           f"layer {layer}": [v for _, v in view.segment_shares(layer, head)],
                           "mean of layers": [v for _, v in view.segment_shares(None, head)]})
    st.subheader("Where the answer's first token looks")
    st.bar_chart(shares.set_index("part"), stack=False, horizontal=True)
    st.caption(escape_markdown("template: the chat markup (e.g. <|im_start|>). Many models park much of their "
                               "attention on the first tokens of a prompt (an 'attention sink'); it shows here."))
    st.dataframe(shares, hide_index=True)
    words = view.top_words(10, layer, head)
    if words:
        st.caption("Passage words it reads most at this layer, highlighted:")
        for seg in (s for s in prompt.segments if s.label.startswith("passage")):
            a, b = prompt.offsets[seg.start][0], prompt.offsets[seg.end - 1][1]
            spans = [(w[2], w[3]) for w in words if w[0] == seg.label]
            st.markdown(highlight_words(prompt.text, a, b, spans))


# --- what fine-tuning changed --------------------------------------------------------------------

def finetune_view(settings: InsideSettings) -> None:
    """Gold-answer probabilities under the base model and the adapter, per token and per question kind."""
    import altair as alt
    import pandas as pd

    if settings.adapter is None:
        st.info("Fine-tune an adapter first (Build page, or `workbench finetune CORPUS_DIR`).")
        return
    items = [q for q in corpus_questions(artifacts.resolve("adapter", settings.adapter).info)
             if q.answerable and q.answers]
    base = engine.get_model(settings.chat, None)
    tuned = engine.get_model(settings.chat, settings.adapter)
    c1, c2 = st.columns([3, 1])
    question = c1.text_input("Question", items[0].question if items else "", key="inside_ft_question")
    answer = c2.text_input("Gold answer", items[0].answers[0] if items else "", key="inside_ft_answer")
    if question.strip() and answer.strip():
        def compare() -> Any:
            with base.lock, tuned.lock:
                return changes.compare_answer((base.model, base.tokenizer), (tuned.model, tuned.tokenizer),
                                              question, answer)

        change = memo("inside_ft_one", (settings.base_model, settings.adapter, question, answer), compare)
        st.caption(f"Teacher-forced, closed-book prompt: log p(answer) {change.base.total:.2f} (base) → "
                   f"{change.tuned.total:.2f} (fine-tuned); the end-of-turn token is listed but not summed.")
        st.dataframe(pd.DataFrame({"gold token": change.tokens, "p base": np.exp(change.base.logprobs),
                                   "p fine-tuned": np.exp(change.tuned.logprobs),
                                   "log-ratio": change.log_ratios()}), hide_index=True)
        left, right = st.columns(2)
        for col, name, top in ((left, "base", change.top_base), (right, "fine-tuned", change.top_tuned)):
            col.caption(f"Most likely first answer tokens, {name}")
            col.dataframe(pd.DataFrame({"token": [t.token for t in top], "p": [t.p_raw for t in top]}),
                          hide_index=True)
    st.subheader("Over the eval questions")
    limit = st.slider("Questions", 4, 64, 8, 4, key="inside_ft_limit",
                      help="Each question costs a short forward pass of each model; with the embedded 135M model "
                           "8 take about 3 s of one CPU core, 16 about 6 s (bench/inside_speed.py).")
    if not items:
        st.info("The adapter's corpus has no answerable eval questions in a qa.jsonl.")
        return
    if st.button("Score eval questions", key="inside_ft_batch"):
        with base.lock, tuned.lock:
            st.session_state["inside_ft_shifts"] = changes.compare_items(
                (base.model, base.tokenizer), (tuned.model, tuned.tokenizer), items, limit)
    shifts = st.session_state.get("inside_ft_shifts")
    if not shifts:
        return
    kinds = changes.by_kind(shifts)
    st.dataframe(pd.DataFrame({"kind": [k.kind for k in kinds], "n": [k.n for k in kinds],
                               "median log p base": [k.median_base for k in kinds],
                               "median log p fine-tuned": [k.median_tuned for k in kinds],
                               "share that rose": [k.share_up for k in kinds]}), hide_index=True)
    df = pd.DataFrame({"base": [s.logp_base for s in shifts], "fine-tuned": [s.logp_tuned for s in shifts],
                       "kind": [s.kind for s in shifts], "question": [s.question for s in shifts],
                       "gold": [s.answer for s in shifts]})
    lo, hi = float(df[["base", "fine-tuned"]].min().min()), float(df[["base", "fine-tuned"]].max().max())
    points = alt.Chart(df).mark_circle(size=70).encode(
        x=alt.X("base", title="log p(gold) before", scale=alt.Scale(zero=False)),
        y=alt.Y("fine-tuned", title="log p(gold) after", scale=alt.Scale(zero=False)),
        color="kind", tooltip=["question", "gold", "kind", "base", "fine-tuned"])
    diagonal = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="gray").encode(x="x", y="y")
    st.altair_chart(diagonal + points, width="stretch")
    st.caption("Above the diagonal: fine-tuning made the gold answer more likely.")
    long = pd.DataFrame({"kind": list(df["kind"]) * 2, "model": ["base"] * len(df) + ["fine-tuned"] * len(df),
                         "log p(gold)": list(df["base"]) + list(df["fine-tuned"])})
    boxes = alt.Chart(long).mark_boxplot(extent="min-max").encode(
        x=alt.X("model", title=None), y=alt.Y("log p(gold)", scale=alt.Scale(zero=False)), color="model",
        column=alt.Column("kind", title=None)).properties(width=120, height=240)
    st.altair_chart(boxes, width="content")
    st.caption("The distribution of the gold answer's log-probability before and after fine-tuning, per kind.")


# --- semantic space ------------------------------------------------------------------------------

def space_view(settings: InsideSettings) -> None:
    """Chunks and a query in 2-D, a sentence-similarity matrix, and vector arithmetic."""
    import altair as alt
    import pandas as pd

    if settings.index is None:
        st.info("Build an index first (Build page, or `workbench index CORPUS_DIR`).")
        return
    loaded = engine.get_retriever(settings.index)
    index, embedder = loaded.retriever.index, loaded.retriever.embedder
    query = st.text_input("Query", default_question(settings), key="inside_space_query")
    methods = ["PCA"] + (["UMAP"] if space.umap_available() else [])
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox("Projection", methods, key="inside_space_method",
                          help="UMAP is offered when umap-learn is installed.")
    k = c2.slider("Neighbours", 1, 20, 5, key="inside_space_k")
    seed = c3.number_input("Seed", 0, 10_000, 0, key="inside_space_seed")
    if query.strip():
        def compute() -> Any:
            with loaded.lock:
                return space.semantic_map(index, embedder, query, method.lower(), k, seed=int(seed))

        m = memo("inside_space", (settings.index, query, method, k, int(seed)), compute)
        near = {h.chunk.id: h.rank for h in m.neighbours}
        df = pd.DataFrame({"x": m.coords[:, 0], "y": m.coords[:, 1], "document": [c.doc for c in m.chunks],
                           "text": [" ".join(c.text.split())[:160] for c in m.chunks],
                           "neighbour": [near.get(c.id, 0) for c in m.chunks]})
        dots = alt.Chart(df).mark_circle().encode(
            x="x", y="y", color=alt.Color("document", legend=None), tooltip=["document", "text", "neighbour"],
            size=alt.condition("datum.neighbour > 0", alt.value(160), alt.value(30)))
        q = alt.Chart(pd.DataFrame({"x": [m.query_xy[0]], "y": [m.query_xy[1]], "text": [query]})).mark_point(
            shape="diamond", size=300, color="red", filled=True).encode(x="x", y="y", tooltip=["text"])
        st.altair_chart(dots + q, width="stretch")
        kept = f", {m.variance_kept:.0%} of the variance on this plane" if m.variance_kept is not None else ""
        st.caption(f"{len(m.chunks)} chunks ({m.method.upper()}{kept}); red diamond: the query; large dots: its "
                   "nearest chunks by cosine. " + " ".join(escape_markdown(n) for n in m.notes))
        st.dataframe(pd.DataFrame({"rank": [h.rank for h in m.neighbours], "cosine": [h.score for h in m.neighbours],
                                   "document": [h.chunk.doc for h in m.neighbours],
                                   "text": [" ".join(h.chunk.text.split())[:200] for h in m.neighbours]}),
                     hide_index=True)
    st.subheader("Sentence similarity")
    lines = st.text_area("One sentence per line", "The buoy weighs 42 kg.\nThe float has a mass of 42 kilograms.\n"
                         "Economy class is required for short flights.", key="inside_sim_text")
    with loaded.lock:
        kept_lines, sim = space.similarity_matrix(embedder, lines.splitlines())
    n = len(kept_lines)
    cells = pd.DataFrame({"a": [f"{i + 1}" for i in range(n) for _ in range(n)],
                          "b": [f"{j + 1}" for _ in range(n) for j in range(n)], "cosine": sim.reshape(-1)})
    base = alt.Chart(cells).encode(x=alt.X("b", title=None), y=alt.Y("a", title=None))
    matrix = (base.mark_rect().encode(color=alt.Color("cosine", scale=alt.Scale(domain=[-1, 1], scheme="redblue")))
              + base.mark_text(fontSize=12).encode(text=alt.Text("cosine", format=".2f")))
    st.altair_chart(matrix.properties(width=70 * n, height=40 * n), width="content")
    st.caption(" · ".join(f"{i}. {escape_markdown(s)}" for i, s in enumerate(kept_lines, 1)))
    st.subheader("Vector arithmetic: A − B + C")
    a_col, b_col, c_col = st.columns(3)
    a = a_col.text_input("A", "buoy battery", key="inside_arith_a")
    b = b_col.text_input("B (subtracted)", "battery", key="inside_arith_b")
    c = c_col.text_input("C (added)", "anode", key="inside_arith_c")
    with loaded.lock:
        hits, cosines = space.vector_arithmetic(index, embedder, a, b, c, k=5)
    st.caption("Cosine of the result to " + ", ".join(f"{escape_markdown(p)}: {v:.2f}" for p, v in cosines.items()))
    st.dataframe(pd.DataFrame({"rank": [h.rank for h in hits], "cosine": [h.score for h in hits],
                               "document": [h.chunk.doc for h in hits],
                               "text": [" ".join(h.chunk.text.split())[:200] for h in hits]}), hide_index=True)
