"""Grounded answering: the one prompt builder (evaluation, fine-tuning and the app all use it), answer
cleaning, abstention detection and citations.

Small models ramble, echo the question and ignore passages. The defaults below were measured with the
embedded SmolLM2-135M on the demo corpus (``bench/rag_prompt.py`` re-measures them): a terse system
prompt, k=2 whole chunks numbered in rank order and fitted to the context budget, no worked examples,
the reply opened with "The answer is:", greedy decoding constrained to copy a span of the passages
(``GenerateConfig.copy_spans``, ``workbench.copying``) and stopped at the first newline, and
``clean_answer`` keeping the answer phrase (dropping labels, list markers, trailing sentences and any
restatement of the question). The copied span comes from the ``COPY_SENTENCES`` passage sentences closest
to the question, never starts with a stopword or a word of the question, and "I don't know" is held back
by ``ABSTAIN_BIAS``. A reply starting with a number, date or time becomes the whole quantity phrase it
stands in (``workbench.quantity``). On the 180 answerable demo eval questions token F1 went from 0.29 (free
decoding, k=3, 60 questions) to 0.43 (copying whole passages), 0.55 (sentence focus, banned starts,
abstention bias) and 0.605 (quantity phrases). Tried and not kept: a start prior for words of the type the
question asks for (a number for "how many", a name for "who") with type-first sentence choice, 0.561.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from workbench.language import DEFAULT_LANGUAGE, base_language, stopwords
from workbench.records import Hit

if TYPE_CHECKING:
    from workbench.copying import CopySource

ABSTAIN = "I don't know"
"""What the model is asked to reply when the passages (or its memory) do not hold the answer."""

SYSTEM_RAG = (
    "Answer the question with a short phrase copied from the passages: a name, number, date or a few "
    f"words. No full sentence, no explanation. If the passages do not contain the answer, reply: {ABSTAIN}."
)
"""System prompt when passages are given."""

SYSTEM_CLOSED = (
    "Answer the question with a short phrase: a name, number, date or a few words. No full sentence, "
    f"no explanation. If you do not know the answer, reply: {ABSTAIN}."
)
"""System prompt for closed-book answering (base and fine-tuned systems without retrieval)."""

ANSWER_STOPS: tuple[str, ...] = ("\n",)
"""Generation stops at the end of the first line: answers are one short line."""

PASSAGE_SENTENCES = 0
"""Sentences kept from each passage (those sharing the most rare words with the question, in document
order); 0 keeps whole chunks. Measured with SmolLM2-135M on 30 demo questions: keeping 3 sentences cut token
F1 from 0.35 to 0.15 (the answer was in the prompt less often, and read worse out of context)."""

WORKED_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("The Larch Street bridge opened in 1932 after six years of work. Its main span is 310 m long and it "
     "carries two tram tracks.", "How long is the main span of the Larch Street bridge?", "310 m"),
    ("Mira Holt became head of the Vesterby library in 2019. The library lends about 40,000 books a year.",
     "Who runs the Vesterby library?", "Mira Holt"),
    ("The Vesterby library lends about 40,000 books a year and opens at 9:00 on weekdays.",
     "How many staff work at the Vesterby library?", ABSTAIN),
)
"""Worked examples (passage, question, answer), invented and domain-neutral, that can be shown as earlier
chat turns of RAG prompts (``FEW_SHOT``)."""

FEW_SHOT: tuple[tuple[str, str, str], ...] = ()
"""Worked examples put in every RAG prompt. Off by default: measured with SmolLM2-135M on 30 demo questions
they cut token F1 from 0.23 to 0.06 (the model copied "I don't know" onto 43% of answerable questions)."""

QUESTION_FIRST = False
"""Also state the question before the passages (it always follows them). Measured: F1 0.35 -> 0.27."""

BEST_PASSAGE_LAST = False
"""Show passages in reverse rank order ([n] keeps its rank) so the best one sits next to the question.
Measured on 90 demo questions: token F1 0.309 vs 0.311 in rank order (no gain), so off."""

REPLY_START = "The answer is:"
"""Text the assistant's reply to a RAG prompt starts with (the model continues it); empty: none. Measured
on 60 demo questions (k=3): no opening F1 0.29, "The answer is:" 0.36, "Answer:" 0.21. It skips the
restatement small models open with, so the first generated token is already the answer's."""

ANSWER_RESERVE = 48
"""Tokens of the context budget kept free for the reply."""
MIN_PASSAGE_TOKENS = 24
"""A passage that would have to be cut shorter than this is left out instead."""

