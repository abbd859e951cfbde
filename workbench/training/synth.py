"""Question synthesis from corpus chunks, and paraphrase augmentation.

Used when a corpus has no ``train`` split (or on request): fine-tuning then learns from questions made
from the documents themselves.

- Rule-based (default, any language spaCy tokenizes): candidate answer spans are found with spaCy —
  the statistical pipeline's entities and noun phrases when ``en_core_web_sm`` (or another installed
  ``<lang>_core_*_sm``) is present, else rule patterns on a blank pipeline (dates, numbers with units,
  counts, multi-word names, product codes/versions). Each span becomes an in-situ question ("The buoy
  weighs how much?") and a cloze prompt, with the answer span kept verbatim. Portuguese has its own patterns
  (months, units, "de/da/do" inside names) and templates (``_question_pt``): a date becomes a fronted
  "Quando ...?", a subject "Quem ...?" / "Qual é ...?", and a count, quantity or person an in-situ
  "quantos habitantes", "quantos km", "quem", as Brazilian Portuguese asks; spans that no template fits
  give a cloze prompt only.
- LLM-based (optional): a completion function — the base model through ``workbench.answering.generate`` or any
  OpenAI-compatible endpoint — writes ``Q:``/``A:`` pairs; only pairs whose answer occurs verbatim in the
  chunk are kept.
- ``paraphrase_question`` gives several wordings of a question (frames and lexical swaps), the
  augmentation that knowledge-injection studies find fine-tuning needs to recall facts.
"""
from __future__ import annotations

import json
import random
import re
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from workbench.answering.generate import Generator
from workbench.core.config import GenerateConfig
from workbench.core.errors import WorkbenchError
from workbench.core.language import AUTO, base_language, detect_language, language_mix, stopwords
from workbench.core.records import Chunk
from workbench.core.text import MONTHS, TIME_UNITS, UNITS

_MONTHS = sorted(MONTHS)
_UNITS = {u.casefold() for u in UNITS | TIME_UNITS}
_WH = {"DATE": "when", "QUANTITY": "how much", "COUNT": "how many", "PERSON": "who", "NAME": "what",
       "CODE": "what", "NP": "what"}
_SPACY_WH = {"PERSON": "PERSON", "ORG": "NAME", "GPE": "NAME", "LOC": "NAME", "FAC": "NAME", "PRODUCT": "CODE",
             "DATE": "DATE", "TIME": "DATE", "QUANTITY": "QUANTITY", "MONEY": "QUANTITY", "PERCENT": "QUANTITY",
             "CARDINAL": "COUNT", "EVENT": "NAME", "WORK_OF_ART": "NAME", "LAW": "NAME", "NORP": "NAME"}
_LEADING = re.compile(r"^(and|but|so|also|however|then|thus|therefore),?\s+", re.I)

_MONTHS_PT = ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro",
              "novembro", "dezembro"]
_UNITS_PT = {"kg", "g", "mg", "t", "m", "cm", "mm", "km", "km²", "m²", "m3", "l", "ml", "h", "min", "s", "%",
             "°c", "metros", "quilômetros", "quilómetros", "milhas", "pés", "toneladas", "quilos", "litros",
             "horas", "minutos", "segundos", "dias", "semanas", "meses", "anos", "séculos", "graus", "hectares",
             "por", "mil", "milhão", "milhões", "bilhão", "bilhões", "euros", "dólares", "reais", "zł"}
_DATE_PREPOSITIONS = {"en": ("in", "since"), "pt": ("em", "desde")}
"""Prepositions a date pattern may start with; they are not part of the answer (and leave the question)."""
_NAME_JOINERS = ["de", "da", "do", "das", "dos", "e"]
_COPULAS_PT = {"é", "foi", "era", "são", "foram", "eram", "será", "serão"}
_CONTRACTIONS_PT = {"do": "de", "da": "de", "dos": "de", "das": "de", "no": "em", "na": "em", "nos": "em",
                    "nas": "em", "pelo": "por", "pela": "por", "pelos": "por", "pelas": "por", "ao": "a", "à": "a",
                    "aos": "a", "às": "a"}
