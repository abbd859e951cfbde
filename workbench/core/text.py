"""Text helpers shared by answering and scoring: SQuAD normalisation, abstention detection, sentences
and question-word overlap. A core module: it imports nothing of the project but ``workbench.core.language``."""
from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Sequence

from workbench.core.language import ARTICLES_EN, DEFAULT_LANGUAGE, content_terms

MONTHS = frozenset(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split())
"""English month names and abbreviations (dates in answers, and in synthesized questions)."""
TIME_UNITS = frozenset("s sec second seconds min minute minutes h hr hrs hour hours day days week weeks month "
                       "months year years".split())
"""Units of time (compound durations such as "4 hours 12 minutes")."""
UNITS = frozenset(
    "% ‰ ° °C °F K M mm cm m km in ft mi nm NM µm g kg t mg lb W kW MW Wh kWh MWh mAh Ah V mV kV A mA N kN Pa hPa kPa "
    "bar mbar psi Hz kHz MHz GHz B KB kB MB GB TB bit bits byte bytes kbit/s Mbit/s bps kbps Mbps m/s km/h kn knots "
    "nmi l L ml mL m² m2 m³ m3 dB dBm ppm psu PSU pH rpm percent cycles people staff µS/cm uS/cm € $ "
    "EUR USD GBP NOK SEK DKK CET CEST UTC GMT".split())
"""Units that end a quantity phrase by themselves ("2.4 kWh", "12 m/s", "19:00 CET"); case matters ("M", "mM")."""

ABSTAIN = "I don't know"
"""What a model is asked to reply when the passages (or its memory) do not hold the answer."""

_ARTICLES = re.compile(r"\b(" + "|".join(sorted(ARTICLES_EN)) + r")\b")
_ASCII_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation, made Unicode-aware.

    NFKC + casefold, punctuation removed (ASCII punctuation as in SQuAD, plus any Unicode punctuation
    such as « » or –), English articles dropped, whitespace collapsed.
    """
    text = unicodedata.normalize("NFKC", text or "").casefold()
    text = "".join(" " if (c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")) else c
                   for c in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


_ABSTAIN = re.compile(
    r"(?:\bi\s+(?:do\s*not|don'?t|cannot|can'?t|am\s+not\s+sure|have\s+no)\b.{0,20}\b(?:know|say|answer|information|tell|find)"
    r"|\bnot\s+(?:mentioned|stated|specified|provided|given|found|available|included|listed|contained)\b"
    r"|\b(?:passages?|context|texts?|documents?|sources?)\s+(?:do(?:es)?\s*(?:not|n'?t)|did\s*n'?o?t)\s+"
    r"(?:say|mention|contain|state|provide|specify|include|give|answer)"
    r"|\bno\s+(?:information|answer|mention|data|details)\b|\bcannot\s+(?:be\s+)?(?:answer|determin)"
    r"|\bunable\s+to\s+(?:answer|find|determine)|^\s*(?:unknown|n/?a|none)\s*$"
    # Portuguese: "não sei", "não é mencionado", "não há informação", "os trechos não dizem", "desconhecido"
    r"|\bn[ãa]o\s+(?:sei|consigo|(?:[ée]|foi|est[áa])\s+(?:mencionad|indicad|especificad|informad|dit)"
    r"|h[áa]\s+(?:informa|men[çc][ãa]o|resposta|dados))"
    r"|\b(?:trechos?|passagens?|textos?|documentos?)\s+n[ãa]o\s+(?:dizem?|mencionam?|cont[êe]m|informam?)"
    r"|^\s*desconhecid[oa]\s*$)",
    re.I)


def is_abstention(text: str) -> bool:
    """Whether a reply declines to answer ("I don't know", "not mentioned in the passages", empty...)."""
    t = (text or "").replace("’", "'").strip()
    return not t or bool(_ABSTAIN.search(t))


WORD = re.compile(r"\w+")
def overlap_scores(question: str, sentences: Sequence[str], language: str = DEFAULT_LANGUAGE) -> list[float]:
    """Per sentence, the summed inverse document frequency (over ``sentences``) of the question's content
    words (``content_terms``: no stopwords of ``language``, stemmed where its BM25 stems) it contains: rare
    words such as names and codes weigh most."""
    q = content_terms(question, language)
    bags = [content_terms(s, language) & q for s in sentences]
    df: dict[str, int] = {}
    for terms in bags:
        for w in terms:
            df[w] = df.get(w, 0) + 1
    n = len(bags) or 1
    return [sum(math.log(1 + n / df[w]) for w in terms) for terms in bags]


def top_n(items: list[str], scores: list[float], n: int) -> list[str]:
    """The ``n`` best-scoring items, in their original order."""
    return [items[i] for i in sorted(sorted(range(len(items)), key=lambda i: (-scores[i], i))[:n])]


