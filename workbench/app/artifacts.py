"""What the app can offer: the artifact catalogue (``workbench.core.catalogue``: indices, adapters, runs
and corpora built in this project, resolved only by a listed name) and the base models the chat may load.
"""
from __future__ import annotations

import os

from workbench.core.catalogue import (  # noqa: F401 - the app's pages read the one catalogue through here
    Artifact,
    corpora_dir,
    is_empty_project,
    list_adapters,
    list_corpora,
    list_indices,
    list_runs,
    resolve,
)
from workbench.core.config import DEFAULT_BASE_MODEL


def base_model_choices(adapters: list[Artifact] | None = None, preset_model: str | None = None) -> list[str]:
    """Base models the chat can load: ``$WORKBENCH_BASE_MODEL`` (set by whoever starts the server), the
    preset's base model, the base models the adapters were trained on, and the embedded default. Never a
    path typed in the UI."""

    out: list[str] = []
    env = os.environ.get("WORKBENCH_BASE_MODEL")
    candidates = [env, preset_model] + [a.info.get("base_model") for a in (adapters or [])
                                        if a.info.get("mode") != "scratch"]
    for c in candidates + [DEFAULT_BASE_MODEL]:
        if c and str(c) not in out:
            out.append(str(c))
    return out