_CITE = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")


@dataclass
class Citation:
    """A passage an answer rests on: its number in the prompt, document, chunk id and heading."""

    n: int
    doc: str
    chunk_id: str
    heading: str = ""


@dataclass
class Answer:
    """One answered question.

    Attributes:
        question: the question.
        text: the cleaned answer (``clean_answer`` of the raw reply).
        hits: the passages in the prompt, in prompt order ([n] is ``hits[n-1]``); empty when closed book.
        citations: passages the answer cites ([n] markers) or, failing those, that contain it.
        latency_s: generation wall time of its batch plus its share of retrieval time.
        n_new_tokens: tokens generated.
        raw: the reply before cleaning.
    """

    question: str
    text: str
    hits: list[Hit] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    latency_s: float = 0.0
    n_new_tokens: int = 0
    raw: str = ""


# --- prompt ----------------------------------------------------------------------------------------

def _count(tokenizer: Any, text: str) -> int:
    if tokenizer is None:
        return max(1, len(text) // 4)  # rough chars-per-token when no tokenizer is at hand
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate(tokenizer: Any, text: str, n_tokens: int) -> str:
    """The start of ``text`` within ``n_tokens`` tokens, cut back to a word boundary, with an ellipsis."""
    if tokenizer is None:
        cut = text[: n_tokens * 4]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
        cut = tokenizer.decode(ids, skip_special_tokens=True)
    if len(cut) < len(text) and " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + " …"


def format_passage(n: int, hit: Hit, text: str | None = None) -> str:
    """``[n] (doc › heading) text``: the number the answer can cite, where the passage comes from."""
    c = hit.chunk
    where = c.doc + (f" › {c.heading}" if c.heading else "")
    return f"[{n}] ({where}) {' '.join((text if text is not None else c.text).split())}"


def _user(question: str, passages: Sequence[str]) -> str:
    if not passages:
        return f"Question: {question.strip()}"
    head = f"Question: {question.strip()}\n\n" if QUESTION_FIRST else ""
    return head + "Passages:\n" + "\n\n".join(passages) + f"\n\nQuestion: {question.strip()}"


def _window(tokenizer: Any, context_tokens: int) -> int:
    limit = getattr(tokenizer, "model_max_length", 0) or 0
    return min(context_tokens, limit) if 0 < limit < 1_000_000 else context_tokens


_WORD = re.compile(r"\w+")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\w\"'(\[])|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences (and table rows / headings, which sit on their own lines) of a passage."""
    return [s.strip() for s in _SPLIT.split(text) if s and s.strip()]


def _terms(text: str, language: str = DEFAULT_LANGUAGE) -> set[str]:
    stop = stopwords(language)
    return {w for w in _WORD.findall(text.casefold()) if w not in stop}


def focus_passages(question: str, texts: Sequence[str], n_sentences: int) -> list[str]:
    """Each text cut down to its ``n_sentences`` sentences that best match the question, in text order.

    A sentence scores the summed inverse document frequency (over all sentences of all ``texts``) of the
    question's content words it contains, so rare words such as names and codes weigh most.
    """
    if n_sentences <= 0:
        return list(texts)
    sents = [split_sentences(t) for t in texts]
    scores = overlap_scores(question, [s for ss in sents for s in ss])
    out = []
    for ss in sents:
        sc, scores = scores[:len(ss)], scores[len(ss):]
        out.append(" ".join(_top(ss, sc, n_sentences)))
    return out


def overlap_scores(question: str, sentences: Sequence[str], language: str = DEFAULT_LANGUAGE) -> list[float]:
    """Per sentence, the summed inverse document frequency (over ``sentences``) of the question's content
    words (not stopwords of ``language``) it contains: rare words such as names and codes weigh most."""
    import math

    q = _terms(question, language)
    bags = [_terms(s, language) & q for s in sentences]
    df: dict[str, int] = {}
    for terms in bags:
        for w in terms:
            df[w] = df.get(w, 0) + 1
    n = len(bags) or 1
    return [sum(math.log(1 + n / df[w]) for w in terms) for terms in bags]


def _few_shot() -> list[dict[str, str]]:
    turns = []
    for passage, question, answer in FEW_SHOT:
        turns.append({"role": "user", "content": _user(question, [f"[1] {passage}"])})
        turns.append({"role": "assistant", "content": answer})
    return turns


def build_prompt(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None,
                 context_tokens: int = 2048) -> tuple[list[dict[str, str]], list[Hit]]:
    """The chat messages for a question and the passages that fit into them.

    Closed book: the system prompt and the question. With passages: the system prompt, the worked
    examples (``FEW_SHOT``), then the passages numbered [1]..[n] in rank order, each cut to its
    ``PASSAGE_SENTENCES`` best-matching sentences, added while the rendered prompt stays within
    ``context_tokens`` (less ``ANSWER_RESERVE``); the first passage that does not fit is cut to the
    remaining budget (or dropped when less than ``MIN_PASSAGE_TOKENS`` remain) and later ones are left
    out.

    Returns:
        (messages, the hits actually in the prompt, in prompt order).
    """
    from workbench.generate import render_prompt

    question = question.strip()
    if hits is None:
        return [{"role": "system", "content": SYSTEM_CLOSED}, {"role": "user", "content": _user(question, [])}], []
    texts = focus_passages(question, [h.chunk.text for h in hits], PASSAGE_SENTENCES)
    first = _count(tokenizer, format_passage(1, hits[0], texts[0])) if hits else 0

    def messages(examples: list[dict[str, str]], ps: list[str]) -> list[dict[str, str]]:
        start = [{"role": "assistant", "content": REPLY_START}] if REPLY_START else []
        return [{"role": "system", "content": SYSTEM_RAG}, *examples, {"role": "user", "content": _user(question, ps)},
                *start]

    def room(examples: list[dict[str, str]]) -> int:
        m = messages(examples, ["x"])
        used_tokens = _count(tokenizer, render_prompt(tokenizer, m) if tokenizer is not None
                             else "\n".join(x["content"] for x in m))
        return _window(tokenizer, context_tokens) - ANSWER_RESERVE - used_tokens

    examples = _few_shot()
    budget = room(examples)
    if examples and budget < min(first, 256):  # a tight budget goes to the passages, not the examples
        examples, budget = [], room([])
    msgs = lambda ps: messages(examples, ps)  # noqa: E731
    if not hits:
        return msgs([]), []
    passages: list[str] = []
    used: list[Hit] = []
    for hit, body in zip(hits, texts):
        n = len(used) + 1
        text = format_passage(n, hit, body)
        cost = _count(tokenizer, text) + 2  # + the blank line between passages
        if cost > budget:
            room = budget - _count(tokenizer, format_passage(n, hit, "")) - 4
            if room >= MIN_PASSAGE_TOKENS:
                passages.append(format_passage(n, hit, _truncate(tokenizer, body, room)))
                used.append(hit)
            break
        passages.append(text)
        used.append(hit)
        budget -= cost
    if BEST_PASSAGE_LAST:
        passages.reverse()
    return msgs(passages), used


def build_messages(question: str, hits: Sequence[Hit] | None, tokenizer: Any = None,
                   context_tokens: int = 2048) -> list[dict[str, str]]:
    """The chat messages asking ``question``: closed book (``hits`` None) or over numbered passages.

    The one prompt builder: evaluation, fine-tuning (SFT with ``hits=None``, RAFT with passages) and
    the app all call it, so a model is trained on exactly the prompts it is evaluated with.

    Args:
        question: the user's question.
        hits: retrieved passages in rank order, or None for closed book.
        tokenizer: the model's tokenizer, to count tokens (a chars/4 estimate without one).
        context_tokens: prompt budget; passages are trimmed to fit it and the tokenizer's window.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    return build_prompt(question, hits, tokenizer, context_tokens)[0]


# --- replies ---------------------------------------------------------------------------------------

_PREFIX = re.compile(r"^\s*(?:(?:final\s+)?answer|a|response|reply)\s*[:\-–]\s*", re.I)
_LEADIN = re.compile(r"^\s*(?:the\s+(?:short\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?\s+is\s*:?\s*"
                     r"|\((?:[^()]*›[^()]*|[\w./-]+\.(?:md|txt|rst|html?))\)\s*|according\s+to\s+(?:the\s+)?passages?\s*"
                     r"(?:\[\d+\])?\s*,\s*)", re.I)
_LIST = re.compile(r"^\s*(?:\d{1,2}[.)]\s+|[-*•]\s+)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
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
    q = {_stem(w) for w in question.split() + _WORD.findall(question) if w.casefold() not in stop}

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
                 language: str = DEFAULT_LANGUAGE) -> str:
    """The answer phrase of a raw reply: no echoed question, label, citation marker or trailing sentences.

    Keeps the first non-empty line (after an ``Answer:`` label when the model echoed the question), drops
    list markers, "[n]" markers, markdown emphasis and wrapping quotes, keeps only the first sentence and,
    given the question, drops a restatement of it (``strip_echo``). Given the passages the reply was read
    from, a reply that starts with a number, date or time becomes the whole quantity phrase it stands in
    there ("14" -> "14 hours", "6 hours and must not be interrupted" -> "6 hours";
    ``workbench.quantity.quantity_phrase``), looked up first in the sentences sharing most with the question.
    ``language`` picks the stopwords and echo patterns.
    """
    text = (text or "").replace("\r", "")
    m = re.search(r"(?im)^\s*(?:final\s+)?answer\s*:\s*(\S.*)$", text)
    if m and re.search(r"(?im)^\s*question\s*:", text[: m.start()] or "x"):
        text = m.group(1)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip() and not re.match(r"(?i)^\s*question\s*:", ln)]
    line = lines[0] if lines else ""
    line = _CITE.sub("", line).replace("**", "").replace("__", "")
    line = _LEADIN.sub("", _PREFIX.sub("", _LIST.sub("", line)))
    # first sentence only (but "Dr. Berg" and "v4.2" stay whole)
    start = 0
    for m in _SENTENCE_END.finditer(line):
        if not _ABBREV.search(line[start:m.start()]):
            line = line[: m.start()]
            break
    line = " ".join(line.split()).strip(" \"'`“”‘’")
    line = line.rstrip(" .;:,") if not re.search(r"\b[A-Z]\.$|\.\.\.$", line) else line
    if question and not is_abstention(line):
        line = strip_echo(line, question, language).strip(" \"'`“”‘’").rstrip(" .;:,")
    if passages and not is_abstention(line):
        from workbench.copying import source_text
        from workbench.quantity import quantity_phrase

        sents = [source_text(s) for p in passages for s in split_sentences(p)]
        scores = overlap_scores(question or "", sents, language)
        ranked = [sents[i] for i in sorted(range(len(sents)), key=lambda i: -scores[i])]
        line = quantity_phrase(line, ranked, question or "", stopwords(language))
    return line


_ABSTAIN = re.compile(
    r"(?:\bi\s+(?:do\s*not|don'?t|cannot|can'?t|am\s+not\s+sure|have\s+no)\b.{0,20}\b(?:know|say|answer|information|tell|find)"
    r"|\bnot\s+(?:mentioned|stated|specified|provided|given|found|available|included|listed|contained)\b"
    r"|\b(?:passages?|context|texts?|documents?|sources?)\s+(?:do(?:es)?\s*(?:not|n'?t)|did\s*n'?o?t)\s+"
    r"(?:say|mention|contain|state|provide|specify|include|give|answer)"
    r"|\bno\s+(?:information|answer|mention|data|details)\b|\bcannot\s+(?:be\s+)?(?:answer|determin)"
    r"|\bunable\s+to\s+(?:answer|find|determine)|^\s*(?:unknown|n/?a|none)\s*$"
    # Portuguese: "não sei", "não é mencionado", "não há informação", "os trechos não dizem", "desconhecido"
    r"|\bn[ãa]o\s+(?:sei|consigo|(?:[ée]|foi|est[áa])\s+(?:mencionad|indicad|especificad|informad|dit)"
    r"|h[áa]\s+(?:informa|men[çc][ãa]o|resposta|dados))"
    r"|\b(?:trechos?|passagens?|textos?|documentos?)\s+n[ãa]o\s+(?:dizem?|mencionam?|cont[êe]m|informam?)"
    r"|^\s*desconhecid[oa]\s*$)",
    re.I)


def is_abstention(text: str) -> bool:
    """Whether a reply declines to answer ("I don't know", "not mentioned in the passages", empty...)."""
    t = (text or "").replace("’", "'").strip()
    return not t or bool(_ABSTAIN.search(t))


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
        from workbench.metrics import normalize_answer

        a = normalize_answer(answer)
        nums = [i + 1 for i, h in enumerate(hits) if a and f" {a} " in f" {normalize_answer(h.chunk.text)} "]
    out: list[Citation] = []
    for n in dict.fromkeys(nums):
        c = hits[n - 1].chunk
        out.append(Citation(n, c.doc, c.id, c.heading))
    return out


# --- batched answering -----------------------------------------------------------------------------

COPY_SENTENCES = 4
"""Sentences of the passages a grounded reply may copy from: those closest to the question (0: the whole
passages). Measured with SmolLM2-135M on the 180 answerable demo eval questions (``bench/rag_prompt.py``,
k=2, word-aligned copy): 1 sentence F1 0.34, 2: 0.42, 3: 0.46, 5: 0.46, whole passages 0.43; once spans
may not start with a stopword or a question word and "I don't know" is held back (``ABSTAIN_BIAS`` -3):
3 sentences 0.50, 4: 0.55, 5: 0.52; with k=3 passages, 4 sentences 0.48."""

ABSTAIN_BIAS = -3.0
"""Log-score added to a grounded reply that starts the abstention phrase. A small model offered fewer
places to copy from declines answerable questions more often; measured as above with 5 sentences: bias 0
F1 0.49 (declines 13% of answerable and 11% of unanswerable questions), -1.5: 0.52 (6% and 6%), -3: 0.52
(2% and 6%)."""


def copy_sources(questions: Sequence[str], hits: Sequence[Sequence[Hit]], embedder: Any = None,
                 n_sentences: int | None = None, language: str = DEFAULT_LANGUAGE) -> list[list[CopySource]]:
    """What each grounded reply may copy from: the abstention phrase and the passages' ``n_sentences``
    sentences (table rows, headings) closest to the question.

    Closeness is the embedder's cosine similarity (each distinct sentence encoded once per call) or,
    without an embedder, the summed idf of shared question words (``overlap_scores``). The prompt still
    shows the whole passages; only where the answer is copied from narrows. A reply may not start with a
    stopword of ``language`` or a word of its question.
    """
    from workbench.copying import CopySource, no_start_words

    n = COPY_SENTENCES if n_sentences is None else n_sentences
    sents = [[s for h in hs for s in split_sentences(h.chunk.text)] for hs in hits]
    if n <= 0:
        texts = [[h.chunk.text for h in hs] for hs in hits]
    elif embedder is None:
        texts = [_top(ss, overlap_scores(q, ss, language), n) for q, ss in zip(questions, sents)]
    else:
        distinct = list(dict.fromkeys(s for ss in sents for s in ss))
        row = {s: i for i, s in enumerate(distinct)}
        vecs = embedder.encode(distinct, role="passage")
        qvecs = embedder.encode(list(questions), role="query")
        texts = [_top(ss, (vecs[[row[s] for s in ss]] @ qv).tolist(), n) for qv, ss in zip(qvecs, sents)]
    out = []
    for q, kept in zip(questions, texts):
        no_start = no_start_words(q, stopwords(language))
        out.append([CopySource(t, no_start) for t in kept] + [CopySource(ABSTAIN, bias=ABSTAIN_BIAS)])
    return out


def _top(items: list[str], scores: list[float], n: int) -> list[str]:
    """The ``n`` best-scoring items, in their original order."""
    return [items[i] for i in sorted(sorted(range(len(items)), key=lambda i: (-scores[i], i))[:n])]


def answer_questions(questions: Sequence[str], generator: Any, retriever: Any = None, k: int | None = None,
                     progress: bool = False) -> list[Answer]:
    """Answer questions in batches: closed book, or over the retriever's top-k passages.

    Args:
        questions: the questions, answered in this order.
        generator: a ``workbench.generate.Generator`` (its config sets the reply and context budgets).
        retriever: a ``workbench.retrieve.Retriever`` (``search_batch``; its ``language`` picks the stopwords
            of answer cleaning), or None for closed book.
        k: passages per question (None: the retriever's configured k).
        progress: show progress bars.

    Returns:
        One ``Answer`` per question.
    """
    questions = list(questions)
    hits_per_q: list[list[Hit] | None] = [None] * len(questions)
    retrieval_share = 0.0
    if retriever is not None and questions:
        t0 = time.perf_counter()
        hits_per_q = list(retriever.search_batch(questions, k=k))
        retrieval_share = (time.perf_counter() - t0) / len(questions)
    prompts = [build_prompt(q, h, generator.tokenizer, generator.cfg.context_tokens)
               for q, h in zip(questions, hits_per_q)]
    copy = retriever is not None and generator.cfg.copy_spans
    language = retriever.language if retriever is not None else DEFAULT_LANGUAGE
    sources = copy_sources(questions, [used for _, used in prompts], getattr(retriever, "embedder", None),
                           language=language) if copy else None
    gens = generator.generate([m for m, _ in prompts], progress=progress, stop=ANSWER_STOPS, sources=sources)
    out = []
    for q, (_, used), g in zip(questions, prompts, gens):
        text = clean_answer(g.text, q, [h.chunk.text for h in used], language)
        out.append(Answer(q, text, list(used), cite(g.text, used, text), g.latency_s + retrieval_share,
                          g.n_new_tokens, g.text))
    return out


# --- one question from the command line ------------------------------------------------------------

SYSTEMS = ("base", "rag", "ft", "ft_rag")
MAX_QUESTION_CHARS = 4000


def check_question(question: str) -> str:
    """The question stripped, or a WorkbenchError when it is empty or too long."""
    from workbench.errors import WorkbenchError

    q = (question or "").strip()
    if not q:
        raise WorkbenchError("the question is empty", 'ask something, e.g. "How much does the Tern-3 weigh?"')
    if len(q) > MAX_QUESTION_CHARS:
        raise WorkbenchError(f"the question is too long ({len(q)} characters, at most {MAX_QUESTION_CHARS})",
                             "ask a shorter question")
    return q


def open_retriever(target: str, cfg: Any, progress: bool = True) -> Any:
    """A Retriever over ``target``: an index folder, an index name, or a corpus folder (indexed if needed).

    A corpus folder's index (named after the folder) is built when missing and updated when stale,
    re-encoding only changed chunks.
    """
    from pathlib import Path

    from workbench.index import build_index, load_index
    from workbench.retrieve import Retriever

    path = Path(target)
    if path.is_dir() and not (path / "manifest.json").exists():
        result = build_index(path, cfg.index, cfg.ingest, progress=progress)
        index = load_index(result.path, corpus_dir=path)
    else:
        index = load_index(target, check_corpus=True)
    return Retriever(index, cfg.retrieve)


def ask(target: str, question: str, system: str = "rag", cfg: Any = None, adapter: str | None = None,
        k: int | None = None, progress: bool = True) -> Answer:
    """Answer one question with one system (what ``workbench ask`` runs).

    Args:
        target: corpus folder, index name or index folder (used by rag and ft_rag).
        question: the question.
        system: base (closed book), rag (base + passages), ft (adapter, closed book), ft_rag (adapter +
            passages).
        cfg: a ``RunConfig`` (model, generation and retrieval settings); default: the built-in defaults.
        adapter: adapter name or folder for ft / ft_rag (default ``<target folder name>-sft``).
        k: passages per question (default ``cfg.retrieve.k``).
        progress: show index-building progress.

    Raises:
        WorkbenchError: unknown system, empty or over-long question, missing index or adapter.
    """
    from pathlib import Path

    from workbench.config import RunConfig
    from workbench.errors import WorkbenchError
    from workbench.generate import Generator

    cfg = cfg or RunConfig()
    if system not in SYSTEMS:
        raise WorkbenchError(f"unknown system {system!r}", f"use one of {', '.join(SYSTEMS)}")
    question = check_question(question)
    retriever = open_retriever(target, cfg, progress) if system.endswith("rag") else None
    if retriever is not None:
        retriever.check_query(question)
    if system.startswith("ft"):
        from workbench.adapters import load_finetuned

        model, tokenizer, _ = load_finetuned(adapter or f"{Path(target).name}-sft", cfg.model)
    else:
        from workbench.models import load_base_model

        model, tokenizer = load_base_model(cfg.model)
    gen = Generator(model, tokenizer, cfg.generate)
    return answer_questions([question], gen, retriever=retriever, k=k)[0]


def format_answer(answer: Answer) -> str:
    """The answer, its sources (cited passages marked) and timing, for the terminal."""
    lines = [answer.text or "(empty answer)"]
    cited = {c.n for c in answer.citations}
    if answer.hits:
        lines.append("")
        lines.append("sources:")
        for n, h in enumerate(answer.hits, 1):
            c = h.chunk
            mark = "*" if n in cited else " "
            where = c.doc + (f" › {c.heading}" if c.heading else "")
            lines.append(f" {mark}[{n}] {where}  (score {h.score:.3f}, {c.id})")
        if cited:
            lines.append("   (* = the answer is found in or cited from that passage)")
    lines.append("")
    tps = answer.n_new_tokens / answer.latency_s if answer.latency_s > 0 else 0.0
    lines.append(f"latency {answer.latency_s:.2f} s, {answer.n_new_tokens} new tokens ({tps:.1f} tokens/s)")
    return "\n".join(lines)
