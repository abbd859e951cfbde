"""Ordinary mistakes never destroy data: names are names, builds replace only their own artifacts, bad
presets and inputs are one line with exit 2, and internal errors leave a log instead of a traceback."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_corpus, tiny_st_dir):
    """WORKBENCH_HOME set to an empty folder, the current folder elsewhere, a user's folder ``victim``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    cwd = tmp_path / "cwd"
    (cwd / "victim").mkdir(parents=True)
    (cwd / "victim" / "notes.txt").write_text("keep", encoding="utf-8")
    monkeypatch.chdir(cwd)
    return {"home": home, "cwd": cwd, "corpus": tiny_corpus, "encoder": tiny_st_dir}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256): compared byte for byte."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("make_name", [
    lambda p: str(p["cwd"] / "victim"),      # an absolute path
    lambda p: "../victim",                   # a parent folder
    lambda p: "../../elsewhere",
    lambda p: "a/b",                         # a path separator
    lambda p: "..",
    lambda p: ".hidden",
    lambda p: "",
    lambda p: "sp ace",
])
def test_index_name_that_is_not_a_plain_name_is_refused(project, make_name):
    before = snapshot(project["cwd"])
    line = one_error(runner.invoke(app, ["index", str(project["corpus"]), "--name", make_name(project),
                                         "--embedder", str(project["encoder"]), "-q"]))
    assert "invalid index name" in line and "plain name" in line and "no '/'" in line
    assert snapshot(project["cwd"]) == before
    assert not (project["home"] / "indices").exists() or not any((project["home"] / "indices").iterdir())
    assert not (project["cwd"].parent / "elsewhere").exists()


def test_plain_name_matching_a_folder_here_goes_under_indices(project):
    before = snapshot(project["cwd"])
    r = runner.invoke(app, ["index", str(project["corpus"]), "--name", "victim", "--embedder",
                            str(project["encoder"]), "-q"])
    assert r.exit_code == 0, r.output
    assert (project["home"] / "indices" / "victim" / "manifest.json").exists()
    assert snapshot(project["cwd"]) == before


def test_a_folder_that_is_not_an_index_is_never_replaced(project):
    theirs = project["home"] / "indices" / "mine"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("keep", encoding="utf-8")
    before = snapshot(theirs)
    for extra in ([], ["--rebuild"]):
        line = one_error(runner.invoke(app, ["index", str(project["corpus"]), "--name", "mine", "--embedder",
                                             str(project["encoder"]), "-q", *extra]))
        assert "is not a workbench index" in line and "refusing to replace it" in line
    assert snapshot(theirs) == before