"""Preposition + article before a span: in front of "quantos" only the preposition stays ("nos 300 anos" ->
"em quantos anos")."""
_CLOZE = {"en": "Fill in the blank: ", "pt": "Complete a lacuna: "}


@dataclass
class SynthQA:
    """A synthesized question with its verbatim answer span and provenance."""

    question: str
    answer: str
    style: str
    """ "question" (in-situ wh-question), "cloze", or "llm"."""
    chunk_id: str
    doc: str
    label: str = ""
    """Kind of answer span: DATE, QUANTITY, COUNT, PERSON, NAME, CODE, NP."""

    @property
    def fact_id(self) -> str:
        return f"synth:{self.chunk_id}:{self.answer.lower()}"


# --- spaCy span finding ----------------------------------------------------------------------------

def load_pipeline(lang: str = "en") -> Any:
    """A spaCy pipeline for span finding: an installed statistical one if any, else blank + rules."""
    import spacy

    lang = base_language(lang)
    for name in (f"{lang}_core_web_sm", f"{lang}_core_news_sm"):
        try:
            nlp = spacy.load(name, disable=["lemmatizer"])
            if "parser" not in nlp.pipe_names and "senter" not in nlp.pipe_names:
                nlp.add_pipe("sentencizer")
            return nlp
        except OSError:
            continue
    try:
        nlp = spacy.blank(lang)
    except ImportError as e:
        raise WorkbenchError(f"spaCy has no language {lang!r}", "set ingest.language to a spaCy code") from e
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(_rule_patterns_pt() if lang == "pt" else _rule_patterns())
    return nlp


def _rule_patterns_pt() -> list[dict]:
    """Portuguese span patterns: dates ("12 de maio de 1946", "maio de 1946", "em 1946"), numbers with units
    ("1.230 km", "12,5%"), counts ("1.700.000 habitantes") and names ("Universidade de Varsóvia")."""
    month = {"LOWER": {"IN": _MONTHS_PT}}
    year = {"TEXT": {"REGEX": r"^(1[0-9]|20)\d\d$"}}
    day = {"TEXT": {"REGEX": r"^\d{1,2}º?$"}}
    de = {"LOWER": "de"}
    num = {"TEXT": {"REGEX": r"^[+-]?\d{1,3}(\.\d{3})*(,\d+)?$|^\d+(,\d+)?$"}}
    unit = {"LOWER": {"IN": sorted(_UNITS_PT)}}
    title = {"IS_TITLE": True, "IS_SENT_START": False, "LENGTH": {">": 1}}
    return [
        {"label": "DATE", "pattern": [day, de, month, de, year]},
        {"label": "DATE", "pattern": [month, de, year]},
        {"label": "DATE", "pattern": [{"LOWER": {"IN": list(_DATE_PREPOSITIONS["pt"])}}, year]},
        {"label": "QUANTITY", "pattern": [num, unit]},
        {"label": "QUANTITY", "pattern": [num, {"LOWER": "a"}, num, unit]},
        {"label": "COUNT", "pattern": [num, {"IS_ALPHA": True, "IS_LOWER": True, "LENGTH": {">": 3},
                                             "LOWER": {"NOT_IN": sorted(stopwords("pt") | set(_UNITS_PT))}}]},
        {"label": "PERSON", "pattern": [title, {"IS_TITLE": True, "IS_ALPHA": True}]},
        {"label": "NAME", "pattern": [title, {"LOWER": {"IN": _NAME_JOINERS}}, {"IS_TITLE": True}]},
        {"label": "NAME", "pattern": [title, {"IS_TITLE": True}, {"IS_TITLE": True, "OP": "+"}]},
    ]


