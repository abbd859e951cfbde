"""Whole quantity phrases: a copied reply that is a number, date or time, cut or widened to the phrase it
stands in.

A small model that copies its answer from a passage often stops one word short ("14" for "14 hours",
"2025" for "8 April 2025", "2290" for "+00 417 550 2290") or runs on past it ("6 hours and must not be
interrupted"). Where the reply starts with a number, ``quantity_phrase`` finds it in the text it was
copied from and returns the whole quantity there: the number with its sign or currency, a date's day,
month and year, a range ("07:00 to 19:00 CET"), a compound duration ("4 hours 12 minutes"), and its unit
("kWh", "%", "hours") or counted noun ("tickets", "volunteering days"), stopping at a function word or a
clause break. A question that asks for a year keeps the year alone.
"""
from __future__ import annotations

import re
from typing import Sequence

from workbench.core.text import MONTHS, TIME_UNITS, UNITS

_RANGE = frozenset({"to", "–", "until", "till"})
_NUMBER = re.compile(r"^[€$£¥+±~≈<>≤≥−-]?\d")
_DIGITS = re.compile(r"^\+?\d+$")
_CURRENCY = frozenset("€$£¥")
_CURRENCY_CODES = frozenset("EUR USD GBP NOK SEK DKK CHF".split())
_EDGE = ".,;:!?()[]{}\"'“”‘’«»*_`"
_BREAK = re.compile(r"[,;:.!?)\]]$")  # a word ending a clause or a bracket ends the phrase after it
_YEAR_QUESTION = re.compile(r"\b(?:what|which)\s+year\b|\byear\s+(?:did|was|were|is)\b", re.I)


def _core(word: str) -> str:
    return word.strip(_EDGE)


def _is_number(word: str) -> bool:
    return bool(_NUMBER.match(_core(word)))


def _is_month(word: str) -> bool:
    return _core(word).casefold() in MONTHS


def _is_unit(word: str, stopwords: frozenset[str]) -> bool:
    """A unit or counted noun after a number: a known unit ("kWh", "%", "m/s") or a lower-case word that is not
    a function word ("volunteering", "tickets")."""
    c = _core(word)
    if not c or word[:1] in "([{" or c.casefold() in stopwords or _is_number(c):
        return False
    return _known_unit(c) or (c.isalpha() and c.islower())


def _known_unit(word: str) -> bool:
    c = _core(word)
    return c in UNITS or c.casefold() in TIME_UNITS


def _find(words: Sequence[str], reply: Sequence[str]) -> int:
    """Where the reply's words stand in ``words`` (its first word may be the end of a word there, as "300"
    of "€300"), or -1."""
    want = [_core(w).casefold() for w in reply]
    for i in range(len(words) - len(want) + 1):
        first = _core(words[i]).casefold()
        if not first.endswith(want[0]) or first[:len(first) - len(want[0])][-1:].isalnum():
            continue  # "300" is found in "€300", not in "1300"
        if all(_core(words[i + j]).casefold() == w for j, w in enumerate(want[1:], 1)):
            return i
    return -1


def _start(words: Sequence[str], i: int, year_only: bool) -> int:
    """Move the phrase start back over a date's month and day, a range's first value and digit groups."""
    while i > 0 and not _BREAK.search(words[i - 1]):
        prev, cur = words[i - 1], words[i]
        if _is_month(prev) and _is_number(cur) and not year_only:
            i -= 1  # "April 2025"
        elif _is_number(prev) and _is_month(cur):
            i -= 1  # "8 April"
        elif i >= 2 and _core(prev).casefold() in _RANGE and ":" in _core(words[i - 2]) and ":" in _core(cur) \
                and _is_number(words[i - 2]) and not _BREAK.search(words[i - 2]):
            i -= 2  # "07:00 to 19:00" (times of day only: "raised from 15 to 20 minutes" is no range)
        elif prev in _CURRENCY_CODES and _is_number(cur):
            i -= 1  # "EUR 300"
        elif _DIGITS.match(_core(prev)) and _DIGITS.match(_core(cur)) and prev == _core(prev):
            i -= 1  # digit groups: "+00 417 550 2290"
        elif i >= 2 and _core(prev).casefold() in TIME_UNITS and _is_number(words[i - 2]) and _is_number(cur) \
                and not _BREAK.search(words[i - 2]):
            i -= 2  # "4 hours 12 minutes"
        else:
            break
    return i


