"""Per-artifact build locks, shared by the command line and the app.

A build of ``indices/NAME``, ``adapters/NAME`` or ``runs/NAME`` first takes the lock file
``.workbench/locks/<kind>-NAME.lock``, created with O_EXCL and naming the process that holds it: a second
build of the same artifact (another terminal, the app, another server) is refused with one line until
the first ends. A lock whose process is gone (a killed build) is stale and is taken over.

The app takes the locks of a build before it starts the ``workbench`` process that does the work; that
process finds its job id in ``WORKBENCH_LOCK_JOB`` and builds under the app's locks.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from workbench.errors import WorkbenchError
from workbench.paths import check_name, state_dir

JOB_ENV = "WORKBENCH_LOCK_JOB"
"""Environment variable naming the app job whose locks a child build runs under."""


def lock_name(kind: str, name: str) -> str:
    """The lock of an artifact, e.g. ``index-demo``."""
    return f"{kind}-{check_name(name, kind)}"


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (finished, not yet reaped) is not running
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _lock_path(name: str) -> Path:
    return state_dir() / "locks" / f"{check_name(name, 'lock')}.lock"


def read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stale(path: Path, holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if pid is not None:
        return not alive(int(pid))
    try:  # being written right now, or left half-written by a killed process
        return time.time() - path.stat().st_mtime > 30
    except OSError:
        return True


def _busy(name: str, holder: dict[str, Any]) -> WorkbenchError:
    who = f"job {holder['job']}" if holder.get("job") else f"process {holder.get('pid', '?')}"
    since = holder.get("since")
    when = f" since {_dt.datetime.fromtimestamp(since).strftime('%H:%M:%S')}" if since else ""
    return WorkbenchError(f"{name.replace('-', ' ', 1)} is already being built by {who}{when}; refusing to "
                          "build it twice at once", "wait for that build to finish (or stop it), then run this again")


def acquire_locks(names: list[str], job_id: str | None = None, pid: int | None = None) -> list[Path]:
    """Take every named artifact lock, or none (refusing, not waiting, when one is held).

    Args:
        names: lock names (``lock_name(kind, name)``).
        job_id: the app job taking them (None for a command-line build).
        pid: the holding process (default: this one; the app fills in its child's pid later).

    Returns:
        The lock files taken; a lock already held by this process's app job (``WORKBENCH_LOCK_JOB``)
        is not taken again and not returned.

    Raises:
        WorkbenchError: an artifact is being built by another live process (naming it).
    """
    my_job = os.environ.get(JOB_ENV)
    taken: list[Path] = []
    try:
        for name in names:
            path = _lock_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(2):
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = read_lock(path)
                    if my_job and holder.get("job") == my_job:
                        break  # the app took it for this very build
                    if attempt == 0 and _stale(path, holder):
                        path.unlink(missing_ok=True)
                        continue
                    raise _busy(name, holder) from None
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"job": job_id, "pid": os.getpid() if pid is None and job_id is None else pid,
                               "since": time.time()}, f)
                taken.append(path)
                break
    except BaseException:
        release_locks(taken)
        raise
    return taken


def release_locks(locks: list[Path]) -> None:
    for p in locks:
        Path(p).unlink(missing_ok=True)


@contextlib.contextmanager
def artifact_lock(kind: str, name: str) -> Iterator[None]:
    """Hold the build lock of artifact ``kind``/``name`` for the block (refusing if another build has it)."""
    taken = acquire_locks([lock_name(kind, name)])
    try:
        yield
    finally:
        release_locks(taken)


def held_locks() -> dict[str, dict[str, Any]]:
    """Lock name -> holder, for live locks only."""
    d = state_dir() / "locks"
    out = {}
    for p in sorted(d.glob("*.lock")) if d.is_dir() else []:
        h = read_lock(p)
        if not _stale(p, h):
            out[p.stem] = h
    return out


def stale_locks() -> list[Path]:
    """Lock files whose process is gone (a killed build); the next build of that artifact takes them over."""
    d = state_dir() / "locks"
    return [p for p in sorted(d.glob("*.lock")) if _stale(p, read_lock(p))] if d.is_dir() else []
