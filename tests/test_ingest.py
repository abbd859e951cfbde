"""Ingestion: cleaning, decoding, dedup, sentence splitting and chunking (unit and property tests)."""
from __future__ import annotations

import unicodedata
from importlib.util import find_spec
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.core.config import IngestConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import read_chunks
from workbench.corpus import chunking
from workbench.corpus.chunking import SentenceSplitter, chunk_document, get_splitter, load_token_counter
from workbench.corpus.cleaning import assemble, clean_document, clean_text
from workbench.corpus.dedup import NearDuplicateIndex, jaccard_estimate, minhash
from workbench.corpus.ingest import corpus_fingerprint, decode_bytes, ingest_corpus, list_documents, write_chunks

_HAS_PYPDF = find_spec("pypdf") is not None
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def splitter() -> SentenceSplitter:
    return get_splitter("en")


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    """A tiny byte-level BPE tokenizer folder: not additive, so chunk counts take the exact path."""
    from tiny_models import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("bpe")
    build_tiny_tokenizer().save_pretrained(path)
    return path


# --- cleaning -----------------------------------------------------------------------------------------

def test_clean_text_normalises_unicode_controls_and_whitespace():
    raw = "Cafe\u0301\x00 \t costs\u00a0 3\u200b €.\r\n\r\n\r\n\r\nNext\x07 line  \n  here\x0c"
    assert clean_text(raw) == "Café costs 3 €.\n\nNext line\nhere"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@settings(max_examples=200, deadline=None)
def test_clean_text_properties(raw):
    out = clean_text(raw)
    assert clean_text(out) == out  # idempotent
    assert unicodedata.is_normalized("NFC", out)
    assert out == out.strip()
    assert "  " not in out and "\n\n\n" not in out and "\t" not in out and "\r" not in out
    assert not any(unicodedata.category(ch) == "Cc" and ch != "\n" for ch in out)


def test_markdown_headings_fences_links_and_front_matter():
    md = ("---\ntitle: x\n---\n# Tern-3 buoy\n\nThe buoy weighs **42 kg** ([spec](http://x)).\n\n"
          "Battery\n-------\n\nRuns on a `9 Ah` pack.\n\n```\n# not a heading\n```\n\n---\n\n## Maintenance ##\n\n"
          "| a | b |\n|---|---|\n| 1 | 2 |\n")
    doc = clean_document(md, "markdown")
    assert [s.heading for s in doc.sections] == ["Tern-3 buoy", "Battery", "Maintenance"]
    assert "title: x" not in doc.text and "http" not in doc.text and "**" not in doc.text
    assert "The buoy weighs 42 kg (spec)." in doc.text and "Runs on a 9 Ah pack." in doc.text
    assert "# not a heading" in doc.text and "---" not in doc.text
    assert "| a | b |\n| 1 | 2 |" in doc.text
    for s in doc.sections:
        assert doc.text[s.start:s.end].startswith(s.heading)


def test_rst_and_text_underlined_headings():
    rst = ("=========\nKOS notes\n=========\n\n:Owner: Teodor\n\n.. contents:: Contents\n   :depth: 2\n\n"
           "Intro\n=====\n\nKOS runs on ``Tidewater``. See `the spec <http://x>`_.\n")
    doc = clean_document(rst, "rst")
    assert [s.heading for s in doc.sections] == ["KOS notes", "Intro"]
    assert "contents::" not in doc.text and "depth" not in doc.text and "====" not in doc.text
    assert "KOS runs on Tidewater. See the spec." in doc.text
    txt = "KOS 3.9 NOTES\n=============\n\nFixes only.\n\n\nKOS 3.9.6\n---------\n  * Fixed a bug.\n"
    doc = clean_document(txt, "text")
    assert [s.heading for s in doc.sections] == ["KOS 3.9 NOTES", "KOS 3.9.6"]
    assert doc.text == "KOS 3.9 NOTES\n\nFixes only.\n\nKOS 3.9.6\n\n* Fixed a bug."


