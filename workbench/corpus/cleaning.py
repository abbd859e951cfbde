"""Document text to clean text: format parsing (markdown, rst, plain text, HTML), headings, normalisation.

Every format is first turned into blocks (paragraphs and headings); each block is cleaned (Unicode NFC,
control characters removed, whitespace normalised) and the blocks are joined by blank lines. Headings
open a :class:`Section`, so the chunker can give every chunk the heading it sits under.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

# suffix -> format
FORMATS = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".rst": "rst",
           ".html": "html", ".htm": "html", ".pdf": "pdf"}

Block = tuple[str, bool]
"""(text, is_heading)."""

# C0/C1 control characters except tab and newline (those are whitespace), plus invisible format
# characters that only get in the way (BOM, zero-width space, soft hyphen, word joiner).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\u200b\u00ad\u2060]")
# every horizontal whitespace run (tabs, NBSP, thin spaces, ...) becomes one space; the patterns match
# only what changes (a lone " " or "\n" is left alone), which keeps cleaning fast on large files
_HSPACE = re.compile(r"[^\S\n]{2,}|[^\S \n]")
_LINE_EDGES = re.compile(r" \n ?|\n ")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise text: Unicode NFC, no control characters, single spaces, at most one blank line in a row.

    Line breaks survive (single newlines inside a paragraph, a blank line between paragraphs); spaces at
    the ends of lines and of the text are removed. The function is idempotent.

    Args:
        text: any text.

    Returns:
        The cleaned text.
    """
    text = text.replace("\r\n", "\n").translate(_NEWLINES)
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = _HSPACE.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()


# \r, vertical tab, form feed, NEL and the Unicode line/paragraph separators all break lines
_NEWLINES = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})


@dataclass
class Section:
    """A run of the cleaned text under one heading: ``text[start:end]``, heading line included."""

    heading: str
    start: int
    end: int


@dataclass
class CleanDoc:
    """A cleaned document: its text and its sections (in order, covering every paragraph)."""

    text: str
    sections: list[Section] = field(default_factory=list)


def assemble(blocks: Iterable[Block]) -> CleanDoc:
    """Clean each block and join them with blank lines; headings open sections.

    Args:
        blocks: (text, is_heading) pairs in document order.

    Returns:
        The cleaned document. Empty blocks are dropped; text before the first heading forms a section
        with heading ``""``.
    """
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    has_body = False  # whether the current section holds more than its heading line
    for raw, is_heading in blocks:
        text = clean_text(raw)
        if not text:
            continue
        if parts:
            pos += 2  # the "\n\n" joining this block to the previous one
        if is_heading:
            text = " ".join(text.split())  # a heading is one line
            if sections and sections[-1].heading and not has_body:
                # a heading right above a sub-heading: one section, named by the more specific heading,
                # holds both heading lines (no chunk of a lone heading)
                sections[-1].heading = text
            else:
                if sections:
                    sections[-1].end = pos - 2
                sections.append(Section(text, pos, pos))
            has_body = False
        else:
            if not sections:
                sections.append(Section("", pos, pos))
            has_body = True
        parts.append(text)
        pos += len(text)
    if sections:
        sections[-1].end = pos
    return CleanDoc("\n\n".join(parts), sections)


def clean_document(raw: str, kind: str) -> CleanDoc:
    """Parse ``raw`` as ``kind`` (text, markdown, rst, html) and clean it.

    Args:
        raw: the decoded file contents.
        kind: a value of :data:`FORMATS` other than "pdf" (PDF text arrives as plain text).

    Returns:
        The cleaned document with its heading sections.
    """
    if kind == "html":
        return assemble(html_blocks(raw))
    if kind == "markdown":
        return assemble(markdown_blocks(raw))
    return assemble(underlined_blocks(raw, rst=(kind == "rst")))


# --- plain text and reStructuredText ------------------------------------------------------------

