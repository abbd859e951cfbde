"""The systems registry is declared in one place: every system, those `workbench update` trains included,
is known to evaluation without importing anything else first."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_update_systems_are_declared_without_importing_update():
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from workbench.evaluation.systems import default_adapters, resolve_systems\n"
            "specs = resolve_systems(['ft_continue', 'ft_continue_rag', 'ft_replay', 'ft_retrain_rag'])\n"
            "print([(s.name, s.adapter, s.retrieval) for s in specs])\n"
            "print(default_adapters(Path('corpora/demo'))['ft_continue'])\n"
            "print(any(m.startswith('workbench.update') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == str([("ft_continue", "ft_continue", False), ("ft_continue_rag", "ft_continue", True),
                            ("ft_replay", "ft_replay", False), ("ft_retrain_rag", "ft_retrain", True)])
    assert lines[1] == "demo-update-continue"  # the name `workbench update` gives it by default
    assert lines[2] == "False"


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_lm_dir, tiny_st_dir) -> dict[str, Path]:
    from serve_project import build_project

    return build_project(tmp_path_factory.mktemp("registry"), tiny_lm_dir, tiny_st_dir)


def test_eval_names_the_update_command_for_a_missing_update_adapter(project, monkeypatch):
    from serve_project import one_error_line
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.setenv("WORKBENCH_HOME", str(project["root"]))
    r = CliRunner().invoke(app, ["eval", str(project["corpus"]), "--systems", "ft_continue",
                                 "--preset", str(project["preset"])])
    line = one_error_line(r)
    assert "system 'ft_continue' needs adapter 'tiny-update-continue'" in line
    assert "workbench update" in line


def test_eval_scores_an_update_system_by_its_adapter_name(project, monkeypatch):
    from typer.testing import CliRunner

    from workbench.cli import app

    root = project["root"]
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    shutil.copytree(root / "adapters" / "tiny-sft", root / "adapters" / "tiny-update-continue")
    r = CliRunner().invoke(app, ["eval", str(project["corpus"]), "--systems", "ft,ft_continue", "--name", "upd",
                                 "--preset", str(project["preset"])])
    assert r.exit_code == 0, r.output
    summary = json.loads((root / "runs" / "upd" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["systems"]) == {"ft", "ft_continue"}
    assert summary["config"]["adapters"] == {"ft": "tiny-sft", "ft_continue": "tiny-update-continue"}
