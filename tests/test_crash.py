"""Builds killed with SIGKILL, and two builds of one artifact at once: the previous artifact still loads,
leftovers are reported by ``doctor`` and tidied by the next build, fine-tuning resumes from its last
checkpoint, and a second concurrent build is refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_st_dir):
    home = tmp_path / "home"
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    corpus = tmp_path / "big"
    corpus.mkdir()
    for i in range(400):  # enough chunks that a build takes a moment to kill it in
        (corpus / f"doc{i:03d}.md").write_text(
            f"# Device {i}\n\nThe device number {i} weighs {i % 50 + 3} kg and runs for {i % 9 + 1} hours. "
            f"It was built in {1990 + i % 30} by team {i % 17}.\n", encoding="utf-8")
    sub_env = dict(os.environ, WORKBENCH_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false")
    return {"home": home, "corpus": corpus, "encoder": tiny_st_dir, "env": sub_env}


def start(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", *args], env=env["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(what, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None:
            pytest.fail(f"the build ended (exit {proc.returncode}) before it could be killed: {proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("timed out waiting for the build")
        time.sleep(0.005)


def ok(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def index_args(env, *extra: str) -> list[str]:
    return ["index", str(env["corpus"]), "--name", "big", "--embedder", str(env["encoder"]), "-q", *extra]


def test_killed_index_rebuild_keeps_the_previous_index(env):
    ok(*index_args(env))
    indices = env["home"] / "indices"
    manifest = json.loads((indices / "big" / "manifest.json").read_text())

    proc = start(env, *index_args(env, "--rebuild"))
    wait_for(lambda: any(p.name.startswith(".big.tmp-") for p in indices.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    leftovers = [p.name for p in indices.iterdir() if p.name.startswith(".big.")]
    assert leftovers
    assert json.loads((indices / "big" / "manifest.json").read_text()) == manifest
    assert "1. " in ok("search", "big", "device number 7 weight", "-k", "1")  # the previous index loads

    report = ok("doctor", "--no-models")
    assert "leftover" in report and leftovers[0] in report
    assert "stale lock" in report  # the killed build's lock

    ok(*index_args(env))
    assert sorted(p.name for p in indices.iterdir()) == ["big"]
    assert "leftovers" in ok("doctor", "--no-models") and "stale lock" not in ok("doctor", "--no-models")


def test_build_killed_between_its_renames_restores_the_previous_index(env):
    ok(*index_args(env))
    indices = env["home"] / "indices"
    os.replace(indices / "big", indices / ".big.old-0123abcd")  # the state between the two renames
    (indices / ".big.tmp-89abcdef").mkdir()
    out = ok(*index_args(env)).lower()
    assert sorted(p.name for p in indices.iterdir()) == ["big"]
    assert "current, reused" in out


def test_second_concurrent_build_of_one_index_is_refused(env):
    lock = env["home"] / ".workbench" / "locks" / "index-big.lock"
    first = start(env, *index_args(env, "--rebuild"))
    wait_for(lambda: lock.exists() and lock.stat().st_size > 0, first)  # the first build holds it
    second = subprocess.run([sys.executable, "-m", "workbench.cli", *index_args(env, "--rebuild")], env=env["env"],
                            capture_output=True, text=True, timeout=300)
    first_out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_out
    assert second.returncode == 2, second.stdout + second.stderr
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "index big is already being built by process" in lines[0], second.stderr
    assert "wait for that build to finish" in lines[0]
    assert lock.read_text() == ""  # released
    assert "current, reused" in ok(*index_args(env))


def test_lock_of_a_live_process_refuses_and_of_a_dead_one_is_taken_over(env):
    from workbench.core.errors import WorkbenchError
    from workbench.core.locks import acquire_locks, release_locks

    taken = acquire_locks(["index-x"])
    with pytest.raises(WorkbenchError, match="index x is already being built by process"):
        acquire_locks(["index-x"])
    release_locks(taken)
    lock = env["home"] / ".workbench" / "locks" / "index-x.lock"
    lock.write_text(json.dumps({"job": None, "pid": 1, "since": time.time()}))  # a name, but no flock: free
    release_locks(acquire_locks(["index-x"]))
    assert lock.read_text() == ""  # released locks are emptied, never deleted


def test_killed_finetune_resumes_from_its_last_checkpoint(env, tiny_corpus, tiny_lm_dir, tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text("finetune:\n  max_steps: 40\n  batch_size: 2\n  lora_r: 4\n  lora_alpha: 8\n  paraphrases: 1\n"
                      "  max_seq_len: 64\n  save_steps: 2\n", encoding="utf-8")
    args = ["finetune", str(tiny_corpus), "--base", str(tiny_lm_dir), "--preset", str(preset), "--name", "t", "-q"]
    checkpoints = env["home"] / "adapters" / ".t.work" / "checkpoints"
    proc = start(env, *args)
    wait_for(lambda: (checkpoints / "checkpoint-6").is_dir(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (env["home"] / "adapters" / "t").exists()
    assert "interrupted" in ok("doctor", "--no-models")

    out = ok(*args, "--resume")
    m = json.loads((env["home"] / "adapters" / "t" / "manifest.json").read_text())
    assert m["resumed_from_step"] >= 4 and m["global_step"] == 40, (m, out)
    assert not (env["home"] / "adapters" / ".t.work").exists()


def test_a_build_started_by_the_app_runs_under_the_apps_lock(env, monkeypatch):
    from workbench.core.errors import WorkbenchError
    from workbench.core.locks import JOB_ENV, acquire_locks, artifact_lock, is_held, release_locks

    app_locks = acquire_locks(["index-x"], job_id="job-1", pid=os.getpid())  # the app, before it starts the CLI
    with pytest.raises(WorkbenchError, match="already being built by job job-1"):
        with artifact_lock("index", "x"):
            pass
    monkeypatch.setenv(JOB_ENV, "job-1")  # the CLI process the app started
    with artifact_lock("index", "x"):
        pass
    assert is_held(app_locks[0].path)  # still the app's until its job ends
    release_locks(app_locks)
