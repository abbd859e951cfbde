"""Every face declines as ``ask`` does: serve's pool and the MCP tools go through
``evaluation.abstention.calibrators_for`` and ``answering.confidence.apply_calibrator``, so a run that calibrated
``rag`` on this index makes all of them decline the same answer, and naming the same run; a run on other
content is never used."""
from __future__ import annotations

import json

import pytest
from serve_project import build_project
from typer.testing import CliRunner

QUESTION = "What does the Tern-3 weigh?"


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_lm_dir, tiny_st_dir):
    return build_project(tmp_path_factory.mktemp("decline") / "proj", tiny_lm_dir, tiny_st_dir)


def _write_run(root, name: str, created: str, fingerprints: dict, intercept: float) -> None:
    """A run whose calibrator for ``rag`` gives every answer confidence sigmoid(intercept), threshold 0.5."""
    from workbench.answering.confidence import FEATURES

    n = len(FEATURES)
    cal = {"features": list(FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "weights": [0.0] * n,
           "intercept": intercept, "threshold": 0.5, "applied": True, "reason": "calibrated: test"}
    folder = root / "runs" / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(
        {"created": created, "systems": {"rag": {}},
         "abstention": {**fingerprints, "systems": {"rag": {"calibrator": cal, "retrieval": True}}}}))


@pytest.fixture(scope="module")
def calibrated(project):
    """The project with a newer run on its index that declines everything, and a newest one on other text."""
    import os

    from workbench.evaluation.abstention import target_fingerprints

    os.environ["WORKBENCH_HOME"] = str(project["root"])
    try:
        fps = target_fingerprints("tiny")
    finally:
        os.environ.pop("WORKBENCH_HOME")
    assert fps["corpus_fingerprint"] and fps["index_fingerprint"]
    _write_run(project["root"], "older", "2025-01-01", fps, 5.0)
    _write_run(project["root"], "calibrated", "2026-01-01", fps, -5.0)
    _write_run(project["root"], "elsewhere", "2027-01-01",
               {"corpus_fingerprint": "other-text", "index_fingerprint": "other-index"}, 5.0)
    return project


def _cfg(project):
    from workbench.core.config import load_preset

    return load_preset(str(project["preset"]))


def test_ask_serve_and_mcp_decline_alike(calibrated, monkeypatch):
    from workbench.cli import app
    from workbench.serving.mcp_server import Tools
    from workbench.serving.pool import ModelPool, route_for

    monkeypatch.setenv("WORKBENCH_HOME", str(calibrated["root"]))
    res = CliRunner().invoke(app, ["ask", "tiny", QUESTION, "--system", "rag", "--preset", str(calibrated["preset"])])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("I don't know")
    assert "calibrated by run calibrated" in res.stdout

    pool = ModelPool(_cfg(calibrated), indices=["tiny"])
    served = pool.answer(QUESTION, route_for("rag", None, "tiny"))
    assert served.text == "I don't know" and "calibrated by run calibrated" in served.declined
    assert served.confidence == pytest.approx(1 / (1 + 2.718281828 ** 5), rel=1e-3)
    assert served.calibration.startswith("declines below confidence 0.50, calibrated by run calibrated")

    mcp = Tools(_cfg(calibrated)).ask(QUESTION, system="rag", index="tiny")
    assert mcp.answer == "I don't know" and mcp.declined == served.declined
    assert mcp.confidence == pytest.approx(served.confidence) and mcp.calibration == served.calibration


def test_without_a_run_on_this_content_nothing_is_declined_and_the_answer_says_so(calibrated, monkeypatch):
    from workbench.serving.pool import ModelPool, route_for

    monkeypatch.setenv("WORKBENCH_HOME", str(calibrated["root"]))
    pool = ModelPool(_cfg(calibrated), indices=["tiny"])
    closed_book = pool.answer(QUESTION, route_for("base"))  # no index: no corpus to match a run by
    assert closed_book.declined is None
    assert closed_book.calibration.startswith("no evaluation run on this corpus and index calibrated base")
