"""The one model loader: a resolved model config and an optional adapter, to a ready generator.

Every face answers through ``load_generator``: evaluation's systems (and so ``workbench ask``), the app's
chat, Inside, ``workbench serve`` and MCP. It loads the base model or a fine-tuned artifact from
``adapters/`` (a LoRA adapter merged into its base model, or a model trained from scratch), makes it
ready to answer as ``ModelConfig.cpu_dtype`` says (``prepare_for_inference``), or, with
``model.backend: openai``, answers through the served model of that name instead. Training continues
an adapter through ``load_weights(..., trainable=True)``, the same loading without the inference step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.answering.generate import Generator
from workbench.answering.models import (
    load_base_model,
    model_fingerprint,
    pick_device,
    pick_dtype,
    prepare_for_inference,
    prepare_tokenizer,
    refuse_pickled_weights,
)
from workbench.answering.remote import RemoteGenerator, served_name
from workbench.core.artifacts import read_manifest, restore_interrupted_build
from workbench.core.config import GenerateConfig, ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.paths import artifact_path

ADAPTER_KIND = "adapter"
"""The manifest kind of a fine-tuned artifact under ``adapters/``."""
ADAPTER_FORMAT = 1
"""Format version of an adapter's manifest."""


def adapter_dir(name_or_dir: str | Path) -> Path:
    """The folder of an adapter to read, given its name (under ``adapters/``) or a path to it.

    Raises:
        WorkbenchError: neither a folder nor a plain name.
    """
    return artifact_path("adapter", name_or_dir)


def read_adapter_manifest(folder: Path) -> dict[str, Any]:
    """The adapter's manifest, checked for kind and format version."""
    return read_manifest(folder, ADAPTER_KIND, ADAPTER_FORMAT)


def load_finetuned(name_or_dir: str | Path, model_cfg: ModelConfig, merge: bool = True, trainable: bool = False
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """Load a fine-tuned model: the LoRA adapter on its base model, or a from-scratch model.

    Args:
        name_or_dir: adapter name (under ``adapters/``) or folder.
        model_cfg: the base model to load the adapter onto (and device/dtype); it must be the base the
            adapter was trained on.
        merge: fold the LoRA weights into the base for faster generation.
        trainable: keep the LoRA weights trainable (training continues them; implies no merge).

    Returns:
        (model, tokenizer with left padding, manifest); the model is in eval mode unless ``trainable``.

    Raises:
        WorkbenchError: missing adapter, or an adapter trained on another base model.
    """
    folder = adapter_dir(name_or_dir)
    restore_interrupted_build(folder, ADAPTER_KIND)
    if not (folder / "manifest.json").exists():
        raise WorkbenchError(f"no adapter {str(name_or_dir)!r} at {folder}",
                             "build it with `workbench finetune CORPUS_DIR --mode sft`")
    m = read_adapter_manifest(folder)
    refuse_pickled_weights(folder, f"adapter {folder.name}")
    if m.get("mode") == "scratch":
        return (*_load_full(folder, model_cfg), m)
    from peft import PeftModel

    if m.get("base_model_hash") != model_fingerprint(model_cfg.base_model):
        raise WorkbenchError(
            f"adapter {folder.name} was trained on base model {m.get('base_model')!r}, "
            f"not {model_cfg.base_model!r}",
            f"load it with --base {m.get('base_model')} or retrain it on this base")
    base, tokenizer = load_base_model(model_cfg)
    model = PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)
    if trainable:
        return model, tokenizer, m
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tokenizer, m


def _load_full(folder: Path, model_cfg: ModelConfig) -> tuple[Any, Any]:
    """A from-scratch model folder, on the configured device, tokenizer padded on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(model_cfg.device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=pick_dtype(model_cfg.dtype, device),
                                                 use_safetensors=True).to(device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(folder), model)
    model.eval()
    return model, tokenizer


def load_weights(model_cfg: ModelConfig, adapter: str | Path | None = None, *, progress: bool = True
                 ) -> tuple[Any, Any, dict[str, Any] | None]:
    """The base model (``adapter`` None) or a fine-tuned artifact, loaded for answering (LoRA merged).

    Returns:
        (model in eval mode, tokenizer with left padding, the adapter's manifest or None).
    """
    if adapter is None:
        return (*load_base_model(model_cfg, progress=progress), None)
    return load_finetuned(adapter, model_cfg)


def load_generator(model_cfg: ModelConfig, gen_cfg: GenerateConfig | None = None, adapter: str | Path | None = None,
                   *, progress: bool = True) -> Generator | RemoteGenerator:
    """A generator ready to answer with the base model (``adapter`` None) or an adapter.

    Args:
        model_cfg: the resolved model settings (base model, device, dtype, cpu_dtype, backend).
        gen_cfg: decoding settings (reply budget, temperature, batching, copy constraint).
        adapter: adapter name (under ``adapters/``) or folder.
        progress: report a one-time GGUF conversion on stderr.

    Returns:
        A ``Generator`` over the loaded weights, made ready by ``prepare_for_inference``; with
        ``model_cfg.backend`` openai, a ``RemoteGenerator`` over the served model for that adapter.

    Raises:
        WorkbenchError: a model or adapter that cannot be found or loaded, or an adapter of another base.
    """
    if model_cfg.backend == "openai":  # a served model: prompts are built here, replies come back
        return RemoteGenerator(model_cfg, gen_cfg, served_name(model_cfg, None if adapter is None else str(adapter)))
    model, tokenizer, _ = load_weights(model_cfg, adapter, progress=progress)
    return Generator(prepare_for_inference(model, model_cfg), tokenizer, gen_cfg)
