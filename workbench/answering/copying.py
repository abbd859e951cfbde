"""Copy-constrained decoding: a reply may only be a span copied from its passages (or the abstention).

Small models read passages badly: they paraphrase, drift into their own memory, or stop halfway through a
name. Constraining generation so that every reply is a contiguous token span of one of the passages
(extractive answering, done by the generator itself) keeps the answer grounded while the model still
chooses where the span starts and where it ends. ``SpanCopyProcessor`` is a ``transformers``
``LogitsProcessor``; it works with batched left-padded generation, greedy or sampled, and streaming.

Matching is on token ids. The passages are tokenized the way they appear in running text (words carry
their leading space), so a reply may also start with the space-less form of a word ("Ada" for " Ada"),
which is what chat models emit at the start of a turn. Spans start and end at word boundaries, and list
markers and section numbers ("1.", "3.2.") are not copyable content.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

_SEP = -1


_ENUMERATOR = re.compile(r"(?m)^[ \t]*(?:(?:\d{1,3}(?:\.\d{1,3})*[.)]|[-*+•#>]+|\([a-z0-9]\))[ \t]+)+")
"""List markers and section numbers at the start of a line ("1.", "2)", "3.2.", "-", "##"): layout, not content.
A bare number ("42 kg", "3.5 kWh") is content: a sentence may start with it."""
_CLOSING = frozenset(".,;:!?)]}\"'…»”’")


def source_text(text: str) -> str:
    """A passage as a reply may copy it: list markers and section numbers dropped, whitespace collapsed."""
    return " ".join(_ENUMERATOR.sub("", text).split())


@dataclass(frozen=True)
class CopySource:
    """A text a reply may copy from, words (casefolded) a copied span may not start with, and a prior for
    starting there."""

    text: str
    no_start: frozenset[str] = frozenset()
    bias: float = 0.0
    """Added to the log-score of a reply's first token when the reply starts in this text."""


Source = str | CopySource
"""What a reply may copy from: a plain text, or a ``CopySource`` (banned start words, a start prior)."""

_PUNCT = ".,;:!?()[]{}\"'“”‘’«»*_`"


def _word(piece: str) -> str:
    return piece.strip().strip(_PUNCT).casefold()


def no_start_words(question: str, stopwords: frozenset[str] = frozenset()) -> frozenset[str]:
    """Words an answer to ``question`` does not start with: the question's own words and ``stopwords``.

    A reply that starts by echoing the question ("Skua-G2 installation" for "What's the name of the drill
    in the Skua-G2 installation kit?") or with a function word ("The rollout was halted ...") is not an
    answer phrase; of the 453 gold answers of the demo corpus, 2 start with a word of their question and
    none with a stopword.
    """
    return frozenset(w for w in (_word(p) for p in question.split()) if w) | stopwords


