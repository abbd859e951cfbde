"""report.md's "Knowing when not to answer": the one writer of the abstention verdict and its tables (the
report and the app's Results page both call it).

Abstention is its own axis, never mixed into accuracy: systems are compared on answerable and unanswerable
questions together (declining everything is not "best"), and no sentence names a system as good at it when
it declines answerable questions at least as often as unanswerable ones. Reads only summary.json (its
``abstention`` section, or, for runs without one, ``systems.*.abstain_*``), so it renders for any run.
"""
from __future__ import annotations

from typing import Any


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ci(ci: Any, fmt: Any = _pct) -> str:
    return f" [{fmt(ci[0])}–{fmt(ci[1])}]" if ci else ""


def _p(p: Any) -> str:
    return "–" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def _pair(summary: dict, a: str, b: str, key: str) -> tuple[float | None, float | None]:
    """A pairwise abstention difference oriented a minus b, and its p-value."""
    table = (summary.get("abstention") or {}).get("pairwise") or {}
    for k, sign in ((f"{a}_vs_{b}", 1), (f"{b}_vs_{a}", -1)):
        d = table.get(k) or {}
        if d.get(f"delta_{key}") is not None:
            return sign * d[f"delta_{key}"], d.get(f"p_value_{key}")
    return None, None


def own_declines(summary: dict) -> dict[str, dict]:
    """Per system, its own declines: ``no_ans_acc``, ``answerable_declined`` (and intervals where recorded)."""
    ab = (summary.get("abstention") or {}).get("systems") or {}
    out = {}
    for name, s in (summary.get("systems") or {}).items():
        b = ab.get(name) or {}
        out[name] = {"no_ans_acc": b.get("no_ans_acc", s.get("abstain_unanswerable")),
                     "no_ans_ci95": b.get("no_ans_ci95"),
                     "answerable_declined": b.get("answerable_declined", s.get("abstain_answerable"))}
    return out


def _eligible(d: dict) -> bool:
    """A system that may be named as good at declining: it declines unanswerable questions more often than
    answerable ones (when both were asked)."""
    u, a = d.get("no_ans_acc"), d.get("answerable_declined")
    return u is None or a is None or u > a


def _declines_sentence(summary: dict, own: dict[str, dict]) -> list[str]:
    blocks = [*((summary.get("abstention") or {}).get("systems") or {}).values(),
              *(summary.get("systems") or {}).values()]
    n_u = summary.get("n_unanswerable") or next((b["n_unanswerable"] for b in blocks if b.get("n_unanswerable")), None)
    scored = {n: d for n, d in own.items() if d["no_ans_acc"] is not None and d["answerable_declined"] is not None}
    if not n_u or not scored:
        return []
    good = sorted((n for n, d in scored.items() if _eligible(d)),
                  key=lambda n: -(scored[n]["no_ans_acc"] - scored[n]["answerable_declined"]))
    rest = len(scored) - len(good)
    if not good:
        return [f"On answerable and unanswerable questions together, no system declines the {n_u} questions the "
                "corpus cannot answer more often than those it can: none knows when not to answer by its own "
                "\"I don't know\"."]
    best, d = good[0], scored[good[0]]
    line = (f"On answerable and unanswerable questions together, **{best}** tells them apart best by its own "
            f"\"I don't know\": it declines {_pct(d['no_ans_acc'])}{_ci(d.get('no_ans_ci95'))} of the {n_u} "
            f"unanswerable questions and {_pct(d['answerable_declined'])} of the answerable ones")
    if len(good) > 1:
        second = good[1]
        delta, p = _pair(summary, best, second, "discrimination")
        e = scored[second]
        line += (f", against {_pct(e['no_ans_acc'])} and {_pct(e['answerable_declined'])} for **{second}**"
                 + (f" (difference {delta:+.2f}, {_p(p)})" if delta is not None else ""))
    line += "."
    if rest:
        line += (f" {rest} other system{'s' if rest > 1 else ''} decline{'s' if rest == 1 else ''} answerable "
                 "questions as often as unanswerable ones, or more.")
    return [line]


def _ranking_sentence(systems: dict[str, dict], own: dict[str, dict]) -> list[str]:
    beats = {n: s for n, s in systems.items() if s.get("aurc") is not None and _eligible(own.get(n, {}))
             and (s.get("aurc_minus_random_ci95") or [0, 0])[1] < 0}
    if not any(s.get("aurc") is not None for s in systems.values()):
        return []
    if not beats:
        return ["Ranked by confidence, no system puts its right answers before its wrong ones reliably better than "
                "a random order (AURC intervals)."]
    best = min(beats, key=lambda n: beats[n]["aurc"])
    b = beats[best]
    line = (f"Ranked by confidence, **{best}** puts its right answers first best: AURC {_f(b['aurc'])}"
            f"{_ci(b.get('aurc_ci95'), _f)} against {_f(b.get('aurc_random'))} for a random order")
    others = [n for n in beats if n != best]
    return [line + (f" ({', '.join(others)} also beat random order)." if others else ".")]


def _operating_sentence(systems: dict[str, dict]) -> list[str]:
    points = {n: s.get("operating_point") or {} for n, s in systems.items()}
    applied = [n for n, p in points.items() if p.get("applied")
               and _eligible({"no_ans_acc": p.get("noans_accuracy"),
                              "answerable_declined": p.get("answerable_declined")})]
    if not any(p for p in points.values()):
        return []
    if not applied:
        return ["No calibrated operating point is applied: no calibration set carried a threshold (why, per "
                "system, under \"Operating point\" below); every system keeps its own declines."]
    parts = []
    for n in applied:
        p = points[n]
        parts.append(f"**{n}** declines {_pct(p.get('noans_accuracy'))} of the unanswerable questions (its own: "
                     f"{_pct(p.get('noans_accuracy_own'))}) for answerable F1 {_f(p.get('answerable_f1'))} against "
                     f"{_f(p.get('answerable_f1_answer_all'))} answering all ({p.get('f1_cost', 0):+.2f})")
    return ["At the calibrated operating point, " + "; ".join(parts) + "."]


