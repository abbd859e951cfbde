"""Atomic artifact writing and manifests (format version, provenance, timings, library versions)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from workbench.core.errors import WorkbenchError
from workbench.core.locks import artifact_lock

MANIFEST = "manifest.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new names, renames) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder) / name)
        _fsync_dir(Path(folder))


def _umask() -> int:
    """The process's file-creation mask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - no /proc (macOS, Windows)
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _readable_like_any_file(root: Path) -> None:
    """Give every file under ``root`` the permissions a newly created file gets (``0666 & ~umask``).

    Libraries that write through a private temporary file (safetensors weights via transformers and PEFT)
    leave mode 0600, which other users and tools serving the artifact cannot read.
    """
    mode = 0o666 & ~_umask()
    for f in [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        current = f.stat().st_mode & 0o777
        if current != mode | (current & 0o111):  # executable bits kept
            os.chmod(f, mode | (current & 0o111))


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path for a file; fsync it and rename it onto ``final`` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        _readable_like_any_file(tmp)
        _fsync_file(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def owned_by_workbench(folder: Path, kind: str) -> bool:
    """Whether ``folder`` is an artifact of ``kind`` that the workbench wrote (its manifest says so).

    A ``manifest.json`` that is not a JSON object marks a damaged artifact, which a rebuild may replace. Run folders
    written before runs had a manifest are recognised by their ``summary.json``.
    """
    folder = Path(folder)
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(m, dict) or m.get("kind") == kind:  # not an object: damaged, --rebuild replaces it
            return True
    except ValueError:  # not JSON: a damaged artifact too
        return True
    except OSError:
        pass
    return kind == "run" and (folder / "summary.json").is_file() and (folder / "results.jsonl").is_file()


def check_replaceable(final: Path, kind: str) -> None:
    """Refuse to build into ``final`` when something that is not a workbench ``kind`` sits there.

    Raises:
        WorkbenchError: ``final`` exists and is not an artifact of ``kind`` (nothing is touched).
    """
    final = Path(final)
    if (final.exists() or final.is_symlink()) and (final.is_symlink() or not final.is_dir()
                                                    or not owned_by_workbench(final, kind)):
        raise WorkbenchError(f"{final} exists and is not a workbench {kind} (no {MANIFEST} of kind {kind!r}); "
                             "refusing to replace it", "choose another name, or move that folder away yourself")


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<what>tmp|old)-[0-9a-f]{8}")


def leftovers(root: Path, name: str | None = None) -> list[Path]:
    """Temporary folders and files of killed builds under ``root`` (``.NAME.tmp-*``, ``.NAME.old-*``)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if (m := _LEFTOVER.fullmatch(p.name)) and (name is None or m.group("name") == name))


def _restore_previous(final: Path) -> str | None:
    """Put the newest ``.NAME.old-*`` back as ``NAME`` when ``NAME`` is missing; a line saying so, or None."""
    olds = sorted((p for p in leftovers(final.parent, final.name)
                   if _LEFTOVER.fullmatch(p.name).group("what") == "old" and p.is_dir()),
                  key=lambda p: p.stat().st_mtime)
    if not olds or final.exists() or final.is_symlink():
        return None
    os.replace(olds[-1], final)
    return f"restored {final.name} from {olds[-1].name} (a build was killed while swapping it)"


def recover_leftovers(final: Path) -> list[str]:
    """Tidy up after a killed build of ``final`` (call it holding the artifact's lock).

    A build killed between its two renames leaves the previous artifact as ``.NAME.old-*`` and no
    ``NAME``: the previous artifact is put back. Every other leftover of ``NAME`` is removed.

    Returns:
        One line per thing done, for the user.
    """
    final = Path(final)
    restored = _restore_previous(final)
    done = [restored] if restored else []
    for p in leftovers(final.parent, final.name):
        if not (p.exists() or p.is_symlink()):  # the one just restored
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(f"removed {p.name} (left by a killed build)")
    return done


def restore_interrupted_build(final: Path, kind: str) -> None:
    """Before reading ``final``: put back the previous artifact that a build killed between its two renames
    left as ``.NAME.old-*``, so it stays loadable (the next build clears the other leftovers).

    Nothing is done while a build of ``final`` holds its lock: that build is between its renames right now
    and completes the swap itself.
    """
    final = Path(final)
    if final.exists() or final.is_symlink() or not leftovers(final.parent, final.name):
        return
    try:
        with artifact_lock(kind, final.name):
            _restore_previous(final)
    except WorkbenchError:  # the lock is held (a build is running), or the folder's name takes no lock
        return


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (a file or folder)."""
    path = Path(path)
    total = 0
    for f in [path] if path.is_file() else path.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() and not f.is_symlink() else 0
        except OSError:  # removed while counting (a build still running)
            pass
    return total


def human_size(n: int) -> str:
    """Bytes for people: ``532 B``, ``41.0 KB``, ``1.2 MB``, ``3.4 GB``."""
    if n < 1e3:
        return f"{n} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n < scale * 1e3 or unit == "GB":
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@contextlib.contextmanager
def atomic_dir(final: Path, kind: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; swap it in for ``final`` only on success.

    An exception inside the block removes the temporary directory and leaves any previous ``final``
    untouched. The new folder's files are fsynced before the swap.

    Args:
        final: the artifact's folder.
        kind: when given, an existing ``final`` is replaced only if it is a workbench artifact of this
            kind (checked before and again just before the swap).

    Raises:
        WorkbenchError: ``final`` holds something that is not a workbench ``kind``.
    """
    final = Path(final)
    if kind is not None:
        check_replaceable(final, kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if kind is not None:
            check_replaceable(final, kind)
        _readable_like_any_file(tmp)
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
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
    except (json.JSONDecodeError, UnicodeDecodeError):
        m = None
    if not isinstance(m, dict):
        raise WorkbenchError(f"{path} is corrupt (not a JSON object)", "rebuild it with --rebuild")
    if m.get("kind") != kind:
        raise WorkbenchError(f"{folder} holds a {m.get('kind')!r}, not a {kind}", "check the name")
    if m.get("format_version") != format_version:
        raise WorkbenchError(
            f"{folder} was written in {kind} format {m.get('format_version')}, this version reads {format_version}",
            "rebuild it with --rebuild")
    return m
