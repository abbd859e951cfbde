"""Fine-tuned artifacts in ``adapters/``: naming and staleness (``workbench.answering.loader`` loads them)."""
from __future__ import annotations

from pathlib import Path

from workbench.answering.loader import (  # noqa: F401 - an adapter's folder, manifest and loading live with the loader
    adapter_dir,
    load_finetuned,
    read_adapter_manifest,
)
from workbench.answering.models import model_fingerprint
from workbench.core.artifacts import hash_file
from workbench.core.config import FinetuneConfig, ModelConfig, PromptConfig, RunConfig, to_dict
from workbench.core.errors import WorkbenchError
from workbench.core.paths import qa_path as default_qa_path
from workbench.core.paths import safe_name
from workbench.corpus.ingest import corpus_fingerprint


def default_adapter_name(corpus_dir: Path, mode: str) -> str:
    """``<corpus folder name>-<mode>``, e.g. ``demo-sft`` (made a plain name)."""
    return safe_name(f"{Path(corpus_dir).resolve().name}-{mode}", fallback=f"corpus-{mode}")


def adapter_status(name: str | Path, corpus_dir: Path, cfg: FinetuneConfig | None = None,
                   model_cfg: ModelConfig | None = None, qa_path: Path | None = None,
                   run_cfg: RunConfig | None = None) -> str:
    """Whether ``adapters/NAME`` is up to date for this corpus, question file, settings and base model.

    Args:
        name: adapter name or folder.
        corpus_dir: the corpus it should have been trained on.
        cfg: fine-tuning settings to compare (None: not compared).
        model_cfg: base model to compare (None: not compared).
        qa_path: question file (default ``CORPUS_DIR/qa.jsonl``).
        run_cfg: the run's other settings: its prompt settings (the text trained on) and, for adapters
            trained on chunks (cpt, raft, scratch, synthesized questions), its chunking are compared.

    Returns:
        "current", "missing", or "stale: <why>".
    """

    folder = adapter_dir(name)
    if not (folder / "manifest.json").exists():
        return "missing"
    try:
        m = read_adapter_manifest(folder)
    except WorkbenchError as e:
        return f"stale: {e.message}"
    if m.get("corpus_fingerprint") != corpus_fingerprint(Path(corpus_dir)):
        return "stale: the corpus changed since it was trained"
    qa_file = default_qa_path(corpus_dir, qa_path)
    if m.get("qa_hash") != (hash_file(qa_file) if qa_file.exists() else None):
        return "stale: the question file changed since it was trained"
    # a setting added after the adapter was trained counts as its default (which keeps the old behaviour)
    old = {**to_dict(FinetuneConfig()), **m["hyperparameters"]} if m.get("hyperparameters") else None
    if cfg is not None and old != to_dict(cfg):
        changed = sorted(k for k, v in to_dict(cfg).items() if (old or {}).get(k) != v)
        return f"stale: settings changed ({', '.join(changed) or 'format'})"
    if run_cfg is not None and (m.get("prompt") or to_dict(PromptConfig())) != to_dict(run_cfg.prompt):
        return "stale: prompt settings changed (it was trained on prompts built with others)"
    reads_chunks = m.get("mode") in ("cpt", "raft", "scratch") or "synth" in str(m.get("data_source", ""))
    if run_cfg is not None and reads_chunks and m.get("ingest") not in (None, to_dict(run_cfg.ingest)):
        return "stale: chunking settings changed (it was trained on other chunks)"
    synthesized = "synth" in str(m.get("data_source", ""))
    if run_cfg is not None and synthesized and m.get("synth") not in (None, to_dict(run_cfg.synth)):
        return "stale: synth settings changed (it was trained on other synthesized questions)"
    if model_cfg is not None and m.get("mode") != "scratch":
        if m.get("base_model_hash") != model_fingerprint(model_cfg.base_model):
            return f"stale: trained on base model {m.get('base_model')}, not {model_cfg.base_model}"
    return "current"
