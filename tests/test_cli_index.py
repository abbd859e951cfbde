"""`workbench index` and `workbench search` through the CLI: build, reuse, update, and bad input (exit 2)."""
from __future__ import annotations

import re
import shutil

import pytest
from tiny_models import build_tiny_encoder
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_corpus, tiny_st_dir):
    """A project folder, the tiny corpus, and a private copy of the tiny encoder (tests may replace it)."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "project"))
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_st_dir, encoder)
    return tiny_corpus, encoder


def _ok(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _error(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_index_then_search_then_update(env, tmp_path):
    corpus, encoder = env
    out = _ok("index", str(corpus), "--embedder", str(encoder), "-q")
    assert re.search(r"index corpus: built (\d+) chunks \(encoded \1, reused 0 embeddings\), kind flat "
                     r"\(auto: \1 chunks < 20,000, exact search\)", out), out
    assert (tmp_path / "project" / "indices" / "corpus" / "manifest.json").exists()
    n = int(re.search(r"built (\d+) chunks", out).group(1))

    assert "index corpus: current, reused" in _ok("index", str(corpus), "--embedder", str(encoder), "-q")

    out = _ok("search", "corpus", "Tern-3 buoy anode", "-k", "2")
    lines = out.splitlines()
    assert re.match(r"1\. \d\.\d{4}  buoy\.md > ", lines[0]) and lines[2].startswith("2. "), out
    assert len([ln for ln in lines if re.match(r"\d\. ", ln)]) == 2
    assert "economy" in _ok("search", "corpus", "economy class flights", "--mode", "sparse", "-k", "1").lower()

    (corpus / "buoy.md").write_text("# Tern-3 buoy\n\nThe Tern-3 buoy now weighs 44 kg.\n", encoding="utf-8")
    line = _error("search", "corpus", "buoy weight")
    assert "index 'corpus' is stale: the corpus" in line and "--rebuild" in line
    out = _ok("index", str(corpus), "--embedder", str(encoder), "-q")
    encoded = int(re.search(r"encoded (\d+)", out).group(1))
    assert 1 <= encoded < n + 1 and "44 kg" in _ok("search", "corpus", "buoy weight", "-k", "1")
    out = _ok("index", str(corpus), "--embedder", str(encoder), "--rebuild", "-q")
    assert re.search(r"built (\d+) chunks \(encoded \1,", out)


def test_search_bad_input(env):
    corpus, encoder = env
    _ok("index", str(corpus), "--embedder", str(encoder), "--name", "tiny", "-q")
    assert "the query is empty (type a question)" in _error("search", "tiny", "  ")
    assert "characters long; the limit is 2,000" in _error("search", "tiny", "word " * 600)
    assert re.search(r"no index named 'nope' .*known: tiny.*workbench index CORPUS_DIR --name nope",
                     _error("search", "nope", "buoy"))
    assert "invalid index name" in _error("search", "..", "buoy")
    assert "unknown retrieval mode" in _error("search", "tiny", "buoy", "--mode", "fuzzy")
    assert "k must be at least 1" in _error("search", "tiny", "buoy", "-k", "0")

    # the embedder files change under the index: refuse, and say how to fix it
    shutil.rmtree(encoder)
    build_tiny_encoder(encoder, seed=7, hidden=48)
    line = _error("search", "tiny", "buoy")
    assert "was built with embedder" in line and "dim 32" in line and "dim 48" in line and "--rebuild" in line
    assert "buoy" in _ok("search", "tiny", "buoy", "--mode", "sparse").lower()  # BM25 needs no embedder


def test_index_bad_input(env, tmp_path):
    corpus, encoder = env
    line = _error("index", str(corpus), "--embedder", "no-such-org/no-such-model")
    assert "embedder 'no-such-org/no-such-model' is not installed or cached" in line
    assert "does not exist" in _error("index", str(tmp_path / "missing"), "--embedder", str(encoder))
    assert "unknown index kind 'annoy'" in _error("index", str(corpus), "--kind", "annoy")
    assert "ivfpq needs at least 1,000 chunks" in _error("index", str(corpus), "--kind", "ivfpq",
                                                         "--embedder", str(encoder), "-q")
    assert not (tmp_path / "project" / "indices" / "corpus").exists()
    assert "invalid index name" in _error("index", str(corpus), "--name", "bad name!", "--embedder", str(encoder))
