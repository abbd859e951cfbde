"""Reply post-processing: from a model's raw reply to the answer phrase, and the passages it rests on.

``clean_answer`` keeps the answer phrase of a reply (no label, list marker, citation marker, trailing
sentence or restatement of the question) and, for grounded replies, widens a bare number to the quantity
phrase of the passage; ``cite`` maps the answer back to the passages and documents it came from. Every
answering path (evaluation, the app, ``workbench ask``) runs replies through these two functions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from workbench.answering.copying import source_text
from workbench.answering.quantity import quantity_phrase
from workbench.core.config import PromptConfig
from workbench.core.language import DEFAULT_LANGUAGE, base_language, stopwords
from workbench.core.records import Hit
from workbench.core.text import WORD, is_abstention, normalize_answer, overlap_scores
from workbench.corpus.chunking import get_splitter, split_sentences

_CITE = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")


@dataclass
class Citation:
    """A passage an answer rests on: its number in the prompt, document, chunk id and heading."""

    n: int
    doc: str
    chunk_id: str
    heading: str = ""


_PREFIX = re.compile(r"^\s*(?:(?:final\s+)?answer|a|response|reply)\s*[:\-–]\s*", re.I)
_LEADIN = re.compile(r"^\s*(?:the\s+(?:short\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?\s+is\s*:?\s*"
                     r"|\((?:[^()]*›[^()]*|[\w./-]+\.(?:md|txt|rst|html?))\)\s*|according\s+to\s+(?:the\s+)?passages?\s*"
                     r"(?:\[\d+\])?\s*,\s*)", re.I)
_LIST = re.compile(r"^\s*(?:\d{1,2}[.)]\s+|[-*•]\s+)")
_ABBREV = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|St|Mt|No|Nr|Fig|approx|ca|vs|etc|Inc|Ltd|Co)\.|\b[A-Z]\.)$")


_COPULA = {
    "en": re.compile(r"\s(?:is|are|was|were|will be|has been|have been|equals|comes to|amounts to)\s", re.I),
    "pt": re.compile(r"\s(?:é|são|foi|foram|era|eram|será|serão|está|estão|chama-se|chamam-se)\s", re.I),
}
"""The copula that splits a full-sentence reply into a restated question and the answer, per language."""
_GLUE = {
    "en": frozenset("is are was were be been being 's has have had on at in of for by to from called named about "
                    "around roughly approximately exactly only just set rated gives give given takes take".split()),
    "pt": frozenset("é são foi foram era eram ser sido está estão tem têm tinha teve chamado chamada chamados "
                    "chamadas cerca aproximadamente apenas somente exatamente".split()),
}
"""Words between a restated question and the answer ("... is called ..."), beyond the stopwords."""
_NAMED = {"en": re.compile(r"\b(?:called|named)\s+(\S.*)$"),
          "pt": re.compile(r"\b(?:chamad[oa]s?|denominad[oa]s?|conhecid[oa]s?\s+como)\s+(\S.*)$", re.I)}


def _stem(word: str) -> str:
    w = word.casefold().strip(".,;:!?\"'()[]“”‘’")
    return w[:5] if len(w) > 5 else w


def strip_echo(answer: str, question: str, language: str = DEFAULT_LANGUAGE) -> str:
    """Drop the part of a full-sentence reply that restates the question.

    Small models answer "Who owns X?" with "The owner of X is Ada Berg". When one side of the first
    copula (is/are/was/...) is mostly the question's own words, the other side is the answer; otherwise a
    leading run of question words and glue words ("The ingest gateways listen ... on port 4817") is cut,
    and so is a trailing one ("27 days of paid vacation per calendar year"). A long reply keeps its first
    comma-separated part, or a later short name or number when the first part only restates the question
    ("the Chief Financial Officer, Matthias Oduya"). Replies of three words or fewer are returned unchanged.
    Stopwords, copulas and glue words are those of ``language`` (English ones for a language without its own).
    """
    if len(answer.split()) <= 3 or not question:
        return answer
    lang = base_language(language) if base_language(language) in _COPULA else DEFAULT_LANGUAGE
    stop = stopwords(language)
    skip = stop | _GLUE[lang]
    q = {_stem(w) for w in question.split() + WORD.findall(question) if w.casefold() not in stop}

    def echo_share(text: str) -> float:
        content = [_stem(w) for w in text.split() if w.casefold() not in stop]
        return sum(w in q for w in content) / len(content) if content else 1.0

    def by_copula(text: str) -> str | None:
        m = _COPULA[lang].search(text)
        left, right = (text[: m.start()].strip(), text[m.end():].strip()) if m else ("", "")
        if left and right:
            if echo_share(left) >= 0.5 and echo_share(right) < echo_share(left):
                return right
            if echo_share(right) >= 0.5 and echo_share(left) < echo_share(right):
                return left
        return None

    segments = answer.split(", ")
    answer = segments[0]
    if len(segments) > 1 and echo_share(answer) >= 0.5:  # "the Chief Financial Officer, Matthias Oduya"
        answer = next((s for s in segments[1:] if len(s.split()) <= 4 and (s[:1].isupper() or s[:1].isdigit())
                       and echo_share(s) < 0.5), answer)
    m = _NAMED[lang].search(answer)
    if m:
        answer = m.group(1)
    answer = by_copula(answer) or answer
    words = answer.split()
    i = 0
    while i < len(words) - 1 and (_stem(words[i]) in q or words[i].casefold().strip(",") in skip):
        i += 1
    if i >= 2 and any(_stem(w) in q for w in words[:i]):
        answer = by_copula(" ".join(words[i:])) or " ".join(words[i:])
    words = answer.split()
    j = len(words)
    while j > 1 and (_stem(words[j - 1]) in q or words[j - 1].casefold() in skip):
        j -= 1
    if len(words) - j >= 2 and any(_stem(w) in q for w in words[j:]):  # "27 days of paid vacation per year"
        answer = " ".join(words[:j])
    return answer


def clean_answer(text: str, question: str | None = None, passages: Sequence[str] = (),
                 language: str = DEFAULT_LANGUAGE, cfg: PromptConfig | None = None) -> str:
    """The answer phrase of a raw reply: no echoed question, label, citation marker or trailing sentences.

    Keeps the first non-empty line (after an ``Answer:`` label when the model echoed the question), drops
    list markers, "[n]" markers, markdown emphasis and wrapping quotes, keeps only the first sentence and,
    given the question, drops a restatement of it (``strip_echo``). Given the passages the reply was read
    from, a reply that starts with a number, date or time becomes the whole quantity phrase it stands in
    there ("14" -> "14 hours", "6 hours and must not be interrupted" -> "6 hours";
    ``workbench.answering.quantity.quantity_phrase``), looked up first in the sentences sharing most with the question.
    ``language`` picks the stopwords and echo patterns; ``cfg`` (``strip_echo``, ``quantity_phrases``)
    turns the two rewrites off.
    """
    cfg = cfg or PromptConfig()
    text = (text or "").replace("\r", "")
    m = re.search(r"(?im)^\s*(?:final\s+)?answer\s*:\s*(\S.*)$", text)
    if m and re.search(r"(?im)^\s*question\s*:", text[: m.start()] or "x"):
        text = m.group(1)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip() and not re.match(r"(?i)^\s*question\s*:", ln)]
    line = lines[0] if lines else ""
    line = _CITE.sub("", line).replace("**", "").replace("__", "")
    line = _LEADIN.sub("", _PREFIX.sub("", _LIST.sub("", line)))
    line = _first_sentence(line, language)
    line = " ".join(line.split()).strip(" \"'`“”‘’")
    line = line.rstrip(" .;:,") if not re.search(r"\b[A-Z]\.$|\.\.\.$", line) else line
    if question and cfg.strip_echo and not is_abstention(line):
        line = strip_echo(line, question, language).strip(" \"'`“”‘’").rstrip(" .;:,")
    if passages and cfg.quantity_phrases and not is_abstention(line):
        sents = [source_text(s) for p in passages for s in split_sentences(p, language)]
        scores = overlap_scores(question or "", sents, language)
        ranked = [sents[i] for i in sorted(range(len(sents)), key=lambda i: -scores[i])]
        line = quantity_phrase(line, ranked, question or "", stopwords(language))
    return line


def _first_sentence(line: str, language: str) -> str:
    """``line`` up to its second sentence, as chunking splits sentences (``split_sentences``), never cut
    right after an abbreviation ("Dr. Berg", "approx. 40" stay whole)."""
    for start, _ in get_splitter(language).split(line)[1:]:
        if not _ABBREV.search(line[:start].rstrip()):
            return line[:start]
    return line


def cite(raw: str, hits: Sequence[Hit], answer: str | None = None) -> list[Citation]:
    """The passages an answer rests on, as citations mapped back to documents.

    Explicit "[n]" markers in the reply win; failing those, the passages whose text contains the
    (cleaned) answer, in prompt order. Abstentions cite nothing.
    """
    answer = clean_answer(raw) if answer is None else answer
    if is_abstention(answer):
        return []
    nums: list[int] = []
    for m in _CITE.finditer(raw or ""):
        nums += [int(x) for x in m.group(1).split(",") if 1 <= int(x) <= len(hits)]
    if not nums:
        a = normalize_answer(answer)
        nums = [i + 1 for i, h in enumerate(hits) if a and f" {a} " in f" {normalize_answer(h.chunk.text)} "]
    out: list[Citation] = []
    for n in dict.fromkeys(nums):
        c = hits[n - 1].chunk
        out.append(Citation(n, c.doc, c.id, c.heading))
    return out
