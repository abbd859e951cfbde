"""Fine-tuned artifacts in ``adapters/``: naming, staleness, and loading onto the base model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.answering.models import load_base_model, model_fingerprint, pick_device, pick_dtype
from workbench.core.artifacts import hash_file, read_manifest
from workbench.core.config import FinetuneConfig, ModelConfig, PromptConfig, RunConfig, to_dict
from workbench.core.errors import WorkbenchError
from workbench.core.paths import adapters_dir, check_name, safe_name
from workbench.core.paths import qa_path as default_qa_path
from workbench.corpus.ingest import corpus_fingerprint

KIND = "adapter"
FORMAT_VERSION = 1


def default_adapter_name(corpus_dir: Path, mode: str) -> str:
    """``<corpus folder name>-<mode>``, e.g. ``demo-sft`` (made a plain name)."""
    return safe_name(f"{Path(corpus_dir).resolve().name}-{mode}", fallback=f"corpus-{mode}")


def adapter_dir(name_or_dir: str | Path) -> Path:
    """The folder of an adapter to read, given its name (under ``adapters/``) or a path to it.

    Raises:
        WorkbenchError: neither a folder nor a plain name.
    """
    s = str(name_or_dir)
    p = Path(s).expanduser()
    if p.is_absolute() or "/" in s or "\\" in s or s.startswith("~"):
        return p  # a folder to read from (a path, never a plain name); fine-tuning never writes there
    return adapters_dir() / check_name(s, "adapter")


def read_adapter_manifest(folder: Path) -> dict[str, Any]:
    """The adapter's manifest, checked for kind and format version."""
    return read_manifest(folder, KIND, FORMAT_VERSION)


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
    if model_cfg is not None and m.get("mode") != "scratch":
        if m.get("base_model_hash") != model_fingerprint(model_cfg.base_model):
            return f"stale: trained on base model {m.get('base_model')}, not {model_cfg.base_model}"
    return "current"


def load_finetuned(name_or_dir: str | Path, model_cfg: ModelConfig, merge: bool = True
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """Load a fine-tuned model: the LoRA adapter on its base model, or a from-scratch model.

    Args:
        name_or_dir: adapter name (under ``adapters/``) or folder.
        model_cfg: the base model to load the adapter onto (and device/dtype); it must be the base the
            adapter was trained on.
        merge: fold the LoRA weights into the base for faster generation.

    Returns:
        (model in eval mode, tokenizer with left padding, manifest).

    Raises:
        WorkbenchError: missing adapter, or an adapter trained on another base model.
    """
    folder = adapter_dir(name_or_dir)
    if not (folder / "manifest.json").exists():
        raise WorkbenchError(f"no adapter {str(name_or_dir)!r} at {folder}",
                             "build it with `workbench finetune CORPUS_DIR --mode sft`")
    m = read_adapter_manifest(folder)
    if m.get("mode") == "scratch":
        return (*_load_full(folder, model_cfg), m)
    from peft import PeftModel


    if m.get("base_model_hash") != model_fingerprint(model_cfg.base_model):
        raise WorkbenchError(
            f"adapter {folder.name} was trained on base model {m.get('base_model')!r}, "
            f"not {model_cfg.base_model!r}",
            f"load it with --base {m.get('base_model')} or retrain it on this base")
    base, tokenizer = load_base_model(model_cfg)
    model = PeftModel.from_pretrained(base, str(folder))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tokenizer, m


def _load_full(folder: Path, model_cfg: ModelConfig) -> tuple[Any, Any]:
    """A from-scratch model folder, on the configured device, tokenizer padded on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer


    device = pick_device(model_cfg.device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(model_cfg.dtype, device)).to(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
