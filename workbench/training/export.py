"""``workbench export ADAPTER --merged OUT``: the base model with a LoRA adapter folded in, as a plain
safetensors model folder that transformers (``from_pretrained``) and vLLM (``vllm serve OUT``) load.

The weights keep the dtype the base model is stored in (a bf16 base gives a bf16 export; the embedded
SmolLM2, converted to fp32, gives fp32). OUT is written like every artifact: into a hidden sibling, renamed
into place on success; an existing OUT is replaced only when an earlier export wrote it (its
``manifest.json`` says ``merged-model``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.answering.models import pick_dtype, resolve_base_model
from workbench.core.artifacts import (
    atomic_dir,
    check_replaceable,
    hash_tree,
    human_size,
    make_manifest,
    recover_leftovers,
    tree_size,
    write_json,
)
from workbench.core.config import ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.paths import check_name
from workbench.training.adapters import adapter_dir, load_finetuned, read_adapter_manifest

KIND = "merged-model"
FORMAT_VERSION = 1
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ExportResult:
    """A written merged model folder."""

    path: Path
    adapter: str
    base_model: str
    seconds: float
    bytes: int
    dtype: str

    def summary(self) -> str:
        return (f"wrote {self.path}: {self.base_model} with adapter {self.adapter} merged "
                f"({self.dtype}, {human_size(self.bytes)}, {self.seconds:.1f} s); load it with "
                f"AutoModelForCausalLM.from_pretrained('{self.path}') or `vllm serve {self.path}`")


def export_merged(adapter: str, out: Path | str, base: str | None = None) -> ExportResult:
    """Merge ``adapter`` into its base model and save the result to ``out``.

    Args:
        adapter: adapter name (under ``adapters/``) or folder.
        out: the folder to write (its last part must be a plain name).
        base: the base model (default: the one the adapter's manifest names).

    Returns:
        The written folder, with size and time.

    Raises:
        WorkbenchError: no such adapter, a bad OUT name, OUT holding something an export did not write, or
            a base model other than the adapter's.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    check_name(out.name, "export folder")
    check_replaceable(out, KIND)  # before the model loads: refuse early, touch nothing
    folder = adapter_dir(adapter)
    if not (folder / "manifest.json").exists():
        raise WorkbenchError(f"no adapter {adapter!r} at {folder}", "build it with `workbench finetune CORPUS_DIR`")
    m = read_adapter_manifest(folder)
    base_model = base or m.get("base_model")
    if not base_model:
        raise WorkbenchError(f"adapter {folder.name}'s manifest names no base model", "pass --base MODEL")
    dtype = stored_dtype(folder if m.get("mode") == "scratch" else resolve_base_model(base_model, progress=False))
    # merged in float32 (no rounding between the LoRA product and the base), saved in the base's dtype
    model, tokenizer, _ = load_finetuned(folder, ModelConfig(base_model=base_model, device="cpu", dtype="float32"),
                                         merge=True)
    model = model.to(pick_dtype(dtype, "cpu"))
    recover_leftovers(out)
    with atomic_dir(out, kind=KIND) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.padding_side = "right"  # the usual default for other programs; workbench sets left itself
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "manifest.json", make_manifest(
            KIND, FORMAT_VERSION, adapter=folder.name, adapter_path=str(folder.resolve()),
            adapter_hash=hash_tree(folder, [p for p in folder.iterdir() if p.suffix == ".safetensors"]),
            mode=m.get("mode"), base_model=base_model, dtype=dtype, seconds=round(time.perf_counter() - t0, 1)))
    return ExportResult(out, folder.name, base_model if m.get("mode") != "scratch" else "(trained from scratch)",
                        time.perf_counter() - t0, tree_size(out), dtype)


def stored_dtype(folder: Path) -> str:
    """The dtype a model folder stores its weights in, as its ``config.json`` says (float32 when it does not
    say, or names a dtype other than float32, bfloat16 or float16)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return name if name in _DTYPES else "float32"