def test_adapter_and_run_names_are_plain_names(project, tiny_lm_dir):
    before = snapshot(project["cwd"])
    for args in (["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir), "--name", str(project["cwd"] / "victim")],
                 ["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir), "--name", "../victim"],
                 ["eval", str(project["corpus"]), "--name", "../victim"],
                 ["run", str(project["corpus"]), "--name", str(project["cwd"] / "victim")]):
        line = one_error(runner.invoke(app, args))
        assert "name" in line and "plain name" in line, line
    assert snapshot(project["cwd"]) == before


def test_finetune_with_a_plain_name_of_a_folder_here_writes_under_adapters(project, tiny_lm_dir, tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text("finetune:\n  max_steps: 1\n  batch_size: 2\n  lora_r: 4\n  lora_alpha: 8\n  paraphrases: 1\n"
                      "  max_seq_len: 64\n", encoding="utf-8")
    before = snapshot(project["cwd"])
    r = runner.invoke(app, ["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir), "--preset", str(preset),
                            "--name", "victim", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((project["home"] / "adapters" / "victim" / "manifest.json").read_text())["kind"] == "adapter"
    assert snapshot(project["cwd"]) == before


def test_failed_finetune_start_keeps_the_interrupted_run(project, tmp_path):
    """A re-run with a wrong --base fails before the checkpoints of an interrupted run are touched."""
    work = project["home"] / "adapters" / ".corpus-sft.work"
    (work / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (work / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"weights")
    (work / "run.json").write_text("{}", encoding="utf-8")
    before = snapshot(work)
    for extra in ([], ["--restart"], ["--resume"]):
        line = one_error(runner.invoke(app, ["finetune", str(project["corpus"]), "--base",
                                             str(tmp_path / "no-such-model"), *extra]))
        assert "no-such-model" in line
    assert snapshot(work) == before


def test_checkpoints_of_other_settings_are_kept_unless_restart(project, tiny_lm_dir, tmp_path):
    work = project["home"] / "adapters" / ".corpus-sft.work"
    (work / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (work / "run.json").write_text(json.dumps({"finetune": {"epochs": 99}}), encoding="utf-8")
    line = one_error(runner.invoke(app, ["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir)]))
    assert "other settings" in line and "--restart" in line and "step 4" in line
    assert (work / "checkpoints" / "checkpoint-4").is_dir()


def test_work_folder_without_our_stamp_is_not_touched(project, tiny_lm_dir):
    work = project["home"] / "adapters" / ".corpus-sft.work"
    work.mkdir(parents=True)
    (work / "thesis.txt").write_text("mine", encoding="utf-8")
    line = one_error(runner.invoke(app, ["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir),
                                         "--restart"]))
    assert "not a workbench checkpoint folder" in line
    assert (work / "thesis.txt").read_text() == "mine"


@pytest.mark.parametrize("yaml_text, fragments", [
    ("retrieve:\n  k: three\n", ["section retrieve", "key k", "expected an integer", "'three'"]),
    ("ingest:\n  chunk_tokens: \"128\"\n", ["section ingest", "key chunk_tokens", "expected an integer"]),
    ("generate:\n  copy_spans: 1\n", ["section generate", "key copy_spans", "true or false"]),
    ("finetune:\n  learning_rate: fast\n", ["section finetune", "key learning_rate", "a finite number"]),
    ("finetune:\n  learning_rate: .nan\n", ["section finetune", "key learning_rate", "a finite number"]),
    ("finetune:\n  epochs: \"3\"\n", ["section finetune", "key epochs", "a finite number"]),
    ("finetune:\n  save_steps: 0\n", ["section finetune", "save_steps out of range"]),
    ("finetune:\n  warmup_ratio: 5\n", ["section finetune", "warmup_ratio"]),
    ("generate:\n  max_new_tokens: 0\n", ["section generate", "max_new_tokens"]),
    ("generate:\n  temperature: -1\n", ["section generate", "temperature=-1.0 is negative"]),
    ("model:\n  device: gpu\n", ["section model", "unknown device 'gpu'"]),
    ("prompt:\n  few_shot: 9\n", ["section prompt", "few_shot=9"]),
    ("retrieve:\n  k: 0\n", ["section retrieve", "k must be at least 1"]),
    ("retrieve: [1, 2]\n", ["section retrieve", "expected a mapping"]),
    ("retrieve:\n  kk: 3\n", ["section retrieve", "unknown key(s) kk"]),
])
def test_preset_values_are_type_checked_naming_file_section_and_key(project, tmp_path, yaml_text, fragments):
    preset = tmp_path / "bad.yaml"
    preset.write_text(yaml_text, encoding="utf-8")
    line = one_error(runner.invoke(app, ["index", str(project["corpus"]), "--preset", str(preset)]))
    for fragment in [str(preset), *fragments]:
        assert fragment in line, line
    assert not (project["home"] / "indices").exists()  # nothing ran


def test_yaml_exponent_learning_rate_is_the_float_it_means(tmp_path):
    from workbench.core.config import load_preset

    preset = tmp_path / "lr.yaml"
    preset.write_text("finetune:\n  learning_rate: 2e-4\n  epochs: 2\n", encoding="utf-8")
    cfg = load_preset(preset)
    assert cfg.finetune.learning_rate == 2e-4 and isinstance(cfg.finetune.learning_rate, float)
    assert cfg.finetune.epochs == 2.0 and isinstance(cfg.finetune.epochs, float)


def test_every_shipped_preset_loads_typed():
    from workbench.core.config import CONFIG_DIR, RunConfig, load_preset, to_dict

    presets = sorted(CONFIG_DIR.glob("*.yaml"))
    assert presets
    for path in presets:
        assert isinstance(load_preset(path.stem), RunConfig)
        assert to_dict(load_preset(path.stem))["finetune"]["learning_rate"] > 0


def test_broken_links_and_unreadable_files_are_skipped_with_a_reason(project):
    corpus = project["corpus"]
    os.symlink(corpus / "missing.md", corpus / "dangling.md")
    os.symlink(corpus / "loop-b.md", corpus / "loop-a.md")
    os.symlink(corpus / "loop-a.md", corpus / "loop-b.md")
    os.symlink(corpus, corpus / "again")  # a linked folder: a loop if followed
    r = runner.invoke(app, ["ingest", str(corpus), "--out", str(project["home"] / "c.jsonl"), "--tokenizer",
                            "whitespace"])
    assert r.exit_code == 0, r.output
    assert "dangling.md (dangling link" in r.output
    assert "loop-a.md (link loop)" in r.output and "loop-b.md (link loop)" in r.output
    assert "again (linked folder not followed)" in r.output
    r = runner.invoke(app, ["index", str(corpus), "--embedder", str(project["encoder"]), "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["search", "corpus", "buoy weight", "-k", "1"])
    assert r.exit_code == 0 and "1. " in r.output, r.output


def test_question_file_with_invalid_utf8_names_the_line(project):
    qa = project["corpus"] / "qa.jsonl"
    lines = qa.read_bytes().splitlines()
    lines.insert(1, b'{"id": "x", "question": "caf\xe9?", "answers": ["a"]}')
    qa.write_bytes(b"\n".join(lines) + b"\n")
    line = one_error(runner.invoke(app, ["eval", str(project["corpus"]), "--systems", "base"]))
    assert f"{qa}:2: not valid UTF-8" in line


def test_questions_naming_unknown_documents_are_counted(project, capsys):
    from workbench.corpus.qa import load_qa, warn_unknown_docs

    qa = project["corpus"] / "qa.jsonl"
    rows = [json.loads(x) for x in qa.read_text().splitlines()]
    rows[0]["doc"] = "nowhere.md"
    rows[1]["doc"] = "nowhere.md"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert warn_unknown_docs(load_qa(qa), project["corpus"], qa) == 2
    err = capsys.readouterr().err
    assert "warning: 2 question(s)" in err and "nowhere.md" in err


def test_internal_error_is_one_line_with_a_log_file(project, monkeypatch):
    import workbench.retrieval.index

    def boom(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(workbench.retrieval.index, "build_index", boom)
    r = runner.invoke(app, ["index", str(project["corpus"])])
    line = one_error(r, code=1)
    assert "internal error (RuntimeError: something inside broke)" in line
    log = Path(line.split("the traceback is in ")[1].split(" (please")[0])
    assert log.is_file() and "Traceback" in log.read_text() and "boom" in log.read_text()
    assert log.parent == project["home"] / ".workbench" / "logs"


def test_keyboard_interrupt_hint_never_suggests_deleting_checkpoints(project, monkeypatch):
    import workbench.retrieval.index

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workbench.retrieval.index, "build_index", interrupted)
    r = runner.invoke(app, ["index", str(project["corpus"])])
    assert r.exit_code == 130 and "run the same command again" in r.output
    assert "--restart" not in r.output and "rebuild" not in r.output


def test_file_without_read_permission_is_skipped_with_a_reason(tiny_corpus, monkeypatch):
    import workbench.corpus.ingest as ingest

    real_access = os.access
    monkeypatch.setattr(ingest.os, "access", lambda p, mode: Path(p).name != "buoy.md" and real_access(p, mode))
    docs, skipped = ingest.list_documents(tiny_corpus)
    assert ("buoy.md", "no permission to read it") in skipped
    assert all(d.name != "buoy.md" for d in docs)


def test_ingest_never_overwrites_a_users_file_beside_the_chunks(project):
    notes = project["cwd"] / "notes.manifest.json"
    notes.write_text("USER DATA", encoding="utf-8")
    line = one_error(runner.invoke(app, ["ingest", str(project["corpus"]), "--out", "notes.jsonl"]))
    assert "notes.manifest.json exists and is not a chunks manifest" in line
    assert notes.read_text() == "USER DATA" and not (project["cwd"] / "notes.jsonl").exists()


def test_a_name_with_a_trailing_newline_or_too_long_is_refused():
    from workbench.core.errors import WorkbenchError
    from workbench.core.paths import check_name

    for bad in ("demo\n", "x" * 129, "a..b"):
        with pytest.raises(WorkbenchError, match="plain name"):
            check_name(bad, "index")
    assert check_name("x" * 128, "index") == "x" * 128


def test_a_killed_build_of_a_name_holding_old_is_not_restored(tmp_path):
    from workbench.core.artifacts import recover_leftovers

    tmp = tmp_path / ".notes.old-2023.tmp-12345678"  # the half-written build of "notes.old-2023"
    tmp.mkdir()
    (tmp / "half").write_text("x")
    assert recover_leftovers(tmp_path / "notes.old-2023") == [f"removed {tmp.name} (left by a killed build)"]
    assert not (tmp_path / "notes.old-2023").exists() and not tmp.exists()


def test_a_plain_index_name_is_read_under_indices_even_with_a_folder_here(project):
    """``search NAME`` reads indices/NAME; a folder called NAME in the current directory is not an index."""
    here = project["cwd"] / "docs"
    here.mkdir()
    (here / "manifest.json").write_text('{"kind": "web-app"}', encoding="utf-8")
    assert runner.invoke(app, ["index", str(project["corpus"]), "--name", "docs", "--embedder",
                               str(project["encoder"]), "-q"]).exit_code == 0
    r = runner.invoke(app, ["search", "docs", "buoy weight", "-k", "1"])
    assert r.exit_code == 0 and "1. " in r.output, r.output


# --- damaged or untrusted artifacts ------------------------------------------------------------------------

def _built_index(project) -> Path:
    result = runner.invoke(app, ["index", str(project["corpus"]), "--embedder", str(project["encoder"]), "-q"])
    assert result.exit_code == 0, result.output
    return project["home"] / "indices" / "corpus"


def _rebuild_then_search(project) -> None:
    result = runner.invoke(app, ["index", str(project["corpus"]), "--embedder", str(project["encoder"]),
                                 "--rebuild", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "corpus", "buoy anode", "-k", "1"])
    assert result.exit_code == 0 and result.stdout.startswith("1. "), result.output


@pytest.mark.parametrize("damage,named", [
    (lambda f: (f / "faiss.index").write_bytes((f / "faiss.index").read_bytes()[:40]), "faiss.index"),
    (lambda f: (f / "embeddings.npy").write_bytes(b"\x93NUMPY garbage"), "embeddings.npy"),
    (lambda f: (f / "manifest.json").write_text('{"kind": "index", "format_ver', encoding="utf-8"), "manifest.json"),
    (lambda f: (f / "manifest.json").write_text("[1, 2]", encoding="utf-8"), "manifest.json"),
])
def test_a_damaged_index_is_one_line_and_rebuild_replaces_it(project, damage, named):
    damage(_built_index(project))
    line = one_error(runner.invoke(app, ["search", "corpus", "buoy anode"]))
    assert named in line and "--rebuild" in line
    _rebuild_then_search(project)


def _kill_between_renames(folder: Path) -> Path:
    """The state a build killed between its two renames leaves: the previous artifact moved aside as
    ``.NAME.old-*``, the new one complete as ``.NAME.tmp-*``, and no ``NAME``."""
    import shutil

    old = folder.with_name(f".{folder.name}.old-0123abcd")
    shutil.copytree(folder, folder.with_name(f".{folder.name}.tmp-89abcdef"))
    folder.rename(old)
    return old


def test_an_index_whose_swap_was_killed_is_restored_when_read(project):
    folder = _built_index(project)
    old = _kill_between_renames(folder)
    result = runner.invoke(app, ["search", "corpus", "buoy anode", "-k", "1"])
    assert result.exit_code == 0 and result.stdout.startswith("1. "), result.output
    assert (folder / "manifest.json").is_file() and not old.exists()
    _rebuild_then_search(project)  # the next build clears the rest
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".corpus.")]


def test_an_adapter_whose_swap_was_killed_is_restored_when_read(project, tiny_lm_dir):
    from app_project import build_tiny_adapter, write_corpus

    from workbench.answering.loader import load_finetuned
    from workbench.core.config import ModelConfig

    folder = build_tiny_adapter(project["home"], tiny_lm_dir, write_corpus(project["home"]))
    _kill_between_renames(folder)
    model, _, manifest = load_finetuned("tiny-sft", ModelConfig(base_model=str(tiny_lm_dir), device="cpu"))
    assert manifest["name"] == "tiny-sft" and (folder / "adapter_model.safetensors").is_file()


def test_search_never_offers_a_build_in_progress_as_an_index(project):
    folder = _built_index(project)
    import shutil

    shutil.copytree(folder, folder.with_name(".other.tmp-0123abcd"))
    line = one_error(runner.invoke(app, ["search", "nope", "buoy"]))
    assert "known: corpus (" in line and ".other" not in line


class _RunsCode:
    """Unpickling this creates a folder: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_pickled_weights_in_an_adapter_are_refused_before_any_load(project, tiny_lm_dir):
    import pickle

    from app_project import build_tiny_adapter, write_corpus

    folder = build_tiny_adapter(project["home"], tiny_lm_dir, write_corpus(project["home"]))
    marker = project["home"] / "pwned"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_RunsCode(marker)))
    line = one_error(runner.invoke(app, ["export", "tiny-sft", "--merged", str(project["home"] / "out")]))
    assert "adapter_model.bin is a pickled weights file" in line and "safetensors" in line
    assert not marker.exists()


def test_a_base_model_folder_with_only_pickled_weights_is_refused(tiny_lm_dir, tmp_path):
    import pickle
    import shutil

    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig
    from workbench.core.errors import WorkbenchError

    base = tmp_path / "pickled-base"
    shutil.copytree(tiny_lm_dir, base)
    (base / "model.safetensors").unlink()
    (base / "pytorch_model.bin").write_bytes(pickle.dumps(_RunsCode(tmp_path / "pwned")))
    with pytest.raises(WorkbenchError, match=r"pytorch_model\.bin is a pickled weights file"):
        load_base_model(ModelConfig(base_model=str(base), device="cpu"))
    assert not (tmp_path / "pwned").exists()


# --- accepted silently no more: one line, exit 2 ---------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [
    (["--max-steps", "0"], "--max-steps 0: give a number of optimizer steps >= 1"),
    (["--max-steps", "-1"], "--max-steps -1: give a number of optimizer steps >= 1"),
    (["--resume", "--restart"], "--resume and --restart contradict each other"),
])
def test_finetune_options_that_cannot_mean_anything_are_refused(project, tiny_lm_dir, args, fragment):
    line = one_error(runner.invoke(app, ["finetune", str(project["corpus"]), "--base", str(tiny_lm_dir), *args]))
    assert fragment in line
    assert not (project["home"] / "adapters").exists()


def test_a_preset_with_max_steps_zero_is_refused(tmp_path):
    from workbench.core.config import load_preset
    from workbench.core.errors import WorkbenchError

    (tmp_path / "p.yaml").write_text("finetune:\n  max_steps: 0\n", encoding="utf-8")
    with pytest.raises(WorkbenchError, match="max_steps=0"):
        load_preset(tmp_path / "p.yaml")


def test_ask_with_a_zero_reply_budget_is_refused(project):
    line = one_error(runner.invoke(app, ["ask", str(project["corpus"]), "How heavy is the buoy?",
                                         "--max-new-tokens", "0"]))
    assert "max_new_tokens" in line and ">= 1" in line


def test_a_numeric_question_id_names_the_line_and_says_ids_are_strings(project):
    qa = project["corpus"] / "qa.jsonl"
    lines = qa.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["id"] = 7
    qa.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n", encoding="utf-8")
    from workbench.core.errors import WorkbenchError
    from workbench.corpus.qa import load_qa

    with pytest.raises(WorkbenchError) as e:
        load_qa(qa)
    assert "qa.jsonl:1: 'id' is 7, not a string (ids are strings)" in str(e.value)
    assert '"id": "7"' in str(e.value)


def test_a_linked_file_outside_the_corpus_is_skipped_with_a_reason(project, tmp_path):
    corpus = project["corpus"]
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\nThe vault code is 7319.\n", encoding="utf-8")
    os.symlink(secret, corpus / "leak.md")
    os.symlink(corpus / "buoy.md", corpus / "buoy-again.md")  # a link inside the corpus is read
    out = project["home"] / "c.jsonl"
    r = runner.invoke(app, ["ingest", str(corpus), "--out", str(out), "--tokenizer", "whitespace"])
    assert r.exit_code == 0, r.output
    assert "leak.md (linked file outside the corpus folder not followed)" in r.output
    text = out.read_text(encoding="utf-8")
    assert "7319" not in text and "buoy-again.md" in text


def test_workbench_home_naming_a_file_is_refused(project, monkeypatch, tmp_path):
    afile = tmp_path / "home.txt"
    afile.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_HOME", str(afile))
    line = one_error(runner.invoke(app, ["search", "corpus", "buoy"]))
    assert f"WORKBENCH_HOME={afile} is a file, not a folder" in line
    assert afile.read_text(encoding="utf-8") == "not a folder"
