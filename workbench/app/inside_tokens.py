"""Inside page: the Tokens and Next token views."""
from __future__ import annotations

from typing import Any

import streamlit as st

from workbench.app import engine
from workbench.app.inside_common import InsideSettings, coloured_pieces, embedder_for, memo, question_prompt
from workbench.app.text import escape_markdown
from workbench.inside.nexttoken import read_prompt, sample_continuations, top_tokens
from workbench.inside.text import visible
from workbench.inside.tokens import split_text

SAMPLE_TEXT = "The Tern-3 buoy weighs 42 kg and runs on a 9 Ah battery."


def tokens_view(settings: InsideSettings) -> None:
    """The same text in the base model's and the embedder's tokens."""
    import pandas as pd

    text = st.text_area("Text", SAMPLE_TEXT, key="inside_tokens_text", height=90)
    loaded = engine.get_model(settings.chat, None)
    embedder = embedder_for(settings)
    splits = [split_text(text, loaded.tokenizer, f"Base model ({settings.base_model})"),
              split_text(text, embedder.model.tokenizer, f"Embedder ({embedder.name})", embedder.max_tokens)]
    for col, s in zip(st.columns(2), splits):
        with col:
            st.subheader(s.name)
            st.metric("Tokens", s.n_tokens, help=f"{len(text)} characters")
            st.markdown(coloured_pieces(s.pieces()))
            for note in s.notes:
                st.warning(note)
            st.dataframe(pd.DataFrame({"text": [visible(p) for p in s.pieces()], "token": s.tokens, "id": s.ids}),
                         height=240)
    words = [(w, a, b) for (w, a), (_, b) in zip(splits[0].word_costs(), splits[1].word_costs()) if max(a, b) > 1]
    if words:
        st.caption("Words split into several tokens: " + escape_markdown(", ".join(
            f"{w} ({a} / {b})" for w, a, b in words[:12])) + " (base model / embedder)")


def next_token_view(settings: InsideSettings) -> None:
    """Top next tokens after a question's prompt; temperature, top-k, top-p reshape them live."""
    import pandas as pd

    got = question_prompt(settings, "inside_next")
    if got is None:
        return
    loaded, prompt, mkey = got
    st.caption(f"{prompt.n_tokens} prompt tokens" + (f", {len(prompt.hits)} passages" if prompt.hits else ""))

    def compute() -> Any:
        with loaded.lock:
            return read_prompt(loaded.model, prompt)

    prefill = memo("inside_next_prefill", mkey, compute)  # logits + key/value cache, reused by sampling
    c1, c2, c3, c4 = st.columns(4)
    temperature = c1.slider("Temperature", 0.0, 2.0, 1.0, 0.05, key="inside_temperature", help="0 = greedy")
    top_k = c2.slider("Top-k", 0, 100, 0, key="inside_top_k", help="0 = no cut")
    top_p = c3.slider("Top-p", 0.05, 1.0, 1.0, 0.05, key="inside_top_p", help="1 = no cut")
    n = c4.slider("Tokens shown", 5, 30, 10, key="inside_top_n")
    st.markdown("**Softmax:** the model scores every vocabulary token (logits *z*); "
                "*p* = exp(*z*/T) / Σ exp(*z*/T) turns the scores into probabilities that sum to 1. "
                "T < 1 sharpens, T > 1 flattens; top-k and top-p drop the unlikely tail and renormalise.")
    top = top_tokens(prefill.logits, loaded.tokenizer, n, temperature, top_k, top_p)
    table = pd.DataFrame({"token": [t.token for t in top], "logit": [t.logit for t in top],
                          "p (T=1)": [t.p_raw for t in top], "p (settings)": [t.p for t in top]})
    st.dataframe(table, hide_index=True, column_config={
        "p (T=1)": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0),
        "p (settings)": st.column_config.ProgressColumn(format="%.3f", min_value=0.0, max_value=1.0)})
    st.caption(f"The {n} tokens shown hold {sum(t.p for t in top):.1%} of the probability at these settings "
               f"({sum(t.p_raw for t in top):.1%} at T=1).")
    s1, s2, s3 = st.columns([1, 1, 2])
    n_samples = s1.number_input("Samples", 1, 8, 3, key="inside_samples")
    seed = s2.number_input("Seed", 0, 10_000, 0, key="inside_seed")
    if s3.button("Sample continuations", key="inside_sample"):
        with loaded.lock:
            st.session_state["inside_samples_out"] = (mkey, sample_continuations(
                loaded.model, loaded.tokenizer, prompt, int(n_samples), 12, temperature, top_k, top_p, int(seed),
                prefill=prefill))
    key_and_samples = st.session_state.get("inside_samples_out")
    if key_and_samples and key_and_samples[0] == mkey:
        for i, s in enumerate(key_and_samples[1], 1):
            st.markdown(f"{i}. {escape_markdown(s) if s.strip() else '_(ended at once)_'}")
