"""Questions a person would ask, built from the sentence around an answer span.

``phrase_question(sentence, start, end, label, lang)`` carves the clause that holds the answer out of the
sentence (brackets, relative and leading adverbial clauses that do not hold it are dropped; everything
after the clause is cut), finds its subject and verb, and fronts a wh-phrase chosen by the answer's kind:

- English: who / when / where / how many + noun / how much / how long / what, with the auxiliary moved
  in front of the subject, or do-support where English needs it ("The Normans reached Normandy in 911."
  -> "When did the Normans reach Normandy?"). A span that is the subject keeps the word order ("Who
  founded Kestrelmark?").
- Portuguese: Quem / Quando / Onde / Quantos|Quantas + noun / O que / Qual; Portuguese fronts the
  wh-word without inverting the clause ("Em 1911, os normandos chegaram à Normandia." -> "Quando os
  normandos chegaram à Normandia?").

No part of speech tagger is needed: verbs are recognised by a small lexicon (auxiliaries, irregular
pasts, common verb stems) and by regular endings. Whenever a candidate does not fit a rule it knows to
phrase well (an answer inside brackets or a list, a subject that is a pronoun, a verb it cannot find or
put into its base form, a question past the length limit), the result is None: a dropped candidate costs
one training question, a broken one teaches the model questions nobody asks.

Each phrased question also carries its embedded form ("when the Normans reached Normandy"), which the
wordings of a fact reuse ("Do you know when the Normans reached Normandy?").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_QUESTION_WORDS = 20
"""Default length limit of a synthesized question, in words (SQuAD's own questions average about 11)."""
MIN_QUESTION_WORDS = 4

_TOKEN = re.compile(r"\d+(?:st|nd|rd|th|ª|º)(?!\w)|\d[\d,.]*\d|\w+(?:[-'’.]\w+)*|[^\w\s]")
_BRACKETS = {"(": ")", "[": "]"}
_DASHES = {"–", "—", ";", ":"}


@dataclass(frozen=True)
class Phrased:
    """A question asking for one answer span.

    Attributes:
        question: the direct question ("When did the Normans reach Normandy?").
        embedded: the same question as a clause ("when the Normans reached Normandy"), for wordings such
            as "Do you know ...?".
        wh: the wh-phrase it opens with ("When", "How many ships").
    """

    question: str
    embedded: str
    wh: str


@dataclass
class _Tok:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.casefold()


def _tokens(text: str) -> list[_Tok]:
    return [_Tok(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


# --- English lexicon -------------------------------------------------------------------------------

_BE = {"is", "are", "was", "were"}
_HAVE = {"has", "have", "had"}
_MODALS = {"will", "would", "can", "could", "may", "might", "must", "should", "shall"}
_DO = {"does", "do", "did"}
_AUX = _BE | _HAVE | _MODALS | _DO
_IRREGULAR_PAST = dict(pair.split(":") for pair in (
    "arose:arise ate:eat became:become began:begin bore:bear bound:bind broke:break brought:bring built:build "
    "bought:buy came:come caught:catch chose:choose drew:draw drove:drive fell:fall felt:feel fought:fight "
    "found:find fled:flee flew:fly forbade:forbid forgot:forget froze:freeze gave:give went:go grew:grow "
    "hung:hang held:hold hid:hide kept:keep knew:know laid:lay led:lead left:leave lent:lend lost:lose "
    "made:make meant:mean met:meet overcame:overcome overtook:overtake paid:pay ran:run rode:ride rose:rise "
    "said:say saw:see sought:seek sold:sell sent:send shook:shake shot:shoot sang:sing sank:sink sat:sit "
    "slept:sleep spoke:speak spent:spend sprang:spring stood:stand stole:steal struck:strike swam:swim "
    "swept:sweep took:take taught:teach told:tell thought:think threw:throw understood:understand "
    "undertook:undertake withdrew:withdraw wore:wear won:win wrote:write fed:feed bred:breed dug:dig "
    "forgave:forgive stuck:stick struck:strike swore:swear tore:tear woke:wake wound:wind").split())
_IRREGULAR_PARTICIPLES = set(
    "arisen eaten become begun borne born bound broken brought built bought come caught chosen drawn driven "
    "fallen felt fought found fled flown forbidden forgotten frozen given gone grown hung held hidden kept "
    "known laid led left lent lost made meant met overcome paid run ridden risen said seen sought sold sent "
    "shaken shot sung sunk sat slept spoken spent stood stolen struck swum swept taken taught told thought "
    "thrown understood undertaken withdrawn worn won written fed bred dug been done set put cut shut spread "
    "split cast hit let quit".split())
_VERB_STEMS = set(
    "flow form lie run contain include mean remain become make reach carry weigh use require cover consist "
    "follow join enter leave cross drain empty feed meet mark separate connect border divide hold take give "
    "produce provide allow need send store support measure last begin end start serve operate employ offer "
    "receive describe explain show represent call refer know live grow rise fall lead own lose win pay cost "
    "reduce increase change create cause affect protect prevent attack kill infect destroy recognize "
    "recognise respond bind release activate control regulate trigger lack depend rely occur happen exist "
    "appear seem sit stand belong stretch extend span pass link host house attract govern elect rule report "
    "state claim argue suggest say write teach study dispense prescribe sell buy supply vent charge list "
    "open close return turn move travel visit build design develop found establish publish note define "
    "name enter play rank act form flood freeze melt erode deposit shape mark split merge feed discharge "
    "transport generate detect kill express activate encode inhibit target engulf present trigger sample log "
    "transmit record emit broadcast power drive pump heat cool fit weigh sense monitor track count read "
    "load save keep check replace rotate spin orbit revolve border surround feature honor honour defeat "
    "invade capture conquer marry inherit succeed replace adopt introduce invent discover propose "
    "announce sign ratify approve pass abolish".split())
_NOT_VERBS_ED = set(
    "hundred red bed need seed speed shed feed breed creed greed naked sacred wicked rugged aged beloved "
    "kindred shred sled led fled bred wed united".split())
_PREPOSITIONS = set(
    "in on at by from to into onto through throughout across along towards toward within near during since "
    "until till before after of for with without about around among between over under above below behind "
    "beyond against upon via per like past".split())
_DETERMINERS = {"the", "a", "an", "its", "their", "his", "her", "our", "this", "that", "these", "those", "each",
                "every", "some", "many", "most", "all", "both", "several", "no", "any"}
_PRONOUNS = {"latter", "former", "here", "now", "then", "also", "thus", "today", "still", "it", "they", "he", "she", "we", "i", "you", "this", "these", "those", "that", "there", "which", "who",
             "one", "some", "many", "most", "others", "all", "both", "such", "its", "their", "his", "her"}
_SUBORDINATORS = {"which", "who", "whom", "whose", "where", "when", "while", "whereas", "although", "though",
                  "because", "since", "as", "if", "unless", "until", "so", "whether", "including", "especially",
                  "particularly", "such", "like", "unlike", "with", "without", "thus", "hence", "whereby",
                  "and", "but", "or", "nor", "yet", "then", "after", "before", "despite", "due", "being",
                  "making", "giving", "leading", "forming", "according"}
_CUT_AFTER = {"which", "who", "whom", "whose", "where", "when", "while", "whereas", "although", "though",
              "because", "since", "unless", "whether", "so", "thus", "hence", "whereby", "but", "and", "or",
              "as", "including", "such", "than", "that", "if", "despite"}
"""Words after the answer that open a clause the question does not need."""
_PERSON_TITLES = set(
    "mr mrs ms dr doctor professor prof king queen emperor empress pope president saint st sir general chancellor "
    "prince princess duke count bishop lord lady archbishop cardinal senator minister governor captain".split())
_PERSON_VERBS = set(
    "said wrote argued claimed founded proposed described discovered invented believed stated suggested died "
    "married painted composed designed announced noted observed published developed reported recorded led "
    "ruled defeated declared signed considered called named won lost visited sang played directed produced "
    "born elected appointed".split())
_PLACE_WORDS = set(
    "lake river sea ocean mountains mountain mount valley island islands canal bay gulf city county province "
    "republic kingdom forest alps desert street square park bridge basin delta gorge plain plateau peninsula "
    "coast strait falls harbour harbor port region district country village town land lowlands highlands "
    "hills hill rift graben cape estuary lagoon archipelago continent".split())
_NOT_PERSON_FIRST = set(
    "upper lower north south east west northern southern eastern western central new old great little high "
    "middle holy roman royal national international united first second third world european american "
    "german french dutch swiss austrian british english the lake river mount saint".split())
_INTRANSITIVE = set("flow lie rise fall remain exist occur happen live die arrive go come begin sit stand "
                    "appear seem emerge originate".split())
"""Verbs that take no object: a name after one is never "what ... do?"."""
_DIRECTIONS = {"north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest", "norte", "sul",
               "leste", "oeste"}
_NAME_LABELS = {"PERSON", "NAME", "CODE", "NP", "PERSON_SURE"}
_APPROXIMATELY = {"about", "approximately", "nearly", "almost", "around", "roughly", "some", "over", "circa",
                  "cerca", "aproximadamente", "quase"}
_DIMENSIONS = {"long", "high", "wide", "deep", "tall", "old", "thick", "large", "heavy", "far", "big"}
_LENGTH_UNITS = {"km", "m", "mm", "cm", "mi", "ft", "miles", "mile", "kilometres", "kilometers", "kilometre",
                 "kilometer", "metres", "meters", "metre", "meter", "feet", "foot", "yards", "nmi"}
_TIME_UNITS = {"s", "sec", "seconds", "second", "min", "minutes", "minute", "h", "hr", "hrs", "hours", "hour", "days",
               "day", "weeks", "week", "months", "month", "years", "year", "decades", "decade", "centuries",
               "century", "millennia"}
_NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                 "fifteen", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "dozen"}
_SCALE = {"hundred", "thousand", "million", "billion", "trillion"}


def _base_of_past(word: str) -> str | None:
    """The base form of a past-tense verb ("reached" -> "reach", "created" -> "create"), or None."""
    if word in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[word]
    if not word.endswith("ed") or len(word) < 5 or word in _NOT_VERBS_ED:
        return None
    stem = word[:-2]
    if stem in _VERB_STEMS:
        return stem
    if stem + "e" in _VERB_STEMS:
        return stem + "e"
    if word.endswith("ied"):
        return word[:-3] + "y"
    if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] in "bdgmnprt" and stem[-1] != "d":
        return stem[:-1]  # "stopped", "planned", "occurred"
    if re.search(r"(?:[^e]at|ut|ot|ir|ur|[^eo]ar|[aeiou][cgsvz]|[^aeiou][cgvz]|u|[^aeious]l|ibe|ine|ide|ade|ime"
                 r"|ame|ise|ize|ure|ore|ove)$", stem + ("e" if stem.endswith(("ib", "in", "id", "ad", "im", "am",
                                                                                 "is", "iz", "or", "ov")) else "")):
        return stem if stem.endswith(("er", "en", "el", "ow", "ain", "ear", "eir")) else _with_e(stem)
    return stem


def _with_e(stem: str) -> str:
    """The base form of an -ed verb whose stem lost its final e ("creat" -> "create")."""
    if stem.endswith(("in", "id", "ad", "im", "am", "ib", "is", "iz", "or", "ov", "at", "ut", "ot", "ir", "ur", "ar",
                      "c", "g", "v", "z", "u", "s", "l")):
        if stem.endswith(("ss", "ll", "ing", "ain", "oin", "ead", "oad", "ood", "ard", "ord", "eal", "ool", "eat", "oat",
                          "air", "our", "oar",
                          "ear", "eer", "ct", "rt", "nt", "st")):
            return stem
        return stem + "e"
    return stem


def _base_of_present(word: str) -> str | None:
    """The base form of a third-person present verb from the lexicon ("flows" -> "flow"), or None."""
    if word == "has":
        return "have"
    if word == "does":
        return "do"
    for cut, add in (("ies", "y"), ("es", ""), ("s", "")):
        stem = word[:-len(cut)]
        if cut == "es" and not stem.endswith(("s", "x", "z", "ch", "sh", "o")):
            continue  # "sites" is "site" + s, not "sit" + es
        if word.endswith(cut) and stem + add in _VERB_STEMS:
            return stem + add
    return None


def _is_participle(word: str) -> bool:
    return word in _IRREGULAR_PARTICIPLES or (word.endswith("ed") and word not in _NOT_VERBS_ED and len(word) > 4)


# --- shared clause carving -------------------------------------------------------------------------

@dataclass
class _Clause:
    """The tokens of the clause holding the answer, and where the answer lies in it."""

    toks: list[_Tok]
    a: int
    b: int
    """``toks[a:b]`` is the answer."""
    leading: list[_Tok]
    """A comma-ended phrase before the clause that holds the answer ("In 1911, ..."), else empty."""


def _carve(sentence: str, start: int, end: int, lang: str) -> _Clause | None:
    """The clause around ``sentence[start:end]``, or None when the answer is in brackets, in a list, or
    not token-aligned."""
    toks = _tokens(sentence)
    idx = [i for i, t in enumerate(toks) if t.start >= start and t.end <= end]
    if not idx or toks[idx[0]].start != start or toks[idx[-1]].end != end:
        return None
    a, b = idx[0], idx[-1] + 1
    keep = [True] * len(toks)
    depth_open = None
    for i, t in enumerate(toks):  # bracketed asides go; an answer inside one is dropped
        if t.text in _BRACKETS and depth_open is None:
            depth_open = i
        elif depth_open is not None and t.text == _BRACKETS[toks[depth_open].text]:
            if depth_open < a < i:
                return None
            for j in range(depth_open, i + 1):
                keep[j] = False
            depth_open = None
    if depth_open is not None and depth_open < a:
        return None
    if depth_open is not None:  # an unclosed bracket after the answer: the clause ends there
        keep[depth_open:] = [False] * (len(toks) - depth_open)
    for i, t in enumerate(toks):  # a clause ends at ; : or a dash
        if t.text in _DASHES or t.text in {'"', "“", "”"}:
            if i < a:
                keep[:i + 1] = [False] * (i + 1)
            elif i >= b:
                keep[i:] = [False] * (len(toks) - i)
                break
    kept = [(i, t) for i, t in enumerate(toks) if keep[i] and t.text not in {".", "!", "?"}]
    segments: list[list[tuple[int, _Tok]]] = [[]]
    for i, t in kept:
        if t.text == ",":
            segments.append([])
        else:
            segments[-1].append((i, t))
    segments = [s for s in segments if s]
    k = next((n for n, s in enumerate(segments) if any(a <= i < b for i, _ in s)), None)
    if k is None:
        return None
    seg = segments[k]
    if seg[0][0] == a and k > 0 and segments[k - 1][-1][1].low in {"and", "or"} | _DETERMINERS:
        return None
    body = [t for _, t in seg]
    pos = [i for i, _ in seg]
    if a not in pos or b - 1 not in pos:
        return None  # the answer spans a comma or a bracket
    ca, cb = pos.index(a), pos.index(b - 1) + 1
    leading: list[_Tok] = []
    subordinators = _SUBORDINATORS if lang == "en" else _SUBORDINATORS_PT
    if _is_adverbial(body, lang) and ca <= 3 and k + 1 < len(segments):
        # "In 1911, the Normans reached Normandy": the answer sits in a leading phrase
        leading, body = body, [t for _, t in segments[k + 1]]
        if body[0].low in subordinators:
            return None
        return _Clause(body, -1, -1, leading)
    before = [s for s in segments[:k]]
    while before and (_is_adverbial([t for _, t in before[0]], lang) or before[0][0][1].low in subordinators):
        before.pop(0)  # leading phrases and subordinate clauses that do not hold the answer
    asides = [s for s in before if s[0][1].low in subordinators]
    before = [s for s in before if s[0][1].low not in subordinators]
    if before:
        # "The Rhine, which is long, flows through Basel": the subject before a relative clause, the verb
        # after it; any other comma before the answer (a list, an apposition) is too loose to rebuild
        if len(before) > 1 or not asides or not _opens_with_verb(body, lang):
            return None
        head = [t for _, t in before[0]]
        ca, cb, body = ca + len(head), cb + len(head), head + body
    if body[0].low in subordinators:
        return None
    cuts = _CUT_AFTER if lang == "en" else _CUT_AFTER_PT
    cut = next((j for j in range(cb, len(body)) if body[j].low in cuts and (
        body[j].low not in {"and", "or", "e", "ou"} or j + 1 == len(body) or _opens_with_verb(body[j + 1:], lang)
        or body[j + 1].low in (_PRONOUNS if lang == "en" else _PRONOUNS_PT))), len(body))
    body = body[:cut]
    if any(t.low in cuts | {"that", "which", "who", "where", "que"} for t in body[1:ca]) and \
            any(t.low in cuts | {"that", "which", "who", "where", "que"} for t in body[1:ca] if t.low not in
                {"and", "or", "e", "ou", "as", "como", "such", "than"}):
        return None  # the answer sits in a subordinate clause
    if ca > 0 and (body[ca - 1].text[:1].isupper() or body[ca - 1].low in {"'s", "’s"}) and ca - 1 > 0:
        return None  # part of a longer name ("the Mesozoic Era")
    if cb < len(body) and (body[cb].text[:1].isupper() or body[cb].low in {"'s", "’s", "-"}):
        return None
    if (ca > 0 and body[ca - 1].low in {"and", "or", "&", "nor", "e", "ou"}) or (
            cb < len(body) and body[cb].low in {"and", "or", "&", "nor", "e", "ou"}):
        return None  # one item of a list
    if ca == 0 and k + 1 < len(segments) and segments[k + 1][0][0] == b + 1 and len(seg) == b - a:
        return None  # the answer alone between commas (an item of a list, or an apposition)
    return _Clause(body, ca, cb, [])


def _opens_with_verb(toks: list[_Tok], lang: str) -> bool:
    if not toks:
        return False
    w = toks[0].low
    if lang == "pt":
        return _is_verb_pt(w)
    return w in _AUX or bool(_base_of_past(w)) or bool(_base_of_present(w))


def _is_adverbial(seg: list[_Tok], lang: str) -> bool:
    """A short phrase opening with a preposition or an adverb ("In 1911", "However", "After the war")."""
    first = seg[0].low
    preps = _PREPOSITIONS if lang == "en" else _PREPOSITIONS_PT
    return len(seg) <= 6 and (first in preps or first.endswith(("ly", "mente")) or first in
                              {"however", "meanwhile", "today", "later", "then", "moreover", "furthermore",
                               "additionally", "also", "nevertheless", "consequently", "therefore", "thus",
                               "hoje", "atualmente", "depois", "entretanto", "porém", "contudo", "assim",
                               "além", "também", "então", "ainda", "posteriormente", "historicamente"})


def _text(toks: list[_Tok]) -> str:
    out = ""
    for t in toks:
        if out and not (t.text in {",", ".", ")", "]", "%", "'s", "’s", "/"} or out.endswith(("(", "[", "$", "/"))):
            out += " "
        out += t.text
    return out


def _finish(question: str) -> str:
    q = re.sub(r"\s+", " ", question).strip(" ,;:")
    return q[0].upper() + q[1:] + "?" if q else ""


def _first_lower(toks: list[_Tok], function_words: set[str], english: bool = True) -> list[_Tok]:
    """A subject moved away from the sentence start: its first word lower-cased when it is a function word, or
    a common noun (capitalised only as the sentence's first word: "Credentials for customer systems")."""
    if not toks:
        return toks
    first = toks[0]
    plural = first.start == 0 and len(toks) == 1 and first.text[1:].islower() and first.text.endswith("s") and \
        not first.text.endswith("ss")  # "Claims", "Customers": a common noun opening the sentence
    common = plural or (first.start == 0 and len(toks) > 1 and first.text[1:].islower() and first.text.isalpha() and toks[1].text.isalpha()
              and toks[1].text.islower() and (toks[1].low in _PREPOSITIONS or (
                  english and not _opens_with_verb(toks[1:], "en"))))
    if first.low in function_words or common:
        return [_Tok(first.low, first.start, first.end)] + toks[1:]
    return toks


def _name_kind(sentence_toks: list[_Tok], a: int, b: int, label: str) -> str:
    """PERSON, PLACE or THING for a name span, from cues around it (titles, place words, person verbs)."""
    words = [t.low for t in sentence_toks[a:b]]
    if label == "PERSON_SURE":
        return "PERSON"
    if set(words) & _PLACE_WORDS:
        return "PLACE"
    if (a > 0 and sentence_toks[a - 1].low.rstrip(".") in _PERSON_TITLES) or words[0] in _PERSON_TITLES:
        return "PERSON"
    after = sentence_toks[b].low if b < len(sentence_toks) else ""
    caps = all(t.text[:1].isupper() for t in sentence_toks[a:b])
    personal = 2 <= b - a <= 3 and caps and words[0] not in _NOT_PERSON_FIRST and all(
        w.isalpha() for w in words) and not (a > 0 and sentence_toks[a - 1].low == "the")
    passive_agent = a > 1 and ((sentence_toks[a - 1].low == "by" and sentence_toks[a - 2].low in _PERSON_VERBS) or (
        sentence_toks[a - 1].low == "por" and re.search(r"[ai]d[oa]s?$", sentence_toks[a - 2].low) is not None))
    if personal and (after in _PERSON_VERBS or passive_agent):
        return "PERSON"
    return "THING"


# --- English ---------------------------------------------------------------------------------------

@dataclass
class _Verb:
    at: int
    """Index of the finite verb in the clause."""
    kind: str
    """aux (moves in front of the subject), past or present (do-support)."""
    base: str
    """Base form for do-support ("reach"), "" for an auxiliary."""


def _find_verb(toks: list[_Tok], stop: int) -> _Verb | None:
    """The clause's finite verb before index ``stop`` (the first one after a plausible subject)."""
    for i, t in enumerate(toks[:stop]):
        w = t.low
        if i == 0 or not t.text.isalpha():
            if w in _AUX or w in _PREPOSITIONS or w in _SUBORDINATORS:
                return None
            continue
        if toks[i - 1].low in _DETERMINERS | _PREPOSITIONS:
            continue  # "the so-called Rhine", "of the united"
        if w in _HAVE and i + 1 < len(toks) and not _is_participle(toks[i + 1].low) and toks[i + 1].low != "been":
            return _Verb(i, "present" if w in {"has", "have"} else "past", "have")
        if w in _AUX:
            return _Verb(i, "aux", "")
        if t.text[0].isupper():
            continue
        base = _base_of_past(w)
        if base:
            return _Verb(i, "past", base)
        base = _base_of_present(w)
        if base:
            return _Verb(i, "present", base)
    return None


def _is_object(toks: list[_Tok], first: int, verb: _Verb) -> bool:
    """Whether ``toks[first]`` opens the direct object (or a copula's complement) of the clause's verb: only
    auxiliaries and participles lie between them, and the verb takes an object."""
    between = toks[verb.at + 1:first]
    if any(t.low not in _AUX | {"been", "be", "also"} and not _is_participle(t.low) for t in between):
        return False
    main = between[-1].low if between else toks[verb.at].low
    base = verb.base or _base_of_past(main) or _base_of_present(main) or main
    return base not in _INTRANSITIVE and main not in {"has", "have", "had"} | _MODALS


def _wh_en(clause: _Clause, label: str, kind: str, sent_toks: list[_Tok],
           verb: _Verb) -> tuple[str, int, int, str] | None:
    """(wh-phrase, first, end, stranded preposition) for the answer ``clause.toks[a:b]``: the tokens
    ``first:end`` leave the clause (the answer, its preposition, a counted noun; a preposition that stays
    behind at the end is named: "What does the Rhine flow into?"), or None."""
    toks, a, b = clause.toks, clause.a, clause.b
    prev = toks[a - 1].low if a > 0 else ""
    nxt = toks[b].low if b < len(toks) else ""
    if prev in _APPROXIMATELY and label in {"QUANTITY", "COUNT"}:  # "about 1,230 km": the hedge goes too
        a -= 1
        prev = toks[a - 1].low if a > 0 else ""
    first = a - 1 if prev in _PREPOSITIONS else a
    if prev in {"the", "a", "an"}:
        first = a - 1
        prev = toks[a - 2].low if a > 1 else ""
        first = a - 2 if prev in _PREPOSITIONS else first
    if label == "DATE":
        if prev in {"in", "on", "at", "during", "around", "circa", ""} or first == a:
            return "When", first, b, ""
        return None
    if label == "COUNT":
        noun_end = b
        while noun_end < len(toks) and noun_end - b < 3 and toks[noun_end].text.isalpha() and \
                toks[noun_end].text.islower() and toks[noun_end].low not in _PREPOSITIONS | _CUT_AFTER | _AUX \
                and not _base_of_past(toks[noun_end].low):
            noun_end += 1
        if noun_end == b:
            return None
        if noun_end < len(toks) and toks[noun_end].low == "of" and noun_end + 1 < len(toks) and \
                toks[noun_end + 1].text.isalpha() and toks[noun_end + 1].text.islower():
            noun_end += 2  # "bodies of water"
        noun = _text(toks[b:noun_end])
        if prev in _PREPOSITIONS and first == a - 1:
            return f"{prev.capitalize()} how many {noun}", first, noun_end, ""
        return f"How many {noun}", a, noun_end, ""
    if label == "QUANTITY":
        unit = toks[b - 1].low
        if nxt in _DIMENSIONS:
            return f"How {nxt}", a, b + 1, ""
        if nxt == "ago":
            return None
        if unit in _TIME_UNITS and prev == "for":
            return "How long", a - 1, b, ""
        if unit in _TIME_UNITS and prev == "every":
            return "How often", a - 1, b, ""
        if first != a:
            return None
        if unit in _TIME_UNITS:
            return "How long", a, b, ""
        if unit in _LENGTH_UNITS:
            return "How far", a, b, ""
        return "How much", a, b, ""
    if label not in {"PERSON", "NAME", "CODE", "NP", "PERSON_SURE"}:
        return None
    kind_wh = "Who" if kind == "PERSON" else "What"
    if first == a or (first == a - 1 and prev in {"the", "a", "an"}):
        return (kind_wh, first, b, "") if _is_object(toks, first, verb) else None
    if prev in {"in", "at", "near", "within"}:
        if kind == "PERSON" or (label == "NP" and (prev == "at" or toks[a].low in _POSSESSIVES)):
            return None  # "at their own cost", "in its valley": a common noun phrase there is seldom a place
        return "Where", first, b, ""
    if b != len(toks):
        return None  # a stranded preposition reads well only at the end
    between = toks[verb.at + 1:first]
    if (first >= 2 and toks[first - 1].low in {"up", "down", "out", "off"}) or any(
            t.low in _DIRECTIONS | {"just", "only", "even", "still"} or t.low.endswith("ly") for t in between):
        return None  # "palpable up to", "flowed roughly west through": adverbs before a stranded preposition
    if prev in {"from", "to"} and kind == "PLACE":
        return "Where", first + 1, b, prev
    if first - verb.at > 5 or any(t.text[:1].isupper() for t in toks[verb.at + 1:first]):
        return None  # a long or name-laden stretch before a stranded preposition reads badly
    passive = first >= 2 and _is_participle(toks[first - 1].low)
    if prev in {"from", "to", "into", "through", "with", "for", "about", "across", "on", "over"} or (
            prev == "by" and passive):
        return kind_wh, first + 1, b, prev
    return None


_POSSESSIVES = {"its", "their", "his", "her", "our", "your", "my"}


def _located(sentence: str, start: int, end: int, label: str, lang: str) -> tuple[_Clause, list[_Tok], str] | None:
    """The clause around the answer span, the sentence's tokens and the answer's kind of name (None when no
    clause can be carved around it)."""
    clause = _carve(sentence, start, end, lang)
    if clause is None:
        return None
    sent_toks = _tokens(sentence)
    sa = next(i for i, t in enumerate(sent_toks) if t.start == start)
    sb = next(i for i, t in enumerate(sent_toks) if t.end == end) + 1
    return clause, sent_toks, _name_kind(sent_toks, sa, sb, label)


def _question_en(sentence: str, start: int, end: int, label: str, max_words: int) -> Phrased | None:
    located = _located(sentence, start, end, label, "en")
    if located is None:
        return None
    clause, sent_toks, kind = located
    if clause.leading:  # "In 1911, the Normans reached Normandy."
        lead = clause.leading
        la = next((i for i, t in enumerate(lead) if t.start == start), None)
        if la is None or label not in {"DATE", "NAME", "PERSON"} or la > 2:
            return None
        prep = lead[la - 1].low if la > 0 else ""
        if next((i for i, t in enumerate(lead) if t.end == end), -1) != len(lead) - 1:
            return None
        if label == "DATE" and prep in {"in", "on", "during", ""}:
            wh = "When"
        elif label != "DATE" and prep in {"in", "at"} and kind != "PERSON":
            wh = "Where"
        else:
            return None
        body = clause.toks
        verb = _find_verb(body, len(body))
        return _assemble_en(wh, body, verb, len(body), len(body), "", max_words) if verb else None
    toks, a, b = clause.toks, clause.a, clause.b
    if label == "COUNT" and (a == 0 or (a == 1 and toks[0].low in _APPROXIMATELY)):
        return _count_subject_en(toks, b, max_words)
    if label == "DATE" and a == 1 and b < len(toks) and toks[0].low in {"in", "on", "during"} and \
            toks[b].text[:1].isupper():  # "In 1932 the encyclopedia stated ..." (no comma after the date)
        body = _first_lower(toks[b:], _DETERMINERS)
        body = [_Tok(body[0].text[:1].upper() + body[0].text[1:], 0, 0)] + body[1:]
        verb = _find_verb(body, len(body))
        return _assemble_en("When", body, verb, len(body), len(body), "", max_words) if verb else None
    verb = _find_verb(toks, len(toks))
    if verb is None:
        return None
    if b <= verb.at:  # the answer is (in) the subject
        det = a == 1 and toks[0].low in {"the"}
        if not (a == 0 or det) or b != verb.at:
            return None
        if label == "COUNT":
            noun = toks[b:verb.at]
            return None if noun else None
        if label not in {"PERSON", "NAME", "CODE", "NP", "PERSON_SURE"}:
            return None
        people = det and b - a == 1 and re.search(r"(ans|ians|ers|ites|ks|ns|ts|gs|ese)$", toks[a].text) is not None
        wh = "Who" if kind == "PERSON" or people or toks[verb.at].low in _PERSON_VERBS - {"named", "called"} \
            else "What"
        rest = toks[verb.at:]
        if len(rest) > 1 and rest[1].low in {"not", "n't", "never"}:
            return None
        if verb.kind == "present" and toks[verb.at].low in {"have", "are", "were"}:
            return None
        if toks[verb.at].low in {"are", "were", "have"}:
            rest = [_Tok({"are": "is", "were": "was", "have": "has"}[toks[verb.at].low], 0, 0)] + rest[1:]
        q = _text([_Tok(wh, 0, 0)] + rest)
        return _checked(q, _text([_Tok(wh.lower(), 0, 0)] + rest), wh, max_words)
    if a <= verb.at:
        return None
    choice = _wh_en(clause, label, kind, sent_toks, verb)
    if choice is None:
        return None
    wh, first, last, stranded = choice
    if first <= verb.at or any(t.low in {"and", "or", "but"} and _opens_with_verb(toks[i + 1:], "en")
                               for i, t in enumerate(toks[verb.at + 1:first], verb.at + 1)):
        return None
    if toks[verb.at].low in _BE and verb.kind == "aux" and wh in {"What", "Who"} and first == verb.at + 1 \
            and last == len(toks):
        # "The capital of Poland is Warsaw." -> "What is the capital of Poland?"
        subject = _first_lower(toks[:verb.at], _DETERMINERS)
        if not subject or subject[0].low in _PRONOUNS:
            return None
        q = _text([_Tok(wh, 0, 0), toks[verb.at]] + subject)
        return _checked(q, _text([_Tok(wh.lower(), 0, 0)] + subject + [toks[verb.at]]), wh, max_words)
    return _assemble_en(wh, toks, verb, first, last, stranded, max_words)


def _count_subject_en(toks: list[_Tok], b: int, max_words: int) -> Phrased | None:
    """"How many + noun + verb ...?" for a count opening the subject ("Around 80 avulsions occurred in ..." ->
    "How many avulsions occurred in ...?"); None unless one to three lower-case words lead to a finite verb."""
    verb = next((i for i in range(b + 1, min(b + 4, len(toks)))
                 if _opens_with_verb(toks[i:], "en") or toks[i].low in _VERB_STEMS), None)  # "Three rivers drain"
    if verb is None or any(not t.text.isalpha() or not t.text.islower() or t.low in _PREPOSITIONS | _CUT_AFTER
                           for t in toks[b:verb]):
        return None
    rest = toks[b:]
    if rest[-1].low in _PREPOSITIONS | _DETERMINERS | {"and", "or"} or toks[verb].low in {"has", "is", "was"}:
        return None
    return _checked(_text([_Tok("How many", 0, 0)] + rest), _text([_Tok("how many", 0, 0)] + rest), "How many",
                    max_words)


def _assemble_en(wh: str, toks: list[_Tok], verb: _Verb, first: int, last: int, stranded: str,
                 max_words: int) -> Phrased | None:
    """``wh`` + inverted clause, ``toks[first:last]`` removed, a stranded preposition at the end."""
    subject = toks[:verb.at]
    if not subject or subject[0].low in _PRONOUNS or len(subject) > 10 or any(
            t.text in {",", ";"} or t.low in {"latter", "former"} for t in subject):
        return None
    subject = _first_lower(subject, _DETERMINERS | _PREPOSITIONS | {"much", "many", "most", "several", "some"})
    rest = toks[verb.at + 1:first] + toks[last:]
    if rest and rest[0].low in {"not", "n't", "never"}:
        return None
    tail: list[_Tok] = []
    v = toks[verb.at]
    if verb.kind == "aux":
        direct = [_Tok(wh, 0, 0), _Tok(v.low, 0, 0)] + subject + rest + tail
        embedded = [_Tok(wh.lower(), 0, 0)] + subject + [_Tok(v.low, 0, 0)] + rest + tail
    else:
        if any(t.low in _BE | _MODALS for t in rest):
            return None  # a second finite verb: the one taken for the verb was a noun ("Travel-specific rules are")
        do = "did" if verb.kind == "past" else ("does" if v.low.endswith("s") else "do")
        direct = [_Tok(wh, 0, 0), _Tok(do, 0, 0)] + subject + [_Tok(verb.base, 0, 0)] + rest + tail
        embedded = [_Tok(wh.lower(), 0, 0)] + subject + [v] + rest + tail
    if rest and rest[-1].low in _PREPOSITIONS | _DETERMINERS | {"and", "or"} and rest[-1].low != stranded:
        return None
    if len(rest) > 1 and (rest[-2].low, rest[-1].low) in {("at", "least"), ("at", "most"), ("at", "all")}:
        return None
    if len(rest) > 1 and rest[-2].low in _DETERMINERS and re.search(r"(ed|al|ic|ous|ive|ful|less)$", rest[-1].low):
        return None  # "in a dedicated": a noun phrase cut at a comma
    embedded_text = _text(embedded)
    if not wh.startswith(("How", "In how", "On how", "At how", "For how", "By how", "From how", "To how")):
        embedded_text = embedded_text[0].lower() + embedded_text[1:]
    return _checked(_text(direct), embedded_text, wh, max_words)


def _checked(question: str, embedded: str, wh: str, max_words: int) -> Phrased | None:
    q = _finish(question)
    n = len(q.split())
    if not MIN_QUESTION_WORDS <= n <= max_words or re.search(r"\s[,;:]|\(\s|\s\)|[(\[]\s*\?", q):
        return None
    if re.search(r"\b(it|they|this|these|he|she|its|their|his|her)\b", q[len(wh):], re.I) and \
            not re.search(r"\b(its|their)\b\s+\w+\s+\w+", q, re.I):
        return None  # a pronoun whose referent the question no longer holds
    emb = embedded[0].lower() + embedded[1:] if wh.split()[0] in {"When", "Where", "Who", "What", "How", "Which"} \
        else embedded
    return Phrased(q, re.sub(r"\s+", " ", emb).strip(" ,"), wh)


# --- Portuguese ------------------------------------------------------------------------------------

_PREPOSITIONS_PT = set(
    "em no na nos nas num numa de do da dos das a à às ao aos por pelo pela pelos pelas para com sem sobre sob "
    "entre até desde durante após antes depois contra perante segundo conforme como".split())
_DETERMINERS_PT = {"o", "a", "os", "as", "um", "uma", "uns", "umas", "este", "esta", "estes", "estas", "esse", "essa",
                   "esses", "essas", "aquele", "aquela", "seu", "sua", "seus", "suas", "cada", "todo", "toda", "todos",
                   "todas"}
_SUBORDINATORS_PT = {"que", "qual", "quais", "quem", "onde", "quando", "enquanto", "embora", "porque", "pois",
                     "como", "se", "caso", "conforme", "cujo", "cuja", "cujos", "cujas", "e", "mas", "ou", "nem",
                     "incluindo", "sendo", "tendo", "segundo", "apesar", "assim", "portanto", "logo"}
_CUT_AFTER_PT = {"que", "qual", "quais", "onde", "quando", "enquanto", "embora", "porque", "pois", "cujo", "cuja",
                 "cujos", "cujas", "e", "mas", "ou", "incluindo", "sendo", "tendo", "como", "se", "apesar",
                 "portanto", "enquanto"}
_COPULAS_PT = {"é", "foi", "era", "são", "foram", "eram", "será", "serão", "seria"}
_VERBS_PT = _COPULAS_PT | set(
    "tem têm tinha tinham teve tiveram há havia houve está estão estava estavam esteve estiveram pode podem "
    "podia podiam possui possuem possuía deve devem faz fazem fez fizeram vai vão foi ficou ficam fica "
    "contém inclui incluem forma flui corre separa divide atravessa produz possui representa significa "
    "recebe chega começa termina nasce deságua desagua ocorre existe protege ataca destrói reconhece mata usa "
    "utiliza permite exige requer envolve liga une cobre mede pesa abriga conta marca segue cria vive "
    "ocupa serve".split())
_PRONOUNS_PT = {"ele", "ela", "eles", "elas", "isso", "isto", "este", "esta", "estes", "estas", "esse", "essa",
                "que", "qual", "se", "nós", "eu", "você", "lhe", "aquele", "aquela", "ambos", "outros", "muitos"}
_UNIT_WORDS_PT = {"km": "quilômetros", "m": "metros", "cm": "centímetros", "mm": "milímetros", "kg": "quilos",
                  "t": "toneladas", "km²": "quilômetros quadrados", "km2": "quilômetros quadrados", "ha": "hectares",
                  "l": "litros", "h": "horas", "min": "minutos", "mi": "milhas"}
_PERSON_NOUNS_PT = {"pessoa", "pessoas", "homem", "mulher", "presidente", "rei", "rainha", "autor", "autora",
                    "prefeito", "líder", "fundador", "fundadora", "escritor", "escritora", "cientista", "artista",
                    "nobre", "imperador", "general", "compositor", "pintor", "filho", "filha"}
_MASCULINE_AS_PT = {"dias", "mapas", "problemas", "sistemas", "programas", "planetas", "idiomas", "climas", "temas",
                    "poemas", "esquemas", "enigmas", "dramas", "diplomas", "teoremas", "cinemas"}
_FEMININE_PT = {"bases", "fases", "partes", "redes", "classes", "pontes", "fontes", "noites", "mortes", "chaves",
                "leis", "vozes", "cores", "flores", "vezes", "pessoas", "espécies", "células", "línguas", "cidades", "unidades", "gerações", "vítimas",
                "toneladas", "libras", "polegadas", "milhas", "horas", "semanas", "pol", "mil"}


_AGENT_VERBS_PT = set(
    "venceu venceram ganhou ganharam derrotou derrotaram conquistou conquistaram fundou fundaram escreveu "
    "descobriu descobriram assinou assinaram governou liderou comandou declarou disse afirmou compôs pintou "
    "projetou inventou".split())
"""Verbs whose subject is asked about with "Quem" even when it is a country or a team ("Quem venceu ...?")."""
_NOUNS_IN_EU_PT = {"museu", "europeu", "liceu", "apogeu", "jubileu", "ateneu", "coliseu", "hebreu", "plebeu",
                   "pigmeu", "judeu", "camafeu", "perigeu", "himeneu", "mausoleu", "pireneu"}


def _is_verb_pt(word: str) -> bool:
    """A finite Portuguese verb, by lexicon or by an ending nouns rarely have (chegou, chegaram, formava,
    partiu, formam)."""
    w = word.casefold()
    if w in _VERBS_PT:
        return True
    return len(w) > 4 and w.isalpha() and w not in _NOUNS_IN_EU_PT and w.endswith(
        ("ou", "eu", "aram", "eram", "iram", "ava", "avam", "iu", "iam", "am", "ará", "erá", "irá"))


def _feminine_pt(noun: str) -> bool:
    n = noun.casefold()
    if n in _MASCULINE_AS_PT:
        return False
    return n in _FEMININE_PT or (n.endswith(("as", "ões", "ães", "dades", "gens")) and
                                 n not in {"milhões", "bilhões", "trilhões"})


def _question_pt(sentence: str, start: int, end: int, label: str, max_words: int) -> Phrased | None:
    located = _located(sentence, start, end, label, "pt")
    if located is None:
        return None
    clause, sent_toks, kind = located
    if clause.leading:
        lead = clause.leading
        la = next((i for i, t in enumerate(lead) if t.start == start), None)
        if la is None or la > 2 or label != "DATE" or next((i for i, t in enumerate(lead) if t.end == end), -1) != \
                len(lead) - 1 or (la > 0 and lead[la - 1].low not in {"em", "no", "na"}):
            return None
        body = clause.toks
        return _assemble_pt("Quando", body, 0, 0, max_words) if _clause_ok_pt(body) else None
    toks, a, b = clause.toks, clause.a, clause.b
    if label == "COUNT" and _hedge_start_pt(toks, a) <= 1:
        return _count_subject_pt(toks, a, b, max_words)
    verb = next((i for i, t in enumerate(toks) if i > 0 and _is_verb_pt(t.text) and not t.text[0].isupper()), None)
    if verb is None:
        return None
    prev = toks[a - 1].low if a > 0 else ""
    if any(t.low in {"e", "mas"} and any(_is_verb_pt(u.text) for u in toks[i + 1:i + 5])
           for i, t in enumerate(toks[verb + 1:a], verb + 1)):
        return None  # the answer belongs to a second clause joined by "e"
    if len(toks[:verb]) == 1 and toks[0].text.endswith("s") and toks[0].low not in _PRONOUNS_PT:
        return None  # "Exemplos incluem ...": a bare plural noun is no subject to ask about
    if b <= verb:  # subject
        if not (a == 0 or (a == 1 and toks[0].low in _DETERMINERS_PT)) or b != verb:
            return None
        if label in {"DATE", "QUANTITY"}:
            return None
        if label == "COUNT":
            return None
        after = toks[verb + 1].low if verb + 1 < len(toks) else ""
        if toks[verb].low in _COPULAS_PT:
            # "Varsóvia é a maior cidade" -> "Qual é a maior cidade?"; a participle or adjective after the
            # copula would need the subject's gender ("O que foi ocupada")
            if after not in _DETERMINERS_PT or toks[verb].low not in {"é", "foi", "era", "será"} or \
                    not _definite_pt(toks[verb + 1:]):
                return None
            people = any(t.low in _PERSON_NOUNS_PT for t in toks[verb + 1:verb + 5])
            wh = "Quem" if kind == "PERSON" or people else "Qual"
        else:
            if any(re.search(r"(ada|ida|adas|idas|ta|sa|ma)$", t.low) for t in toks[verb + 1:verb + 5]):
                return None  # a feminine participle or pronoun would not agree with "O que"
            wh = "Quem" if kind == "PERSON" or toks[verb].low in _AGENT_VERBS_PT else "O que"
        return _checked_pt(_text([_Tok(wh, 0, 0)] + toks[verb:]), _text([_Tok(wh.lower(), 0, 0)] + toks[verb:]),
                           wh, max_words)
    first = a - 1 if prev in _PREPOSITIONS_PT else a
    if label == "DATE":
        if prev not in {"em", "no", "na", ""} and first != a:
            return None
        if prev == "" and a > 0 and toks[a - 1].low not in _VERBS_PT:
            return None
        return _assemble_pt("Quando", toks, first, b, max_words)
    if label in {"COUNT", "QUANTITY"}:
        if label == "COUNT":
            counted = _counted_noun_pt(toks, b)
            if counted is None:
                return None
            noun_toks, last = counted
        else:
            unit = toks[b - 1].low
            word = _UNIT_WORDS_PT.get(unit, unit if unit.isalpha() and len(unit) > 3 else "")
            if not word:
                return None
            noun_toks, last = [_Tok(word, 0, 0)], b
        noun_toks, last = _with_de_complement(toks, noun_toks, last)
        if prev in _PREPOSITIONS_PT and first == a - 1:
            base = {"do": "de", "da": "de", "dos": "de", "das": "de", "no": "em", "na": "em", "nos": "em",
                    "nas": "em", "pelo": "por", "pela": "por", "ao": "a", "à": "a", "aos": "a", "às": "a"}.get(prev, prev)
            if base not in {"em", "por", "para", "durante", "após"} or (base == "em" and label == "QUANTITY"):
                # "Em quantos quilômetros ...?" reads as a place, not a measure; "com 700 leitos" describes a
                # noun ("um prédio ... com 700 leitos"), rarely the verb
                return None
            wh = f"{base.capitalize()} {'quantas' if _feminine_pt(noun_toks[0].text) else 'quantos'}"
        else:
            wh = "Quantas" if _feminine_pt(noun_toks[0].text) else "Quantos"
        return _assemble_pt(f"{wh} {_text(noun_toks)}", toks, first, last, max_words)
    if label not in {"PERSON", "NAME", "CODE", "NP", "PERSON_SURE"}:
        return None
    if prev in {"em", "no", "na", "nos", "nas"} and kind != "PERSON":
        if toks[verb].low in _COPULAS_PT and verb + 1 < len(toks) and toks[verb + 1].low in _DETERMINERS_PT:
            return None  # "X são o Castelo Real ... na Cidade Velha": "Onde X são o Castelo Real?" asks nothing
        return _assemble_pt("Onde", toks, first, b, max_words)
    if prev in {"por", "pelo", "pela"} and kind == "PERSON":
        return _assemble_pt("Por quem", toks, first, b, max_words)
    if a == verb + 1 and b == len(toks) and toks[verb].low in _COPULAS_PT:
        subject = _first_lower(toks[:verb], _DETERMINERS_PT | _PREPOSITIONS_PT, english=False)
        people = any(t.low in _PERSON_NOUNS_PT for t in subject)
        wh = "Quem" if kind == "PERSON" or people else "Qual"
        if subject[0].low in _PRONOUNS_PT or not _definite_pt(subject):
            return None
        return _checked_pt(_text([_Tok(wh, 0, 0), toks[verb]] + subject),
                           _text([_Tok(wh.lower(), 0, 0), toks[verb]] + subject), wh, max_words)
    if a == verb + 1 and toks[verb].low not in _COPULAS_PT:  # direct object: "O que X fundou?"
        wh = "Quem" if kind == "PERSON" else "O que"
        return _assemble_pt(wh, toks, a, b, max_words)
    return None


def _counted_noun_pt(toks: list[_Tok], b: int) -> tuple[list[_Tok], int] | None:
    """(the counted noun after a number ending at ``b``, the index after it): "duas formações geomorfológicas
    principais" gives "formações geomorfológicas principais"; None when no lower-case noun follows."""
    if b >= len(toks) or not toks[b].text.isalpha() or not toks[b].text.islower() or toks[b].low in _PREPOSITIONS_PT:
        return None
    last = b + 1
    while last < len(toks) and last - b < 3 and toks[last].text.isalpha() and toks[last].text.islower() and \
            toks[last].low not in _PREPOSITIONS_PT | _DETERMINERS_PT | _SUBORDINATORS_PT | {"também"} and \
            not _is_verb_pt(toks[last].text):
        last += 1
    return toks[b:last], last


def _with_de_complement(toks: list[_Tok], noun: list[_Tok], last: int) -> tuple[list[_Tok], int]:
    """The counted noun with its "de + noun" complement ("tipos principais de rocha"), so the question keeps
    them together ("Quantos tipos principais de rocha existem?", not "... existem de rocha?")."""
    if last + 1 < len(toks) and toks[last].low == "de" and toks[last + 1].text.islower() and \
            toks[last + 1].low not in _DETERMINERS_PT | _PREPOSITIONS_PT:
        return noun + toks[last:last + 2], last + 2
    return noun, last


_HEDGES_PT = ({"aproximadamente"}, {"quase"}, {"cerca", "de"}, {"por", "volta", "de"})
_EXISTENTIAL_PT = {"há", "havia", "houve", "existem", "existiam", "existiram"}


def _hedge_start_pt(toks: list[_Tok], a: int) -> int:
    """Where a number at ``a`` begins with its hedge ("cerca de 80", "aproximadamente 80")."""
    for hedge in _HEDGES_PT:
        n = len(hedge)
        if a >= n and {t.low for t in toks[a - n:a]} == hedge:
            return a - n
    return a


def _definite_pt(phrase: list[_Tok]) -> bool:
    """Whether a noun phrase after "Qual é" names one thing: not a bare indefinite ("uma sereia": "Qual era uma
    sereia?" asks nothing), and "uma das maiores ..." names its noun ("... e mais importantes da Europa" does
    not)."""
    words = [t.low for t in phrase]
    if words[:1] in (["um"], ["uma"]) and words[1:2] not in (["dos"], ["das"]):
        return False
    return not any(w in {"maiores", "melhores", "piores", "principais", "mais"} and nxt in
                   {"e", "de", "da", "do", "das", "dos"} for w, nxt in zip(words, words[1:]))


def _count_subject_pt(toks: list[_Tok], a: int, b: int, max_words: int) -> Phrased | None:
    """"Quantas|Quantos + noun + verb ...?" for a count in the subject, before its verb ("Cerca de 80 avulsões
    ocorreram ...") or after a verb that opens the sentence ("Ocorreram aproximadamente 80 avulsões ...")."""
    counted = _counted_noun_pt(toks, b)
    if counted is None:
        return None
    noun, last = _with_de_complement(toks, *counted)
    wh = "Quantas" if _feminine_pt(noun[0].text) else "Quantos"
    opens = _hedge_start_pt(toks, a)
    if opens == 0 and last < len(toks) and _is_verb_pt(toks[last].text):
        rest = toks[last:]
    elif opens == 1 and (_is_verb_pt(toks[0].text) or toks[0].low in _EXISTENTIAL_PT) and \
            (last == len(toks) or not toks[last].text[:1].isupper()):  # "Ocorreram seis grandes Eras do Gelo"
        rest = [_Tok(toks[0].low, 0, 0)] + toks[last:]
    else:
        return None
    if rest[-1].low in _PREPOSITIONS_PT | _DETERMINERS_PT | {"e", "ou"}:
        return None
    return _checked_pt(_text([_Tok(wh, 0, 0)] + noun + rest), _text([_Tok(wh.lower(), 0, 0)] + noun + rest),
                       wh, max_words)


def _clause_ok_pt(toks: list[_Tok]) -> bool:
    """A clause that reads whole after a fronted wh-word: opens with a subject and holds a verb."""
    if not toks or toks[0].low in _SUBORDINATORS_PT | _PRONOUNS_PT or toks[0].low in _PREPOSITIONS_PT - {"a"}:
        return False
    return any(_is_verb_pt(t.text) for t in toks[1:])


def _assemble_pt(wh: str, toks: list[_Tok], first: int, last: int, max_words: int) -> Phrased | None:
    rest = toks[:first] + toks[last:]
    if not _clause_ok_pt(rest):
        return None
    if len(rest) > 1 and re.search(r"(ado|ada|ido|ida|ados|adas|idos|idas)$", rest[-1].low) and \
            rest[-2].low not in _VERBS_PT:
        return None  # "... uma artista famosa nascida?": a participle left without its complement
    if rest[-1].low in _PREPOSITIONS_PT | _DETERMINERS_PT | {"e", "ou"}:
        return None
    rest = _first_lower(rest, _DETERMINERS_PT | _PREPOSITIONS_PT, english=False)
    q = _text([_Tok(wh, 0, 0)] + rest)
    return _checked_pt(q, _text([_Tok(wh.lower() if not wh.startswith(("Em ", "De ")) else wh.lower(), 0, 0)] + rest),
                       wh, max_words)


def _checked_pt(question: str, embedded: str, wh: str, max_words: int) -> Phrased | None:
    q = _finish(question)
    n = len(q.split())
    if not MIN_QUESTION_WORDS <= n <= max_words or re.search(r"\s[,;:]|\s-\s", q):
        return None  # a stray comma, or a spaced dash opening an aside
    if re.search(r"\b(ele|ela|eles|elas|isso|isto|dele|dela|deles|delas|nele|nela|seu|sua|seus|suas)\b",
                 q[len(wh):], re.I):
        return None
    if re.search(r"(?<!\w)(?![aeoéàAEOÉÀ]\b)\w\b(?![’'])", q, re.U) and re.search(r"(?<!\w)[b-df-hj-np-tv-zB-DF-HJ-NP-TV-Z](?!\w)", q):
        return None  # a stray letter ("c 1.300.000": an abbreviation lost its full stop)
    return Phrased(q, re.sub(r"\s+", " ", embedded).strip(" ,"), wh)


# --- entry point -----------------------------------------------------------------------------------

def _span_ok(toks: list[_Tok], start: int, end: int, label: str, lang: str) -> bool:
    """Whether the span can stand as an answer: whole words, not a direction, not one item of a list or an
    apposition ("Cologne, Germany"), and a name not used as a modifier ("the Hallstatt culture")."""
    idx = [i for i, t in enumerate(toks) if t.start >= start and t.end <= end]
    if not idx or not toks[idx[-1]].text[-1:].isalnum() or not toks[idx[0]].text[:1].isalnum():
        return False
    a, b = idx[0], idx[-1] + 1
    if b - a == 1 and toks[a].low in _DIRECTIONS:
        return False
    if label == "DATE" and ((a > 0 and toks[a - 1].text.isdigit()) or (b < len(toks) and toks[b].text.isdigit())):
        return False  # a month cut out of a full date ("31 March")
    nxt = toks[b] if b < len(toks) else None
    after = toks[b + 1] if b + 1 < len(toks) else None
    prev = toks[a - 1] if a > 0 else None
    leading_date = label == "DATE" and a in {1, 2} and toks[0].low in {"in", "on", "during", "em", "no", "na"}
    if nxt is not None and nxt.text == "," and after is not None and after.text[:1].isupper() and not leading_date:
        return False  # "Cologne, Germany"; "In 1946, Poland won ..." is a leading phrase
    if prev is not None and prev.text == "," and a > 1 and toks[a - 2].text[:1].isupper() and \
            toks[a - 2].low not in _PREPOSITIONS:
        return False
    if label in _NAME_LABELS and nxt is not None and nxt.text.isalpha() and nxt.text.islower():
        preps = _PREPOSITIONS if lang != "pt" else _PREPOSITIONS_PT
        cuts = _CUT_AFTER if lang != "pt" else _CUT_AFTER_PT
        if nxt.low not in preps | cuts | {"and", "or", "e", "ou", "is", "are"} and not _opens_with_verb([nxt], lang):
            return False
    return True


_SUBJECT_PRONOUN = {"en": re.compile(r"(It|They|He|She)(?=\s)"), "pt": re.compile(r"(Ele|Ela|Eles|Elas)(?=\s)")}


def subject_of(sentence: str, lang: str = "en") -> str:
    """The noun phrase a sentence opens with as its subject ("The Tern-3 buoy" in "The Tern-3 buoy weighs
    48 kg."), or "" when it opens otherwise (a pronoun, a leading phrase, a subject past six words)."""
    toks = _tokens(sentence)
    if lang == "pt":
        verb = next((i for i, t in enumerate(toks) if i > 0 and _is_verb_pt(t.text) and not t.text[0].isupper()),
                    None)
        pronouns, inner = _PRONOUNS_PT | _SUBORDINATORS_PT, _PREPOSITIONS_PT - {"de", "do", "da", "dos", "das"}
    else:
        found = _find_verb(toks, len(toks))
        verb = found.at if found else None
        pronouns, inner = _PRONOUNS | _SUBORDINATORS, _PREPOSITIONS - {"of"}
    if verb is None or not 1 <= verb <= 6:
        return ""
    head = toks[:verb]
    if head[0].low in pronouns or any(t.low in inner or not t.text[:1].isalnum() for t in head):
        return ""
    return sentence[head[0].start:head[-1].end]


def _agrees(pronoun: str, antecedent: str, lang: str) -> bool:
    """Whether a subject pronoun can stand for ``antecedent``: number (and gender in Portuguese), and a
    person's name for he / she."""
    words = antecedent.split()
    first, last = words[0].casefold(), words[-1]
    plural = last.islower() and last.endswith("s") and not last.endswith(("ss", "us", "is"))
    named = all(w[:1].isupper() for w in words)
    if lang == "pt":
        article = {"ele": {"o", "um"}, "ela": {"a", "uma"}, "eles": {"os"}, "elas": {"as"}}[pronoun]
        return first in article or (pronoun in {"ele", "ela"} and named and 2 <= len(words) <= 3
                                    and first not in _DETERMINERS_PT)
    if pronoun in {"he", "she"}:
        return named and 2 <= len(words) <= 3 and first not in _DETERMINERS and first not in _NOT_PERSON_FIRST
    if pronoun == "they":
        return first == "the" and last.endswith("s") and not last.endswith(("ss", "us", "is"))
    return not plural and (first in {"the", "a", "an"} or named) and not (named and 2 <= len(words) <= 3
                                                                           and first not in _NOT_PERSON_FIRST)


def _resolved(sentence: str, start: int, end: int, antecedent: str, lang: str) -> tuple[str, int, int]:
    """The sentence with a subject pronoun it opens with ("It runs on ...") replaced by ``antecedent`` when
    they agree, and the answer's offsets moved with it; else the sentence unchanged."""
    m = _SUBJECT_PRONOUN["pt" if lang == "pt" else "en"].match(sentence)
    if not m or not antecedent or start < m.end() or not _agrees(m.group().casefold(), antecedent, lang):
        return sentence, start, end
    shift = len(antecedent) - m.end()
    return antecedent + sentence[m.end():], start + shift, end + shift


def phrase_question(sentence: str, start: int, end: int, label: str, lang: str = "en",
                    max_words: int = MAX_QUESTION_WORDS, antecedent: str = "") -> Phrased | None:
    """A fronted question asking for ``sentence[start:end]``, or None when no rule phrases it well.

    Args:
        sentence: one sentence of a document.
        start, end: character offsets of the answer span in ``sentence``.
        label: the span's kind (DATE, QUANTITY, COUNT, PERSON, NAME, CODE, NP).
        lang: "pt" for Portuguese rules; any other code gets the English ones.
        max_words: the length limit; longer questions are dropped.
        antecedent: what a subject pronoun opening the sentence stands for (the previous sentence's subject,
            or the section's heading): "It runs on a 9 Ah battery." asks "What does the Tern-3 buoy run on?".

    Returns:
        The phrased question (never holding the answer), or None.
    """
    sentence, start, end = _resolved(sentence, start, end, antecedent, lang)
    answer = sentence[start:end]
    if not _span_ok(_tokens(sentence), start, end, label, lang):
        return None
    build = _question_pt if lang == "pt" else _question_en
    phrased = build(sentence, start, end, label, max_words)
    if phrased is None or answer.casefold() in phrased.question.casefold():
        return None
    return phrased
