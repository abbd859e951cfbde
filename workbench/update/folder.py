"""An update folder (input of ``workbench update``): what it changes in a base corpus, the corpus after it, and
the three question sets the update is scored on.

An update is shaped like a corpus. A document at the same relative path as one in the base corpus replaces
it, a new path adds one, and ``removed.txt`` (one relative path a line; blank lines and ``#`` comments
skipped) deletes documents. Its ``qa.jsonl`` holds the usual fields with ``kind`` ``new`` (a fact only in
the update) or ``updated`` (a fact whose answer changed; ``old_answers`` lists the previous value(s)), split
into train and eval as usual. The base corpus's answerable eval questions whose facts the update leaves
alone are the ``invariant`` set.

Everything here reads the two folders and never writes into them; :func:`write_updated_corpus` writes the
corpus after the update into a folder of its own.
"""
from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from workbench.core.artifacts import atomic_dir, hash_file
from workbench.core.errors import WorkbenchError
from workbench.core.paths import QA_FILE
from workbench.core.records import write_jsonl
from workbench.core.text import normalize_answer
from workbench.corpus.ingest import decode_bytes, list_documents
from workbench.corpus.qa import QAItem, load_qa

REMOVED_FILE = "removed.txt"
"""The update folder's list of deleted documents (relative paths); never a document itself."""
UPDATE_KINDS = ("new", "updated")
SETS = ("invariant", "updated", "new")
"""The question sets an update is scored on, in report order."""


@dataclass
class UpdatePlan:
    """What an update folder does to a base corpus (relative posix paths), and its questions.

    Attributes:
        corpus: the base corpus folder.
        update_dir: the update folder.
        replaced: base documents the update replaces with different content.
        added: documents only in the update.
        removed: base documents ``removed.txt`` deletes.
        same: update documents byte-identical to the base document they would replace (no change).
        kept: base documents the update leaves untouched (including ``same``).
        questions: the update's questions (``kind`` new or updated), empty when it has no qa.jsonl.
    """

    corpus: Path
    update_dir: Path
    replaced: list[str]
    added: list[str]
    removed: list[str]
    same: list[str]
    kept: list[str]
    questions: list[QAItem] = field(default_factory=list)

    @property
    def changed(self) -> set[str]:
        """Base documents whose facts may have changed (replaced or removed)."""
        return set(self.replaced) | set(self.removed)

    @property
    def touched(self) -> list[str]:
        """Documents of the updated corpus whose text is new: replaced or added."""
        return sorted(self.replaced + self.added)

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"update {self.update_dir}: {len(self.replaced)} replaced, {len(self.added)} added, "
                f"{len(self.removed)} removed, {len(self.kept)} untouched documents; "
                f"{len(self.questions)} update questions")

    def to_json(self) -> dict:
        return {"corpus": str(self.corpus), "update_dir": str(self.update_dir), "replaced": self.replaced,
                "added": self.added, "removed": self.removed, "unchanged_in_update": self.same,
                "n_untouched": len(self.kept)}


def _docs(root: Path, update: bool = False) -> dict[str, Path]:
    """Relative path -> file of a corpus's documents (an update folder's ``removed.txt`` is not one)."""
    docs, _ = list_documents(root)
    out = {d.relative_to(root).as_posix(): d for d in docs}
    if update:
        out.pop(REMOVED_FILE, None)
    return out


def _removed_list(update_dir: Path, base_docs: dict[str, Path]) -> list[str]:
    path = update_dir / REMOVED_FILE
    if not path.is_file():
        return []
    out = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        rel = raw.strip()
        if not rel or rel.startswith("#"):
            continue
        rel = rel.removeprefix("./")
        if rel not in base_docs:
            raise WorkbenchError(f"{path}:{lineno} names {rel!r}, which is not a document of the base corpus",
                                 "list paths relative to the corpus root, one per line")
        out.append(rel)
    return sorted(set(out))


def _check_questions(items: list[QAItem], qa: Path) -> None:
    for q in items:
        if q.kind not in UPDATE_KINDS:
            raise WorkbenchError(f"{qa}: question {q.id!r} has kind {q.kind!r}; an update's questions are "
                                 "kind 'new' or 'updated'", "set \"kind\" to new or updated on every line")
        if q.kind == "updated" and not q.old_answers:
            raise WorkbenchError(f"{qa}: question {q.id!r} is kind 'updated' but has no old_answers",
                                 "list the previous value(s) in \"old_answers\" (it is how stale answers are found)")