def _value_end(words: Sequence[str], i: int, year_only: bool) -> int:
    """The end of the value starting at ``i``: a number or a date ("10 January 2026", "December 2027")."""
    n = len(words)
    if _is_month(words[i]):
        i += 1
        return i + 1 if i < n and _is_number(words[i]) and not _BREAK.search(words[i - 1]) else i
    i += 1
    while i < n and _DIGITS.match(_core(words[i - 1])) and words[i - 1] == _core(words[i - 1]) \
            and _DIGITS.match(_core(words[i])):
        i += 1  # digit groups: "+00 417 550 2290"
    if year_only:
        return i
    if i < n and _is_month(words[i]) and not _BREAK.search(words[i - 1]):
        i += 1
        if i < n and _is_number(words[i]) and not _BREAK.search(words[i - 1]):
            i += 1
    return i


def _end(words: Sequence[str], i: int, stopwords: frozenset[str], year_only: bool) -> int:
    """The end of the quantity phrase starting at ``i``: values, a range, then a unit ("kWh", "hours") or a
    counted noun and its unit ("business days"). Money, dates and times of day take known units only."""
    n = len(words)
    first = _core(words[i])
    i = _value_end(words, i, year_only)
    if i + 1 < n and not _BREAK.search(words[i - 1]) and _core(words[i]).casefold() in _RANGE \
            and _is_number(words[i + 1]) and words[i] == _core(words[i]):
        i = _value_end(words, i + 1, year_only)
    if year_only or i >= n or _BREAK.search(words[i - 1]):
        return i
    plain_count = not (first[:1] in _CURRENCY or ":" in first or _is_month(words[i - 1]) or i - 1 > 0 and
                       _is_month(words[i - 2]))
    if _known_unit(words[i]):
        i += 1
        if _core(words[i - 1]).casefold() in TIME_UNITS and i + 1 < n and not _BREAK.search(words[i - 1]) \
                and _is_number(words[i]) and _core(words[i + 1]).casefold() in TIME_UNITS:
            i += 2  # "4 hours 12 minutes"
    elif plain_count and _is_unit(words[i], stopwords):
        i += 1  # a counted noun ("tickets"), and its unit ("volunteering days")
        if i < n and not _BREAK.search(words[i - 1]) and _known_unit(words[i]):
            i += 1
    return i


def quantity_phrase(reply: str, sources: Sequence[str], question: str = "",
                    stopwords: frozenset[str] = frozenset()) -> str:
    """The whole quantity phrase a copied reply starts with, as it stands in the text it was copied from.

    Args:
        reply: the cleaned reply.
        sources: the texts the reply may have been copied from (``workbench.answering.copying.source_text`` form).
        question: the question; one asking for a year keeps the year alone.
        stopwords: function words, which end a quantity phrase.

    Returns:
        The quantity phrase, or ``reply`` unchanged when it does not start with a number, date or time, or
        is not found in ``sources``.
    """
    words = reply.split()
    if not words or not (_is_number(words[0]) or (_is_month(words[0]) and len(words) > 1 and _is_number(words[1]))):
        return reply
    year_only = bool(_YEAR_QUESTION.search(question))
    for text in sources:
        src = text.split()
        i = _find(src, words)
        if i < 0:
            continue
        # a reply copied from inside a word ("300" of "€300") takes the whole word
        start = _start(src, i, year_only)
        phrase = " ".join(src[start:_end(src, start, stopwords, year_only)])
        return phrase.strip(" .;:,!?\"'“”‘’()[]") or reply
    return reply
