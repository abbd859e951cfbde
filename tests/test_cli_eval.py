"""`workbench eval` / `workbench run` on bad input: exit code 2 and one clear line; the judge being down
is a warning, not a failure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_fakes import passage, table_system
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.systems import SYSTEMS

runner = CliRunner()

GOOD = {"How heavy is the Tern-3?": "42 kg", "Who leads Kestrelmark?": "Ilse Varnholt"}
ROWS = [
    {"id": "q1", "question": "How heavy is the Tern-3?", "answers": ["42 kg"], "doc": "doc.md", "kind": "paraphrase"},
    {"id": "q2", "question": "Who leads Kestrelmark?", "answers": ["Ilse Varnholt"], "kind": "unseen"},
    {"id": "q3", "question": "What is the Tern-9 top speed?", "answers": [], "answerable": False,
     "kind": "unanswerable"},
]


def _corpus(tmp_path: Path, lines: list[str] | None = None) -> Path:
    root = tmp_path / "corpus"
    root.mkdir(exist_ok=True)
    (root / "doc.md").write_text("The Tern-3 buoy weighs 42 kg. Ilse Varnholt leads Kestrelmark.\n")
    lines = lines if lines is not None else [json.dumps(r) for r in ROWS]
    (root / "qa.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _eval(*args: str):
    return runner.invoke(app, ["eval", *args])


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("lines, expected", [
    ([json.dumps(ROWS[0]), json.dumps(ROWS[1]), '{"id": "q3", "question": "oops"'],
     r"qa.jsonl:3: malformed JSON"),
    ([json.dumps(ROWS[0]), json.dumps({**ROWS[1], "colour": "red"})],
     r"qa.jsonl:2: unknown field\(s\) colour \(allowed fields: .*question"),
    ([json.dumps({"id": "q1", "answers": ["x"]})], r"qa.jsonl:1: missing or empty 'question'"),
    ([json.dumps(ROWS[0]), json.dumps(ROWS[1]), json.dumps({**ROWS[2], "id": "q1"})],
     r"qa.jsonl:3: duplicate id 'q1' \(first on line 1\)"),
    ([json.dumps({**ROWS[0], "split": "train"})], r"has no eval questions"),
])
def test_bad_question_files(tmp_path, lines, expected):
    import re

    line = _one_error_line(_eval(str(_corpus(tmp_path, lines))))
    assert re.search(expected, line), line


def test_bad_question_file_through_run_too(tmp_path):
    corpus = _corpus(tmp_path, [json.dumps(ROWS[0]), "not json"])
    line = _one_error_line(runner.invoke(app, ["run", str(corpus)]))
    assert "qa.jsonl:2: malformed JSON" in line


def test_missing_paths(tmp_path):
    assert "corpus folder" in _one_error_line(_eval(str(tmp_path / "nope")))
    line = _one_error_line(_eval(str(_corpus(tmp_path)), "--qa", str(tmp_path / "missing.jsonl")))
    assert "missing.jsonl not found" in line


def test_missing_adapter_says_which_command_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    corpus = _corpus(tmp_path)
    line = _one_error_line(_eval(str(corpus), "--systems", "base,ft"))
    assert "system 'ft' needs adapter 'corpus-sft'" in line
    assert f"workbench finetune {corpus} --mode sft --name corpus-sft" in line
    line = _one_error_line(_eval(str(corpus), "--systems", "ft_rag", "--adapter", "mine"))
    assert "needs adapter 'mine'" in line and "--name mine" in line


def test_other_bad_options(tmp_path):
    corpus = _corpus(tmp_path)
    assert "unknown system 'gpt5'" in _one_error_line(_eval(str(corpus), "--systems", "base,gpt5"))
    assert "limit=0 leaves no questions" in _one_error_line(_eval(str(corpus), "--limit", "0"))
    assert "preset 'huge' not found" in _one_error_line(_eval(str(corpus), "--preset", "huge"))
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    for name in (str(keep), "../keep", "a/b", ".hidden", ""):
        line = _one_error_line(runner.invoke(app, ["run", str(corpus), "--name", name]))
        assert "invalid run name" in line and "plain name" in line, line
    assert (keep / "notes.txt").read_text() == "mine"


def test_judge_down_is_a_warning_and_the_rest_is_scored(tmp_path, monkeypatch):
    monkeypatch.setitem(SYSTEMS, "good", table_system(
        "good", GOOD, retrieval=True, hits={ROWS[0]["question"]: [passage("doc.md", "The Tern-3 buoy weighs 42 kg.")]}))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "project"))
    out = tmp_path / "project" / "runs" / "judged"
    result = _eval(str(_corpus(tmp_path)), "--systems", "good", "--name", "judged",
                   "--judge-url", "http://127.0.0.1:9/v1")
    assert result.exit_code == 0, result.output
    assert "warning: judge endpoint http://127.0.0.1:9/v1 is unreachable" in result.stderr
    assert "everything else is scored" in result.stderr
    s = json.loads((out / "summary.json").read_text())
    good = s["systems"]["good"]
    assert good["f1"] == 1.0 and good["abstain_unanswerable"] == 1.0
    assert good["ragas"]["rouge_l"] == 1.0
    for m in ("faithfulness", "answer_relevancy", "factual_correctness"):
        assert m not in good["ragas"] and "unreachable" in good["ragas_skipped"][m]
    assert "F1 [95% CI]" in result.stderr and "unanswerable" in result.stderr  # the report's summary table
    assert result.stdout.strip().endswith(str(out))
