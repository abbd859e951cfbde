"""Answering: the one model loader, the prompt, batched generation, copy decoding, post-processing, quantities, confidence features, and the remote (OpenAI-compatible) backend."""
