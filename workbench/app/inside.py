"""Inside page: tokens, next-token probabilities, attention, what fine-tuning changed, the embedding space.

Every view runs on this project's models and artifacts (the base model, an index, a LoRA adapter),
loaded through ``engine`` so the chat page and this page share one copy of each. The computations are
``workbench.inside``'s; the ``inside_*`` modules only lay them out. One view is computed per rerun (the
"View" selector), so a page change never waits for views nobody looks at.
"""
from __future__ import annotations

import streamlit as st

from workbench.app import inside_tokens, inside_views
from workbench.app.inside_common import sidebar
from workbench.core.errors import WorkbenchError

VIEWS = {"Tokens": inside_tokens.tokens_view, "Next token": inside_tokens.next_token_view,
         "Attention": inside_views.attention_view, "What fine-tuning changed": inside_views.finetune_view,
         "Semantic space": inside_views.space_view}


def page() -> None:
    """The Inside page: the sidebar's models, a view selector, and the chosen view."""
    settings = sidebar()
    st.title("Inside the model")
    st.caption("How the base model and the embedder see your corpus and questions: the numbers behind RAG "
               "and fine-tuning.")
    view = st.radio("View", list(VIEWS), horizontal=True, key="inside_view")
    try:
        VIEWS[view](settings)
    except WorkbenchError as err:
        st.error(str(err))