def abstention_sentences(summary: dict) -> list[str]:
    """The verdict's abstention paragraph: who tells answerable from unanswerable questions apart by its own
    declines, whose confidence ranks answers best, and what the calibrated operating point costs and buys."""
    own = own_declines(summary)
    systems = (summary.get("abstention") or {}).get("systems") or {}
    lines = _declines_sentence(summary, own) + _ranking_sentence(systems, own) + _operating_sentence(systems)
    return [""] + lines if lines else []


def _at(s: dict, c: str) -> str:
    v = (s.get("selective") or {}).get(c)
    return f"{_f(v['f1'])} / {_pct(v['wrong_rate'])}" if v else "–"


def abstention_table(summary: dict) -> list[str]:
    """The section: own declines and confidence per system, the operating point apart, the pairwise tests,
    and what the calibrator was fitted on."""
    ab = summary.get("abstention") or {}
    systems = ab.get("systems") or {}
    if not systems:
        return []
    rows = ["| system | declines unanswerable (NoAns) [95%] | declines answerable [95%] | wrong when answering | "
            "AURC [95%] (random order) | F1 / wrong at 50% | F1 / wrong at 80% | Brier | ECE |", "|" + "---|" * 9]
    for n, s in systems.items():
        rows.append(f"| {n} | {_pct(s.get('no_ans_acc'))}{_ci(s.get('no_ans_ci95'))} | "
                    f"{_pct(s.get('answerable_declined'))}{_ci(s.get('answerable_declined_ci95'))} | "
                    f"{_pct(s.get('wrong_answer_rate'))} | {_f(s.get('aurc'))}{_ci(s.get('aurc_ci95'), _f)} "
                    f"({_f(s.get('aurc_random'))}) | {_at(s, '0.5')} | {_at(s, '0.8')} | {_f(s.get('brier'))} | "
                    f"{_f(s.get('ece'))} |")
    op = ["| system | applied | threshold | answerable F1 at point (answer-all, cost) | NoAns at point (own, gain) | "
          "answerable declined | why |", "|" + "---|" * 7]
    for n, s in systems.items():
        p = s.get("operating_point") or {}
        if p.get("applied"):
            op.append(f"| {n} | yes | {_f(p.get('threshold'))} | {_f(p.get('answerable_f1'))} "
                      f"({_f(p.get('answerable_f1_answer_all'))}, {p.get('f1_cost') or 0:+.2f}) | "
                      f"{_pct(p.get('noans_accuracy'))} ({_pct(p.get('noans_accuracy_own'))}, "
                      f"{100 * (p.get('noans_gain') or 0):+.0f} pts) | {_pct(p.get('answerable_declined'))} | "
                      f"{p.get('reason', '')} |")
        else:
            op.append(f"| {n} | no | – | – | – | – | {p.get('reason', '')} |")
    pairs = ["| pair | Δ(NoAns − answerable declined) | p | ΔAURC [95%] | p |", "|---|---|---|---|---|"]
    for key, d in (ab.get("pairwise") or {}).items():
        dd, da = d.get("delta_discrimination"), d.get("delta_aurc")
        pairs.append(f"| {key.replace('_vs_', ' vs ')} | {'–' if dd is None else f'{dd:+.2f}'} | "
                     f"{_p(d.get('p_value_discrimination'))} | {'–' if da is None else f'{da:+.3f}'}"
                     f"{_ci(d.get('ci95_aurc'), lambda x: f'{x:+.2f}')} | {_p(d.get('p_value_aurc'))} |")
    cal = ab.get("calibration") or {}
    rule = ab.get("rule") or {}
    target = (f"declining at most {_pct(ab.get('max_answerable_declined'))} of answerable questions"
              if ab.get("target") == "answerable_declined" else f"precision ≥ {ab.get('min_precision')}")
    out = ["## Knowing when not to answer", "",
           "Accuracy above scores every answer (a system's own \"I don't know\" counts as wrong); this section "
           "is the second axis. Declines here are each system's own.", "", *rows, ""]
    if len(systems) > 1:
        out += pairs + ["", "Declines: paired sign-flip test; AURC: paired bootstrap over questions.", ""]
    out += ["### Operating point", "", *op, "",
            f"Each system's confidence is a logistic regression over its answer's token log-probabilities, the "
            f"abstention phrase's log-probability and (for retrieval systems) the passage scores, fitted on "
            f"{cal.get('n_answerable', '?')} answerable questions from the {cal.get('source', '?')} and "
            f"{cal.get('n_unanswerable', '?')} unanswerable ones made from them (an entity changed into one the "
            f"corpus lacks); no eval question is among them. The threshold is chosen on those questions for "
            f"{target}, and applied only when a system's calibration answers hold at least "
            f"{rule.get('min_right', '?')} right and {rule.get('min_wrong', '?')} wrong answers and the gain of "
            f"declining (wrong answers withheld minus right ones) holds out of sample: its "
            f"{rule.get('folds', '?')}-fold cross-validated 95% interval lies above zero. AURC is the area under "
            "the risk–coverage curve (lower is better; a random order gives the value in brackets); \"at 50%\" "
            "answers only the half of the questions the system is most confident about. Brier and ECE compare "
            "the confidence with whether the answer is right (0 is perfect).", ""]
    return out