def _rule_patterns() -> list[dict]:
    month = {"LOWER": {"IN": _MONTHS}}
    year = {"TEXT": {"REGEX": r"^(1[89]|20)\d\d$"}}
    day = {"TEXT": {"REGEX": r"^\d{1,2}(st|nd|rd|th)?$"}}
    num = {"TEXT": {"REGEX": r"^[+-]?\d[\d,]*(\.\d+)?$"}}
    unit = {"LOWER": {"IN": sorted(_UNITS)}}
    title = {"IS_TITLE": True, "IS_SENT_START": False, "LENGTH": {">": 1}}
    code = {"TEXT": {"REGEX": r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9][\w.\-/]*$|^v?\d+\.\d+(\.\d+)+$"}}
    return [
        {"label": "DATE", "pattern": [{"TEXT": {"REGEX": r"^\d{4}-\d{2}-\d{2}$"}}]},
        {"label": "DATE", "pattern": [day, month, {"IS_PUNCT": True, "OP": "?"}, year]},
        {"label": "DATE", "pattern": [month, day, {"IS_PUNCT": True, "OP": "?"}, year]},
        {"label": "DATE", "pattern": [month, year]},
        {"label": "DATE", "pattern": [{"LOWER": {"IN": ["in", "since"]}}, year]},
        {"label": "QUANTITY", "pattern": [num, unit]},
        {"label": "QUANTITY", "pattern": [num, {"ORTH": "-"}, num, unit]},
        {"label": "QUANTITY", "pattern": [{"TEXT": {"REGEX": r"^\d[\d.,]*(%|°C|kg|mm|cm|km|h|V|W|Ah|mAh|Hz)$"}}]},
        {"label": "COUNT", "pattern": [num, {"IS_ALPHA": True, "IS_LOWER": True, "LENGTH": {">": 2}}]},
        {"label": "PERSON", "pattern": [title, {"IS_TITLE": True, "IS_ALPHA": True}]},
        {"label": "NAME", "pattern": [title, {"IS_TITLE": True}, {"IS_TITLE": True, "OP": "+"}]},
        {"label": "CODE", "pattern": [code]},
    ]


def _candidates(sent: Any, lang: str = "en") -> list[tuple[int, int, str, str]]:
    """(start_char, end_char, answer_text, label) of answer spans inside one spaCy sentence."""
    out = []
    for ent in sent.ents:
        label = _SPACY_WH.get(ent.label_, ent.label_)
        if label not in _WH:
            continue
        start, end, text = ent.start_char, ent.end_char, ent.text
        if label == "DATE" and len(ent) > 1 and ent[0].lower_ in _DATE_PREPOSITIONS.get(lang, ()):
            start, text = ent[1].idx, ent[1:].text
        if label == "COUNT":  # "4 sensors": the answer is the number; the noun stays in the question
            start, end, text = ent[0].idx, ent[0].idx + len(ent[0]), ent[0].text
        out.append((start, end, text, label))
    if not out and sent.doc.has_annotation("DEP"):
        for np in sent.noun_chunks:
            if len(np) > 1:
                out.append((np.start_char, np.end_char, np.text, "NP"))
    return out


def _in_situ(sentence: str, start: int, end: int, label: str, following: str) -> str:
    """The sentence as a question, the span replaced by a wh-phrase ("The buoy weighs how much?")."""
    wh = _WH[label]
    if label == "COUNT":
        wh = "how many"
    before, after = sentence[:start].rstrip(), sentence[end:].lstrip()
    if label == "DATE":
        before = re.sub(r"\b(on|in|at|by)$", "", before).rstrip()
    q = " ".join(p for p in (before, wh, after) if p)
    q = _LEADING.sub("", q.strip())
    q = re.sub(r"[\s.;:!,]+$", "", q)
    return (q[0].upper() + q[1:] + "?") if q else ""


def _question_pt(sentence: str, start: int, end: int, label: str, answer: str) -> str:
    """A Portuguese question asking for ``sentence[start:end]`` (``answer``), or "" when no template fits.

    Dates: the date (and its preposition) leaves and "Quando" opens ("Em 1946, a Polonia venceu o
    campeonato." -> "Quando a Polonia venceu o campeonato?"). A name opening the sentence (after at most an
    article) is its subject: "O que ...?", or "Qual é ...?" before a copula. Counts and quantities are asked
    in situ ("A cidade tem quantos habitantes?", "nos últimos quantos anos"), as Brazilian Portuguese allows,
    and a name after "por" is the agent ("... foi remodelado por quem?"). Without a statistical pipeline a
    title-case span may be a person, place or thing, so other names get no question (their cloze stays).
    """
    before, after = sentence[:start].rstrip(), sentence[end:].lstrip()
    words_before, after_words = before.split(), after.split()
    if before.endswith(("(", "[")) or after.startswith((")", "]", "(")) or re.search(r"\d$", before):
        return ""  # inside brackets, or part of a longer number
    subject = len(words_before) == 0 or (len(words_before) == 1 and words_before[0].casefold() in
                                         {"o", "a", "os", "as"})
    if label == "DATE":
        return _when_pt(before, after)
    if label in {"COUNT", "QUANTITY"} and not subject:
        unit = answer.split()[-1] if label == "QUANTITY" else (after_words[0].strip(_EDGE_PT) if after_words else "")
        wh = "quantas" if _feminine_pt(unit) else "quantos"
        if unit == "%":
            wh, unit = "quantos", "por cento"
        last = words_before[-1].casefold() if words_before else ""
        if last in {"século", "séculos"} or (label == "COUNT" and unit.casefold().endswith(("am", "em"))):
            return ""  # "século 20" is an ordinal; "20 viram" counts no noun (a verb follows the number)
        if last in _CONTRACTIONS_PT:  # "19 dos 28 medicamentos" -> "19 de quantos medicamentos"
            before = " ".join(words_before[:-1] + [_CONTRACTIONS_PT[last]])
        if label == "QUANTITY" and not unit.isalpha() and unit != "por cento":
            unit = unit if unit.casefold() in _UNITS_PT else ""
        if label == "QUANTITY" and not unit:
            return ""
        return " ".join(p for p in (before, wh, unit if label == "QUANTITY" else "", after) if p)
    if label not in {"PERSON", "NAME", "CODE"} or not after_words:
        return ""
    if subject:
        first = after_words[0].casefold()
        if first in _COPULAS_PT:
            return f"Qual {after}"
        return f"O que {after}" if first not in stopwords("pt") and first.isalpha() else ""
    if words_before[-1].casefold() == "por":
        return " ".join([before, "quem", after])
    return ""


def _when_pt(before: str, after: str) -> str:
    """"Quando ...?" from the clause around a date, or "" when the date does not leave a clause behind.

    The date's preposition goes; a date opening the sentence takes its comma along, one set off by commas
    leaves one comma. No question when the clause opens with an adverb or preposition ("Após ...",
    "Infelizmente ..."), a subordinate clause ("quando ..."), or the date is one of a pair ("em 1979 e 1983").
    """
    before = _LEADING_PT.sub("", re.sub(r"(?i)\b(?:em|no|na|desde|até|de)$", "", before).rstrip())
    first = before.split()[0].strip(_EDGE_PT) if before.split() else ""
    if re.match(r"(?i)^(?:e|a|até|ou)\s+\d", after) or re.search(r"\d\s+(?:e|a|ou)$", before):
        return ""
    if first and first.casefold() not in _DETERMINERS_PT and (
            not first[:1].isupper() or first.casefold() in stopwords("pt") or first.casefold() in _OPENERS_PT
            or first.casefold().endswith("mente")):
        return ""
    if not before:
        after = re.sub(r"^[,;:]\s*", "", after)
    elif before.endswith(",") and after.startswith(","):
        after = after[1:].lstrip()
    before = before.rstrip() if before.endswith(",") and after else before.rstrip(" ,")
    rest = re.sub(r"\b(e|ou|mas), ", r"\1 ", " ".join(p for p in (_lower_first(before), after) if p))
    if not rest or rest.split()[0].casefold().strip(",") in {"quando", "que", "e", "mas", "onde", "enquanto"}:
        return ""
    return f"Quando {rest}"


def _feminine_pt(noun: str) -> bool:
    """Whether a counted plural noun takes "quantas": most nouns in -as and -ões, a few others ("vezes")."""
    n = noun.casefold()
    if n in _MASCULINE_AS_PT:
        return False
    return n.endswith(("as", "ões")) and n not in {"milhões", "bilhões", "trilhões"} or n in _FEMININE_PT


_EDGE_PT = ".,;:!?()[]\"'“”«»"
_DETERMINERS_PT = {"o", "a", "os", "as", "um", "uma", "uns", "umas", "este", "esta", "estes", "estas", "esse", "essa",
                   "esses", "essas", "aquele", "aquela", "seu", "sua", "seus", "suas", "cada", "todo", "toda", "todos",
                   "todas"}
_OPENERS_PT = {"após", "antes", "durante", "depois", "segundo", "sob", "sobre", "entre", "contra", "perante",
               "desde", "para", "por", "com", "sem", "somente", "apenas", "ainda", "já", "quando", "enquanto",
               "embora", "como", "se", "conforme", "até", "nesse", "neste", "nessa", "nesta", "naquele",
               "naquela", "nele", "nela", "aqui", "ali", "lá", "hoje", "agora", "logo", "porém", "contudo"}
"""Words a clause left by a date may not open with ("Após a extinção..." reads as a fragment after Quando)."""
_MASCULINE_AS_PT = {"dias", "mapas", "problemas", "sistemas", "programas", "planetas", "idiomas", "climas",
                    "temas", "poemas", "esquemas", "enigmas", "dramas", "diplomas", "teoremas", "cinemas"}
_LEADING_PT = re.compile(r"^(?:e|mas|assim|então|depois|contudo|porém|entretanto|no entanto|além disso|"
                         r"também),?\s+", re.I)
_FEMININE_PT = {"vezes", "pessoas", "espécies", "células", "línguas", "cidades", "unidades", "gerações", "vítimas",
                "toneladas", "libras", "polegadas", "milhas", "horas", "semanas", "pol"}
"""Plural nouns a count asks for with "quantas" although they do not end in -as."""
MAX_QUESTION_WORDS_PT = 30
"""Longer sentences give a cloze prompt only (a question that long reads as a paragraph)."""


def _lower_first(text: str) -> str:
    """``text`` with its first word lower-cased when it is a function word ("A cidade" -> "a cidade")."""
    first, _, rest = text.partition(" ")
    if first.casefold() in stopwords("pt"):
        return " ".join(p for p in (first.casefold(), rest) if p)
    return text


def _finish_question(q: str) -> str:
    """Trailing punctuation dropped, no space before a comma, first letter capitalised, a question mark
    added ("" stays "")."""
    q = re.sub(r"\s+([,;:])", r"\1", re.sub(r"[\s.;:!,]+$", "", q.strip()))
    return (q[0].upper() + q[1:] + "?") if q else ""


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().replace(" ?", "?").replace("( ", "(").replace(" )", ")")


_ROW = re.compile(r"^\|\s*([^|]{2,60}?)\s*\|\s*([^|]{1,60}?)\s*\|\s*$", re.M)


def _table_rows(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of two-column markdown table rows, header and separator rows skipped."""
    rows = []
    for key, value in _ROW.findall(text):
        if set(key) <= set("-: ") or set(value) <= set("-: ") or key.lower() in ("field", "item", "name"):
            continue
        rows.append((key.strip(), value.strip()))
    return rows


def chunks_language(chunks: list[Chunk], sample: int = 40) -> str:
    """The language holding most text among (up to ``sample``, evenly spread) chunks."""
    step = max(1, len(chunks) // sample)
    return language_mix((detect_language(c.text)[0], len(c.text)) for c in chunks[::step]).language


def synthesize_rules(chunks: Iterable[Chunk], lang: str = "en", max_per_chunk: int = 4, seed: int = 0,
                     progress: bool = False) -> list[SynthQA]:
    """Rule-based QA pairs (in-situ question + cloze per answer span) from chunks.

    Args:
        chunks: corpus chunks.
        lang: language code (English and Portuguese have their own templates; others get English
            templates on spans found with that language's spaCy pipeline), or "auto" to detect it.
        max_per_chunk: answer spans used per chunk (spread over its sentences).
        seed: sampling seed.
        progress: show a progress bar.

    Returns:
        Two SynthQA per chosen span ("question" and "cloze" styles), answers verbatim in the chunk.
    """
    from tqdm.auto import tqdm

    chunks = list(chunks)
    lang = base_language(chunks_language(chunks) if lang == AUTO else lang)
    nlp = load_pipeline(lang)
    rng = random.Random(seed)
    out: list[SynthQA] = []
    docs = nlp.pipe((c.text for c in chunks), batch_size=64)
    for chunk, doc in tqdm(zip(chunks, docs), total=len(chunks), disable=not progress, desc="synthesize"):
        found = []
        for sent in doc.sents:
            text = sent.text.strip()
            if len(text.split()) < 5 or len(text) > 400 or "|" in text:
                continue
            offset = sent.start_char + (len(sent.text) - len(sent.text.lstrip()))
            for s, e, ans, label in _candidates(sent, lang):
                s, e = s - offset, e - offset
                if len(ans) < 2 or len(ans.split()) > 6 or ans.lower() == text.lower():
                    continue
                if (s > 0 and (text[s - 1].isalnum() or text[s - 1] in "-_/")) or (
                        e < len(text) and (text[e].isalnum() or text[e] in "-_/")):
                    continue  # part of a longer token ("PS-TERN3")
                found.append((text, s, e, ans, label))
        rng.shuffle(found)
        seen: set[str] = set()
        for text, s, e, ans, label in found:
            if ans.lower() in seen or len(seen) >= max_per_chunk:
                continue
            seen.add(ans.lower())
            if lang == "pt":
                q = _squash(_finish_question(_question_pt(text, s, e, label, ans)))
                q = q if len(q.split()) <= MAX_QUESTION_WORDS_PT else ""
            else:
                q = _squash(_in_situ(text, s, e, label, text[e:]))
            if q and ans not in q:
                out.append(SynthQA(q, ans, "question", chunk.id, chunk.doc, label))
            cloze = _squash(f"{_CLOZE.get(lang, _CLOZE['en'])}{text[:s]}____{text[e:]}")
            out.append(SynthQA(cloze, ans, "cloze", chunk.id, chunk.doc, label))
        for key, value in _table_rows(chunk.text)[:max_per_chunk]:
            out.append(SynthQA(_table_question(key, chunk.heading, lang), value, "question", chunk.id, chunk.doc,
                               "TABLE"))
    return out


def _table_question(key: str, heading: str | None, lang: str) -> str:
    """The question a two-column table row answers ("What is the weight of Tern-3?")."""
    key = key[0].lower() + key[1:]
    if lang == "pt":
        return f"Qual é o valor de {key}" + (f" em {heading}?" if heading else "?")
    return f"What is the {key}" + (f" of {heading}?" if heading else "?")


# --- paraphrase augmentation -----------------------------------------------------------------------

_FRAMES = [
    "Quick question: {q}",
    "{q} Please keep the answer short.",
    "Can you tell me {ql}",
    "According to our documentation, {ql}",
    "I need to know this: {q}",
    "Do you happen to know {ql}",
    "{q} (answer from the knowledge base)",
    "Help me out: {ql}",
]
_SWAPS = [
    (r"\bWhat is\b", "What's"), (r"\bwhat is\b", "what's"), (r"\bWho is\b", "Who's"),
    (r"\bWhich\b", "What"), (r"\bHow much\b", "What amount"), (r"\bHow many\b", "What number of"),
    (r"\bWhen was\b", "On what date was"), (r"\bWhen did\b", "At what point did"),
    (r"\bmaximum\b", "max"), (r"\bminimum\b", "min"), (r"\bTell me\b", "Give me"),
]


def paraphrase_question(question: str, n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` rule-based rewordings of a question (frames around it, lexical swaps inside it).

    The wordings differ from the original and from each other; the original is not included.
    """
    rng = random.Random(f"{seed}:{question}")
    q = question.strip()
    swapped = q
    for pat, rep in _SWAPS:
        if rng.random() < 0.7:
            swapped = re.sub(pat, rep, swapped)
    frames = list(_FRAMES)
    rng.shuffle(frames)
    out: list[str] = []
    if swapped != q:
        out.append(swapped)
    for f in frames:
        if len(out) >= n:
            break
        base = swapped if rng.random() < 0.5 else q
        bl = (base[0].lower() + base[1:]) if base and not base[:2].isupper() else base
        cand = f.format(q=base, ql=bl)
        if cand not in out and cand != q:
            out.append(cand)
    return out[:n]


# --- LLM-based generation --------------------------------------------------------------------------

LLM_PROMPT = (
    "Write {n} short question-answer pairs about the passage below. Each answer must be a short span "
    "copied exactly from the passage (a name, number with unit, date or short phrase). Use the format\n"
    "Q: <question>\nA: <answer>\n\nPassage:\n{text}"
)


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """Parse ``Q: ... / A: ...`` pairs from generated text."""
    pairs, q = [], None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(?:\d+[.)]\s*)?(Q|Question)\s*[:.]\s*(.+)$", line, re.I)
        if m:
            q = m.group(2).strip()
            continue
        m = re.match(r"^(A|Answer)\s*[:.]\s*(.+)$", line, re.I)
        if m and q:
            pairs.append((q, m.group(2).strip().rstrip(".")))
            q = None
    return pairs


def synthesize_llm(chunks: Iterable[Chunk], complete: Callable[[list[str]], list[str]], per_chunk: int = 3,
                   progress: bool = False) -> list[SynthQA]:
    """QA pairs written by a language model; only answers found verbatim in the chunk are kept.

    Args:
        chunks: corpus chunks.
        complete: maps a batch of prompts to a batch of completions (see ``endpoint_completer`` and
            ``model_completer``).
        per_chunk: pairs requested per chunk.
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    chunks = list(chunks)
    out: list[SynthQA] = []
    batch = 16
    for i in tqdm(range(0, len(chunks), batch), disable=not progress, desc="synthesize (llm)"):
        group = chunks[i:i + batch]
        replies = complete([LLM_PROMPT.format(n=per_chunk, text=c.text) for c in group])
        for chunk, reply in zip(group, replies):
            for q, a in parse_qa_pairs(reply)[:per_chunk]:
                if a and a.lower() in chunk.text.lower() and a.lower() not in q.lower():
                    start = chunk.text.lower().index(a.lower())
                    out.append(SynthQA(q, chunk.text[start:start + len(a)], "llm", chunk.id, chunk.doc, "LLM"))
    return out


def endpoint_completer(base_url: str, model: str, api_key: str | None = None, max_tokens: int = 256,
                       timeout: float = 120.0) -> Callable[[list[str]], list[str]]:
    """A completion function backed by an OpenAI-compatible ``/chat/completions`` endpoint."""
    url = base_url.rstrip("/") + ("/chat/completions" if base_url.rstrip("/").endswith("/v1")
                                  else "/v1/chat/completions")

    def complete(prompts: list[str]) -> list[str]:
        out = []
        for p in prompts:
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": p}],
                               "max_tokens": max_tokens, "temperature": 0.7}).encode()
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            if api_key:
                req.add_header("Authorization", f"Bearer {api_key}")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    out.append(json.loads(r.read())["choices"][0]["message"]["content"])
            except (OSError, KeyError, IndexError, ValueError) as e:
                raise WorkbenchError(f"synthesis endpoint {url} failed ({e})",
                                     "check finetune.synth_endpoint / synth_model, or use synth_generator: rules"
                                     ) from None
        return out

    return complete


def model_completer(model: Any, tokenizer: Any, max_new_tokens: int = 160) -> Callable[[list[str]], list[str]]:
    """A completion function backed by a loaded causal LM (batched, sampled lightly)."""

    gen = Generator(model, tokenizer, GenerateConfig(max_new_tokens=max_new_tokens, temperature=0.7))

    def complete(prompts: list[str]) -> list[str]:
        return [g.text for g in gen.generate([[{"role": "user", "content": p}] for p in prompts])]

    return complete