class CopyVocab:
    """Per-tokenizer helpers: passage text -> ids, a word token's space-less twin, token shapes (cached;
    keep one per tokenizer, as ``Generator`` does, so the caches outlast one batch)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.bare = lru_cache(maxsize=65536)(self._bare)
        self.shape = lru_cache(maxsize=65536)(self._shape)
        self.piece = lru_cache(maxsize=65536)(lambda token_id: tokenizer.decode([token_id]))

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(" " + source_text(text), add_special_tokens=False)["input_ids"]

    def _bare(self, token_id: int) -> int:
        """The id of the token spelling ``token_id`` without its leading space, or -1."""
        piece = self.piece(token_id)
        if len(piece) < 2 or not piece.startswith(" ") or piece[1].isspace():
            return -1
        ids = self.tokenizer(piece[1:], add_special_tokens=False)["input_ids"]
        return ids[0] if len(ids) == 1 else -1

    def _shape(self, token_id: int) -> tuple[bool, bool, bool]:
        """(starts with whitespace, ends with a letter or digit, starts with closing punctuation)."""
        piece = self.piece(token_id)
        return (piece[:1].isspace(), piece[-1:].isalnum(), piece[:1] in _CLOSING)


def _banned_starts(ids: list[int], no_start: frozenset[str], vocab: CopyVocab) -> list[bool]:
    """Per token of ``ids``: whether the word running from it to the next whitespace is in ``no_start``."""
    if not no_start:
        return [False] * len(ids)
    pieces = [vocab.piece(int(t)) for t in ids]
    out = [False] * len(ids)
    word = ""
    for i in range(len(ids) - 1, -1, -1):  # right to left: the word from i is piece i + the word from i+1
        p = pieces[i]
        word = p if i + 1 == len(ids) or pieces[i + 1][:1].isspace() else p + word
        out[i] = _word(word) in no_start
    return out


class _Row:
    """One reply's sources flattened into one id array (separators between them) and its live matches.

    A span starts at a word (a token after whitespace or punctuation) and ends before whitespace,
    closing punctuation or the end of its source, so it never stops inside a word or a number.
    """

    def __init__(self, sources: list[CopySource], vocab: CopyVocab):
        flat: list[int] = []
        banned: list[bool] = []
        bias: list[float] = []
        for src in sources:
            ids = vocab.ids(src.text)
            flat += ids + [_SEP]
            banned += _banned_starts(ids, src.no_start, vocab) + [True]
            bias += [src.bias] * (len(ids) + 1)
        self.seq = np.array(flat, dtype=np.int64)
        self.bias = np.array(bias, dtype=np.float32)
        shapes = [vocab.shape(int(t)) if t >= 0 else (True, False, True) for t in flat]
        ws = np.array([s[0] for s in shapes])
        alnum_end = np.array([s[1] for s in shapes])
        closing = np.array([s[2] for s in shapes])
        prev_alnum = np.concatenate([[False], alnum_end[:-1]])
        self.can_start = (self.seq >= 0) & (ws | ~prev_alnum) & ~np.array(banned, dtype=bool)
        # "0.31" and "v4.2": punctuation directly followed by a letter or digit is inside the word
        next_glued = np.concatenate([~ws[1:], [False]]) & np.concatenate([self.seq[1:] >= 0, [False]])
        self.can_end_before = (self.seq < 0) | ws | (closing & ~next_glued)
        # where a reply may start, the space-less twin of the word there ("Ada" for " Ada"), else -1
        self.start_bare = np.array([vocab.bare(int(t)) if ok else -1 for t, ok in zip(self.seq, self.can_start)],
                                   dtype=np.int64)
        self.active: np.ndarray | None = None  # positions of the next token to copy; None before the first
        self.free = self.seq.size == 0  # nothing to copy, or matching was lost (a finished row padded on)

    def advance(self, token: int) -> None:
        if self.active is None:
            starts = np.flatnonzero(self.can_start & ((self.seq == token) | (self.start_bare == token)))
            self.active = starts + 1
        else:
            self.active = self.active[self.seq[self.active] == token] + 1
        if self.active.size == 0:
            self.free = True

    def allowed(self) -> tuple[np.ndarray, bool, np.ndarray | None]:
        """Tokens that may come next, whether the reply may end here, and the tokens' start priors (first
        token only: the largest ``bias`` of the places each token starts a span; None when all are 0)."""
        if self.active is None:
            has_bare = self.start_bare >= 0
            toks = np.concatenate([self.seq[self.can_start], self.start_bare[has_bare]])
            bias = np.concatenate([self.bias[self.can_start], self.bias[has_bare]])
            order = np.argsort(-bias, kind="stable")
            toks, first = np.unique(toks[order], return_index=True)  # a token's first place: its largest bias
            bias = bias[order][first]
            return toks, False, (bias if bias.any() else None)
        nxt = self.seq[self.active]
        return np.unique(nxt[nxt >= 0]), bool(self.can_end_before[self.active].any()), None


class SpanCopyProcessor:
    """Masks every next token that would leave a span of the row's sources.

    Args:
        tokenizer: the model's tokenizer.
        sources: per batch row, the texts a reply may copy from (passage sentences, and the abstention
            phrase), plain or as ``CopySource`` with words a span may not start with.
        prompt_width: the (left-padded) prompt length; tokens after it are the reply.
        end_ids: tokens that end a reply (end of turn); allowed once at least one token was copied.
        vocab: the tokenizer's ``CopyVocab`` (a new one when not given).
    """

    def __init__(self, tokenizer: Any, sources: Sequence[Sequence[Source]], prompt_width: int,
                 end_ids: Sequence[int], vocab: CopyVocab | None = None):
        vocab = vocab or CopyVocab(tokenizer)
        as_sources = ([CopySource(t) if isinstance(t, str) else t for t in texts] for texts in sources)
        self.rows = [_Row([s for s in row if s.text.strip()], vocab) for row in as_sources]
        self.width = prompt_width
        self.end_ids = np.array(sorted(set(end_ids)), dtype=np.int64)
        self.seen = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        n = input_ids.shape[1] - self.width
        if n > self.seen:  # one new token per row since the last call
            last = input_ids[:, -1].tolist()
            for row, tok in zip(self.rows, last):
                if not row.free:
                    row.advance(int(tok))
            self.seen = n
        mask = torch.ones_like(scores, dtype=torch.bool)
        prior = None  # start priors, made on the first step that has any
        for b, row in enumerate(self.rows):
            if row.free:
                mask[b] = False
                continue
            ok, may_end, bias = row.allowed()
            if bias is not None:
                prior = torch.zeros_like(scores) if prior is None else prior
                keep = ok < scores.shape[1]
                prior[b, torch.from_numpy(ok[keep]).to(scores.device)] = torch.from_numpy(bias[keep]).to(prior)
            if may_end:
                ok = np.concatenate([ok, self.end_ids])
            ok = ok[ok < scores.shape[1]]
            mask[b, torch.from_numpy(ok).to(scores.device)] = False
        out = (scores if prior is None else scores + prior).masked_fill(mask, float("-inf"))
        # a dead end (every copyable token, or the end of turn, already forbidden by another processor):
        # give the row back to the model rather than force an arbitrary token
        dead = torch.isinf(out).all(dim=-1) & ~torch.isinf(scores).all(dim=-1)
        for b in torch.nonzero(dead).flatten().tolist():
            self.rows[b].free = True
            out[b] = scores[b]
        return out
