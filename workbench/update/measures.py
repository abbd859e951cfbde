"""What an update did to each system, from per-question answers before and after it: small pure functions.

Measures (Jang et al., "Towards Continual Knowledge Learning of Language Models", ICLR 2022, counted per
question as in their FUAR, plus stale answers and cost):

- F1 per set (invariant, updated, new): mean SQuAD token F1 against the current gold answers.
- stale-answer rate on ``updated``: share of questions answered with a previous value (:func:`answer_state`).
- acquisition: F1 on ``new``.
- forgetting: F1 on ``invariant`` before the update minus after it (positive = forgotten).
- FUAR (:func:`fuar`): forgotten / (updated + acquired).

"Before" is the system's predecessor: the same weights on the index before the update for ``rag`` and
``ft_rag``; the old adapter for the systems an update strategy trained (``ft_continue`` -> ``ft``,
``ft_continue_rag`` -> ``ft_rag``); itself for ``base`` and ``ft``.
"""
from __future__ import annotations

from typing import Sequence

from workbench.evaluation.metrics import RIGHT_F1, is_right, match, mean, token_f1


def answer_state(pred: str, answers: Sequence[str], old_answers: Sequence[str]) -> str:
    """Which value an answer to an ``updated`` question gives: "current", "stale" or "other".

    Old and new values often share words ("42 kg" vs "48 kg" have token F1 0.5), so an answer is judged
    by the value it matches better: "stale" when it matches an old value (:func:`is_right`) better than
    every current one, "current" when it matches a current value at least as well as the old ones,
    "other" otherwise (wrong, or declined).
    """
    new, old = match(pred, answers), match(pred, old_answers)
    if old >= RIGHT_F1 and old > new:
        return "stale"
    if new >= RIGHT_F1:
        return "current"
    return "other"


def stale_rate(preds: Sequence[str], answers: Sequence[Sequence[str]], old_answers: Sequence[Sequence[str]]
               ) -> dict:
    """Shares of ``updated`` questions answered with the current value and with a previous one.

    Returns:
        ``{"current": float|None, "stale": float|None, "n": int}`` (None with no questions).
    """
    states = [answer_state(p, a, o) for p, a, o in zip(preds, answers, old_answers)]
    return {"current": mean([float(s == "current") for s in states]),
            "stale": mean([float(s == "stale") for s in states]), "n": len(states)}


def fuar(forgotten: int, updated: int, acquired: int) -> float | None:
    """Forgotten / Updated + Acquired ratio (FUAR, Jang et al. 2022), counted per question.

    Args:
        forgotten: ``invariant`` questions the predecessor answered right before the update and the
            system answers wrong after it.
        updated: ``updated`` questions the system answers with the current value after the update
            (``answer_state`` "current") that its predecessor did not answer with it before.
        acquired: ``new`` questions the system answers right after the update that its predecessor did
            not answer right before.

    Returns:
        ``forgotten / (updated + acquired)``; None when nothing was updated or acquired (undefined, as in
        the paper). 0 means no trade-off; below 1, more was learned than forgotten; above 1, the reverse.
    """
    gained = updated + acquired
    return forgotten / gained if gained else None


def count_changes(before: dict[str, str], after: dict[str, str], sets: dict[str, list]) -> dict[str, int]:
    """The three FUAR counts of one system from its predecessor's answers and its own.

    Args:
        before: question id -> the predecessor's answer before the update.
        after: question id -> the system's answer after it.
        sets: set name -> its questions (objects with ``id``, ``answers``, ``old_answers``).

    Returns:
        ``{"forgotten", "updated", "acquired"}`` as defined in :func:`fuar`.
    """
    def state(pred: str, q) -> str:
        return answer_state(pred, q.answers, q.old_answers or [])

    forgotten = sum(is_right(before[q.id], q.answers) and not is_right(after[q.id], q.answers)
                    for q in sets.get("invariant", []))
    updated = sum(state(after[q.id], q) == "current" and state(before[q.id], q) != "current"
                  for q in sets.get("updated", []))
    acquired = sum(is_right(after[q.id], q.answers) and not is_right(before[q.id], q.answers)
                   for q in sets.get("new", []))
    return {"forgotten": int(forgotten), "updated": int(updated), "acquired": int(acquired)}


def set_scores(preds: dict[str, str], sets: dict[str, list]) -> dict[str, dict]:
    """Per set: mean token F1 against the current answers, share right, and (``updated``) the stale rate."""
    out = {}
    for name, qs in sets.items():
        p = [preds[q.id] for q in qs]
        block = {"n": len(qs), "f1": mean([token_f1(x, q.answers) for x, q in zip(p, qs)]),
                 "right": mean([float(is_right(x, q.answers)) for x, q in zip(p, qs)])}
        if name == "updated":
            block.update({k: v for k, v in stale_rate(p, [q.answers for q in qs],
                                                      [q.old_answers or [] for q in qs]).items() if k != "n"})
        out[name] = block
    return out


def system_update(after: dict[str, str], before: dict[str, str], sets: dict[str, list]) -> dict:
    """One system's ``update`` block: per set (``invariant``, ``updated``, ``new``) its scores after the update
    (:func:`set_scores`), ``before`` (the same for the predecessor), ``forgetting``, ``counts`` (the FUAR
    counts of :func:`count_changes`) and ``fuar``."""
    now, then = set_scores(after, sets), set_scores(before, sets)
    counts = count_changes(before, after, sets)
    inv_now, inv_then = now.get("invariant", {}).get("f1"), then.get("invariant", {}).get("f1")
    return {**now, "before": then,
            "forgetting": None if inv_now is None or inv_then is None else inv_then - inv_now,
            "counts": counts, "fuar": fuar(**counts)}
