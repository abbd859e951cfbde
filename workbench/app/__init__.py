"""The Streamlit app (``streamlit run streamlit_app.py``): side-by-side chat, results dashboard, builds.

Pages live in their own modules (``chat``, ``results``, ``build``); ``artifacts`` lists what can be
selected (only folders under the project's ``indices/``, ``adapters/``, ``runs/`` and ``corpora/``),
``engine`` loads models and indices once per process and serialises generation per model; ``inside``
looks inside the models (tokens, next-token probabilities, attention, what fine-tuning changed, embeddings).
"""