def test_html_drops_boilerplate_and_keeps_headings():
    html = ("<html><head><title>T</title><style>p{color:red}</style><script>var x=1;</script></head><body>"
            "<div class='cookie-banner' hidden>We use cookies</div><header><nav>Home | About</nav></header>"
            "<main><h1>Travel</h1><p>Economy class is required\n   for flights under <b>6 hours</b>.</p>"
            "<aside>Related links</aside><h2>Rail</h2><ul><li>Rail first.</li><li>Ferry second.</li></ul>"
            "<pre>a  b\n c</pre></main><footer>(c) Kestrelmark</footer>"
            "<script>document.write('x')</script></body></html>")
    doc = clean_document(html, "html")
    assert [s.heading for s in doc.sections] == ["Travel", "Rail"]
    assert doc.text == ("Travel\n\nEconomy class is required for flights under 6 hours.\n\nRail\n\nRail first."
                        "\n\nFerry second.\n\na b\nc")
    for junk in ("var x", "cookies", "Home", "Related", "(c)", "color", "document.write"):
        assert junk not in doc.text


def test_heading_directly_above_subheading_shares_a_section():
    doc = assemble([("Planning", True), ("When to submit", True), ("Early.", False), ("Booking", True),
                    ("Use TrailDesk.", False)])
    assert [(s.heading, doc.text[s.start:s.end]) for s in doc.sections] == [
        ("When to submit", "Planning\n\nWhen to submit\n\nEarly."), ("Booking", "Booking\n\nUse TrailDesk.")]


# --- decoding -----------------------------------------------------------------------------------------

def test_decode_bytes_cases():
    assert decode_bytes("Grüße".encode()) == ("Grüße", None)
    assert decode_bytes(b"\xef\xbb\xbfhello") == ("hello", None)
    assert decode_bytes("Grüße".encode("utf-16")) == ("Grüße", None)
    text, warning = decode_bytes("Grüße aus Orrvik ".encode() + b"\xff" + " und mehr".encode())
    assert text == "Grüße aus Orrvik \ufffd und mehr" and "1 invalid UTF-8" in warning
    text, warning = decode_bytes("Le café crème coûte 3 €, très léger et délicieux.".encode("cp1252"))
    assert "café crème" in text and "not valid UTF-8" in warning
    assert decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") == (None, None)


# --- dedup --------------------------------------------------------------------------------------------

def test_minhash_estimates_jaccard():
    words = [f"w{i}" for i in range(3000)]
    a = " ".join(words[:2000])
    b = " ".join(words[200:2200])  # shingle Jaccard ~ 1798 / 2198 = 0.82
    sa, sb = minhash(a), minhash(b)
    assert len(sa) == 256 and jaccard_estimate(sa, sa) == 1.0
    assert abs(jaccard_estimate(sa, sb) - 1798 / 2198) < 0.06
    assert jaccard_estimate(sa, minhash(" ".join(words[2500:]))) == 0.0
    assert len(minhash("two words")) == 1 and len(minhash("")) == 0
    # block-wise hashing gives the same sketch as one pass
    assert (minhash(a * 3) == minhash(a * 3)).all()


def test_near_duplicate_index_flags_only_close_documents():
    base = [f"word{i}" for i in range(1500)]
    near_copy = list(base)
    for i in range(0, 1500, 150):  # 10 single-word edits: 3-shingle Jaccard ~ 0.96
        near_copy[i] = "changed"
    index = NearDuplicateIndex(0.9)
    assert index.add("a.md", minhash(" ".join(base))) is None
    assert index.add("b.md", minhash(" ".join(base[:800] + [f"x{i}" for i in range(700)]))) is None
    name, j = index.add("c.md", minhash(" ".join(near_copy)))
    assert name == "a.md" and 0.9 <= j <= 1.0


# --- sentences ----------------------------------------------------------------------------------------

