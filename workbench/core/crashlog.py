"""Internal errors: the traceback goes to a log file, the user gets one line naming it."""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import traceback
from pathlib import Path

from workbench.core.paths import state_dir


def save_traceback(error: BaseException, argv: list[str]) -> Path:
    """Write ``error``'s traceback and the command line to ``.workbench/logs/error-<time>-<pid>.log``.

    Falls back to the system's temporary folder when the project folder is not writable.

    Returns:
        The log file's path.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"command: {' '.join(argv)}\ncwd: {os.getcwd()}\ntime: {stamp}\n\n"
            + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    for folder in (state_dir() / "logs", Path(tempfile.gettempdir()) / "workbench-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("(could not write a log file)")
