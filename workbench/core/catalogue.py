"""The one artifact catalogue: the indices, adapters, runs and corpora built in this project, by name.

Only direct children of ``indices/``, ``adapters/``, ``runs/`` and ``corpora/`` whose names follow the one
name rule (``paths.check_name``) and that carry the right marker file are listed: an index or adapter
holds a readable ``manifest.json`` of its kind, a run a ``summary.json``, a corpus at least one document.
``resolve`` accepts only a name from those lists, so no path typed or forged in a face reaches anything
else; temporary build folders (hidden names) and symlinks leading out of the folder are never offered.
Listing reads a few small JSON files and caches nothing: an artifact a build just finished is listed on
the next call. The app, ``workbench serve`` and MCP, and the command line read artifacts through here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.core import paths
from workbench.core.errors import WorkbenchError
from workbench.core.paths import QA_FILE, check_name, is_name

DOC_EXTENSIONS = {".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf"}
"""Document extensions a listed corpus holds at least one of."""


@dataclass
class Artifact:
    """One built artifact.

    Attributes:
        kind: "index", "adapter", "run" or "corpus".
        name: folder name (the only thing a face passes around).
        path: resolved folder, always inside its kind's parent folder.
        info: the manifest (index/adapter), summary.json (run), or a few facts (corpus).
    """

    kind: str
    name: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line saying what the artifact was built from."""
        i = self.info
        if self.kind == "index":
            parts = [f"corpus {_short(i.get('corpus'))}", f"embedder {_short(i.get('embedder'))}"]
            n = _first(i, "n_chunks", "chunks")
            if n is not None:
                parts.append(f"{n} chunks")
        elif self.kind == "adapter":
            parts = [f"{i.get('mode', '?')} on {_short(i.get('base_model'))}", f"corpus {_short(i.get('corpus'))}"]
            if i.get("data_source"):
                parts.append(f"data {i['data_source']}")
        elif self.kind == "run":
            parts = [f"corpus {_short(i.get('corpus'))}", f"{i.get('n_questions', '?')} questions",
                     "systems " + ", ".join(i.get("systems") or {})]
        else:
            parts = [f"{i.get('n_documents', 0)} documents", "with qa.jsonl" if i.get("has_qa") else "no qa.jsonl"]
        created = i.get("created")
        if created:
            parts.append(str(created)[:16].replace("T", " "))
        return " · ".join(parts)


def _first(d: dict, *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _short(value: Any) -> str:
    """A path or model id shortened to its last component (full values are in the manifest)."""
    if value is None:
        return "?"
    s = str(value).rstrip("/")
    return Path(s).name if "/" in s and Path(s).is_absolute() else s


def corpora_dir() -> Path:
    """The project's corpora folder (``project_root()/corpora``)."""
    return paths.project_root() / "corpora"


def _children(parent: Path) -> list[Path]:
    """Folders directly under ``parent`` with a plain name, symlinks out of ``parent`` left out."""
    if not parent.is_dir():
        return []
    root = parent.resolve()
    out = []
    for p in sorted(parent.iterdir()):
        if not is_name(p.name) or not p.is_dir():
            continue
        real = p.resolve()
        if real.parent != root:  # a symlink pointing elsewhere is not offered
            continue
        out.append(real)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _with_manifest(folder: Path, kind: str) -> list[Artifact]:
    """Children of ``folder`` whose manifest.json is readable and of ``kind``."""
    out = []
    for p in _children(folder):
        m = _read_json(p / "manifest.json")
        if m is not None and m.get("kind", kind) == kind:
            out.append(Artifact(kind, p.name, p, m))
    return out


def list_indices() -> list[Artifact]:
    """Indices under ``indices/`` with a readable manifest of kind "index"."""
    return _with_manifest(paths.indices_dir(), "index")


def list_adapters() -> list[Artifact]:
    """Fine-tuned models under ``adapters/`` with a readable manifest of kind "adapter"."""
    return _with_manifest(paths.adapters_dir(), "adapter")


def list_runs() -> list[Artifact]:
    """Evaluation runs under ``runs/`` (folders with a summary.json), newest first."""
    out = []
    for p in _children(paths.runs_dir()):
        s = _read_json(p / "summary.json")
        if s is not None and isinstance(s.get("systems"), dict):
            out.append(Artifact("run", p.name, p, s))
    out.sort(key=lambda a: (str(a.info.get("created", "")), a.name), reverse=True)
    return out


def list_corpora() -> list[Artifact]:
    """Corpus folders under ``corpora/`` holding at least one document."""
    out = []
    for p in _children(corpora_dir()):
        n = _count_documents(p)
        if n:
            out.append(Artifact("corpus", p.name, p, {"n_documents": n, "has_qa": (p / QA_FILE).is_file()}))
    return out


def _count_documents(folder: Path, limit: int = 100_000) -> int:
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        n += sum(1 for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in DOC_EXTENSIONS)
        if n >= limit:
            break
    return n


LISTERS: dict[str, Callable[[], list[Artifact]]] = {
    "index": list_indices, "adapter": list_adapters, "run": list_runs, "corpus": list_corpora}
"""Artifact kind -> its lister."""


def names(kind: str) -> list[str]:
    """The names of the built artifacts of ``kind``, sorted (runs: newest first)."""
    return [a.name for a in _lister(kind)()]


def _lister(kind: str) -> Callable[[], list[Artifact]]:
    if kind not in LISTERS:
        raise WorkbenchError(f"unknown artifact kind {kind!r}", f"use one of {', '.join(LISTERS)}")
    return LISTERS[kind]


def resolve(kind: str, name: str) -> Artifact:
    """The artifact of ``kind`` called ``name``, only if it is one the catalogue lists.

    Raises:
        WorkbenchError: unknown kind, a name that is not a plain name, or no such artifact (the message
            lists the built ones).
    """
    lister = _lister(kind)
    check_name(name, kind)
    listed = lister()
    for art in listed:
        if art.name == name:
            return art
    built = ", ".join(a.name for a in listed) or "none"
    raise WorkbenchError(f"no {kind} {name!r} is built in this project (built: {built})",
                         f"build it, or pick one of the built {kind} names")


def newest_run(corpus: str | Path | None = None, where: Callable[[dict[str, Any]], bool] | None = None
               ) -> Artifact | None:
    """The newest run (by its summary's ``created``, then name) over ``corpus`` (a corpus folder, or its
    folder name) for which ``where(summary)`` holds, or None."""
    for run in list_runs():
        if corpus is not None and not _same_corpus(run.info.get("corpus"), corpus):
            continue
        if where is None or where(run.info):
            return run
    return None


def _same_corpus(recorded: Any, corpus: str | Path) -> bool:
    if not recorded:
        return False
    given = Path(corpus)
    if len(given.parts) == 1 and not given.exists():  # a bare corpus name
        return Path(str(recorded)).name == given.name
    return Path(str(recorded)).resolve() == given.resolve()


def is_empty_project() -> bool:
    """True when nothing has been built yet (no index, adapter or run)."""
    return not (list_indices() or list_adapters() or list_runs())
