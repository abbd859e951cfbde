"""What a piece of work costs: its wall time and the highest resident memory of this process while it ran.

One measure behind every ``peak_rss_mb`` a summary reports (evaluation's cost, each update strategy's).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

SAMPLE_S = 0.05
"""How often resident memory is sampled."""


class PeakMemory:
    """The highest resident memory (RSS) of this process while the block runs, sampled every ``SAMPLE_S``.

    Use as ``with PeakMemory() as memory: ...``; ``memory.mb`` is the peak so far (also inside the block).
    """

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._done.wait(SAMPLE_S)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        """The peak so far, in MB (2**20 bytes), one decimal."""
        self._peak = max(self._peak, self._proc.memory_info().rss)
        return round(self._peak / 2**20, 1)


def measured(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run ``fn`` and return its result with ``{"seconds", "peak_rss_mb"}``: wall time, and the highest
    resident memory of this process while it ran."""
    t0 = time.perf_counter()
    with PeakMemory() as memory:
        result = fn()
    return result, {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": memory.mb}
