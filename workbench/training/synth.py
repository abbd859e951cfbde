"""Question synthesis from corpus chunks: the training questions of a corpus that brings none.

Fine-tuning on a corpus without ``train`` questions learns from questions made from the documents
themselves, so they should read like the questions people ask (Ovadia et al. 2024: knowledge injection
needs many varied wordings of each fact, worded like the questions the model will be asked).

- Rules (``synth.backend: rules``, the default, no model): answer spans are found with spaCy -- an
  installed trained pipeline's entities when there is one, else rule patterns on a blank pipeline (dates,
  years, numbers with units, counts, capitalised names) -- and each becomes a fronted question built from
  the clause around it (``workbench.training.questions``): "When did the Normans reach Normandy?". A span
  no rule phrases well is dropped. Each fact gets ``synth.wordings`` wordings (embedded-question frames,
  wh-variants, synonym swaps, a moved phrase).
- A served model (``synth.backend: openai``, any OpenAI-compatible endpoint) or the base model
  (``synth.backend: model``) writes questions and paraphrases; only pairs whose answer occurs verbatim in
  the chunk are kept, and the same form filters apply.

Every synthesized question ends with "?", opens like a question, holds no more than ``synth.max_words``
words, and never contains its answer. ``paraphrase_question`` gives rule-based rewordings of a question
written by a person (the gold ``train`` questions).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from workbench.answering.generate import Generator
from workbench.answering.remote import RemoteGenerator, check_backend
from workbench.core.config import GenerateConfig, ModelConfig, SynthConfig
from workbench.core.errors import WorkbenchError
from workbench.core.language import AUTO, base_language, detect_language, language_mix, stopwords
from workbench.core.records import Chunk
from workbench.core.text import MONTHS, TIME_UNITS, UNITS
from workbench.training.questions import (MAX_QUESTION_WORDS, MIN_QUESTION_WORDS, Phrased, phrase_question,
                                          subject_of)

_MONTHS = sorted(MONTHS)
_UNITS = {u.casefold() for u in UNITS | TIME_UNITS} | {"kilometres", "kilometers", "metres", "meters", "miles",
                                                       "feet", "tonnes", "tons", "litres", "liters", "acres",
                                                       "hectares", "decades", "centuries", "km2", "km²"}
_SPACY_LABELS = {"PERSON": "PERSON", "ORG": "NAME", "GPE": "NAME", "LOC": "NAME", "FAC": "NAME",
                 "PRODUCT": "CODE", "DATE": "DATE", "TIME": "DATE", "QUANTITY": "QUANTITY", "MONEY": "QUANTITY",
                 "PERCENT": "QUANTITY", "CARDINAL": "COUNT", "EVENT": "NAME", "WORK_OF_ART": "NAME",
                 "LAW": "NAME", "NORP": "NAME", "PER": "PERSON", "MISC": "NAME"}
"""Entity labels of trained pipelines (OntoNotes for English, WikiNER for Portuguese) -> answer kinds."""
_LEADING_WORDS = {"the", "a", "an", "o", "os", "as", "today", "currently", "now", "later", "our", "your", "this",
                  "hoje", "atualmente"}
LABELS = ("DATE", "QUANTITY", "COUNT", "PERSON", "NAME", "CODE", "NP")

_MONTHS_PT = ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro",
              "novembro", "dezembro"]
_UNITS_PT = {"kg", "g", "mg", "t", "m", "cm", "mm", "km", "km²", "m²", "m3", "l", "ml", "h", "min", "s", "%",
             "°c", "metros", "quilômetros", "quilómetros", "milhas", "pés", "toneladas", "quilos", "litros",
             "horas", "minutos", "segundos", "dias", "semanas", "meses", "anos", "séculos", "graus", "hectares",
             "euros", "dólares", "reais", "zł"}
_NUMBER_WORDS = {"en": ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"],
                 "pt": ["dois", "duas", "três", "quatro", "cinco", "seis", "sete", "oito", "nove", "dez", "onze",
                        "doze"]}
_QUESTION_OPENERS = {
    "en": set("who whom whose what which when where why how is are was were do does did can could will would should "
              "has have had may might must in on at for from to by during of with under after before".split()),
    "pt": set("quem que qual quais quando onde como quanto quanta quantos quantas por porque o a os as em de do da "
              "no na para com desde durante é são foi foram você pode sabe".split()),
}
"""First words of a question: a wh-word, an inverted auxiliary, or a preposition before a wh-phrase."""
_FIRST_WH = {"en": {"who", "whom", "whose", "what", "which", "when", "where", "why", "how"},
             "pt": {"quem", "que", "qual", "quais", "quando", "onde", "como", "quanto", "quanta", "quantos",
                    "quantas", "porque"}}


@dataclass
class SynthQA:
    """A synthesized question with its verbatim answer span and provenance."""

    question: str
    answer: str
    style: str
    """ "question" (the first wording of a fact), "wording" (another wording of it), "table" (a table row),
    or "llm" (written by a model)."""
    chunk_id: str
    doc: str
    label: str = ""
    """Kind of answer span: DATE, QUANTITY, COUNT, PERSON, NAME, CODE, NP, TABLE or LLM."""
    sentence: str = ""
    """The sentence (or, for a model's pairs, the chunk) the question was made from."""

    @property
    def fact_id(self) -> str:
        return f"synth:{self.chunk_id}:{self.answer.lower()}"

    def to_dict(self) -> dict[str, str]:
        return {"question": self.question, "answer": self.answer, "style": self.style, "label": self.label,
                "fact_id": self.fact_id, "doc": self.doc, "chunk": self.chunk_id, "sentence": self.sentence}


@dataclass
class Synthesis:
    """What a synthesis run made, and with what."""

    items: list[SynthQA]
    backend: str
    """rules, openai or model."""
    pipeline: str
    """What found the answer spans or wrote the questions: "en_core_web_sm" (a trained spaCy pipeline),
    "blank:en+rules", or the served / base model's name."""
    n_dropped: int = 0
    """Candidates no rule phrased well, or model pairs that failed the filters."""
    meta: dict[str, Any] = field(default_factory=dict)

    def sample(self, n: int, seed: int = 0) -> list[SynthQA]:
        """``n`` facts picked with ``seed``, each with all its wordings, in corpus order."""
        facts = list(dict.fromkeys(s.fact_id for s in self.items))
        picked = set(random.Random(seed).sample(facts, min(n, len(facts))))
        return [s for s in self.items if s.fact_id in picked]

    @property
    def n_facts(self) -> int:
        return len({s.fact_id for s in self.items})

    def summary(self) -> dict[str, Any]:
        """Counts for a manifest: facts, wordings (questions), and how they were made."""
        return {"backend": self.backend, "pipeline": self.pipeline, "n_facts": self.n_facts,
                "n_wordings": len(self.items), "n_dropped": self.n_dropped}


# --- form rules every synthesized question passes --------------------------------------------------

def looks_like_question(question: str, lang: str = "en") -> bool:
    """Whether ``question`` opens like a question (a wh-word, an inverted auxiliary, a preposition before a
    wh-phrase, or a "Do you know" frame) and ends with "?"."""
    lang = "pt" if base_language(lang) == "pt" else "en"
    words = re.findall(r"\w+", question.casefold())
    if not words or not question.rstrip().endswith("?"):
        return False
    if words[0] not in _QUESTION_OPENERS[lang]:
        return False
    return words[0] in _FIRST_WH[lang] or any(w in _FIRST_WH[lang] for w in words[:6]) or \
        words[0] in {"is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "had", "é",
                     "são", "foi", "você", "pode", "sabe"}


def answer_in_question(question: str, answer: str) -> bool:
    """Whether the answer (case-insensitive, as whole words) appears in the question."""
    return bool(re.search(r"(?<!\w)" + re.escape(answer.casefold()) + r"(?!\w)", question.casefold()))


def passes_form(question: str, answer: str, lang: str = "en", max_words: int = MAX_QUESTION_WORDS) -> bool:
    """The filters every synthesized question passes, whichever backend wrote it."""
    n = len(question.split())
    return (looks_like_question(question, lang) and not answer_in_question(question, answer)
            and MIN_QUESTION_WORDS - 1 <= n <= max_words)


# --- spaCy span finding ----------------------------------------------------------------------------

def load_pipeline(lang: str = "en") -> Any:
    """A spaCy pipeline for span finding: an installed trained one (parser and entities) if any, else a
    blank one with rule patterns. ``pipeline_name(nlp)`` says which."""
    import spacy

    lang = base_language(lang)
    for name in (f"{lang}_core_web_sm", f"{lang}_core_news_sm", f"{lang}_core_web_md", f"{lang}_core_news_md",
                 f"{lang}_core_web_lg", f"{lang}_core_news_lg"):
        try:
            nlp = spacy.load(name, disable=["lemmatizer"])
        except OSError:
            continue
        if "parser" not in nlp.pipe_names and "senter" not in nlp.pipe_names:
            nlp.add_pipe("sentencizer")
        nlp.meta["workbench_pipeline"] = name
        return nlp
    try:
        nlp = spacy.blank(lang)
    except ImportError as e:
        raise WorkbenchError(f"spaCy has no language {lang!r}", "set ingest.language to a spaCy code") from e
    nlp.add_pipe("sentencizer")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(_rule_patterns_pt() if lang == "pt" else _rule_patterns(lang))
    nlp.meta["workbench_pipeline"] = f"blank:{lang}+rules"
    return nlp


def pipeline_name(nlp: Any) -> str:
    """Which pipeline ``load_pipeline`` gave: a trained pipeline's package name, or "blank:LANG+rules"."""
    return nlp.meta.get("workbench_pipeline", nlp.meta.get("name", "?"))


_NOT_COUNTED_PT = {"anos", "milhões", "mil", "bilhões", "pelo", "pela", "pelos", "pelas", "para", "sobre", "entre",
                   "desde", "durante", "após", "antes", "depois", "contra", "como", "quando", "onde", "quais", "estes",
                   "estas", "esses", "essas", "cada", "todos", "todas"}
"""Words after a number that are no counted noun ("em 1816 pelo rei")."""


def _rule_patterns_pt() -> list[dict]:
    """Portuguese span patterns: dates ("12 de maio de 1946", "maio de 1946", "em 1946", "século XVI"), numbers
    with units ("1.230 km"), counts ("1.700.000 habitantes", "três corpos") and names ("Universidade de
    Varsóvia")."""
    month = {"LOWER": {"IN": _MONTHS_PT}}
    year = {"TEXT": {"REGEX": r"^(1[0-9]|20)\d\d$"}}
    day = {"TEXT": {"REGEX": r"^\d{1,2}º?$"}}
    de = {"LOWER": "de"}
    num = {"TEXT": {"REGEX": r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$|^\d+(,\d+)?$"}}
    scale = {"LOWER": {"IN": ["mil", "milhão", "milhões", "bilhão", "bilhões"]}, "OP": "?"}
    unit = {"LOWER": {"IN": sorted(_UNITS_PT)}}
    noun = {"IS_ALPHA": True, "IS_LOWER": True, "LENGTH": {">": 3},
            "LOWER": {"NOT_IN": sorted(set(_UNITS_PT) | _NOT_COUNTED_PT)}}
    title = {"IS_TITLE": True, "IS_SENT_START": False, "LENGTH": {">": 1}}
    return [
        {"label": "DATE", "pattern": [day, de, month, de, year]},
        {"label": "DATE", "pattern": [month, de, year]},
        {"label": "DATE", "pattern": [year]},
        {"label": "DATE", "pattern": [{"LOWER": "século"}, {"TEXT": {"REGEX": r"^[IVXL]+$"}}]},
        {"label": "QUANTITY", "pattern": [num, scale, unit]},
        {"label": "COUNT", "pattern": [num, scale, noun]},
        {"label": "COUNT", "pattern": [{"LOWER": {"IN": _NUMBER_WORDS["pt"]}}, noun]},
        {"label": "NAME", "pattern": [title, {"LOWER": {"IN": ["de", "da", "do", "das", "dos"]}}, {"IS_TITLE": True}]},
        {"label": "NAME", "pattern": [title, {"IS_TITLE": True, "OP": "*"}]},
    ]


def _rule_patterns(lang: str = "en") -> list[dict]:
    """English (and fallback) span patterns: dates, years and centuries, numbers with units, counts, names
    and product codes."""
    month = {"LOWER": {"IN": _MONTHS}}
    year = {"TEXT": {"REGEX": r"^(1[0-9]|20)\d\d$"}}
    day = {"TEXT": {"REGEX": r"^\d{1,2}(st|nd|rd|th)?$"}}
    num = {"TEXT": {"REGEX": r"^[+-]?\d[\d,]*(\.\d+)?$"}}
    scale = {"LOWER": {"IN": ["hundred", "thousand", "million", "billion"]}, "OP": "?"}
    unit = {"LOWER": {"IN": sorted(_UNITS)}}
    noun = {"IS_ALPHA": True, "IS_LOWER": True, "LENGTH": {">": 2},
            "LOWER": {"NOT_IN": sorted(_UNITS | {"percent", "per", "of", "and", "or", "to", "in", "the", "years"})}}
    title = {"IS_TITLE": True, "IS_SENT_START": False, "LENGTH": {">": 1}}
    code = {"TEXT": {"REGEX": r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9][\w.\-/]*$|^v?\d+\.\d+(\.\d+)+$"}}
    ordinal = {"TEXT": {"REGEX": r"^\d{1,2}(st|nd|rd|th)$"}}
    return [
        {"label": "DATE", "pattern": [{"TEXT": {"REGEX": r"^\d{4}-\d{2}-\d{2}$"}}]},
        {"label": "DATE", "pattern": [day, month, {"IS_PUNCT": True, "OP": "?"}, year]},
        {"label": "DATE", "pattern": [month, day, {"IS_PUNCT": True, "OP": "?"}, year]},
        {"label": "DATE", "pattern": [month, year]},
        {"label": "DATE", "pattern": [year]},
        {"label": "DATE", "pattern": [{"LOWER": {"IN": [m for m in _MONTHS if len(m) > 3]}, "IS_TITLE": True}]},
        {"label": "DATE", "pattern": [{"LOWER": "the"}, ordinal, {"LOWER": {"IN": ["century", "millennium"]}}]},
        {"label": "QUANTITY", "pattern": [num, scale, unit]},
        {"label": "QUANTITY", "pattern": [num, {"ORTH": "-"}, num, unit]},
        {"label": "QUANTITY", "pattern": [{"TEXT": {"REGEX": r"^\d[\d.,]*(°C|kg|mm|cm|km|h|V|W|Ah|mAh|Hz)$"}}]},
        {"label": "COUNT", "pattern": [num, scale, noun]},
        {"label": "COUNT", "pattern": [{"LOWER": {"IN": _NUMBER_WORDS["en"]}}, noun]},
        {"label": "NAME", "pattern": [title, {"LOWER": "of"}, {"LOWER": "the", "OP": "?"}, {"IS_TITLE": True}]},
        {"label": "NAME", "pattern": [title, {"IS_TITLE": True, "OP": "*"}]},
        {"label": "CODE", "pattern": [code]},
    ]


def _candidates(sent: Any, lang: str, trained: bool) -> list[tuple[int, int, str, str]]:
    """(start_char, end_char, answer_text, label) of answer spans inside one spaCy sentence.

    Counts keep only the number as the answer ("4 sensors": the noun stays in the question). With a trained
    pipeline a PERSON entity is trusted as a person ("PERSON_SURE")."""
    out = []
    for ent in sent.ents:
        label = _SPACY_LABELS.get(ent.label_, ent.label_) if trained else ent.label_
        if label not in LABELS:
            continue
        start, end, text = ent.start_char, ent.end_char, ent.text
        if ent[0].lower_ in _LEADING_WORDS and len(ent) > 1 and label == "NAME":
            start, text = ent[1].idx, ent[1:].text  # "The Rhine", "Today Kestrelmark Instruments"
        if label == "COUNT" and len(ent) > 1:
            last = len(ent) - 1
            start, end, text = ent[0].idx, ent[last - 1].idx + len(ent[last - 1]), ent[:last].text
        if not trained and label == "NAME" and text.casefold() in MONTHS:
            label = "DATE"  # "in December"
        if trained and label == "PERSON":
            label = "PERSON_SURE"
        out.append((start, end, text, label))
    if not trained and base_language(lang) == "en":
        out.extend(_final_noun_phrase(sent))
    if not out and sent.doc.has_annotation("DEP"):
        for np in sent.noun_chunks:
            if len(np) > 1:
                out.append((np.start_char, np.end_char, np.text, "NP"))
    return out


_FINAL_NP = re.compile(r"(?<=\s)(?:a|an|the|its|their)[^\S\n]+(?:[\w-]+[^\S\n]+){0,3}[a-z][a-z-]+(?=\s*[.!?]?\s*$)")
"""A determiner, up to three modifiers and a common noun ending the sentence, on one line (a phrase wrapped
across lines would not read back verbatim from the sentence)."""
_NOT_IN_NP = {"and", "or", "but", "than", "that", "which", "who", "of", "in", "on", "at", "by", "for", "from", "to",
              "with", "is", "are", "was", "were", "be", "been", "has", "have", "had", "not", "as", "into", "such"}


def _final_noun_phrase(sent: Any) -> list[tuple[int, int, str, str]]:
    """The noun phrase a sentence ends with ("It runs on a 9 Ah battery."), as an NP span, on the rule path
    (a trained pipeline's noun chunks serve there): a determiner, up to three modifiers, a common noun."""
    m = _FINAL_NP.search(sent.text)
    words = m.group().split()[1:] if m else []
    if not m or any(w.casefold() in _NOT_IN_NP or w.endswith(("ly", "ward", "wards")) for w in words) or \
            {"same", "other", "following", "latter", "former"} & {w.casefold() for w in words}:
        return []
    return [(sent.start_char + m.start(), sent.start_char + m.end(), m.group(), "NP")]


_ROW = re.compile(r"^\|\s*([^|]{1,60}?)\s*\|\s*([^|]{1,60}?)\s*\|\s*$")
_VALUE_HEADERS = {"value", "values", "specification", "spec", "detail", "details", "setting", "data", "valor",
                  "especificação", "detalhe"}
"""Second-column headers of key-value tables (a row of another table does not read as "the KEY of X")."""


def _table_rows(text: str) -> list[tuple[str, str]]:
    """(key, value) pairs of two-column markdown key-value tables ("| Field | Value |"), header and separator
    rows skipped; rows of other tables are not pairs."""
    rows, key_value, header_seen = [], False, False
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if not m:
            key_value, header_seen = False, False
            continue
        key, value = m.group(1).strip(), m.group(2).strip()
        if not header_seen:
            header_seen, key_value = True, value.casefold() in _VALUE_HEADERS
            continue
        if key_value and not set(key) <= set("-: ") and not set(value) <= set("-: "):
            rows.append((key, value))
    return rows


_HEADING_LINE = re.compile(r"^\s*(?:[#>*-]+\s*)?[^.!?:;\n]{1,60}\n(?=\s*(?:[#>*-]+\s*)?[A-Z0-9])")


def _without_headings(start: int, text: str) -> tuple[int, str]:
    """A sentence's text with the heading lines a sentence splitter glued to its front taken off (short lines
    with no closing punctuation before a capitalised line), markdown list and heading marks dropped, line
    breaks made spaces; and the character offset where what is left starts."""
    while True:
        m = _HEADING_LINE.match(text)
        if not m or len(m.group().split()) > 6:
            break
        start, text = start + m.end(), text[m.end():]
    lead = len(text) - len(text.lstrip(" \t\n#>*-"))
    return start + lead, text[lead:].rstrip().replace("\n", " ")  # same length: offsets still hold


def _heading_subject(heading: str, lang: str) -> str:
    """What a section's heading names, as a subject a pronoun may stand for: "The Tern-3 buoy" for an
    English heading "Tern-3 buoy" (a common noun last), the heading itself when it is a name; else ""."""
    words = heading.strip().split()
    if not 1 <= len(words) <= 4 or not all(re.fullmatch(r"[\w-]+", w) for w in words):
        return ""
    if all(w[:1].isupper() or w[:1].isdigit() for w in words):
        return heading.strip()
    if lang == "en" and words[0][:1].isupper() and words[-1].isalpha() and words[-1].islower() and \
            words[0].casefold() not in {"the", "a", "an"}:
        return "The " + " ".join(words)
    return ""


def chunks_language(chunks: list[Chunk], sample: int = 40) -> str:
    """The language holding most text among (up to ``sample``, evenly spread) chunks."""
    step = max(1, len(chunks) // sample)
    return language_mix((detect_language(c.text)[0], len(c.text)) for c in chunks[::step]).language


def synthesize_rules(chunks: Iterable[Chunk], lang: str = "en", max_per_chunk: int = 4, seed: int = 0,
                     progress: bool = False, wordings: int = 1,
                     max_words: int = MAX_QUESTION_WORDS) -> list[SynthQA]:
    """Rule-based questions from chunks (see ``synthesize_rules_run``; this returns its items)."""
    return synthesize_rules_run(chunks, lang, max_per_chunk, seed, progress, wordings, max_words).items


def synthesize_rules_run(chunks: Iterable[Chunk], lang: str = "en", max_per_chunk: int = 4, seed: int = 0,
                         progress: bool = False, wordings: int = 1,
                         max_words: int = MAX_QUESTION_WORDS) -> Synthesis:
    """Rule-based questions: per chunk, up to ``max_per_chunk`` answer spans phrased as fronted questions.

    Args:
        chunks: corpus chunks.
        lang: language code ("pt" has its own rules; others get the English ones on spans found with that
            language's spaCy pipeline), or "auto" to detect it.
        max_per_chunk: facts (answer spans) used per chunk, spread over its sentences.
        seed: sampling seed.
        progress: show a progress bar.
        wordings: questions per fact (the first plus ``wordings - 1`` rewordings).
        max_words: length limit of a question.

    Returns:
        The questions (answers verbatim in the chunk, never inside their question), the pipeline that ran,
        and how many candidate spans no rule phrased well.
    """
    from tqdm.auto import tqdm

    chunks = list(chunks)
    lang = base_language(chunks_language(chunks) if lang == AUTO else lang)
    nlp = load_pipeline(lang)
    trained = not pipeline_name(nlp).startswith("blank:")
    stop = stopwords(lang)
    rng = random.Random(seed)
    out: list[SynthQA] = []
    dropped = 0
    made: set[tuple[str, str]] = set()
    docs = nlp.pipe((c.text for c in chunks), batch_size=64)
    for chunk, doc in tqdm(zip(chunks, docs), total=len(chunks), disable=not progress, desc="synthesize"):
        found = []
        antecedent = _heading_subject(chunk.heading, lang)
        for sent in doc.sents:
            offset, text = _without_headings(sent.start_char, sent.text)
            if len(text.split()) < 5 or len(text) > 400 or "|" in text:
                continue
            said, antecedent = antecedent, subject_of(text, lang) or antecedent
            for s, e, ans, label in _candidates(sent, lang, trained):
                s, e = s - offset, e - offset
                if s < 0 or e > len(text):
                    continue  # in a heading line taken off the sentence
                if len(ans) < 2 or len(ans.split()) > 6 or ans.lower() == text.lower():
                    continue
                if (s > 0 and (text[s - 1].isalnum() or text[s - 1] in "-_/")) or (
                        e < len(text) and (text[e].isalnum() or text[e] in "-_/")):
                    continue  # part of a longer token ("PS-TERN3")
                if ans.casefold() in stop or (s == 0 and " " not in ans and ans.endswith("s") and ans[1:].islower()) or (
                        s == 0 and " " not in ans and re.search(
                        rf"(?<![\w.]\s)\b{re.escape(ans.casefold())}\b", chunk.text)):
                    continue  # a function word, or a common noun capitalised as the sentence's first word
                found.append((text, s, e, ans, label, said))
        rng.shuffle(found)
        seen: set[str] = set()
        for text, s, e, ans, label, said in found:
            if (text, ans) in made:
                continue  # the same sentence in two overlapping chunks
            made.add((text, ans))
            if ans.lower() in seen or len(seen) >= max_per_chunk:
                continue
            phrased = phrase_question(text, s, e, label, lang, max_words, said)
            if phrased is None or not passes_form(phrased.question, ans, lang, max_words):
                dropped += 1
                continue
            seen.add(ans.lower())
            kind = "PERSON" if label == "PERSON_SURE" else label
            for i, q in enumerate(wordings_of(phrased, ans, lang, wordings, seed)):
                out.append(SynthQA(q, ans, "question" if i == 0 else "wording", chunk.id, chunk.doc, kind, text))
        for key, value in _table_rows(chunk.text)[:max_per_chunk]:
            q = _table_question(key, chunk.heading, lang)
            if passes_form(q, value, lang, max_words):
                out.append(SynthQA(q, value, "table", chunk.id, chunk.doc, "TABLE", f"| {key} | {value} |"))
    return Synthesis(out, "rules", pipeline_name(nlp), dropped)


def _table_question(key: str, heading: str | None, lang: str) -> str:
    """The question a two-column table row answers ("What is the weight of Tern-3?")."""
    key = key[0].lower() + key[1:]
    heading = re.sub(r"^[\d.]+\s+", "", heading or "")  # "3. Equipment and materials"
    if lang == "pt":
        return f"Qual é o valor de {key}" + (f" em {heading}?" if heading else "?")
    return f"What is the {key}" + (f" of {heading}?" if heading else "?")


# --- wordings of one fact --------------------------------------------------------------------------

_EMBED_FRAMES = {
    "en": ["Do you know {e}?", "Can you tell me {e}?", "Do you happen to know {e}?", "Could you tell me {e}?"],
    "pt": ["Você sabe {e}?", "Pode me dizer {e}?", "Sabe me dizer {e}?", "Você poderia me dizer {e}?"],
}
_WH_VARIANTS = {
    "en": [(r"^When\b", "In what year", "year"), (r"^What is\b", "What's", "")],
    "pt": [(r"^Quando\b", "Em que ano", "year"), (r"^Onde\b", "Em que lugar", ""),
           (r"^Qual é(?= (?:o|a|os|as) )", "Qual", "")],
}
_SYNONYMS = {
    "en": [("located", "situated"), ("founded", "established"), ("began", "started"), ("begin", "start"),
           ("built", "constructed"), ("build", "construct"), ("largest", "biggest"), ("large", "big"),
           ("important", "significant"), ("called", "named"), ("country", "nation"), ("city", "town"),
           ("area", "region"), ("flow", "run"), ("flows", "runs"), ("receive", "get"), ("received", "got"),
           ("became", "turned into"), ("people", "persons"), ("main", "principal"), ("known as", "called")],
    "pt": [("localizado", "situado"), ("localizada", "situada"), ("fundado", "criado"), ("fundada", "criada"),
           ("começou", "iniciou"), ("construído", "erguido"), ("construída", "erguida"), ("importante", "relevante"),
           ("chamado", "denominado"), ("chamada", "denominada"), ("maior", "mais extenso"), ("país", "território"),
           ("principal", "mais importante"), ("conhecido como", "chamado de"), ("conhecida como", "chamada de")],
}
_MOVABLE = re.compile(r"^(?P<head>.+?) (?P<pp>(?:in|during) (?:the )?[A-Z0-9][^,?]{2,40})\?$")
"""A trailing phrase naming a place or a time, which may open the question instead ("In Germany, what ...?")."""


def wordings_of(phrased: Phrased, answer: str, lang: str, n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` wordings of one fact, the phrased question first: embedded-question frames ("Do you know
    when ...?"), a wh-variant ("In what year ...?" for a year), synonym swaps, and a phrase moved to the front
    ("In 1911, when ...?" style). Every wording passes the same form rules; none holds the answer."""
    lang = "pt" if lang == "pt" else "en"
    rng = random.Random(f"{seed}:{phrased.question}")
    q = phrased.question
    variants: list[str] = []
    frames = list(_EMBED_FRAMES[lang])
    rng.shuffle(frames)
    variants.append(frames[0].format(e=phrased.embedded))
    for pattern, repl, cond in _WH_VARIANTS[lang]:
        stranded = q.rstrip("?").split()[-1].casefold() in {"to", "from", "into", "through", "by", "with", "for"}
        if re.match(pattern, q) and (cond != "year" or re.fullmatch(r"\d{4}", answer)) and not stranded:
            variants.append(re.sub(pattern, repl, q, count=1))
            break
    swapped = q
    for old, new in _SYNONYMS[lang]:
        swapped = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, swapped, count=1)
    if swapped != q:
        variants.append(swapped)
    m = _MOVABLE.match(q)
    if m and not re.match(r"^(When|Where|Quando|Onde)\b", q):
        pp = m.group("pp")
        variants.append(f"{pp[0].upper()}{pp[1:]}, {m.group('head')[0].lower()}{m.group('head')[1:]}?")
    variants.append(frames[1].format(e=phrased.embedded))
    out = [q]
    for v in variants:
        v = re.sub(r"\s+", " ", v).strip()
        if v not in out and passes_form(v, answer, lang, MAX_QUESTION_WORDS + 6):
            out.append(v)
    return out[:max(1, n)]


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


# --- questions written by a model -----------------------------------------------------------------

LLM_PROMPT = (
    "Write {n} questions a reader might ask about the passage below, each answered by a short span copied "
    "exactly from the passage (a name, a number with its unit, a date or a short phrase). Do not put the answer "
    "in the question. After each question give {p} other wordings of it. Use the format\n"
    "Q: <question>\nP: <another wording>\nA: <answer>\n\nPassage:\n{text}"
)


def parse_qa_blocks(text: str) -> list[tuple[list[str], str]]:
    """Parse ``Q:`` / ``P:`` / ``A:`` blocks from generated text: (the question and its wordings, answer)."""
    blocks, questions = [], []
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(?:\d+[.)]\s*)?(Q|Question|P|Paraphrase)\s*\d*\s*[:.]\s*(.+)$", line, re.I)
        if m:
            if m.group(1).lower().startswith("q"):
                questions = []
            questions.append(m.group(2).strip())
            continue
        m = re.match(r"^(?:\d+[.)]\s*)?(A|Answer)\s*[:.]\s*(.+)$", line, re.I)
        if m and questions:
            blocks.append((questions, m.group(2).strip().rstrip(".")))
            questions = []
    return blocks


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """Parse ``Q: ... / A: ...`` pairs from generated text (wordings after the first are left out)."""
    return [(qs[0], a) for qs, a in parse_qa_blocks(text)]


def synthesize_llm(chunks: Iterable[Chunk], complete: Callable[[list[str]], list[str]], per_chunk: int = 3,
                   progress: bool = False, wordings: int = 1, max_words: int = MAX_QUESTION_WORDS,
                   lang: str = "en") -> list[SynthQA]:
    """Questions written by a language model, kept only when their answer occurs verbatim in the chunk and
    every wording passes the form rules (``passes_form``).

    Args:
        chunks: corpus chunks.
        complete: maps a batch of prompts to a batch of completions (``served_completer``,
            ``model_completer``).
        per_chunk: questions asked for per chunk.
        progress: show a progress bar.
        wordings: questions kept per fact (the model's question and its paraphrases).
        max_words: length limit of a question.
        lang: the corpus language (which form rules apply).
    """
    return _synthesize_llm(chunks, complete, per_chunk, progress, wordings, max_words, lang)[0]


def _synthesize_llm(chunks: Iterable[Chunk], complete: Callable[[list[str]], list[str]], per_chunk: int,
                    progress: bool, wordings: int, max_words: int, lang: str) -> tuple[list[SynthQA], int]:
    from tqdm.auto import tqdm

    chunks = list(chunks)
    out: list[SynthQA] = []
    dropped = 0
    batch = 16
    for i in tqdm(range(0, len(chunks), batch), disable=not progress, desc="synthesize (model)"):
        group = chunks[i:i + batch]
        replies = complete([LLM_PROMPT.format(n=per_chunk, p=max(0, wordings - 1), text=c.text) for c in group])
        for chunk, reply in zip(group, replies):
            for questions, answer in parse_qa_blocks(reply)[:per_chunk]:
                at = chunk.text.casefold().find(answer.casefold()) if answer else -1
                kept = [q for q in dict.fromkeys(questions) if at >= 0 and passes_form(q, answer, lang, max_words)]
                dropped += len(questions) - len(kept)
                if not kept:
                    continue
                verbatim = chunk.text[at:at + len(answer)]
                out += [SynthQA(q, verbatim, "llm", chunk.id, chunk.doc, "LLM", chunk.text) for q in kept[:wordings]]
    return out, dropped


def served_completer(cfg: SynthConfig) -> tuple[Callable[[list[str]], list[str]], str]:
    """A completion function backed by the OpenAI-compatible server ``cfg.base_url`` (through the same
    client the answering path uses), and the name of the model it asks."""
    model_cfg = ModelConfig(backend="openai", base_url=cfg.base_url, model=cfg.model, api_key_env=cfg.api_key_env,
                            timeout_s=cfg.timeout_s, remote_copy="free")
    listed = check_backend(model_cfg)
    name = cfg.model or listed[0]
    # whole chunks go out as they are: no prompt budget to count, so no tokenizer is loaded
    gen = RemoteGenerator(model_cfg, GenerateConfig(max_new_tokens=512, temperature=0.7, copy_spans=False),
                          model=name, tokenizer=False)

    def complete(prompts: list[str]) -> list[str]:
        return [g.text for g in gen.generate([[{"role": "user", "content": p}] for p in prompts])]

    return complete, name


def model_completer(model: Any, tokenizer: Any, max_new_tokens: int = 256) -> Callable[[list[str]], list[str]]:
    """A completion function backed by a loaded causal LM (batched, sampled lightly)."""

    gen = Generator(model, tokenizer, GenerateConfig(max_new_tokens=max_new_tokens, temperature=0.7))

    def complete(prompts: list[str]) -> list[str]:
        return [g.text for g in gen.generate([[{"role": "user", "content": p}] for p in prompts])]

    return complete


# --- one entry point for every backend -------------------------------------------------------------

def synthesize(chunks: list[Chunk], cfg: SynthConfig, lang: str = AUTO, seed: int = 0, progress: bool = False,
               complete: Callable[[list[str]], list[str]] | None = None, model_name: str = "") -> Synthesis:
    """Training questions from ``chunks`` with the backend ``cfg.backend`` names.

    Args:
        chunks: corpus chunks (never the eval questions: the leakage guard drops near-copies later).
        cfg: the synth settings.
        lang: the corpus language, or "auto".
        seed: sampling seed (rules).
        progress: show a progress bar.
        complete: for backend "model", the loaded base model's completion function (``model_completer``).
        model_name: the name recorded for backend "model".

    Returns:
        The questions, and what made them.
    """
    lang = base_language(chunks_language(chunks) if lang == AUTO and chunks else lang)
    if cfg.backend == "rules":
        return synthesize_rules_run(chunks, lang, cfg.per_chunk, seed, progress, cfg.wordings, cfg.max_words)
    if cfg.backend == "openai":
        complete, model_name = served_completer(cfg)
    elif complete is None:
        raise WorkbenchError("synth.backend model needs the base model loaded", "use synth.backend rules or openai")
    items, dropped = _synthesize_llm(chunks, complete, cfg.per_chunk, progress, cfg.wordings, cfg.max_words, lang)
    return Synthesis(items, cfg.backend, model_name, dropped)
