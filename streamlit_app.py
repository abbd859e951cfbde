"""Streamlit entry point: `streamlit run streamlit_app.py` (after `make demo`, or on a fresh checkout).

Side-by-side chat with every built system, the results dashboard, and build buttons. The app itself
lives in ``workbench/app/``; set WORKBENCH_HOME to serve another project folder.
"""
from workbench.app.main import main

main()
