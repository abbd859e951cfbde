"""Corpora in other languages: detection, per-language BM25, Portuguese chunking, synthesis and answer cleaning."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import PT_DOCS
from rag_fakes import StubEmbedder, make_chunks

from workbench.core.config import IndexConfig, IngestConfig, RetrieveConfig
from workbench.core.language import TermAnalyzer, analyzer_for, covers, detect_language, language_mix, stopwords

PT_TEXT = ("O Reno é um rio europeu que começa no cantão suíço de Graubünden e deságua no Mar do Norte, na "
           "Holanda. A maior cidade do rio é Colônia, na Alemanha, com mais de um milhão de habitantes.")
EN_TEXT = ("The Rhine is a European river that begins in the Swiss canton of Graubünden and flows into the North "
           "Sea in the Netherlands. Its largest city is Cologne, Germany, with over a million inhabitants.")


# --- detection --------------------------------------------------------------------------------------------

def test_detect_language_tells_portuguese_from_english():
    assert detect_language(PT_TEXT)[0] == "pt"
    assert detect_language(EN_TEXT)[0] == "en"
    assert detect_language(PT_TEXT)[1] > 0.9


def test_detect_language_declines_text_too_short_to_tell():
    assert detect_language("Reno 1.230 km") == (None, 0.0)


def test_language_mix_weights_by_text_and_flags_a_mixed_corpus():
    mix = language_mix([("pt", 9000), ("pt", 1000), ("en", 2000), (None, 50)])
    assert mix.language == "pt"
    assert mix.shares == pytest.approx({"pt": 10 / 12, "en": 2 / 12})
    assert mix.documents == {"pt": 2, "en": 1}
    assert mix.mixed
    assert not language_mix([("pt", 9500), ("en", 500)]).mixed
    assert language_mix([]).language == "en"  # nothing identified: the default


def _write(root, docs):
    root.mkdir()
    for name, text in docs.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_ingestion_detects_the_corpus_language_and_reports_a_mixed_corpus(tmp_path):
    from workbench.corpus.ingest import ingest_corpus

    pt = ingest_corpus(_write(tmp_path / "pt", PT_DOCS), IngestConfig(tokenizer="whitespace"), progress=False)
    assert pt.report.language == "pt" and pt.report.languages == {"pt": 1.0}
    assert "language: pt" in pt.report.summary()
    assert not any("mixed" in w for w in pt.report.warnings)

    mixed = ingest_corpus(_write(tmp_path / "mixed", {"a.txt": PT_TEXT * 2, "b.txt": EN_TEXT}),
                          IngestConfig(tokenizer="whitespace"), progress=False)
    assert mixed.report.language == "pt" and set(mixed.report.languages) == {"pt", "en"}
    assert any("mixed-language corpus" in w and "en (1 document" in w for w in mixed.report.warnings)

    told = ingest_corpus(tmp_path / "mixed", IngestConfig(tokenizer="whitespace", language="en"), progress=False)
    assert told.report.language == "en" and told.report.languages == {}  # the setting overrides detection


# --- chunking with a blank Portuguese pipeline -------------------------------------------------------------

def test_portuguese_sentences_keep_abbreviations_whole():
    from workbench.corpus.chunking import SentenceSplitter

    text = "O Sr. Silva chegou em 12 de maio. Ele saiu às 10h."
    sents = [text[a:b] for a, b in SentenceSplitter("pt").split(text)]
    assert sents == ["O Sr. Silva chegou em 12 de maio.", "Ele saiu às 10h."]
    assert len(SentenceSplitter("en").split(text)) == 3  # the English rules cut after "Sr."


def test_portuguese_chunks_end_at_sentence_ends(tmp_path):
    from workbench.corpus.ingest import ingest_corpus

    text = " ".join(["O Sr. Silva visitou a cidade de Varsóvia no inverno."] * 12)
    res = ingest_corpus(_write(tmp_path / "c", {"a.txt": text}),
                        IngestConfig(tokenizer="whitespace", chunk_tokens=40, overlap_tokens=0), progress=False)
    assert len(res.chunks) > 1
    assert all(c.text.endswith("inverno.") and c.text.startswith("O Sr. Silva") for c in res.chunks)


# --- BM25 for the language ---------------------------------------------------------------------------------

def test_stopwords_live_in_one_place():
    from workbench.answering import answer

    assert {"de", "da", "onde", "quantos"} <= stopwords("pt")
    assert "the" in stopwords("en") and "de" not in stopwords("en")
    assert not hasattr(answer, "_STOPWORDS")  # answering asks workbench.core.language, as BM25 does


def test_portuguese_analyzer_stems_drops_stopwords_and_folds_accents():
    a = analyzer_for("pt")
    assert a.analyze("As inflamações") == a.analyze("a inflamação") == ["inflam"]
    assert a.analyze("Varsóvia") == a.analyze("Varsovia")
    assert TermAnalyzer().analyze("As inflamações") == ["as", "inflamações"]
    assert analyzer_for("en") == TermAnalyzer(language="en")  # English keeps plain words (measured)


def _pt_index(analyzer):
    from workbench.retrieval.index import index_from_chunks, passage_text

    chunks = make_chunks(list(PT_DOCS.values()), doc_of=lambda i: list(PT_DOCS)[i])
    emb = StubEmbedder().encode([passage_text(c) for c in chunks])
    return index_from_chunks(chunks, emb, analyzer=analyzer)


def test_a_portuguese_query_finds_the_inflected_form():
    from workbench.retrieval.index import sparse_search

    query = "inflamações dos tecidos"  # the document says "inflamação", and has no "dos"
    stemmed = _pt_index(analyzer_for("pt"))
    _, ids = sparse_search(stemmed, query, 3)
    assert [stemmed.chunks[i].doc for i in ids] == ["imunidade.txt"]
    plain = _pt_index(TermAnalyzer())
    _, ids = sparse_search(plain, query, 3)
    assert "imunidade.txt" not in [plain.chunks[i].doc for i in ids]  # only "dos" matches, elsewhere


def test_the_index_records_its_analyzer_and_queries_use_it(tmp_path):
    from workbench.retrieval.index import BM25_ANALYSIS_VERSION, build_from_chunks, load_index, sparse_search

    chunks = make_chunks(list(PT_DOCS.values()), doc_of=lambda i: list(PT_DOCS)[i])
    build_from_chunks(chunks, tmp_path / "pt", IndexConfig(), embedder=StubEmbedder(), language="pt",
                      languages={"pt": 1.0}, progress=False)
    m = json.loads((tmp_path / "pt" / "manifest.json").read_text())
    assert m["language"] == "pt" and m["languages"] == {"pt": 1.0}
    assert m["bm25"]["analysis_version"] == BM25_ANALYSIS_VERSION
    assert m["bm25"]["stem"] == "portuguese" and m["bm25"]["stopwords"] and m["bm25"]["fold_accents"]
    index = load_index(tmp_path / "pt")
    assert index.language == "pt" and index.analyzer == analyzer_for("pt")
    _, ids = sparse_search(index, "inflamações", 1)
    assert index.chunks[ids[0]].doc == "imunidade.txt"


def test_an_index_from_before_language_analysis_is_stale(tmp_path):
    from workbench.retrieval.index import _why_stale, build_from_chunks, index_status, load_index

    chunks = make_chunks(list(PT_DOCS.values()), doc_of=lambda i: list(PT_DOCS)[i])
    build_from_chunks(chunks, tmp_path / "old", IndexConfig(), embedder=StubEmbedder(), language="pt",
                      progress=False)
    path = tmp_path / "old" / "manifest.json"
    m = json.loads(path.read_text())
    assert _why_stale(m) is None
    for key in ("language", "languages"):
        del m[key]
    m["bm25"] = {"k1": 1.5, "b": 0.75, "method": "lucene", "tokenizer": "nfkc-casefold-words"}  # as v1 wrote it
    path.write_text(json.dumps(m))
    assert "BM25 text analysis" in _why_stale(m)
    assert "BM25 text analysis" in index_status(tmp_path / "old")
    old = load_index(tmp_path / "old")  # still readable: queries get the plain analysis it was built with
    assert old.analyzer == TermAnalyzer() and old.language == "en"


def test_fusion_weighs_an_embedder_that_does_not_cover_the_language_less():
    from workbench.retrieval.retrieve import UNCOVERED_DENSE_WEIGHT, Retriever, rrf_fuse

    pt = _pt_index(analyzer_for("pt"))
    pt.manifest["embedder"] = "all-MiniLM-L6-v2"
    assert Retriever(pt, RetrieveConfig()).dense_weight() == UNCOVERED_DENSE_WEIGHT < 1
    assert Retriever(pt, RetrieveConfig(dense_weight=1.0)).dense_weight() == 1.0
    pt.manifest["embedder"] = "BAAI/bge-m3"
    assert Retriever(pt, RetrieveConfig()).dense_weight() == 1.0
    en = _pt_index(TermAnalyzer())
    en.manifest["embedder"] = "all-MiniLM-L6-v2"
    assert Retriever(en, RetrieveConfig()).dense_weight() == 1.0
    # dense ranks row 1 first, sparse row 2: halving dense's weight lets sparse win
    assert rrf_fuse([[1, 2], [2, 1]], 60, [0.5, 1.0])[0][0] == 2
    assert covers("all-MiniLM-L6-v2", "pt") is False and covers("my/own-model", "pt") is None


# --- synthesis templates per language --------------------------------------------------------------------

def _synth(text, lang):
    from workbench.training.synth import synthesize_rules

    return synthesize_rules(make_chunks([text]), lang, max_per_chunk=10)


def _no_english_or_cloze(questions):
    for q in questions:
        assert not re.search(r"\b(how many|when|who|what|where)\b", q, re.I), q
        assert "Fill in" not in q and "Complete a lacuna" not in q, q


def test_portuguese_synthesis_fronts_quando_quantos_and_por_quem():
    qa = _synth("A Universidade de Varsóvia foi fundada em 1816 pelo rei. A cidade tem 1.700.000 habitantes "
                "nos dias de hoje. O Jardim Krasiński foi remodelado por Franciszek Szanior no século XIX.", "pt")
    questions = {q.question: q.answer for q in qa if q.style == "question"}
    assert questions["Quando a Universidade de Varsóvia foi fundada pelo rei?"] == "1816"
    assert questions["Quantos habitantes a cidade tem nos dias de hoje?"] == "1.700.000"
    assert questions["Por quem o Jardim Krasiński foi remodelado no século XIX?"] == "Franciszek Szanior"
    assert questions["Quando o Jardim Krasiński foi remodelado por Franciszek Szanior?"] == "século XIX"
    assert all(q.answer not in q.question for q in qa)
    _no_english_or_cloze(q.question for q in qa)


def test_portuguese_dates_open_with_quando_and_counts_agree_in_gender():
    qa = _synth("Em 1946, a Polonia venceu o campeonato nacional de futebol. Ocorreram aproximadamente 80 "
                "avulsões nos últimos séculos da história do delta.", "auto")  # auto: detected as pt
    questions = {q.question: q.answer for q in qa if q.style == "question"}
    assert questions["Quando a Polonia venceu o campeonato nacional de futebol?"] == "1946"
    assert questions["Quantas avulsões ocorreram nos últimos séculos da história do delta?"] == "80"
    assert all(q.answer not in q.question for q in qa)
    _no_english_or_cloze(q.question for q in qa)


def test_english_synthesis_keeps_english_templates():
    qa = _synth("The Tern-3 buoy was released in 2019 by the Kestrelmark team in Orrvik harbour.", "en")
    assert any(q.question.startswith("When") or " when" in q.question for q in qa if q.style == "question")
    assert all(q.question.startswith("Fill in the blank: ") for q in qa if q.style == "cloze")


# --- answering in the corpus language ------------------------------------------------------------------------

def test_portuguese_answer_cleaning():
    from workbench.answering.postprocess import clean_answer
    from workbench.core.text import is_abstention

    assert clean_answer("A maior cidade do rio Reno é Colônia", "Qual é a maior cidade do rio Reno?",
                        language="pt") == "Colônia"
    for reply in ("Não sei", "Os trechos não mencionam isso", "não há informação"):
        assert is_abstention(reply)
    assert not is_abstention("Varsóvia")


def test_copy_sources_ban_portuguese_function_words_as_starts():
    from workbench.answering.prompt import copy_sources
    from workbench.core.config import PromptConfig
    from workbench.core.records import Hit

    hits = [Hit(c, 1.0, 1) for c in make_chunks([PT_DOCS["rio.txt"]])]
    (sources,) = copy_sources(["Onde deságua o Reno?"], [hits], cfg=PromptConfig(copy_sentences=0), language="pt")
    assert {"no", "da", "onde", "deságua", "reno"} <= sources[0].no_start


def test_copy_sentences_are_ranked_by_shared_stems_when_the_embedder_lacks_the_language():
    from workbench.answering.prompt import copy_sources
    from workbench.core.config import PromptConfig
    from workbench.core.records import Hit

    hits = [Hit(c, 1.0, 1) for c in make_chunks([PT_DOCS["rio.txt"], PT_DOCS["imunidade.txt"]])]
    # the stub embedder matches surface words only ("o" of "O Reno ..."); shared stems find the sentence
    (best,) = copy_sources(["Que prostaglandina dilata o vaso?"], [hits], StubEmbedder(name="all-MiniLM-L6-v2"),
                           language="pt")
    # one sentence (copy_sentences_uncovered) and the abstention phrase
    assert [s.text for s in best[:-1]] == ["As prostaglandinas dilatam os vasos sanguíneos e causam febre."]
    (covered,) = copy_sources(["Que prostaglandina dilata o vaso?"], [hits], StubEmbedder(), language="pt")
    assert len(covered) - 1 == PromptConfig().copy_sentences  # an embedder not known to lack Portuguese


# --- retrieval recall on a small Portuguese corpus (the real embedded MiniLM) ---------------------------------

@pytest.mark.slow
def test_portuguese_retrieval_recall_with_the_embedded_embedder(pt_corpus, tmp_path, monkeypatch):
    from workbench.corpus.qa import load_qa
    from workbench.evaluation.retrieval_eval import retrieval_metrics
    from workbench.retrieval.index import build_index, load_index
    from workbench.retrieval.retrieve import Retriever

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    items = load_qa(pt_corpus / "qa.jsonl")
    built = build_index(pt_corpus, IndexConfig(), IngestConfig(), name="pt-small", progress=False)
    index = load_index(built.path)
    assert index.language == "pt"
    questions = [q.question for q in items]
    recall = {mode: retrieval_metrics(items, Retriever(index, RetrieveConfig(mode=mode)).search_batch(
        questions, k=1))["answer_recall@1"] for mode in ("hybrid", "sparse", "dense")}
    assert recall["hybrid"] >= 0.85 and recall["sparse"] >= 0.85
    plain = index_with_plain_bm25(index)
    plain_recall = retrieval_metrics(items, Retriever(plain, RetrieveConfig(mode="sparse")).search_batch(
        questions, k=1))["answer_recall@1"]
    assert recall["sparse"] > plain_recall  # stemming and stopwords are what find these inflections


def index_with_plain_bm25(index):
    from workbench.retrieval.index import index_from_chunks

    return index_from_chunks(index.chunks, np.asarray(index.embeddings), manifest={"embedder": "x"},
                             analyzer=TermAnalyzer())


def test_doctor_says_which_languages_each_preset_covers():
    from workbench.cli.diagnose import _languages

    lines = {c.name: c for c in _languages()}
    assert {"languages (quick)", "languages (full)", "languages (multilingual)"} <= set(lines)
    quick = lines["languages (quick)"].detail
    assert "all-MiniLM-L6-v2 (en)" in quick and "SmolLM2-135M-Instruct (en)" in quick and "multilingual" in quick
    assert "many languages" in lines["languages (multilingual)"].detail
    assert all(c.status == "ok" for c in lines.values())
