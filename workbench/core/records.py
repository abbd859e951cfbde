"""Record types shared by every stage, and their JSON Lines form."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from workbench.core.artifacts import atomic_path
from workbench.core.errors import WorkbenchError


@dataclass
class Chunk:
    """A span of one cleaned document: the unit that is indexed, retrieved and trained on.

    Attributes:
        id: stable id, ``"<doc>#<n>"``.
        text: chunk text (cleaned).
        doc: document path relative to the corpus root (posix separators).
        span: ``(start, end)`` character offsets into the cleaned document text.
        heading: nearest preceding markdown/HTML/rst heading, or ``""``.
        n_tokens: length in the ingest tokenizer's tokens.
        meta: anything else (e.g. ``near_duplicate_of``).
    """

    id: str
    text: str
    doc: str
    span: tuple[int, int]
    heading: str = ""
    n_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["span"] = list(self.span)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Chunk":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["span"] = tuple(d["span"])
        return cls(**d)


@dataclass
class Hit:
    """One retrieved chunk with its score and 1-based rank."""

    chunk: Chunk
    score: float
    rank: int


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines atomically; returns the row count."""

    n = 0
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSON Lines file (blank lines skipped): the one JSON Lines reader.

    Raises:
        WorkbenchError: a line that is not UTF-8, not JSON or not an object, naming the file and line number.
    """
    for _, obj in numbered_jsonl(path):
        yield obj


def numbered_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file (a UTF-8 BOM is allowed).

    Raises:
        WorkbenchError: as ``read_jsonl``.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise WorkbenchError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start + 1} of the line)",
                                     "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkbenchError(f"{path}:{lineno}: malformed JSON ({e.msg})", "fix or remove that line") from None
            if not isinstance(obj, dict):
                raise WorkbenchError(f"{path}:{lineno}: expected a JSON object", "fix that line")
            yield lineno, obj


def read_chunks(path: Path) -> list[Chunk]:
    return [Chunk.from_json(d) for d in read_jsonl(path)]
