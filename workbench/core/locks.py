"""Per-artifact build locks, shared by the command line and the app.

A build of ``indices/NAME``, ``adapters/NAME`` or ``runs/NAME`` first takes an exclusive ``flock`` on
``.workbench/locks/<kind>-NAME.lock`` and writes who holds it there: a second build of the same artifact
(another terminal, the app, another server) is refused with one line naming the holder until the first
ends. The kernel drops the lock when its process ends, however it ends, so a killed build never leaves a
lock that blocks the next one, and two builds can never both take over a stale lock. Lock files are never
deleted (that would reopen the race); a released lock is emptied, so a non-empty free one shows a build
was killed.

The app takes the locks of a build before it starts the ``workbench`` process that does the work; that
process finds its job id in ``WORKBENCH_LOCK_JOB`` and builds under the app's locks. Where ``fcntl`` is
missing (Windows) locks are not enforced.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from workbench.core.errors import WorkbenchError
from workbench.core.paths import check_name, state_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

JOB_ENV = "WORKBENCH_LOCK_JOB"
"""Environment variable naming the app job whose locks a child build runs under."""
_LOCK_NAME = re.compile(r"^(index|adapter|run|lock)-[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")


@dataclass
class Lock:
    """A held artifact lock: its file, and the open descriptor that holds the ``flock``."""

    name: str
    path: Path
    fd: int

    def describe(self, job: str | None, pid: int | None) -> None:
        """Write who holds the lock (the app fills in its build process once started)."""
        data = json.dumps({"job": job, "pid": pid, "since": time.time()}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


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
    if not _LOCK_NAME.match(name):
        raise WorkbenchError(f"invalid lock name {name!r}", "locks are named <kind>-<artifact name>")
    return state_dir() / "locks" / f"{name}.lock"


def read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive flock, or None when another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        os.close(fd)
        return None
    return fd


def _busy(name: str, holder: dict[str, Any]) -> WorkbenchError:
    who = f"job {holder['job']}" if holder.get("job") else f"process {holder.get('pid', '?')}"
    since = holder.get("since")
    when = f" since {_dt.datetime.fromtimestamp(since).strftime('%H:%M:%S')}" if since else ""
    return WorkbenchError(f"{name.replace('-', ' ', 1)} is already being built by {who}{when}; refusing to "
                          "build it twice at once", "wait for that build to finish (or stop it), then run this again")


def acquire_locks(names: list[str], job_id: str | None = None, pid: int | None = None) -> list[Lock]:
    """Take every named artifact lock, or none (refusing, not waiting, when one is held).

    Args:
        names: lock names (``lock_name(kind, name)``).
        job_id: the app job taking them (None for a command-line build).
        pid: the holding process to record (default: this one).

    Returns:
        The locks taken; a lock held by this process's app job (``WORKBENCH_LOCK_JOB``) is not taken
        again and not returned.

    Raises:
        WorkbenchError: an artifact is being built by another live process (naming it).
    """
    my_job = os.environ.get(JOB_ENV)
    taken: list[Lock] = []
    try:
        for name in names:
            path = _lock_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _try_lock(path)
            if fd is None:
                holder = read_lock(path)
                if my_job and holder.get("job") == my_job:
                    continue  # the app took it for this very build
                raise _busy(name, holder)
            lock = Lock(name, path, fd)
            taken.append(lock)
            lock.describe(job_id, os.getpid() if pid is None else pid)
    except BaseException:
        release_locks(taken)
        raise
    return taken


def release_locks(locks: list[Lock]) -> None:
    """Empty and release the locks (their files stay: see the module docstring)."""
    for lock in locks:
        try:
            os.ftruncate(lock.fd, 0)
        finally:
            os.close(lock.fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def artifact_lock(kind: str, name: str) -> Iterator[None]:
    """Hold the build lock of artifact ``kind``/``name`` for the block (refusing if another build has it)."""
    taken = acquire_locks([lock_name(kind, name)])
    try:
        yield
    finally:
        release_locks(taken)


def _lock_files() -> list[Path]:
    d = state_dir() / "locks"
    return sorted(d.glob("*.lock")) if d.is_dir() else []


def is_held(path: Path) -> bool:
    """Whether some process holds the lock file's flock now."""
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def held_locks() -> dict[str, dict[str, Any]]:
    """Lock name -> holder, for the locks held now."""
    return {p.stem: read_lock(p) for p in _lock_files() if is_held(p)}


def stale_locks() -> list[Path]:
    """Lock files a killed build left its name in (free, not emptied); harmless: the next build takes them."""
    return [p for p in _lock_files() if p.stat().st_size > 0 and not is_held(p)]
