"""Corpus: documents to clean, deduplicated, sentence-aware chunks with provenance; the qa.jsonl reader."""
