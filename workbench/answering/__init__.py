"""Answering: the one model loader (``loader``) over base-model loading (``models``), the prompt, batched
generation, copy decoding, post-processing, quantities, confidence features, and the remote
(OpenAI-compatible) backend."""