_UNDERLINE = re.compile(r"""^([=\-~^"'`#*+:._])\1{2,}\s*$""")
_RST_DIRECTIVE = re.compile(r"^\.\.(\s|$)")
_RST_INLINE = [
    (re.compile(r"`([^`<]+?)\s*<[^>]+>`_{1,2}"), r"\1"),  # `text <url>`_
    (re.compile(r":[\w-]+:`([^`]+)`"), r"\1"),  # :role:`text`
    (re.compile(r"``([^`]+)``"), r"\1"),  # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),  # `text`_
]


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _is_title(title: str, underline: str, rst: bool) -> bool:
    # rst demands an underline at least as long as the title; plain text is looser (short rules)
    return len(underline) >= len(title) if rst else len(title) <= 120


def underlined_blocks(text: str, rst: bool = False) -> Iterator[Block]:
    """Blocks of plain text or reStructuredText: paragraphs split at blank lines; a line underlined (and
    optionally overlined) with a repeated punctuation character at least as long as it is a heading.

    Args:
        text: the document.
        rst: also drop rst directive/comment lines (``.. name::``) and unwrap inline markup.
    """
    lines = _lines(text)
    para: list[str] = []

    def flush() -> Iterator[Block]:
        if para:
            body = "\n".join(para)
            if rst:
                for pattern, repl in _RST_INLINE:
                    body = pattern.sub(repl, body)
            yield body, False
            para.clear()

    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not stripped:
            yield from flush()
        elif _UNDERLINE.match(stripped):
            yield from flush()
            after = lines[i + 2].strip() if i + 2 < len(lines) else ""
            if nxt and not _UNDERLINE.match(nxt) and _UNDERLINE.match(after) and after[0] == stripped[0]:
                yield nxt, True  # overlined and underlined title
                i += 3
                continue
            # otherwise a rule (transition): dropped
        elif not para and _UNDERLINE.match(nxt) and _is_title(stripped, nxt, rst):
            yield stripped, True
            i += 2
            continue
        elif rst and _RST_DIRECTIVE.match(stripped):
            yield from flush()
            # skip the directive and its indented option lines
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip().startswith(":"):
                i += 1
            continue
        else:
            para.append(lines[i])
        i += 1
    yield from flush()


# --- markdown -------------------------------------------------------------------------------------

