"""Retrieval: sentence embeddings, the FAISS + BM25 index and its manifest, search and fusion."""
