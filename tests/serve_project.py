"""A tiny project (corpus, index, adapter, preset) and a real ``workbench serve`` subprocess, for the serve,
remote-backend and MCP tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
WORKBENCH = [sys.executable, "-m", "workbench.cli"]


def write_preset(root: Path, lm_dir: Path, st_dir: Path, **generate: object) -> Path:
    """A preset over the tiny models, on CPU (YAML)."""
    gen = {"max_new_tokens": 8, **generate}
    lines = ["model:", f"  base_model: {lm_dir}", "  device: cpu",
             "index:", f"  embedder: {st_dir}", "  kind: flat", "  device: cpu",
             "retrieve:", "  k: 2",
             "generate:", *[f"  {k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in gen.items()],
             "eval:", "  bootstrap: 20"]
    path = root / "tiny.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_project(root: Path, lm_dir: Path, st_dir: Path) -> dict[str, Path]:
    """``root`` as a project: corpus ``corpora/tiny``, index ``tiny`` (built by ``build_index``), adapter
    ``tiny-sft`` (a random LoRA on the tiny LM), preset ``tiny.yaml``."""
    from app_project import build_tiny_adapter, write_corpus

    from workbench.core.config import IndexConfig, IngestConfig
    from workbench.retrieval.index import build_index

    old = os.environ.get("WORKBENCH_HOME")
    os.environ["WORKBENCH_HOME"] = str(root)
    try:
        corpus = write_corpus(root)
        (corpus / "qa.jsonl").write_text(
            '{"id": "e1", "question": "What does the Tern-3 weigh?", "answers": ["42 kg"]}\n'
            '{"id": "e2", "question": "Who leads Kestrelmark Instruments?", "answers": ["Ilse Varnholt"]}\n'
            '{"id": "e3", "question": "What battery does the buoy use?", "answers": ["9 Ah"]}\n', encoding="utf-8")
        build_index(corpus, IndexConfig(embedder=str(st_dir), kind="flat", device="cpu"), IngestConfig(),
                    progress=False)
        build_tiny_adapter(root, lm_dir, corpus)
    finally:
        if old is None:
            os.environ.pop("WORKBENCH_HOME", None)
        else:
            os.environ["WORKBENCH_HOME"] = old
    return {"root": root, "corpus": corpus, "preset": write_preset(root, lm_dir, st_dir)}


def one_error_line(result) -> str:
    """The one ``error: ...`` line a failed command printed on stderr (exit code 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "WORKBENCH_HOME": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), **extra}
    return env


class ServeProcess:
    """``workbench serve --port 0 ...`` in a subprocess; ``url`` is its /v1 base URL once it listens, and
    ``lines`` collects what it writes on stderr."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        self.proc = subprocess.Popen([*WORKBENCH, "serve", "--port", "0", *args], cwd=root,
                                     env=env or env_for(root), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        self.url = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"at (http://\S+/v1)", line)
            if m:
                self.url = m.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError("workbench serve did not start:\n" + "".join(self.lines)
                               + (self.proc.stderr.read() if self.proc.stderr else ""))
        threading.Thread(target=self._collect, daemon=True).start()
        httpx.get(f"{self.url}/models", timeout=30)  # listening and answering

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for_line(self, needle: str, timeout: float = 10) -> str:
        """The first stderr line holding ``needle``, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if needle in line), None)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} in:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
