"""Showing untrusted text (documents, model answers) safely in Streamlit markdown.

Nothing from a document or a model is ever rendered as HTML or as markdown markup: every character
that markdown, Streamlit's directives (``:red[...]``, ``$...$``) or HTML could interpret is escaped, and
the only markup in the result is the highlighting added here.
"""
from __future__ import annotations

import re

from workbench.core.language import DEFAULT_LANGUAGE, stopwords

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>$:=^])")
_CITATION = re.compile(r"\[\d{1,2}\]")
_WORD = re.compile(r"\w+", re.UNICODE)


def escape_markdown(text: str) -> str:
    """Escape ``text`` so Streamlit markdown shows it literally (no HTML, links, images, LaTeX, directives).

    Newlines are kept as markdown line breaks.
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    # "&gt;" etc. were escaped above; their ';' and '&' are harmless. Keep single line breaks visible.
    return s.replace("\r\n", "\n").replace("\n", "  \n")


def content_words(text: str, language: str = DEFAULT_LANGUAGE) -> set[str]:
    """Lower-cased words of ``text`` that carry content (``language``'s stopwords and single letters dropped)."""
    stop = stopwords(language)
    return {w for w in (m.group(0).lower() for m in _WORD.finditer(text))
            if (len(w) > 1 or w.isdigit()) and w not in stop}


def highlight_overlap(passage: str, answer: str, max_chars: int | None = None) -> str:
    """The passage as escaped markdown with the words it shares with the answer highlighted.

    Runs of consecutive shared words (with the spaces between them) are highlighted as one span.

    Args:
        passage: document text (untrusted).
        answer: the model's answer (untrusted).
        max_chars: cut the passage to this many characters first (an ellipsis marks the cut).

    Returns:
        Markdown safe to pass to ``st.markdown``.
    """
    text = str(passage)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rstrip() + "…"
    wanted = content_words(_CITATION.sub(" ", str(answer)))
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for m in _WORD.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos:m.start()], False))
        pieces.append((m.group(0), m.group(0).lower() in wanted))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    # merge: a highlighted word, then only whitespace, then a highlighted word -> one span
    spans: list[tuple[str, bool]] = []
    i = 0
    while i < len(pieces):
        chunk, hit = pieces[i]
        if hit:
            j = i + 1
            while j + 1 < len(pieces) and pieces[j][0].isspace() and "\n" not in pieces[j][0] and pieces[j + 1][1]:
                chunk += pieces[j][0] + pieces[j + 1][0]
                j += 2
            spans.append((chunk, True))
            i = j
        else:
            spans.append((chunk, False))
            i += 1
    return "".join(f":orange-background[{escape_markdown(c)}]" if hit else escape_markdown(c) for c, hit in spans)