_PIECES = ["end.", "Next", "e.g.", "3.5", "Dr.", '"', "(", ")", "!", "?", "...", "…", "。", "Hello.World",
           "word", "10km.", "—", ",", '."', "!)", "U.S.", "a.b", "।", "it's."]
paragraphs = st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(["", " ", " ", "\n", "  ", "\t"])),
                      min_size=1, max_size=20).map(lambda xs: "".join(p + s for p, s in xs).replace("\n\n", "\n"))


@given(paragraphs)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sentence_splitter_matches_the_spacy_pipeline(splitter, text):
    expected = []
    for s in splitter.nlp(text).sents:
        a, b = s.start_char, s.end_char
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            expected.append((a, b))
    assert splitter._paragraph(text, 0, len(text)) == expected


def test_sentence_splitter_paragraphs_and_abbreviations(splitter):
    text = "Dr. Varnholt leads e.g. sales. It weighs 3.5 kg! Really?\n\nNew paragraph without end"
    assert [text[a:b] for a, b in splitter.split(text)] == [
        "Dr. Varnholt leads e.g. sales.", "It weighs 3.5 kg!", "Really?", "New paragraph without end"]


def test_unknown_language_is_a_user_error():
    with pytest.raises(WorkbenchError, match="language 'zz'"):
        SentenceSplitter("zz")


def test_long_paragraph_is_cut_near_a_sentence_end(splitter, monkeypatch):
    monkeypatch.setattr(chunking, "MAX_PARAGRAPH_CHARS", 200)
    text = " ".join(f"Sentence number {i} is here." for i in range(100))  # one 2.8k-char paragraph
    spans = splitter.split(text)
    assert [text[a:b] for a, b in spans] == [f"Sentence number {i} is here." for i in range(100)]


# --- token counting -----------------------------------------------------------------------------------

def test_token_counters(bpe_dir):
    ws = load_token_counter("whitespace")
    assert ws("a b  c\nd") == 4 and not ws.additive
    default = load_token_counter("default")
    assert default.additive and default("The Tern-3 buoy weighs 42 kg.") == 11
    # the word cache gives the same counts as tokenizing whole texts
    texts = ["The Tern-3 buoy weighs 42 kg.", "Kalibrér sonden hver 30. dag!", "", "a  b"]
    assert default.count_batch(texts) == default._count(texts)
    bpe = load_token_counter(str(bpe_dir))
    assert not bpe.additive and bpe("The Tern-3 buoy") > 0
    spans = bpe.token_spans("The buoy weighs 42 kg.")
    assert spans[0][0] == 0 and spans[-1][1] == len("The buoy weighs 42 kg.")


def test_unknown_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(WorkbenchError, match="could not be loaded"):
        load_token_counter(str(tmp_path / "no-such-tokenizer"))


# --- chunking properties ------------------------------------------------------------------------------

_WORDS = st.sampled_from(["the", "buoy", "weighs", "42", "kg", "Kestrelmark", "Orrvik", "anode", "every", "18",
                          "months", "calibration", "e.g.", "3.5", "ÆØÅ", "naïve", "Tern-3", "(see", "below)"])
_sentence = st.lists(_WORDS, min_size=1, max_size=40).map(" ".join).flatmap(
    lambda s: st.sampled_from([".", "!", "?", "", "."]).map(lambda p: s + p))
_paragraph = st.lists(_sentence, min_size=1, max_size=6).map(" ".join)
_block = st.one_of(_paragraph.map(lambda p: (p, False)), _sentence.map(lambda h: (h[:30], True)))
documents = st.lists(_block, min_size=1, max_size=8)


