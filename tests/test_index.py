"""Index building: kind choice, files and manifest, incremental re-encoding, reuse, staleness, atomicity."""
from __future__ import annotations

import json

import numpy as np
import pytest
from rag_fakes import StubEmbedder, filler_texts, make_chunks

from workbench.core.artifacts import hash_tree
from workbench.core.config import IndexConfig, IngestConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import Chunk
from workbench.retrieval.index import (
    FORMAT_VERSION,
    build_from_chunks,
    build_index,
    choose_kind,
    default_index_name,
    index_status,
    load_index,
    passage_text,
    resolve_index_dir,
)

INGEST = IngestConfig(tokenizer="whitespace", chunk_tokens=32, overlap_tokens=0)


def test_choose_kind_by_size():
    assert choose_kind(19_999)[0] == "flat"
    assert choose_kind(20_000)[0] == "hnsw"
    assert choose_kind(1_000_000)[0] == "hnsw"
    assert choose_kind(1_000_001)[0] == "ivfpq"
    assert choose_kind(10, "hnsw") == ("hnsw", "requested")
    assert "19,999 chunks < 20,000" in choose_kind(19_999)[1]


def test_build_writes_files_and_manifest(tmp_path):
    emb = StubEmbedder(dim=64)
    chunks = make_chunks(filler_texts(30))
    res = build_from_chunks(chunks, tmp_path / "idx", IndexConfig(), embedder=emb, corpus=tmp_path,
                            corpus_fingerprint="abc123", ingest_cfg=INGEST, progress=False)
    folder = tmp_path / "idx"
    assert (res.reused, res.n_chunks, res.n_encoded, res.kind) == (False, 30, 30, "flat")
    assert {p.name for p in folder.iterdir()} == {"chunks.jsonl", "embeddings.npy", "faiss.index", "bm25",
                                                 "manifest.json", "config.json"}
    m = json.loads((folder / "manifest.json").read_text())
    assert m["kind"] == "index" and m["format_version"] == FORMAT_VERSION
    assert (m["n_chunks"], m["n_docs"], m["dim"], m["faiss_kind"], m["kind_requested"]) == (30, 30, 64, "flat", "auto")
    assert m["embedder"] == "stub-hash" and m["embedder_fingerprint"] == emb.fingerprint
    assert m["corpus"] == str(tmp_path.resolve()) and m["corpus_fingerprint"] == "abc123"
    assert m["ingest_config"]["chunk_tokens"] == 32 and m["index_config"]["kind"] == "auto"
    assert m["n_encoded"] == 30 and m["n_reused"] == 0 and m["seconds"] > 0
    assert "faiss-cpu" in m["libraries"] and "bm25s" in m["libraries"]
    assert json.loads((folder / "config.json").read_text())["ingest"]["tokenizer"] == "whitespace"
    # no temporary siblings are left behind
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    idx = load_index(folder)
    assert isinstance(idx.embeddings, np.memmap) and idx.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(idx.embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(idx.embeddings[3], emb.encode([passage_text(chunks[3])])[0], rtol=1e-6)
    assert [c.id for c in idx.chunks] == [c.id for c in chunks] and idx.faiss.ntotal == 30


def test_incremental_update_encodes_only_new_or_changed_chunks(tmp_path):
    def chunks(texts):
        return make_chunks(texts, doc_of=lambda i: "notes.md")

    texts = filler_texts(20)
    build_from_chunks(chunks(texts), tmp_path / "idx", IndexConfig(), embedder=StubEmbedder(), progress=False)
    before = np.array(load_index(tmp_path / "idx").embeddings)

    emb = StubEmbedder()
    texts2 = texts[:5] + ["a brand new chunk about the kettle"] + texts[6:] + ["another new one", texts[0]]
    res = build_from_chunks(chunks(texts2), tmp_path / "idx", IndexConfig(), embedder=emb, progress=False)
    assert emb.encoded == ["notes\na brand new chunk about the kettle", "notes\nanother new one"]
    assert (res.n_encoded, res.n_chunks) == (2, 22)
    after = load_index(tmp_path / "idx")
    np.testing.assert_array_equal(after.embeddings[:5], before[:5])     # copied, not re-encoded
    np.testing.assert_array_equal(after.embeddings[21], before[0])      # same text elsewhere reuses its vector
    np.testing.assert_allclose(after.embeddings[5], emb.encode(["notes\na brand new chunk about the kettle"])[0])

    emb3 = StubEmbedder()
    res = build_from_chunks(chunks(texts2), tmp_path / "idx", IndexConfig(), embedder=emb3, rebuild=True,
                            progress=False)
    assert res.n_encoded == 22 and len(emb3.encoded) == 21  # duplicate text encoded once

    other = StubEmbedder(name="other-stub")  # another embedder: nothing can be reused
    assert build_from_chunks(chunks(texts2), tmp_path / "idx", IndexConfig(), embedder=other,
                             progress=False).n_encoded == 22


def test_passage_text_adds_document_name_and_missing_heading():
    c = Chunk("p/tern-3_spec.md#2", "It weighs 42 kg.", "p/tern-3_spec.md", (0, 16), heading="Physical")
    assert passage_text(c) == "tern 3 spec\nPhysical\nIt weighs 42 kg."
    c2 = Chunk("a.md#0", "Physical\n\nIt weighs 42 kg.", "a.md", (0, 26), heading="Physical")
    assert passage_text(c2) == "a\nPhysical\n\nIt weighs 42 kg."


class _Boom(StubEmbedder):
    def iter_encode(self, texts, progress=False, role="passage", desc=""):
        it = super().iter_encode(texts, progress, role, desc)
        yield next(it)
        raise RuntimeError("disk on fire")


def test_exception_mid_build_leaves_previous_index_intact(tmp_path):
    folder = tmp_path / "idx"
    build_from_chunks(make_chunks(filler_texts(20)), folder, IndexConfig(), embedder=StubEmbedder(), progress=False)
    digest = hash_tree(folder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_from_chunks(make_chunks(filler_texts(30, seed=1)), folder, IndexConfig(), embedder=_Boom(),
                          rebuild=True, progress=False)
    assert hash_tree(folder) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    assert len(load_index(folder)) == 20


@pytest.mark.parametrize("kind, n", [("hnsw", 300), ("ivfpq", 1200)])
def test_approximate_kinds_find_exact_copies(tmp_path, kind, n):
    emb = StubEmbedder(dim=64)
    texts = [f"{t} extra {i} {i * 7}" for i, t in enumerate(filler_texts(n, seed=3))]
    chunks = make_chunks(texts)
    res = build_from_chunks(chunks, tmp_path / kind, IndexConfig(kind=kind), embedder=emb, progress=False)
    assert res.kind == kind and res.kind_reason == "requested"
    idx = load_index(tmp_path / kind)
    from workbench.retrieval.index import dense_search

    probe = [0, 17, n // 2, n - 1]
    scores, ids = dense_search(idx, emb.encode([passage_text(chunks[i]) for i in probe]), 5)
    assert ids[:, 0].tolist() == probe
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-4)  # IVF-PQ candidates are rescored exactly
    assert json.loads((tmp_path / kind / "manifest.json").read_text())["faiss_params"]


def test_ivfpq_refuses_tiny_corpus(tmp_path):
    with pytest.raises(WorkbenchError, match="ivfpq needs at least 1,000 chunks"):
        build_from_chunks(make_chunks(filler_texts(50)), tmp_path / "x", IndexConfig(kind="ivfpq"),
                          embedder=StubEmbedder(), progress=False)
    assert not (tmp_path / "x").exists()


def test_load_missing_bad_and_broken_indices(tmp_path, home):
    with pytest.raises(WorkbenchError, match=r"no index named 'nope'.*workbench index CORPUS_DIR --name nope"):
        load_index("nope")
    with pytest.raises(WorkbenchError, match="invalid index name"):
        resolve_index_dir("..bad name")
    assert index_status("nope") == "missing"

    folder = home / "indices" / "demo"
    build_from_chunks(make_chunks(filler_texts(10)), folder, IndexConfig(), embedder=StubEmbedder(), progress=False)
    assert len(load_index("demo")) == 10 and index_status("demo") == "current"
    with pytest.raises(WorkbenchError, match=r"no index named 'other'.*known: demo"):
        load_index("other")

    m = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**m, "n_chunks": 11}))
    with pytest.raises(WorkbenchError, match="inconsistent.*--rebuild"):
        load_index("demo")
    (folder / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(WorkbenchError, match="format 99"):
        load_index("demo")
    assert index_status("demo").startswith("stale: ")
    (folder / "manifest.json").write_text(json.dumps(m))
    (folder / "faiss.index").unlink()
    with pytest.raises(WorkbenchError, match=r"incomplete \(missing faiss.index\)"):
        load_index("demo")


def test_no_chunks_and_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="no chunks"):
        build_from_chunks([], tmp_path / "x", IndexConfig(), embedder=StubEmbedder(), progress=False)
    dup = [Chunk("a#0", "one", "a", (0, 3)), Chunk("a#0", "two", "a", (4, 7))]
    with pytest.raises(WorkbenchError, match="not unique"):
        build_from_chunks(dup, tmp_path / "x", IndexConfig(), embedder=StubEmbedder(), progress=False)


