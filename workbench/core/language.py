"""The language of a corpus and the text processing that depends on it: detection, stopwords, stemming and
accent folding for BM25, and which languages the known models cover.

A core module: it imports nothing of the project but errors, and its heavy helpers (the language identifier,
the Snowball stemmers, spaCy) are imported on first use. Every stage that needs a language asks here, so
BM25 at index time, BM25 at query time, answer cleaning and question synthesis share one stopword list.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable

AUTO = "auto"
"""``ingest.language`` value that asks for detection."""
DEFAULT_LANGUAGE = "en"
"""What a text too short to identify, or an index that records no language, is taken to be."""
MIN_DETECT_CHARS = 40
"""Texts with fewer letters than this are not identified (too little to tell languages apart)."""
DETECT_CHARS = 5000
"""Characters of a document read by the identifier (its opening is enough, and detection stays fast)."""

_WORD = re.compile(r"\w+")

# --- stopwords --------------------------------------------------------------------------------------------

_STOP_EN = frozenset(
    "a an the of to in on at for by with from and or but is are was were be been being do does did what which "
    "who whom whose when where why how much many long often that this these those it its as if than then there "
    "our we us you your i me my they them their he she his her has have had can could may might must shall should "
    "will would into onto about after before over under up down out off each any all some no not per also".split())
"""English function words (answer cleaning and copy starts were measured with this list on the demo)."""
ARTICLES_EN = frozenset({"a", "an", "the"})
"""English articles: SQuAD answer normalisation and the training leakage guard drop them."""

_QUESTION_WORDS = {
    "pt": "onde aonde quais quanto quanta quantos quantas porque porquê cujo cuja cujos cujas qual quem quando "
          "como que",
    "es": "dónde donde cuál cuáles cuánto cuánta cuántos cuántas quién quiénes cuándo cómo qué",
    "fr": "où quel quelle quels quelles combien quand comment pourquoi qui que quoi",
    "de": "wo wer wann wie warum welche welcher welches wieviel wieviele was",
    "it": "dove quale quali quanto quanta quanti quante quando come perché chi cosa",
}
"""Question words that Snowball's stopword lists leave out; an answer never starts with one."""

_BM25S_STOPWORDS = {"en": "STOPWORDS_EN", "pt": "STOPWORDS_PORTUGUESE", "es": "STOPWORDS_SPANISH",
                    "fr": "STOPWORDS_FRENCH", "de": "STOPWORDS_GERMAN", "it": "STOPWORDS_ITALIAN",
                    "nl": "STOPWORDS_DUTCH", "sv": "STOPWORDS_SWEDISH", "da": "STOPWORDS_DANISH",
                    "no": "STOPWORDS_NORWEGIAN", "nb": "STOPWORDS_NORWEGIAN", "ru": "STOPWORDS_RUSSIAN",
                    "tr": "STOPWORDS_TURKISH"}


@functools.lru_cache(maxsize=32)
def stopwords(language: str) -> frozenset[str]:
    """Function words of ``language``, casefolded: the one list BM25, answer cleaning and copying use.

    English: the project's own short list. Other languages: the Snowball list bm25s ships (plus question
    words), else spaCy's list for the language, else none.
    """
    lang = base_language(language)
    if lang == "en":
        return _STOP_EN
    extra = frozenset(_QUESTION_WORDS.get(lang, "").split())
    name = _BM25S_STOPWORDS.get(lang)
    if name is not None:
        import bm25s.stopwords

        return frozenset(w.casefold() for w in getattr(bm25s.stopwords, name)) | extra
    try:
        import spacy.util

        return frozenset(w.casefold() for w in spacy.util.get_lang_class(lang).Defaults.stop_words) | extra
    except (ImportError, KeyError):
        return extra


# --- stemming and accent folding -----------------------------------------------------------------------