def read_update(corpus_dir: Path, update_dir: Path) -> UpdatePlan:
    """Compare an update folder with its base corpus and check it (nothing is written).

    Raises:
        WorkbenchError: a missing corpus or update folder; an update with no documents and no
            ``removed.txt``; ``removed.txt`` naming a file the corpus does not have, or a file the update
            also replaces; an update identical to the corpus (nothing changed); an update that removes
            every document; update questions of another kind, or ``updated`` ones without ``old_answers``.
    """
    corpus_dir, update_dir = Path(corpus_dir), Path(update_dir)
    if not corpus_dir.is_dir():
        raise WorkbenchError(f"corpus folder {corpus_dir} not found", "pass the base corpus folder")
    if not update_dir.is_dir():
        raise WorkbenchError(f"update folder {update_dir} not found",
                             "pass a folder shaped like a corpus: changed and new documents, optional removed.txt")
    if update_dir.resolve() == corpus_dir.resolve():
        raise WorkbenchError("the update folder is the corpus folder itself", "pass the folder holding the changes")
    base = _docs(corpus_dir)
    new = _docs(update_dir, update=True)
    removed = _removed_list(update_dir, base)
    if not new and not removed:
        raise WorkbenchError(f"update folder {update_dir} is empty: no documents and no {REMOVED_FILE}",
                             "put the changed or new documents there (same relative paths as in the corpus)")
    both = sorted(set(removed) & set(new))
    if both:
        raise WorkbenchError(f"{update_dir / REMOVED_FILE} removes {both[0]!r}, which the update also replaces",
                             "either remove the document or replace it, not both")
    same = sorted(r for r in new if r in base and hash_file(new[r]) == hash_file(base[r]))
    replaced = sorted(r for r in new if r in base and r not in same)
    added = sorted(r for r in new if r not in base)
    if not replaced and not added and not removed:
        raise WorkbenchError(f"update {update_dir} is identical to the corpus {corpus_dir}: nothing changed",
                             "put changed or new documents in the update folder, or list deletions in removed.txt")
    kept = sorted(r for r in base if r not in set(replaced) | set(removed))
    if not kept and not added and not replaced:
        raise WorkbenchError(f"update {update_dir} removes every document of {corpus_dir}",
                             "an updated corpus needs at least one document")
    qa = update_dir / QA_FILE
    questions = load_qa(qa) if qa.exists() else []
    _check_questions(questions, qa)
    return UpdatePlan(corpus_dir, update_dir, replaced, added, removed, same, kept, questions)


# --- the corpus after the update ------------------------------------------------------------------

def _doc_text(path: Path) -> str:
    text, _ = decode_bytes(path.read_bytes())
    return f" {normalize_answer(text or '')} "


def _occurs(answers: list[str], text: str) -> bool:
    return any(normalize_answer(a) and f" {normalize_answer(a)} " in text for a in answers)


@dataclass
class QuestionSets:
    """The questions an update is scored and trained on.

    Attributes:
        eval: the eval questions, ``kind`` set to their set (invariant, updated, new).
        old_train: base train questions still true after the update (retraining and replay use them).
        new_train: the update's train questions.
        left_out: ids of base eval questions left out of ``invariant``: their document changed and no
            longer holds their gold answer (or was removed), or an update question has their ``fact_id``.
        n_invariant_all: invariant questions before sampling down to a limit.
    """

    eval: list[QAItem]
    old_train: list[QAItem]
    new_train: list[QAItem]
    left_out: list[str]
    n_invariant_all: int

    def by_set(self) -> dict[str, list[QAItem]]:
        return {s: [q for q in self.eval if q.kind == s] for s in SETS}


def still_true(q: QAItem, plan: UpdatePlan, texts: dict[str, str], superseded: set[str]) -> bool:
    """Whether a base question's answer holds after the update: its fact is not one the update re-states,
    and its document is untouched, or was replaced by one that still holds a gold answer."""
    if q.fact_id and q.fact_id in superseded:
        return False
    if not q.doc or q.doc not in plan.changed:
        return True
    return q.doc in texts and _occurs(q.answers, texts[q.doc])


def question_sets(plan: UpdatePlan, base_items: list[QAItem], invariant_limit: int | None = None,
                  seed: int = 0) -> QuestionSets:
    """Split the base and update questions into the invariant / updated / new eval sets and the training pools.

    Invariant: the base corpus's answerable eval questions whose answer still holds (:func:`still_true`),
    in file order, sampled down to ``invariant_limit`` (seeded) when given. Unanswerable base questions
    are in no set.

    Raises:
        WorkbenchError: an update question id that is also a base question id.
    """
    clash = sorted({q.id for q in plan.questions} & {q.id for q in base_items})
    if clash:
        raise WorkbenchError(f"question id {clash[0]!r} is in both the corpus's and the update's qa.jsonl",
                             "give the update's questions ids of their own")
    superseded = {q.fact_id for q in plan.questions if q.fact_id}
    texts = {r: _doc_text(plan.update_dir / r) for r in plan.replaced}
    invariant, left_out = [], []
    for q in base_items:
        if q.split != "eval" or not q.answerable:
            continue
        (invariant if still_true(q, plan, texts, superseded) else left_out).append(q)
    n_all = len(invariant)
    if invariant_limit is not None and len(invariant) > invariant_limit:
        keep = set(random.Random(seed).sample(range(len(invariant)), invariant_limit))
        invariant = [q for i, q in enumerate(invariant) if i in keep]
    ev = [replace(q, kind="invariant") for q in invariant]
    ev += [replace(q, kind=s) for s in ("updated", "new") for q in plan.questions
           if q.split == "eval" and q.kind == s]
    old_train = [q for q in base_items if q.split == "train" and still_true(q, plan, texts, superseded)]
    new_train = [q for q in plan.questions if q.split == "train"]
    return QuestionSets(ev, old_train, new_train, [q.id for q in left_out], n_all)


def write_updated_corpus(plan: UpdatePlan, folder: Path, qa_items: list[QAItem]) -> Path:
    """Write the corpus after the update into ``folder`` (atomically): the base documents it keeps, the
    update's replaced and added ones, and ``qa_items`` as its qa.jsonl. The two inputs are only read.

    Returns:
        ``folder``.
    """
    base = _docs(plan.corpus)
    new = _docs(plan.update_dir, update=True)
    sources = {r: base[r] for r in plan.kept} | {r: new[r] for r in plan.replaced + plan.added}
    with atomic_dir(Path(folder)) as tmp:
        for rel, src in sorted(sources.items()):
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        write_jsonl(tmp / QA_FILE, (q.to_json() for q in qa_items))
    return Path(folder)
