"""Question synthesis from corpus chunks, and paraphrase augmentation.

Used when a corpus has no ``train`` split (or on request): fine-tuning then learns from questions made
from the documents themselves.

- Rule-based (default, any language spaCy tokenizes): candidate answer spans are found with spaCy —
  the statistical pipeline's entities and noun phrases when ``en_core_web_sm`` (or another installed
  ``<lang>_core_*_sm``) is present, else rule patterns on a blank pipeline (dates, numbers with units,
  counts, multi-word names, product codes/versions). Each span becomes an in-situ question ("The buoy
  weighs how much?") and a cloze prompt, with the answer span kept verbatim.
- LLM-based (optional): a completion function — the base model through ``workbench.generate`` or any
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

from workbench.errors import WorkbenchError
from workbench.records import Chunk

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
           "sept", "oct", "nov", "dec"]
_UNITS = {"kg", "g", "mg", "t", "m", "cm", "mm", "km", "µm", "nm", "l", "ml", "h", "hr", "hrs", "hour", "hours",
          "min", "minute", "minutes", "s", "sec", "seconds", "ms", "day", "days", "week", "weeks", "month",
          "months", "year", "years", "%", "percent", "°c", "°f", "c", "v", "mv", "kv", "a", "ma", "ah", "mah",
          "wh", "kwh", "w", "kw", "mw", "hz", "khz", "mhz", "ghz", "bar", "psi", "pa", "kpa", "db", "dbm",
          "kb", "mb", "gb", "tb", "kbps", "mbps", "knots", "kn", "nmi", "eur", "usd", "nok", "sek", "€", "$",
          "us/cm", "µs/cm", "ppm", "psu", "m/s", "km/h", "rpm", "bytes", "bits", "cycles", "people", "staff"}
_WH = {"DATE": "when", "QUANTITY": "how much", "COUNT": "how many", "PERSON": "who", "NAME": "what",
       "CODE": "what", "NP": "what"}
_SPACY_WH = {"PERSON": "PERSON", "ORG": "NAME", "GPE": "NAME", "LOC": "NAME", "FAC": "NAME", "PRODUCT": "CODE",
             "DATE": "DATE", "TIME": "DATE", "QUANTITY": "QUANTITY", "MONEY": "QUANTITY", "PERCENT": "QUANTITY",
             "CARDINAL": "COUNT", "EVENT": "NAME", "WORK_OF_ART": "NAME", "LAW": "NAME", "NORP": "NAME"}
_LEADING = re.compile(r"^(and|but|so|also|however|then|thus|therefore),?\s+", re.I)


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
    ruler.add_patterns(_rule_patterns())
    return nlp


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


def _candidates(sent: Any) -> list[tuple[int, int, str, str]]:
    """(start_char, end_char, answer_text, label) of answer spans inside one spaCy sentence."""
    out = []
    for ent in sent.ents:
        label = _SPACY_WH.get(ent.label_, ent.label_)
        if label not in _WH:
            continue
        start, end, text = ent.start_char, ent.end_char, ent.text
        if label == "DATE" and ent[0].lower_ in ("in", "since"):
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


def synthesize_rules(chunks: Iterable[Chunk], lang: str = "en", max_per_chunk: int = 4, seed: int = 0,
                     progress: bool = False) -> list[SynthQA]:
    """Rule-based QA pairs (in-situ question + cloze per answer span) from chunks.

    Args:
        chunks: corpus chunks.
        lang: spaCy language code.
        max_per_chunk: answer spans used per chunk (spread over its sentences).
        seed: sampling seed.
        progress: show a progress bar.

    Returns:
        Two SynthQA per chosen span ("question" and "cloze" styles), answers verbatim in the chunk.
    """
    from tqdm.auto import tqdm

    nlp = load_pipeline(lang)
    rng = random.Random(seed)
    chunks = list(chunks)
    out: list[SynthQA] = []
    docs = nlp.pipe((c.text for c in chunks), batch_size=64)
    for chunk, doc in tqdm(zip(chunks, docs), total=len(chunks), disable=not progress, desc="synthesize"):
        found = []
        for sent in doc.sents:
            text = sent.text.strip()
            if len(text.split()) < 5 or len(text) > 400 or "|" in text:
                continue
            offset = sent.start_char + (len(sent.text) - len(sent.text.lstrip()))
            for s, e, ans, label in _candidates(sent):
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
            q = _squash(_in_situ(text, s, e, label, text[e:]))
            if q and ans not in q:
                out.append(SynthQA(q, ans, "question", chunk.id, chunk.doc, label))
            cloze = _squash(f"Fill in the blank: {text[:s]}____{text[e:]}")
            out.append(SynthQA(cloze, ans, "cloze", chunk.id, chunk.doc, label))
        for key, value in _table_rows(chunk.text)[:max_per_chunk]:
            subject = f" of {chunk.heading}" if chunk.heading else ""
            out.append(SynthQA(f"What is the {key[0].lower() + key[1:]}{subject}?", value, "question",
                               chunk.id, chunk.doc, "TABLE"))
    return out


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
    from workbench.config import GenerateConfig
    from workbench.generate import Generator

    gen = Generator(model, tokenizer, GenerateConfig(max_new_tokens=max_new_tokens, temperature=0.7))

    def complete(prompts: list[str]) -> list[str]:
        return [g.text for g in gen.generate([[{"role": "user", "content": p}] for p in prompts])]

    return complete