def _check_chunks(doc, chunks, counter, budget, overlap, splitter):
    text = doc.text
    assert chunks, "a non-empty document gives at least one chunk"
    prev = None
    covered = bytearray(len(text))
    for n, c in enumerate(chunks):
        a, b = c.span
        assert 0 <= a < b <= len(text) and text[a:b] == c.text and c.id == f"d.md#{n}"
        assert c.n_tokens == counter(c.text) <= budget  # budgets hold, counts are exact
        if prev is not None:
            assert prev.span[0] < a and prev.span[1] < b  # in order
            if counter.additive and a < prev.span[1]:  # the overlap: trailing sentences of prev
                assert counter(text[a:prev.span[1]]) <= overlap
        covered[a:b] = b"\x01" * (b - a)
        prev = c
    sections = {(s.start, s.end): s.heading for s in doc.sections}
    for (s0, s1), heading in sections.items():
        for a, b in splitter.split(text, s0, s1):
            # every sentence lands in a chunk; one that fits the section's budget (the budget less the
            # title, heading and special tokens the embedded passage adds) is never cut
            assert all(covered[i] or text[i].isspace() for i in range(a, b))
            if counter(text[a:b]) <= chunking.section_budget(budget, "d.md", heading, counter):
                assert any(c.span[0] <= a and b <= c.span[1] and c.heading == heading for c in chunks)


@pytest.mark.parametrize("tokenizer", ["whitespace", "default", "bpe"])
@given(blocks=documents, budget=st.integers(8, 60), overlap_share=st.floats(0, 0.9))
@PROPERTY
def test_chunk_properties(tokenizer, bpe_dir, splitter, blocks, budget, overlap_share):
    counter = load_token_counter(str(bpe_dir) if tokenizer == "bpe" else tokenizer)
    overlap = int(budget * overlap_share)
    doc = assemble(blocks)
    chunks = list(chunk_document(doc, "d.md", budget, overlap, counter, splitter))
    _check_chunks(doc, chunks, counter, budget, overlap, splitter)


def test_overlong_sentence_is_split_by_tokens(splitter):
    counter = load_token_counter("whitespace")
    doc = assemble([("Short one. " + " ".join(f"w{i}" for i in range(50)) + ". Tail here.", False)])
    # a passage budget of 20: the title "d", its line break and 2 special tokens leave 16 for the text
    chunks = list(chunk_document(doc, "d.md", 20, 4, counter, splitter))
    assert [c.n_tokens for c in chunks] == [2, 16, 16, 16, 4]
    assert chunks[1].text.startswith("w0 w1 ") and chunks[1].text.endswith(" w15")
    assert chunks[4].text == "w48 w49. Tail here."


def test_overlap_repeats_whole_sentences(splitter):
    counter = load_token_counter("whitespace")
    sentences = [f"Sentence {i} has five words." for i in range(6)]
    doc = assemble([(" ".join(sentences), False)])
    chunks = list(chunk_document(doc, "d.md", 19, 5, counter, splitter))  # 15 tokens for the text
    assert [c.text.count("Sentence") for c in chunks] == [3, 3, 2]
    assert chunks[1].text.startswith(sentences[2]) and chunks[2].text.startswith(sentences[4])


# --- the stage ----------------------------------------------------------------------------------------

def test_ingest_tiny_corpus(tiny_corpus, tmp_path):
    result = ingest_corpus(tiny_corpus, IngestConfig(), progress=False)
    chunks = result.chunks
    assert {c.doc for c in chunks} == {"buoy.md", "page.html", "sub/people.txt"}
    assert [c.id for c in chunks if c.doc == "buoy.md"] == ["buoy.md#0", "buoy.md#1"]
    by_heading = {c.heading: c.text for c in chunks}
    assert "Replace the anode every 18 months." in by_heading["Maintenance"]
    assert by_heading["Travel"] == "Travel\n\nEconomy class is required for flights under 6 hours."
    assert not any("var x" in c.text or "Home" in c.text or "(c)" in c.text for c in chunks)
    report = result.report
    assert report.documents_read == 3 and report.n_chunks == len(chunks) > 0
    assert report.n_tokens == sum(c.n_tokens for c in chunks) and report.tokenizer == "default"
    assert "read 3 document(s)" in report.summary()
    assert result.fingerprint == corpus_fingerprint(tiny_corpus)
    out = tmp_path / "chunks.jsonl"
    assert write_chunks(chunks, out) == len(chunks)
    assert read_chunks(out) == chunks