SNOWBALL = {"en": "english", "pt": "portuguese", "es": "spanish", "fr": "french", "de": "german", "it": "italian",
            "nl": "dutch", "sv": "swedish", "da": "danish", "no": "norwegian", "nb": "norwegian", "fi": "finnish",
            "ru": "russian", "hu": "hungarian", "ro": "romanian", "tr": "turkish", "ca": "catalan",
            "ar": "arabic", "el": "greek", "id": "indonesian", "ga": "irish", "lt": "lithuanian",
            "ne": "nepali", "ta": "tamil", "hy": "armenian", "eu": "basque", "sr": "serbian", "yi": "yiddish"}
"""Language code -> Snowball stemmer name (PyStemmer)."""


@functools.lru_cache(maxsize=16)
def _stemmer(name: str) -> Any:
    import Stemmer  # PyStemmer: the Snowball C stemmers

    return Stemmer.Stemmer(name)


def fold_accents(text: str) -> str:
    """``text`` without combining marks ("Varsóvia" -> "Varsovia", "ação" -> "acao")."""
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


@dataclass(frozen=True)
class TermAnalyzer:
    """How text becomes BM25 terms; recorded in the index manifest and applied unchanged to queries.

    Words are NFKC-normalised, casefolded Unicode word characters (identifiers split on punctuation:
    "KX-4471-B" -> kx, 4471, b). Then, as set: stopwords dropped, words stemmed with the Snowball stemmer
    of ``language``, and accents folded after stemming (Snowball rules expect the accents).

    Attributes:
        language: the corpus language the settings were chosen for.
        stem: the Snowball stemmer name, or "" for none.
        stopwords: whether ``stopwords(language)`` are dropped.
        fold_accents: whether accents are folded.
    """

    language: str = DEFAULT_LANGUAGE
    stem: str = ""
    stopwords: bool = False
    fold_accents: bool = False

    def analyze(self, text: str) -> list[str]:
        """The BM25 terms of ``text``, in order (repeats kept)."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        if self.stopwords:
            stop = stopwords(self.language)
            words = [w for w in words if w not in stop]
        if self.stem:
            words = _stemmer(self.stem).stemWords(words)
        if self.fold_accents:
            words = [fold_accents(w) for w in words]
        return words

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_manifest(cls, bm25: dict[str, Any] | None) -> "TermAnalyzer":
        """The analyzer an index was built with; an index from before analyzers were recorded gets the plain
        one (no stopwords, stemming or folding), which is what it was built with."""
        bm25 = bm25 or {}
        return cls(language=str(bm25.get("language") or DEFAULT_LANGUAGE), stem=str(bm25.get("stem") or ""),
                   stopwords=bool(bm25.get("stopwords")), fold_accents=bool(bm25.get("fold_accents")))


def content_terms(text: str, language: str) -> set[str]:
    """The content words of ``text`` as the corpus's BM25 sees them, less stopwords: the terms answering
    matches a question against passage sentences with ("inflamações" meets "inflamação" in Portuguese)."""
    import dataclasses

    return set(dataclasses.replace(analyzer_for(language), stopwords=True).analyze(text))


def analyzer_for(language: str) -> TermAnalyzer:
    """The BM25 analyzer built for a corpus in ``language``.

    English keeps plain words: on the demo corpus stemming and stopwords did not raise answer recall (see
    README). Other languages get their stopwords, their Snowball stemmer when one exists, and accent folding
    (machine-translated and user-typed text often drop or change accents).
    """
    lang = base_language(language)
    if lang == "en":
        return TermAnalyzer(language="en")
    return TermAnalyzer(language=lang, stem=SNOWBALL.get(lang, ""), stopwords=True, fold_accents=True)


# --- detection -----------------------------------------------------------------------------------------

def base_language(code: str | None) -> str:
    """``"pt-BR"`` / ``"pt_br"`` -> ``"pt"``; None or empty -> the default language."""
    return (code or DEFAULT_LANGUAGE).replace("_", "-").split("-")[0].casefold()


@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str | None, float]:
    """The language of a text (ISO 639-1 code) and the identifier's probability for it.

    Uses py3langid (97 languages) on the first :data:`DETECT_CHARS` characters.

    Returns:
        ``(code, probability)``, or ``(None, 0.0)`` when the text has too few letters to tell.
    """
    sample = text[:DETECT_CHARS]
    if sum(c.isalpha() for c in sample) < MIN_DETECT_CHARS:
        return None, 0.0
    code, prob = _identifier().classify(sample)
    return str(code), float(prob)


@dataclass
class LanguageMix:
    """The languages of a corpus's documents, weighted by text length.

    Attributes:
        language: the corpus language: the one with the most text (the default when none was detected).
        shares: language -> share of the identified text, largest first.
        documents: language -> number of documents.
    """

    language: str
    shares: dict[str, float]
    documents: dict[str, int]

    @property
    def mixed(self) -> bool:
        """Whether another language holds at least :data:`MIXED_SHARE` of the text."""
        return any(share >= MIXED_SHARE for lang, share in self.shares.items() if lang != self.language)

    def summary(self) -> str:
        """``"pt (4 documents, 91%), en (1 document, 9%)"``."""
        return ", ".join(f"{lang} ({self.documents.get(lang, 0)} document"
                         f"{'s' if self.documents.get(lang, 0) != 1 else ''}, {share:.0%})"
                         for lang, share in self.shares.items())


MIXED_SHARE = 0.1
"""A second language holding at least this share of a corpus's text makes it a mixed-language corpus."""


