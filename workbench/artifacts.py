"""Atomic artifact writing and manifests (format version, provenance, timings, library versions)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from workbench.errors import WorkbenchError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path for a file; rename it onto ``final`` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; swap it in for ``final`` only on success.

    An exception inside the block removes the temporary directory and leaves any previous
    ``final`` untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (indented, UTF-8)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def hash_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:16]


def hash_file(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()[:16]


def hash_tree(root: Path, files: list[Path] | None = None) -> str:
    """Content hash of a folder (or of the given files under it): names and bytes, order-independent."""
    root = Path(root)
    files = sorted(files if files is not None else (p for p in root.rglob("*") if p.is_file()))
    h = hashlib.sha256()
    for p in files:
        h.update(str(Path(p).relative_to(root).as_posix()).encode())
        h.update(hash_file(p).encode())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (read from metadata; nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("workbench", "torch", "transformers", "peft", "sentence-transformers",
                 "faiss-cpu", "bm25s", "spacy", "trl", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_manifest(kind: str, format_version: int, **fields: Any) -> dict[str, Any]:
    """A manifest dict: kind, format version, creation time, library versions, plus ``fields``."""
    return {"kind": kind, "format_version": format_version, "created": now_iso(),
            "libraries": library_versions(), **fields}


def read_manifest(folder: Path, kind: str, format_version: int) -> dict[str, Any]:
    """Read and check ``folder/manifest.json``.

    Raises:
        WorkbenchError: the folder or manifest is missing, or of another kind or format version.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise WorkbenchError(f"no {kind} at {folder} (missing {MANIFEST})",
                             f"build it with `workbench {'index' if kind == 'index' else 'finetune'}`")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise WorkbenchError(f"{path} is corrupt", "rebuild it with --rebuild") from None
    if m.get("kind") != kind:
        raise WorkbenchError(f"{folder} holds a {m.get('kind')!r}, not a {kind}", "check the name")
    if m.get("format_version") != format_version:
        raise WorkbenchError(
            f"{folder} was written in {kind} format {m.get('format_version')}, this version reads {format_version}",
            "rebuild it with --rebuild")
    return m