def test_fingerprint_tracks_documents_not_qa(tiny_corpus):
    before = corpus_fingerprint(tiny_corpus)
    (tiny_corpus / "qa.jsonl").write_text("", encoding="utf-8")
    (tiny_corpus / ".notes.md").write_text("hidden", encoding="utf-8")
    assert corpus_fingerprint(tiny_corpus) == before
    (tiny_corpus / "sub" / "people.txt").write_text("Changed.", encoding="utf-8")
    assert corpus_fingerprint(tiny_corpus) != before


def test_list_documents_skips_hidden_qa_and_unsupported(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.md").write_text("x")
    (tmp_path / "a.MD").write_text("x")
    (tmp_path / ".hidden.txt").write_text("x")
    (tmp_path / "qa.jsonl").write_text("")
    (tmp_path / "data.csv").write_text("x")
    (tmp_path / "Makefile").write_text("x")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4")
    docs, skipped = list_documents(tmp_path)
    reasons = dict(skipped)
    assert reasons == {"data.csv": "unsupported extension '.csv'", "Makefile": "no extension",
                       **({} if _HAS_PYPDF else {"doc.pdf": "PDF support needs pypdf (pip install pypdf)"})}
    assert docs == [tmp_path / "a.MD"] + ([tmp_path / "doc.pdf"] if _HAS_PYPDF else [])


def test_duplicates_dropped_near_duplicates_flagged(tmp_path):
    body = " ".join(f"Fact {i} about the Tern-{i} buoy is stated here." for i in range(120))
    (tmp_path / "a.md").write_text("# Policy\n\n" + body, encoding="utf-8")
    (tmp_path / "b.txt").write_text("Policy\n======\n\n" + body + "\n", encoding="utf-8")  # same clean text
    (tmp_path / "c.md").write_text("# Policy\n\n" + body.replace("Fact 7 ", "Fact seven ")
                                   .replace("Fact 90 ", "Fact ninety "), encoding="utf-8")
    (tmp_path / "d.md").write_text("# Other\n\nSomething else entirely, written for this test.", encoding="utf-8")
    result = ingest_corpus(tmp_path, IngestConfig(tokenizer="whitespace"), progress=False)
    report = result.report
    assert report.duplicates == [("b.txt", "a.md")]
    assert [(d, of) for d, of, _ in report.near_duplicates] == [("c.md", "a.md")]
    assert {c.doc for c in result.chunks} == {"a.md", "c.md", "d.md"}
    assert all(c.meta == ({"near_duplicate_of": "a.md"} if c.doc == "c.md" else {}) for c in result.chunks)
    summary = report.summary()
    assert "dropped 1 exact duplicate(s): b.txt (same text as a.md)" in summary
    assert "flagged 1 near-duplicate(s), kept: c.md (~a.md" in summary


def test_large_single_file_without_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(chunking, "MAX_PARAGRAPH_CHARS", 20_000)
    monkeypatch.setattr(chunking, "WINDOW_CHARS", 30_000)
    line = "The Tern-3 buoy weighs 42 kg and runs for 18 months on one pack. "
    (tmp_path / "big.txt").write_text(line * 4000, encoding="utf-8")  # ~270 kB, one paragraph
    result = ingest_corpus(tmp_path, IngestConfig(chunk_tokens=64, overlap_tokens=0, tokenizer="whitespace"),
                           progress=False)
    chunks = result.chunks
    assert len(chunks) == 1000  # 14 words a sentence, 4 sentences (56 tokens) a chunk
    assert all(c.n_tokens <= 64 and c.text.endswith("pack.") for c in chunks)
    assert all(a.span[1] < b.span[0] for a, b in zip(chunks, chunks[1:]))


def test_config_errors():
    with pytest.raises(WorkbenchError):
        IngestConfig(chunk_tokens=16, overlap_tokens=16)


def test_worker_processes_give_the_same_result(tiny_corpus):
    (tiny_corpus / "copy.md").write_text((tiny_corpus / "buoy.md").read_text(), encoding="utf-8")
    cfg = IngestConfig(tokenizer="whitespace")
    one = ingest_corpus(tiny_corpus, cfg, progress=False)
    two = ingest_corpus(tiny_corpus, IngestConfig(tokenizer="whitespace", workers=2), progress=False)
    assert two.chunks == one.chunks and two.fingerprint == one.fingerprint
    assert two.report.duplicates == one.report.duplicates == [("copy.md", "buoy.md")]


def test_pdf_text_is_ingested_when_a_reader_is_installed(tmp_path, monkeypatch):
    import importlib.machinery
    import sys
    import types

    class Page:
        def __init__(self, text):
            self.text = text

        def extract_text(self):
            return self.text

    class PdfReader:  # stands in for pypdf.PdfReader
        def __init__(self, path):
            if Path(path).read_bytes() != b"%PDF-1.4 fake":
                raise ValueError("damaged")
            self.pages = [Page("The Skua-G2 stake is 3.2 m long."), Page("It reports hourly.")]

    fake = types.ModuleType("pypdf")
    fake.__spec__ = importlib.machinery.ModuleSpec("pypdf", None)
    fake.PdfReader = PdfReader
    monkeypatch.setitem(sys.modules, "pypdf", fake)
    (tmp_path / "spec.pdf").write_bytes(b"%PDF-1.4 fake")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 broken")
    result = ingest_corpus(tmp_path, IngestConfig(tokenizer="whitespace"), progress=False)
    assert [c.text for c in result.chunks] == ["The Skua-G2 stake is 3.2 m long.\n\nIt reports hourly."]
    assert result.report.skipped == [("broken.pdf", "unreadable PDF (ValueError)")]


def test_archived_copy_is_the_one_flagged(tmp_path):
    body = " ".join(f"Rule {i}: book trips of type {i} through TrailDesk." for i in range(100))
    (tmp_path / "archive").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "archive" / "policy-draft.md").write_text(body.replace("Rule 5:", "Draft rule 5:"))
    (tmp_path / "policies" / "policy.md").write_text(body)
    result = ingest_corpus(tmp_path, IngestConfig(tokenizer="whitespace"), progress=False)
    flagged = [(d, of) for d, of, _ in result.report.near_duplicates]
    assert flagged == [("archive/policy-draft.md", "policies/policy.md")]
    assert {c.doc for c in result.chunks if c.meta} == {"archive/policy-draft.md"}


def test_embedded_passage_fits_the_budget_with_its_title_and_heading(splitter):
    """The index embeds title + heading + text (``passage_text``); with the embedder's special tokens it
    stays within the chunk budget, so the embedder never truncates a chunk's end."""
    from workbench.corpus.chunking import SPECIAL_TOKENS, section_budget
    from workbench.retrieval.index import passage_text

    counter = load_token_counter("whitespace")
    heading = "Maintenance schedule for the offshore buoy fleet and its spare parts"
    body = " ".join(f"Sentence {i} says the buoy number {i} needs a new anode every spring." for i in range(80))
    doc = clean_document(f"# {heading}\n\n{body}\n", "markdown")
    chunks = list(chunk_document(doc, "fleet/tern-3-maintenance-plan.md", 64, 8, counter, splitter))
    assert len(chunks) > 5
    for c in chunks:
        assert counter(passage_text(c)) + SPECIAL_TOKENS <= 64, passage_text(c)
    assert section_budget(64, "fleet/tern-3-maintenance-plan.md", heading, counter) == 64 - (4 + 11 + 1) - 2
    assert section_budget(16, "a.md", heading, counter) == 8  # never less than half the budget
