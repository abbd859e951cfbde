"""Showing tokens and numbers in a terminal: visible whitespace, aligned plain-text tables."""
from __future__ import annotations

from typing import Any, Sequence

_VISIBLE = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})


def show_token(tokenizer: Any, token_id: int) -> str:
    """A token as readable text: its decoded string with whitespace made visible (a leading space as
    ``␣``, a line break as ``↵``), or its vocabulary string when it decodes to part of a character."""
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    if "\ufffd" in text or text == "":
        text = str(tokenizer.convert_ids_to_tokens(int(token_id)))
    return visible(text)


def visible(text: str) -> str:
    """``text`` with spaces at its ends, line breaks and tabs shown as symbols."""
    text = text.translate(_VISIBLE)
    core = text.strip(" ")
    if not core:
        return "␣" * len(text)
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" "))
    return "␣" * lead + core + "␣" * trail


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """An aligned plain-text table (columns in ``right`` are right-aligned, e.g. numbers)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])
