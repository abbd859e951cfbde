"""Tokens: how the base model and the embedder cut the same text into pieces.

A word the tokenizer has not seen whole ("Tern-3") costs several tokens, and the two models cut it
differently: the LLM's byte-level BPE keeps case and the space before a word, the embedder's WordPiece
lower-cases and marks word-inner pieces with ``##``. Token counts are what context windows and the
chunker's budget are measured in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workbench.answering.models import resolve_base_model
from workbench.inside.prompt import check_text
from workbench.inside.text import format_table, visible
from workbench.retrieval.embed import Embedder

_WORD = re.compile(r"\S+")


@dataclass
class TokenSplit:
    """One tokenizer's view of a text.

    Attributes:
        name: which model's tokenizer ("base model …", "embedder …").
        ids: token ids (no special tokens added).
        tokens: the vocabulary entries (e.g. ``ĠTern``, ``##3``).
        spans: per token, the ``(start, end)`` characters of the text it covers.
        text: the text split.
        notes: e.g. the embedder reads only its first N tokens.
    """

    name: str
    ids: list[int]
    tokens: list[str]
    spans: list[tuple[int, int]]
    text: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def pieces(self) -> list[str]:
        """The text each token covers (WordPiece pieces keep the text's case)."""
        return [self.text[a:b] for a, b in self.spans]

    def word_costs(self) -> list[tuple[str, int]]:
        """Each whitespace-separated word with the number of tokens that cover part of it."""
        out = []
        for m in _WORD.finditer(self.text):
            n = sum(1 for a, b in self.spans if b > a and a < m.end() and b > m.start())
            out.append((m.group(0), n))
        return out


def split_text(text: str, tokenizer: Any, name: str, max_tokens: int | None = None) -> TokenSplit:
    """Split ``text`` into ``tokenizer``'s tokens.

    Args:
        text: any text.
        tokenizer: a fast Hugging Face tokenizer (offsets are needed).
        name: label of the tokenizer.
        max_tokens: the model reads at most this many; a longer text gets a note.

    Raises:
        WorkbenchError: an empty or over-long text.
    """
    check_text(text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    split = TokenSplit(name, ids, [str(t) for t in tokenizer.convert_ids_to_tokens(ids)],
                       [tuple(o) for o in enc["offset_mapping"]], text)
    if max_tokens and len(ids) > max_tokens:
        split.notes.append(f"{name} reads only its first {max_tokens} tokens; the remaining "
                           f"{len(ids) - max_tokens} are cut off when it encodes this text")
    return split


def load_tokenizers(base_model: str, embedder: str) -> list[tuple[str, Any, int | None]]:
    """The base model's and the embedder's tokenizers (no model weights loaded), each with its name and
    the most tokens its model reads (None: no limit recorded)."""
    import json

    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(resolve_base_model(base_model))
    folder = Embedder(embedder).path
    emb = AutoTokenizer.from_pretrained(folder)
    st_config = folder / "sentence_bert_config.json"
    limit = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length") if st_config.exists() else None
    return [(f"base model {base_model}", base, None), (f"embedder {embedder}", emb, limit)]


def split_all(text: str, tokenizers: list[tuple[str, Any, int | None]]) -> list[TokenSplit]:
    """``text`` split by each ``(name, tokenizer, max tokens)``."""
    return [split_text(text, tok, name, limit) for name, tok, limit in tokenizers]


def format_splits(splits: list[TokenSplit]) -> str:
    """Terminal view: per tokenizer, a count line and a table of its tokens; then the costliest words."""
    out = []
    for s in splits:
        out.append(f"{s.name}: {s.n_tokens} tokens for {len(s.text)} characters "
                   f"({len(s.text) / max(1, s.n_tokens):.1f} characters per token)")
        rows = [(i, tid, visible(piece), tok) for i, (tid, piece, tok) in enumerate(zip(s.ids, s.pieces(), s.tokens))]
        out.append(format_table(["#", "id", "text", "token"], rows, right=(0, 1)))
        out += [f"note: {n}" for n in s.notes]
        out.append("")
    words = [w for w, _ in splits[0].word_costs()] if splits else []
    if words:
        costs = [dict(enumerate(n for _, n in s.word_costs())) for s in splits]
        order = sorted(range(len(words)), key=lambda i: -max(c[i] for c in costs))[:10]
        out.append("words that cost the most tokens:")
        out.append(format_table(["word"] + [s.name for s in splits],
                                [[words[i]] + [c[i] for c in costs] for i in order], right=range(1, 1 + len(splits))))
    return "\n".join(out).rstrip()
