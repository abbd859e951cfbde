"""report.md's "Knowing when not to answer": the verdict on who makes things up less, and the table.

Reads only summary.json's ``abstention`` section (``workbench.evaluation.abstention``), so it renders for any run.
"""
from __future__ import annotations

from typing import Any


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _f(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ci(ci: Any) -> str:
    return f" [{_pct(ci[0])}–{_pct(ci[1])}]" if ci else ""


def abstention_sentences(summary: dict) -> list[str]:
    """Verdict sentences: who answers wrongly least at equal coverage, and what declining cost each system."""
    ab = summary.get("abstention") or {}
    systems = ab.get("systems") or {}
    if not systems:
        return []
    out = [""]
    eq = ab.get("equal_coverage") or {}
    risk = {n: r for n, r in (eq.get("risk") or {}).items() if r is not None}
    if len(risk) > 1:
        order = sorted(risk, key=risk.get)
        best, worst = order[0], order[-1]
        out.append(f"At equal coverage (each system answering its {_pct(eq['coverage'])} most confident "
                   f"questions), **{best}** hallucinates least: {_pct(risk[best])} of its answers are wrong, "
                   f"against {_pct(risk[worst])} for **{worst}**"
                   + (f" ({', '.join(f'{n} {_pct(risk[n])}' for n in order[1:-1])})." if len(order) > 2 else "."))
    n_u = next(iter(systems.values())).get("n_unanswerable")
    if n_u:
        best = max(systems, key=lambda n: systems[n].get("no_ans_acc") or 0.0)
        b = systems[best]
        out.append(f"On the {n_u} questions the corpus cannot answer, **{best}** declines most often: "
                   f"{_pct(b.get('no_ans_acc'))}{_ci(b.get('no_ans_ci95'))} (Wilson 95% interval).")
    if ab.get("mode") == "calibrated":
        drops = []
        for n, s in systems.items():
            before = (summary.get("systems", {}).get(n) or {}).get("f1_before_decline")
            after = s.get("has_ans_f1")
            if before is not None and after is not None and s.get("declined_by_threshold"):
                drops.append(f"{n} {after - before:+.2f}")
        if drops:
            out.append("Declining below the calibrated threshold changed answerable F1 by: " + ", ".join(drops) + ".")
    return out


def abstention_table(summary: dict) -> list[str]:
    """The section's table and a note on what the calibrator and threshold were fitted on."""
    ab = summary.get("abstention") or {}
    systems = ab.get("systems") or {}
    if not systems:
        return []
    rows = ["| system | HasAns F1 | NoAns accuracy [95%] | wrong answers on answerable [95%] | overall F1 | "
            "coverage | AURC (random order) | threshold | oracle overall F1 (in-sample) |",
            "|" + "---|" * 9]
    for n, s in systems.items():
        rows.append(f"| {n} | {_f(s.get('has_ans_f1'))} | {_pct(s.get('no_ans_acc'))}{_ci(s.get('no_ans_ci95'))} | "
                    f"{_pct(s.get('wrong_answer_rate'))}{_ci(s.get('wrong_answer_ci95'))} | "
                    f"{_f(s.get('overall_f1'))} | {_pct(s.get('coverage'))} | "
                    f"{_f(s.get('aurc'))} ({_f(s.get('aurc_random'))}) | {_f(s.get('threshold'))} | "
                    f"{_f(s.get('oracle_overall_f1'))} |")
    cal = ab.get("calibration") or {}
    mode = {"calibrated": "the model's own declines and those below the calibrated threshold",
            "model": "only the model's own declines", "never": "none (abstention not offered)"}.get(ab.get("mode"), "?")
    target = ab.get("target")
    if target == "precision":
        target = f"precision ≥ {ab.get('min_precision')}"
    return ["## Knowing when not to answer", "", *rows, "",
            f"Declines counted: {mode}. Each system's confidence is a logistic regression over its answer's "
            f"token log-probabilities, the abstention phrase's log-probability and (for retrieval systems) the "
            f"passage scores, fitted on {cal.get('n_answerable', '?')} answerable questions from the "
            f"{cal.get('source', '?')} and {cal.get('n_unanswerable', '?')} unanswerable ones made from them "
            f"(an entity changed into one the corpus lacks); no eval question is among them. The threshold "
            f"maximises {target} on those questions. Overall F1 scores a correct decline 1 (SQuAD 2.0). AURC is "
            "the area under the risk–coverage curve (lower is better; answering in a random order gives the "
            "value in brackets). The oracle column picks the best threshold on these eval questions themselves: "
            "in-sample, a ceiling for reference, never used to decline.", ""]
