"""`workbench ingest` through the CLI: the happy path, each bad input by exit code and message, and
the start-up cost of `workbench --help`."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.records import read_chunks

runner = CliRunner()


def ingest(*args: str):
    return runner.invoke(app, ["ingest", *map(str, args)])


def assert_user_error(result, *fragments: str) -> str:
    """Exit code 2, one `error:` line naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_ingest_writes_chunks_manifest_and_summary(tiny_corpus, tmp_path):
    out = tmp_path / "out" / "chunks.jsonl"
    result = ingest(tiny_corpus, "--out", out, "--chunk-tokens", "64", "--overlap", "8")
    assert result.exit_code == 0, result.output
    assert "read 3 document(s)" in result.output and f"to {out}" in result.output
    chunks = read_chunks(out)
    assert {c.doc for c in chunks} == {"buoy.md", "page.html", "sub/people.txt"}
    assert all(c.n_tokens <= 64 for c in chunks) and chunks[0].id == "buoy.md#0"
    manifest = json.loads((tmp_path / "out" / "chunks.manifest.json").read_text())
    assert manifest["kind"] == "chunks" and manifest["config"]["chunk_tokens"] == 64
    assert manifest["config"]["overlap_tokens"] == 8 and manifest["report"]["n_chunks"] == len(chunks)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_default_output_path(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ingest(tiny_corpus, "--tokenizer", "whitespace")
    assert result.exit_code == 0, result.output
    assert len(read_chunks(tmp_path / "corpus.chunks.jsonl")) > 0


def test_missing_directory(tmp_path):
    assert_user_error(ingest(tmp_path / "nope"), "corpus folder", "nope", "not found")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert_user_error(ingest(tmp_path / "a.txt"), "is not a directory")


def test_empty_corpus(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "qa.jsonl").write_text("")
    assert_user_error(ingest(tmp_path / "corpus"), "no documents in", "has no files", ".md")


def test_corpus_of_unsupported_files(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "data.csv").write_text("a,b\n")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    line = assert_user_error(ingest(root), "no documents in", "2 file(s) skipped")
    assert "data.csv (unsupported extension '.csv')" in line and "photo.png" in line


def test_all_binary_corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    (root / "b.md").write_bytes(bytes(range(256)) * 10)
    (root / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    line = assert_user_error(ingest(root), "none of the 2 document(s)", "could be read")
    assert "a.txt (binary content)" in line and "b.md (binary content)" in line


def test_invalid_utf8_is_decoded_with_a_warning(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\nThe Tern-3 buoy weighs 42 kg.", encoding="utf-8")
    (root / "broken.txt").write_bytes("Grüße aus Orrvik. ".encode() + b"Broken \xff byte. " + "Ende.".encode())
    (root / "legacy.txt").write_bytes("Le café crème coûte 3 €, très léger.".encode("cp1252"))
    result = ingest(root, "--out", tmp_path / "c.jsonl")
    assert result.exit_code == 0, result.output
    assert "warning: broken.txt: 1 invalid UTF-8 byte sequence(s) replaced with U+FFFD" in result.output
    assert "warning: legacy.txt: not valid UTF-8; decoded as cp1252" in result.output
    texts = " ".join(c.text for c in read_chunks(tmp_path / "c.jsonl"))
    assert "Broken \ufffd byte." in texts and "café crème" in texts


def test_unsupported_extensions_are_listed_as_skipped(tiny_corpus, tmp_path):
    (tiny_corpus / "table.csv").write_text("a,b\n")
    (tiny_corpus / "sub" / "image.png").write_bytes(b"\x89PNG")
    (tiny_corpus / "empty.txt").write_text("")
    result = ingest(tiny_corpus, "--out", tmp_path / "c.jsonl")
    assert result.exit_code == 0, result.output
    assert ("skipped 3 file(s): empty.txt (empty file); sub/image.png (unsupported extension '.png'); "
            "table.csv (unsupported extension '.csv')") in result.output
    assert "read 3 document(s)" in result.output


def test_failed_run_leaves_existing_output_untouched(tmp_path):
    (tmp_path / "corpus").mkdir()
    out = tmp_path / "chunks.jsonl"
    out.write_text("previous chunks\n")
    (tmp_path / "chunks.manifest.json").write_text('{"kind": "chunks"}')  # an earlier ingest's output
    assert_user_error(ingest(tmp_path / "corpus", "--out", out), "no documents")
    assert out.read_text() == "previous chunks\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks.jsonl", "chunks.manifest.json", "corpus"]


@pytest.mark.parametrize("args, fragment", [
    (["--chunk-tokens", "4"], "chunk_tokens=4 is too small"),
    (["--chunk-tokens", "64", "--overlap", "64"], "overlap_tokens must be"),
    (["--language", "zz"], "language 'zz'"),
    (["--tokenizer", "/no/such/tokenizer"], "could not be loaded"),
])
def test_bad_options(tiny_corpus, tmp_path, args, fragment):
    out = tmp_path / "c.jsonl"
    assert_user_error(ingest(tiny_corpus, "--out", out, *args), fragment)
    assert not out.exists()


def test_out_is_a_directory(tiny_corpus, tmp_path):
    assert_user_error(ingest(tiny_corpus, "--out", tmp_path), "is a directory")


HEAVY = ("torch", "transformers", "spacy", "faiss", "peft", "sentence_transformers", "ragas", "matplotlib",
         "streamlit", "datasets", "bs4", "tokenizers")


def test_help_starts_fast_without_heavy_imports():
    code = (f"import sys, workbench.cli; print([m for m in {HEAVY!r} if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
    cpu, wall = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"], capture_output=True, text=True)
        wall.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        assert run.returncode == 0 and "ingest" in run.stdout
    # CPU time is what the command costs; wall time also counts the other processes on a busy machine
    assert min(cpu) < 0.5, cpu
    assert min(wall) < 3.0, wall