def language_mix(per_document: Iterable[tuple[str | None, int]]) -> LanguageMix:
    """Combine per-document ``(language or None, text length)`` into the corpus's :class:`LanguageMix`."""
    chars: Counter[str] = Counter()
    docs: Counter[str] = Counter()
    for lang, n in per_document:
        if lang:
            chars[lang] += n
            docs[lang] += 1
    total = sum(chars.values())
    shares = {lang: n / total for lang, n in chars.most_common()} if total else {}
    return LanguageMix(next(iter(shares), DEFAULT_LANGUAGE), shares, dict(docs))


def spacy_language(code: str) -> str:
    """A language code spaCy can build a blank pipeline for: ``code`` itself, else ``"xx"`` (multi-language)."""
    import spacy.util

    try:
        spacy.util.get_lang_class(code)
        return code
    except ImportError:
        return "xx"


# --- what the known models cover ----------------------------------------------------------------------------

MULTILINGUAL = "multilingual"
MODEL_LANGUAGES: dict[str, tuple[str, ...] | str] = {
    "all-MiniLM-L6-v2": ("en",),
    "sentence-transformers/all-MiniLM-L6-v2": ("en",),
    "SmolLM2-135M-Instruct": ("en",),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("en",),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ("en",),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ("en",),
    "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2": MULTILINGUAL,
    "sentence-transformers/paraphrase-multilingual-mpnet-base-v2": MULTILINGUAL,
    "intfloat/multilingual-e5-small": MULTILINGUAL,
    "intfloat/multilingual-e5-base": MULTILINGUAL,
    "BAAI/bge-m3": MULTILINGUAL,
    "Qwen/Qwen2.5-0.5B-Instruct": MULTILINGUAL,
    "Qwen/Qwen2.5-1.5B-Instruct": MULTILINGUAL,
    "Qwen/Qwen2.5-7B-Instruct": MULTILINGUAL,
    "meta-llama/Llama-3.2-1B-Instruct": ("en", "de", "fr", "it", "pt", "hi", "es", "th"),
    "meta-llama/Llama-3.2-3B-Instruct": ("en", "de", "fr", "it", "pt", "hi", "es", "th"),
}
"""Languages a model was trained for, as its model card states ("multilingual": many, including Portuguese).
Only names listed here are known; a local folder or another hub id is "unknown"."""


def model_languages(name: str) -> tuple[str, ...] | str | None:
    """What ``name`` covers: a tuple of codes, :data:`MULTILINGUAL`, or None when not known."""
    return MODEL_LANGUAGES.get(name) or MODEL_LANGUAGES.get(name.rstrip("/").split("/")[-1])


def covers(name: str, language: str) -> bool | None:
    """Whether model ``name`` covers ``language``: True, False, or None when the model is not known."""
    langs = model_languages(name)
    if langs is None:
        return None
    return langs == MULTILINGUAL or base_language(language) in langs
