"""What fine-tuning did to what the model knew before: a general-ability probe run on the base model and on
every adapter (summary.json's ``side_effects`` section, written by ``workbench run`` and ``workbench update``).

The probe ships with the package: short general-knowledge questions (``data/general_probe.jsonl``, lines
``{"id", "question", "answers"}``) and a general English text sample (``data/general_text.txt``). Only the
questions the base model answers right count (a question it never knew cannot be forgotten); for each
adapter the report gives the share of those it still answers right, and its perplexity on the text sample
against the base model's. Answers go through the same path as evaluation (``systems.run_system``) and are
judged right as in the update measures (contains a gold answer, or token F1 >= 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import numbered_jsonl
from workbench.corpus.qa import QAItem
from workbench.evaluation.metrics import is_right
from workbench.evaluation.systems import SystemContext, SystemSpec, run_system
from workbench.training.adapters import adapter_dir, read_adapter_manifest

DATA_DIR = Path(__file__).resolve().parent / "data"
PROBE_FILE = DATA_DIR / "general_probe.jsonl"
TEXT_FILE = DATA_DIR / "general_text.txt"
TEXT_TOKENS = 2048
"""Tokens of the text sample scored for perplexity (the first ones), in windows of ``WINDOW``."""
WINDOW = 512


@dataclass
class Probe:
    """The general-ability probe: questions with their answers, and a text sample."""

    questions: list[QAItem]
    text: str
    source: str = str(PROBE_FILE)


def load_probe(probe_file: Path | None = None, text_file: Path | None = None) -> Probe:
    """Read the probe files (default: the packaged ones, ``PROBE_FILE`` and ``TEXT_FILE``).

    Raises:
        WorkbenchError: a file is missing, or a line is not ``{"id", "question", "answers": [...]}``.
    """
    probe_file, text_file = Path(probe_file or PROBE_FILE), Path(text_file or TEXT_FILE)
    for f in (probe_file, text_file):
        if not f.is_file():
            raise WorkbenchError(f"the general-ability probe file {f} is missing",
                                 "reinstall workbench (the probe ships as package data)")
    items = []
    for lineno, obj in numbered_jsonl(probe_file):
        try:
            items.append(QAItem(id=str(obj["id"]), question=str(obj["question"]),
                                answers=[str(a) for a in obj["answers"]]))
        except (KeyError, TypeError):
            raise WorkbenchError(f"{probe_file}:{lineno}: not a probe line", "expected {id, question, answers}") from None
    return Probe(items, Path(text_file).read_text(encoding="utf-8"), str(probe_file))


def perplexity(model: Any, tokenizer: Any, text: str, max_tokens: int = TEXT_TOKENS, window: int = WINDOW) -> float:
    """Perplexity of ``text``'s first ``max_tokens`` tokens, scored in consecutive windows (no overlap)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0][:max_tokens]
    device = next(model.parameters()).device
    nll, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start:start + window].unsqueeze(0).to(device)   # (1, w)
            if chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk).logits.float()              # (1, w, vocab)
            # position t predicts token t+1
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
            nll += float(loss)
            n += chunk.shape[1] - 1
    return math.exp(nll / n) if n else float("nan")


def _answers(ctx: SystemContext, role: str | None, items: list[QAItem]) -> tuple[list[str], Any]:
    """Closed-book answers of the base model (role None) or an adapter, and the generator that gave them."""
    spec = SystemSpec(f"probe-{role or 'base'}", "general-ability probe", retrieval=False, adapter=role)
    run = run_system(spec, ctx, items)
    return [a.text for a in run.answers], ctx.generator(role)


def side_effects(cfg: RunConfig, adapters: dict[str, str], probe: Probe | None = None) -> dict:
    """The ``side_effects`` section: per adapter, the share of probe questions the base model answers right
    that it still answers right, and its perplexity on the text sample against the base model's.

    Args:
        cfg: the run's settings (base model, generation, prompt).
        adapters: label (a system name such as ``ft``) -> adapter name or folder. Adapters trained from
            scratch are left out (their tokenizer differs: nothing to compare).
        probe: the probe (default: the packaged one).

    Returns:
        ``{"probe", "n_questions", "n_kept", "text_tokens", "base": {"perplexity"}, "adapters": {label:
        {"adapter", "kept_right", "still_right", "perplexity", "perplexity_change"}}}``; ``still_right`` is
        None when the base model answers none of the questions right.
    """
    probe = probe or load_probe()
    lora = {label: name for label, name in adapters.items()
            if read_adapter_manifest(adapter_dir(name)).get("mode") != "scratch"}
    ctx = SystemContext(cfg=cfg, adapters={label: name for label, name in lora.items()})
    try:
        base_preds, gen = _answers(ctx, None, probe.questions)
        kept = [q for q, p in zip(probe.questions, base_preds) if is_right(p, q.answers)]
        n_tokens = min(TEXT_TOKENS, len(gen.tokenizer(probe.text, add_special_tokens=False)["input_ids"]))
        base_ppl = perplexity(gen.model, gen.tokenizer, probe.text)
        out: dict[str, Any] = {"probe": Path(probe.source).name, "n_questions": len(probe.questions),
                               "n_kept": len(kept), "text_tokens": n_tokens, "base": {"perplexity": base_ppl},
                               "adapters": {}}
        for label, name in lora.items():
            preds, gen = _answers(ctx, label, kept) if kept else ([], ctx.generator(label))
            right = sum(is_right(p, q.answers) for p, q in zip(preds, kept))
            ppl = perplexity(gen.model, gen.tokenizer, probe.text)
            out["adapters"][label] = {"adapter": str(name), "kept_right": right,
                                      "still_right": right / len(kept) if kept else None,
                                      "perplexity": ppl, "perplexity_change": ppl / base_ppl - 1}
    finally:
        ctx.release()
    return out
