"""Gold question sets (``qa.jsonl``): loading with validation, and splits."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.core.paths import QA_FILE
from workbench.core.records import numbered_jsonl
from workbench.corpus.ingest import list_documents

_FIELDS = {"id", "question", "answers", "answerable", "split", "doc", "fact_id", "kind", "old_answers"}


@dataclass
class QAItem:
    """One gold question (see the qa.jsonl contract in the README)."""

    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    answerable: bool = True
    split: str = "eval"
    doc: str | None = None
    fact_id: str | None = None
    kind: str | None = None
    old_answers: list[str] | None = None
    """An update folder's ``kind: updated`` questions: the answer(s) the fact had before the update."""

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _item(obj: dict, where: str) -> QAItem:
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise WorkbenchError(f"{where}: unknown field(s) {', '.join(unknown)}",
                             f"allowed fields: {', '.join(sorted(_FIELDS))}")
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise WorkbenchError(f"{where}: missing or empty 'question'", "every line needs a question")
    qid = obj.get("id")
    if qid is None or qid == "":
        raise WorkbenchError(f"{where}: missing 'id' (a non-empty string)", "give every question an id")
    if not isinstance(qid, str):
        raise WorkbenchError(f"{where}: 'id' is {json.dumps(qid)}, not a string (ids are strings)",
                             f'quote it: "id": "{json.dumps(qid)}"' if isinstance(qid, (int, float)) else
                             "use a string id")
    answers = obj.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise WorkbenchError(f"{where}: 'answers' must be a list of strings", "fix that line")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise WorkbenchError(f"{where}: 'answerable' must be true or false", "fix that line")
    if answerable and not answers:
        raise WorkbenchError(f"{where}: an answerable question needs at least one answer",
                             "add answers or set answerable to false")
    split = obj.get("split", "eval")
    if split not in ("train", "eval"):
        raise WorkbenchError(f"{where}: split must be 'train' or 'eval', not {split!r}", "fix that line")
    for key in ("doc", "fact_id", "kind"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise WorkbenchError(f"{where}: '{key}' must be a string", "fix that line")
    old = obj.get("old_answers")
    if old is not None and (not isinstance(old, list) or not all(isinstance(a, str) for a in old)):
        raise WorkbenchError(f"{where}: 'old_answers' must be a list of strings", "fix that line")
    return QAItem(id=obj["id"], question=q.strip(), answers=answers, answerable=answerable,
                  split=split, doc=obj.get("doc"), fact_id=obj.get("fact_id"), kind=obj.get("kind"),
                  old_answers=old)


def load_qa(path: Path) -> list[QAItem]:
    """Read and validate a qa.jsonl file.

    Raises:
        WorkbenchError: missing file, malformed line (with its number), unknown field, missing
            question, duplicate id, or no questions at all.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"question file {path} not found",
                             f"put a {QA_FILE} at the corpus root or pass --qa FILE")
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    try:
        for lineno, obj in numbered_jsonl(path):
            item = _item(obj, f"{path}:{lineno}")
            if item.id in seen:
                raise WorkbenchError(f"{path}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})",
                                     "ids must be unique")
            seen[item.id] = lineno
            items.append(item)
    except OSError as e:
        raise WorkbenchError(f"question file {path} cannot be read ({e.strerror or type(e).__name__})",
                             "check its permissions") from None
    if not items:
        raise WorkbenchError(f"{path} holds no questions", "add at least one question line")
    return items


def split_items(items: list[QAItem], split: str) -> list[QAItem]:
    return [q for q in items if q.split == split]


def eval_items(items: list[QAItem]) -> list[QAItem]:
    """The eval split; raises if it is empty (nothing to score)."""
    ev = split_items(items, "eval")
    if not ev:
        raise WorkbenchError("the question file has no eval questions",
                             "mark some questions \"split\": \"eval\" (the default)")
    return ev


def unknown_docs(items: list[QAItem], corpus_dir: Path) -> list[str]:
    """The ``doc`` values that name no document of the corpus (sorted, once each)."""

    root = Path(corpus_dir)
    docs, _ = list_documents(root)
    known = {d.relative_to(root).as_posix() for d in docs}
    return sorted({q.doc for q in items if q.doc and q.doc not in known})


def warn_unknown_docs(items: list[QAItem], corpus_dir: Path, qa_path: Path) -> int:
    """Print one warning line (stderr) when questions name documents the corpus does not have.

    Returns:
        How many questions name an unknown document.
    """
    import sys

    missing = set(unknown_docs(items, corpus_dir))
    n = sum(q.doc in missing for q in items)
    if n:
        shown = ", ".join(sorted(missing)[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        print(f"warning: {n} question(s) in {qa_path} name a doc that is not in the corpus ({shown}); "
              "doc_recall cannot credit them", file=sys.stderr)
    return n