def test_build_index_reuses_updates_and_detects_stale_corpus(tiny_corpus, home):
    emb = StubEmbedder()
    first = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=emb, progress=False)
    assert first.name == "corpus" and first.path == home / "indices" / "corpus" and not first.reused
    assert first.n_encoded == first.n_chunks > 0
    assert json.loads((first.path / "manifest.json").read_text())["n_docs"] == 3

    again = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=StubEmbedder(), progress=False)
    assert again.reused and again.n_encoded == 0 and again.n_chunks == first.n_chunks
    assert index_status("corpus", tiny_corpus) == "current"

    with open(tiny_corpus / "sub" / "people.txt", "a", encoding="utf-8") as f:
        f.write("\nThe new office in Tromsvik opens in 2026.\n")
    assert index_status("corpus", tiny_corpus).startswith("stale: the corpus")
    assert index_status("corpus").startswith("stale: the corpus")  # the corpus recorded in the manifest
    with pytest.raises(WorkbenchError, match=r"stale: the corpus .* changed.*--rebuild"):
        load_index("corpus", tiny_corpus)
    assert len(load_index("corpus")) == first.n_chunks  # without a corpus to check, it still loads

    emb2 = StubEmbedder()
    upd = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=emb2, progress=False)
    assert not upd.reused and 1 <= upd.n_encoded < upd.n_chunks
    assert all("people" in t or "Tromsvik" in t or "Kestrelmark" in t for t in emb2.encoded)
    assert index_status("corpus", tiny_corpus) == "current"

    other_chunking = IngestConfig(tokenizer="whitespace", chunk_tokens=16, overlap_tokens=0)
    assert index_status("corpus", tiny_corpus, ingest_cfg=other_chunking) == "stale: the chunking settings changed"
    forced = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=StubEmbedder(), rebuild=True, progress=False)
    assert not forced.reused and forced.n_encoded == forced.n_chunks
    hnsw = build_index(tiny_corpus, IndexConfig(kind="hnsw"), INGEST, embedder=StubEmbedder(), progress=False)
    assert hnsw.kind == "hnsw" and hnsw.n_encoded == 0  # kind changed: rebuilt from cached embeddings


def test_default_index_name_is_a_safe_folder_name(tmp_path):
    assert default_index_name(tmp_path / "demo") == "demo"
    assert default_index_name(tmp_path / "My Corpus (v2)") == "My-Corpus-v2"
    assert default_index_name(tmp_path / ".hidden") == "hidden"


def test_build_index_bad_corpus(tmp_path, home):
    with pytest.raises(WorkbenchError, match="does not exist"):
        build_index(tmp_path / "missing", IndexConfig(), INGEST, embedder=StubEmbedder(), progress=False)


def test_index_cut_by_an_older_chunker_is_stale_and_rebuilt(tiny_corpus, home):
    built = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=StubEmbedder(), progress=False)
    manifest = json.loads((built.path / "manifest.json").read_text())
    manifest["chunker_version"] = 1
    (built.path / "manifest.json").write_text(json.dumps(manifest))
    assert index_status("corpus", tiny_corpus, ingest_cfg=INGEST) == \
        "stale: its chunks were cut by an older version of the chunker"
    again = build_index(tiny_corpus, IndexConfig(), INGEST, embedder=StubEmbedder(), progress=False)
    assert not again.reused and index_status("corpus", tiny_corpus, ingest_cfg=INGEST) == "current"
