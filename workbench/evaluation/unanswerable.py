"""Questions the corpus cannot answer, made from ones it can: the same question about an entity that does
not exist in it.

An entity is a product, code or person named in the question: a word with a digit in it ("Tern-3",
"INC-2290", "v4.2") or a capitalised word inside the question ("Vesterby"). It is changed into one the
corpus never mentions: a digit shifted ("Tern-3" -> "Tern-4"), or a vowel swapped in a name ("Vesterby" ->
"Vasterby"), and the change is kept only when the new word occurs nowhere in the corpus, so the question
really has no answer there. Calibration uses these as its unanswerable examples (``workbench.evaluation.calibrate``).
"""
from __future__ import annotations

import random
import re
from typing import Iterable, Sequence

_WORD = re.compile(r"[^\W_](?:[\w.'’-]*[^\W_])?")
_VOWELS = "aeiou"


def corpus_words(texts: Iterable[str]) -> set[str]:
    """Every word of the texts, casefolded (compound words like "Tern-3" kept whole, and their parts too)."""
    words: set[str] = set()
    for t in texts:
        for m in _WORD.finditer(t):
            w = m.group().casefold()
            words.add(w)
            words.update(p for p in re.split(r"[\W_]+", w) if p)
    return words


def _entities(question: str) -> list[tuple[int, int, str]]:
    """Entity words of a question, ``(start, end, word)``, codes with digits first, then names."""
    found = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(question)]
    codes = [f for f in found if any(c.isdigit() for c in f[2]) and any(c.isalpha() for c in f[2])]
    names = [f for i, f in enumerate(found) if i > 0 and f[2][:1].isupper() and len(f[2]) >= 4
             and f[2].isalpha() and f not in codes]
    return codes + names


def _variants(word: str, rng: random.Random) -> list[str]:
    """Changed spellings of an entity word: its last digit shifted, or one vowel of a name swapped."""
    digits = [i for i, c in enumerate(word) if c.isdigit()]
    out: list[str] = []
    if digits:
        i = digits[-1]
        shifts = list(range(1, 10))
        rng.shuffle(shifts)
        out += [word[:i] + str((int(word[i]) + s) % 10) + word[i + 1:] for s in shifts]
    else:
        spots = [i for i, c in enumerate(word) if i > 0 and c.lower() in _VOWELS]
        rng.shuffle(spots)
        for i in spots:
            for v in rng.sample(_VOWELS, len(_VOWELS)):
                if v != word[i].lower():
                    out.append(word[:i] + (v.upper() if word[i].isupper() else v) + word[i + 1:])
    return out


def make_unanswerable(questions: Sequence[str], corpus: set[str], n: int, seed: int = 0,
                      avoid: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """Up to ``n`` unanswerable questions, each one of ``questions`` with one entity changed into a word
    absent from ``corpus`` (``corpus_words`` of the documents).

    Args:
        questions: answerable questions to start from (tried in a seeded random order).
        corpus: the corpus's words.
        n: how many to make.
        seed: the random seed.
        avoid: questions the result must not repeat (casefolded, whitespace-collapsed): e.g. eval questions.

    Returns:
        ``(question, original question, the invented entity)`` triples.
    """
    rng = random.Random(seed)
    seen = {" ".join(q.casefold().split()) for q in avoid}
    order = list(range(len(questions)))
    rng.shuffle(order)
    out: list[tuple[str, str, str]] = []
    for i in order:
        if len(out) >= n:
            break
        q = questions[i]
        for start, end, word in _entities(q):
            new = next((v for v in _variants(word, rng) if v.casefold() not in corpus), None)
            if new is None:
                continue
            made = q[:start] + new + q[end:]
            key = " ".join(made.casefold().split())
            if key not in seen:
                seen.add(key)
                out.append((made, q, new))
                break
    return out
