"""The app's entry: page config, navigation, and the empty-project guidance."""
from __future__ import annotations

import streamlit as st

from workbench.app import artifacts
from workbench.app.text import escape_markdown
from workbench.core import paths

PAGES = ("Chat", "Results", "Build", "Inside")


def main() -> None:
    """Render the app (called by ``streamlit_app.py`` on every rerun)."""
    st.set_page_config(page_title="workbench: RAG vs fine-tuning", page_icon=":material/balance:", layout="wide")

    page = st.sidebar.radio("Page", PAGES, key="page")
    st.sidebar.caption(f"Project: {escape_markdown(str(paths.project_root()))}")
    empty = artifacts.is_empty_project()
    if page == "Chat":
        from workbench.app import chat

        chat.page(empty)
    elif page == "Results":
        from workbench.app import results

        if empty:
            from workbench.app.build import empty_project_guide

            empty_project_guide()
        results.page()
    elif page == "Inside":
        from workbench.app import inside

        inside.page()
    else:
        from workbench.app import build

        build.page()
