"""One model loader for every face: evaluation, `workbench ask`, the app's chat, serve and MCP answer a
question identically, with copying on and off, each loading its weights its own way through
``workbench.answering.loader``."""
from __future__ import annotations

from pathlib import Path

import pytest

QUESTIONS = ("How much does the Tern-3 weigh?", "Who leads Kestrelmark Instruments?")
SYSTEMS = ("base", "rag", "ft", "ft_rag")
ADAPTER, INDEX = "tiny-sft", "tiny"


@pytest.fixture(scope="module")
def project(tmp_path_factory, app_lm_dir, tiny_embedder_dir) -> Path:
    from serve_project import build_project

    root = tmp_path_factory.mktemp("one-loader")
    lm, st = app_lm_dir, tiny_embedder_dir
    (root / "project").mkdir()
    return build_project(root / "project", lm, st)["root"], lm, st


@pytest.fixture(params=[True, False], ids=["copy", "free"])
def preset(request, project, monkeypatch) -> tuple[Path, bool]:
    from serve_project import write_preset

    root, lm, st = project
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    path = write_preset(root, lm, st, copy_spans=request.param, max_new_tokens=10)
    path = path.rename(root / f"tiny-{request.param}.yaml")
    monkeypatch.setenv("WORKBENCH_PRESET", str(path))
    return path, request.param


def _evaluation(cfg, system: str, question: str) -> str:
    from workbench.corpus.qa import QAItem
    from workbench.evaluation.systems import SYSTEMS as REGISTRY
    from workbench.evaluation.systems import SystemContext, open_retriever, run_system

    ctx = SystemContext(cfg=cfg, adapters={"ft": ADAPTER}, retriever=open_retriever(INDEX, cfg, progress=False))
    return run_system(REGISTRY[system], ctx, [QAItem(id="q", question=question)]).answers[0].text


def _ask(preset: Path, system: str, question: str) -> str:
    from typer.testing import CliRunner

    from workbench.cli import app

    r = CliRunner().invoke(app, ["ask", INDEX, question, "--system", system, "--adapter", ADAPTER,
                                 "--preset", str(preset), "--no-decline"])
    assert r.exit_code == 0, r.output
    return r.stdout.splitlines()[0]


def _app(system: str, question: str) -> str:
    from workbench.app import engine

    name, cfg = engine.app_preset()
    settings = engine.ChatSettings.from_preset(cfg, name)
    loaded = engine.get_model(settings, ADAPTER if system.startswith("ft") else None)
    retriever = engine.get_retriever(INDEX) if system.endswith("rag") else None
    return engine.answer_once(engine.Turn(system, question), loaded, retriever, settings).answer


def _serve(pool, system: str, question: str) -> str:
    from workbench.serving.pool import route_for

    return pool.answer(question, route_for(system, ADAPTER, INDEX)).text


def _mcp(tools, system: str, question: str) -> str:
    return tools.ask(question, system, index=INDEX, adapter=ADAPTER).answer


def test_every_face_answers_identically_through_the_one_loader(preset):
    from workbench.core.config import load_preset
    from workbench.serving.mcp_server import Tools
    from workbench.serving.pool import ModelPool

    path, copy = preset
    cfg = load_preset(path)
    assert cfg.generate.copy_spans is copy
    pool = ModelPool(cfg, [INDEX], [ADAPTER])
    tools = Tools(cfg)
    answers: dict[str, set[str]] = {}
    for system in SYSTEMS:
        for question in QUESTIONS:
            faces = {"eval": _evaluation(cfg, system, question), "ask": _ask(path, system, question),
                     "app": _app(system, question), "serve": _serve(pool, system, question),
                     "mcp": _mcp(tools, system, question)}
            assert len(set(faces.values())) == 1, (system, question, faces)
            assert faces["eval"], (system, question)  # a reply, the same one
            answers.setdefault(system, set()).add(faces["eval"])
    # the weights differ by face-independent system: the adapter changes what the base model says
    assert {a for s in ("base", "rag") for a in answers[s]} != {a for s in ("ft", "ft_rag") for a in answers[s]}


def test_the_app_answers_with_the_presets_settings(preset, monkeypatch):
    """The chat's settings are the preset's (reply budget, copying, k, model settings), not defaults of its own."""
    from workbench.app import engine
    from workbench.core.config import load_preset

    path, copy = preset
    name, cfg = engine.app_preset()
    assert name == str(path) and cfg == load_preset(path)
    settings = engine.ChatSettings.from_preset(cfg, name)
    assert (settings.generate.max_new_tokens, settings.generate.copy_spans, settings.retrieve.k) == (10, copy, 2)
    assert settings.model == cfg.model
    monkeypatch.delenv("WORKBENCH_PRESET")
    name, quick = engine.app_preset()
    assert name == "quick" and quick == load_preset("quick")
    assert engine.ChatSettings.from_preset(quick).generate.max_new_tokens == quick.generate.max_new_tokens == 24


def test_the_app_loads_with_the_presets_cpu_dtype(project, monkeypatch, tmp_path):
    """The app's models are made ready to answer as the preset says (``prepare_for_inference``), as
    evaluation's are: here bfloat16 weights on CPU."""
    import torch

    from workbench.app import engine

    root, lm, _ = project
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    preset = tmp_path / "bf16.yaml"
    preset.write_text(f"model:\n  base_model: {lm}\n  device: cpu\n  cpu_dtype: bfloat16\n", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_PRESET", str(preset))
    name, cfg = engine.app_preset()
    for adapter in (None, ADAPTER):
        loaded = engine.get_model(engine.ChatSettings.from_preset(cfg, name), adapter)
        assert loaded.model.workbench_cpu_dtype == "bfloat16"
        assert next(loaded.model.parameters()).dtype == torch.bfloat16
