"""The terminal console: numbered stages with their timing, printed to stderr."""
from __future__ import annotations

import time
from typing import Any, Callable


def stage_console() -> Any:
    """The stage console: stderr, wide in logs and pipes."""
    import sys

    from rich.console import Console

    # logs and pipes get a wide layout; a terminal keeps its own width
    return Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140)


class Stages:
    """Prints numbered stages with their timing; remembers what each one did."""

    def __init__(self, total: int, console: Any):
        self.total, self.n, self.console = total, 0, console
        self.timings: dict[str, float] = {}

    def run(self, title: str, fn: Callable[[], Any]) -> Any:
        self.n += 1
        self.console.rule(f"[bold][{self.n}/{self.total}] {title}")
        t0 = time.perf_counter()
        result = fn()
        self.timings[title] = time.perf_counter() - t0
        self.console.print(f"[dim]{title}: {self.timings[title]:.1f} s[/dim]")
        return result