def _markdown_parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def _md_text(inline: Any) -> str:
    """The text of a markdown-it inline token: emphasis, links and inline HTML unwrapped, images as their
    alt text, inline code as its text, line breaks kept."""
    out = []
    for t in inline.children or []:
        if t.type in ("text", "code_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif t.type == "image":
            out.append(t.content)  # the alt text
    return "".join(out)


def markdown_blocks(text: str) -> Iterator[Block]:
    """Blocks of a markdown document, read by a CommonMark parser (markdown-it-py, with tables): ATX and
    setext headings, paragraphs, list items (with their markers), table rows (``| a | b |``), fenced and
    indented code as plain text; YAML front matter, rules, link-reference definitions, emphasis, link
    targets and inline HTML dropped."""
    lines = _lines(text)
    if lines and lines[0].strip() == "---":  # YAML front matter (not CommonMark: the parser would see a rule)
        for j in range(1, len(lines)):
            if lines[j].strip() in {"---", "..."}:
                lines = lines[j + 1:]
                break
    tokens = _markdown_parser().parse("\n".join(lines))
    markers: list[str] = []  # the open lists: "-" or the next number
    row: list[str] = []
    group: list[str] = []  # consecutive list items or table rows: one block, a line each

    def flush() -> Iterator[Block]:
        if group:
            yield "\n".join(group), False
            group.clear()

    for i, tok in enumerate(tokens):
        if tok.type == "bullet_list_open":
            markers.append("-")
        elif tok.type == "ordered_list_open":
            markers.append(str(int(tok.attrs.get("start", 1) or 1)))
        elif tok.type in ("bullet_list_close", "ordered_list_close"):
            markers.pop()
        elif tok.type == "heading_open":
            yield from flush()
            yield _md_text(tokens[i + 1]), True
        elif tok.type == "paragraph_open":
            body = _md_text(tokens[i + 1])
            if not markers:
                yield from flush()
                yield body, False
                continue
            if tokens[i - 1].type == "list_item_open":  # the item's first paragraph carries its marker
                mark = markers[-1]
                body = f"{mark} {body}" if mark == "-" else f"{mark}. {body}"
                if mark != "-":
                    markers[-1] = str(int(mark) + 1)
            group.append(body)
        elif tok.type in ("fence", "code_block"):
            yield from flush()
            yield tok.content.rstrip("\n"), False
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            row.append(_md_text(tok))
        elif tok.type == "tr_close":
            group.append("| " + " | ".join(row) + " |")
        elif tok.type == "table_close":
            yield from flush()
    yield from flush()


# --- HTML -----------------------------------------------------------------------------------------

# boilerplate: dropped with everything inside
_HTML_DROP = {"script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form", "button",
              "svg", "iframe", "object", "select", "head", "title", "meta", "link"}
_HTML_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_HTML_BLOCKS = {"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr",
                "thead", "tbody", "tfoot", "blockquote", "pre", "figure", "figcaption", "caption", "address",
                "details", "summary", "fieldset", "hr", "body", "html"}
_HTML_CELLS = {"td", "th"}
_WS = re.compile(r"\s+")
_BOILERPLATE_ATTR = re.compile(r"cookie|consent|banner|breadcrumb|skip-link|sidebar|newsletter", re.I)


def _is_boilerplate(tag) -> bool:
    if tag.name in _HTML_DROP:
        return True
    attrs = tag.attrs or {}
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    if attrs.get("role") in {"navigation", "banner", "contentinfo", "complementary", "search"}:
        return True
    marks = " ".join([attrs.get("id") or "", *(attrs.get("class") or [])])
    return bool(marks.strip()) and bool(_BOILERPLATE_ATTR.search(marks))


def html_blocks(html: str) -> Iterator[Block]:
    """Blocks of an HTML page: the ``<main>`` (else the single ``<article>``, else ``<body>``) without
    scripts, styles, navigation, header, footer, asides, forms, hidden elements and cookie banners;
    ``<h1>``-``<h6>`` become headings, block elements paragraphs; whitespace collapses except in ``<pre>``.
    """
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

    soup = BeautifulSoup(html, "html.parser")
    articles = soup.find_all("article")
    root = soup.find("main") or (articles[0] if len(articles) == 1 else None) or soup.body or soup
    skip_strings = (Comment, Declaration, Doctype, ProcessingInstruction)

    buf: list[str] = []
    preformatted = 0

    def flush() -> Iterator[Block]:
        text = "".join(buf)
        buf.clear()
        if text.strip():
            yield text, False

    # iterative walk (deeply nested pages would overflow recursion); ("end", tag) closes a block
    stack: list = [iter(root.children)] if hasattr(root, "children") else []
    closers: list = [None]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            tag = closers.pop()
            if tag is not None and tag.name in _HTML_BLOCKS:
                yield from flush()
            if tag is not None and tag.name == "pre":
                preformatted -= 1
            continue
        if isinstance(child, NavigableString):
            if not isinstance(child, skip_strings):
                buf.append(str(child) if preformatted else _WS.sub(" ", str(child)))
            continue
        if _is_boilerplate(child):
            continue
        if child.name in _HTML_HEADINGS:
            yield from flush()
            yield child.get_text(" "), True
            continue
        if child.name == "br":
            buf.append("\n")
            continue
        if child.name in _HTML_CELLS:
            buf.append(" ")
        if child.name in _HTML_BLOCKS:
            yield from flush()
        if child.name == "pre":
            preformatted += 1
        stack.append(iter(child.children))
        closers.append(child)
    yield from flush()
