"""report.md: a plain verdict computed from the numbers, then the tables, then the worst failures.

Everything here reads only summary.json and results.jsonl, so a report can be rebuilt from any run
folder (``write_report(run_dir)``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.core.records import read_jsonl
from workbench.evaluation.abstention_report import abstention_sentences, abstention_table

ALPHA = 0.05
"""Differences with a paired-test p-value at or above this are called "not significant"."""
N_FAILURES = 5


# --- small helpers -------------------------------------------------------------------------------

def _f(x: Any, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _s(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.0f} s" if x >= 10 else f"{x:.2f} s"


def _p(p: Any) -> str:
    return "–" if p is None else ("p < 0.001" if p < 0.001 else f"p = {p:.3f}")


def _cell(text: Any, limit: int = 200) -> str:
    """Text safe inside a markdown table cell or line: one line, no raw HTML, no pipes."""
    t = " ".join(str(text).split())
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _n(count: Any, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def compare(summary: dict, a: str, b: str, kind: str | None = None) -> dict | None:
    """The paired comparison of systems a and b, oriented as a minus b (overall F1, or a kind's measure).

    Returns:
        ``{"delta", "p_value", "ci95"}`` or None when the pair was not compared.
    """
    table = summary.get("pairwise_by_kind", {}).get(kind, {}) if kind else summary.get("pairwise", {})
    for key, sign in ((f"{a}_vs_{b}", 1), (f"{b}_vs_{a}", -1)):
        d = table.get(key)
        if not d:
            continue
        delta = d.get("delta", d.get("delta_f1"))
        ci = d.get("ci95", d.get("ci95_f1"))
        if delta is None:
            return None
        ci = [sign * x for x in ci][::sign] if ci else None
        return {"delta": sign * delta, "p_value": d.get("p_value"), "ci95": ci}
    return None


def setup_cost_s(summary: dict, name: str) -> float:
    """One-off build cost of a system: index build if it retrieves, plus its adapter's fine-tuning."""
    sysb, cost = summary["systems"][name], summary.get("cost", {})
    total = 0.0
    if sysb.get("retrieval"):
        total += cost.get("index_build_s") or 0.0
    adapter = cost.get("adapters", {}).get(sysb.get("weights"))
    if adapter:
        total += adapter.get("seconds") or 0.0
    return total


# --- the verdict ---------------------------------------------------------------------------------

def verdict(summary: dict) -> list[str]:
    """Plain sentences, computed from the numbers: who wins overall and per kind (every system answering
    every answerable question), by how much, whether the difference is significant, what it costs; then the
    abstention axis on its own (``abstention_report.abstention_sentences``)."""
    systems = summary["systems"]
    names = list(systems)
    lines: list[str] = []
    scored = [n for n in names if systems[n].get("f1") is not None]
    if scored:
        best = max(scored, key=lambda n: systems[n]["f1"])
        b = systems[best]
        ci = b.get("ci95", {}).get("f1")
        ci_txt = f" [95% CI {_f(ci[0])}–{_f(ci[1])}]" if ci else ""
        lines.append(f"**{best}** answers best overall: F1 {_f(b['f1'])}{ci_txt} on "
                     f"{_n(b.get('n_answerable', '?'), 'answerable question')}.")
        if len(scored) == 1:
            lines[-1] += " It is the only system scored."
        for other in scored:
            if other == best:
                continue
            c = compare(summary, best, other)
            if c is None:
                continue
            if c["p_value"] is not None and c["p_value"] < ALPHA:
                lines.append(f"It beats **{other}** (F1 {_f(systems[other]['f1'])}) by {c['delta']:+.2f} "
                             f"({_p(c['p_value'])}).")
            else:
                lines.append(f"Its lead over **{other}** (F1 {_f(systems[other]['f1'])}, {c['delta']:+.2f}) "
                             f"is not significant ({_p(c['p_value'])}): on these questions that difference "
                             f"could be noise.")
        lines.append(_cost_sentence(summary, best))
    lines += _kind_sentences(summary)
    lines += abstention_sentences(summary)
    return lines


def _cost_sentence(summary: dict, best: str) -> str:
    systems = summary["systems"]
    b = systems[best]
    parts = []
    setup = setup_cost_s(summary, best)
    cost = summary.get("cost", {})
    if b.get("retrieval") and cost.get("index_build_s") is not None:
        parts.append(f"an index built in {_s(cost['index_build_s'])}")
    ad = cost.get("adapters", {}).get(b.get("weights"))
    if ad:
        toks = f" on {ad['tokens']:,} tokens" if ad.get("tokens") else ""
        parts.append(f"fine-tuning for {_s(ad.get('seconds'))}{toks}")
    what = " and ".join(parts) if parts else "no build step"
    bs = summary.get("config", {}).get("generate", {}).get("batch_size")
    batched = f", answering up to {bs} questions per batch" if bs and bs > 1 else ""
    lat = f"{_s(b.get('latency_p50_s'))} latency p50{batched}"
    if "base" in systems and best != "base" and systems["base"].get("latency_p50_s"):
        lat += f" vs {_s(systems['base']['latency_p50_s'])} for base"
    tail = f" ({_s(setup)} of set-up)" if setup else ""
    return f"Cost of {best}: {what}{tail}; {lat}."


def _kind_sentences(summary: dict) -> list[str]:
    systems = summary["systems"]
    names = list(systems)
    kinds = sorted({k for s in systems.values() for k in s.get("by_kind", {})})
    if not kinds or len(names) < 2:
        return []
    out = ["", "By kind of question:"]
    for kind in kinds:
        cells = {n: systems[n]["by_kind"].get(kind) for n in names if kind in systems[n].get("by_kind", {})}
        if not any(c.get("f1") is not None for c in cells.values()):
            continue  # a kind of unanswerable questions: declines are the abstention axis, judged on both sets
        metric = "f1"
        vals = {n: c[metric] for n, c in cells.items() if c.get(metric) is not None}
        if not vals:
            continue
        n_q = next(iter(cells.values()))["n"]
        ranked = sorted(vals, key=lambda n: -vals[n])
        first = ranked[0]
        label, fmt = "F1", _f
        if vals[first] == 0:
            out.append(f"- *{kind}* ({_n(n_q, 'question')}): no system gets any right ({label} 0 for all).")
            continue
        if len(ranked) == 1:
            out.append(f"- *{kind}* ({_n(n_q, 'question')}): {first} {label} {fmt(vals[first])}.")
            continue
        second = ranked[1]
        c = compare(summary, first, second, kind)
        p = c["p_value"] if c else None
        head = (f"- *{kind}* ({_n(n_q, 'question')}): **{first}** {label} {fmt(vals[first])} "
                f"vs {second} {fmt(vals[second])}")
        if vals[first] == vals[second]:
            out.append(f"{head}: a tie.")
        elif p is not None and p < ALPHA:
            out.append(f"{head}: {first} wins by {vals[first] - vals[second]:+.2f} ({_p(p)}).")
        else:
            out.append(f"{head}: {first} is ahead by {vals[first] - vals[second]:+.2f}, not significant "
                       f"({_p(p)}).")
    return out


# --- tables --------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["system", "weights", "F1 [95% CI]", "EM", "contains", "ROUGE-L", "declines unanswerable",
                   "declines answerable", "latency p50", "p95", "tokens/s"]
"""The columns of the summary table."""


def summary_table(summary: dict) -> list[list[str]]:
    """The summary table, one row of plain text per system (``SUMMARY_COLUMNS``): answer metrics with F1's
    95% interval, declines, latency, throughput. The one table the report, ``workbench eval`` / ``run`` and
    the app's results page show."""
    rows = []
    for name, s in summary["systems"].items():
        ci = s.get("ci95", {}).get("f1")
        f1 = f"{_f(s.get('f1'))} [{_f(ci[0])}–{_f(ci[1])}]" if ci else _f(s.get("f1"))
        rows.append([name, " ".join(str(s.get("weights", "")).split()), f1, _f(s.get("em")), _f(s.get("contains")),
                     _f(s.get("rouge_l")), _pct(s.get("abstain_unanswerable")), _pct(s.get("abstain_answerable")),
                     _s(s.get("latency_p50_s")), _s(s.get("latency_p95_s")), _f(s.get("tokens_per_s"), 1)])
    return rows


def _systems_table(summary: dict) -> str:
    return _table(SUMMARY_COLUMNS, [[_cell(c) for c in row] for row in summary_table(summary)])


def kind_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Per kind of question (with its count), each system's F1 (answerable kinds) or share declined
    (unanswerable ones), as columns and rows of plain text: the one kind table the report, the terminal and
    the app show."""
    systems = summary["systems"]
    kinds = sorted({k for s in systems.values() for k in s.get("by_kind", {})})
    rows = []
    for kind in kinds:
        cells = [systems[n].get("by_kind", {}).get(kind, {}) for n in systems]
        n = next((c["n"] for c in cells if c), 0)
        row = [f"{kind} ({n})"]
        for c in cells:
            row.append(f"F1 {_f(c['f1'])}" if c.get("f1") is not None
                       else (f"declines {_pct(c.get('abstain'))}" if c else "–"))
        rows.append(row)
    return ["kind (n)", *systems], rows


def _kind_table(summary: dict) -> str:
    columns, rows = kind_table(summary)
    return _table([_cell(c) for c in columns], [[_cell(c) for c in row] for row in rows])


def _pairwise_table(summary: dict) -> str:
    rows = []
    for key, d in summary.get("pairwise", {}).items():
        ci = d.get("ci95_f1")
        rows.append([key.replace("_vs_", " vs "),
                     f"{d['delta_f1']:+.3f}" if d.get("delta_f1") is not None else "–",
                     f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "–", _p(d.get("p_value_holm", d.get("p_value"))),
                     f"{d['delta_abstain']:+.2f}" if d.get("delta_abstain") is not None else "–",
                     _p(d.get("p_value_abstain_holm", d.get("p_value_abstain")))])
    return _table(["pair", "ΔF1", "95% CI", "p (F1)", "Δ declines unanswerable", "p"], rows)


def _retrieval_table(summary: dict) -> str:
    r = summary.get("retrieval") or {}
    keys = [k for k in r if "@" in k or k == "mrr"]
    if not keys:
        return ""
    head = f"Retrieval ({r.get('mode', '?')}, k = {r.get('k', '?')} passages in the prompt):\n\n"
    return head + _table(["metric", "value"], [[k, _f(r[k], 3)] for k in keys])


def _ragas_table(summary: dict) -> str:
    systems = summary["systems"]
    metrics = sorted({m for s in systems.values() for m in list(s.get("ragas", {})) + list(s.get("ragas_skipped", {}))})
    if not metrics:
        return ""
    rows = []
    for m in metrics:
        row = [m]
        for s in systems.values():
            if m in s.get("ragas", {}):
                fails = s.get("ragas_failures", {}).get(m)
                row.append(_f(s["ragas"][m], 3) + (f" ({fails} failed)" if fails else ""))
            else:
                why = s.get("ragas_skipped", {}).get(m, "not run")
                row.append(f"skipped: {_cell(why, 60)}")
        rows.append(row)
    return _table(["ragas metric"] + list(systems), rows)


_REMOTE_COPY = {"snap": "replaced by snapping each reply to a passage span", "free": "off, replies left free"}


def _cost_table(summary: dict) -> str:
    cost = summary.get("cost", {})
    rows = [[n, _s(setup_cost_s(summary, n)), _s(s.get("load_s")), _s(s.get("answer_s")),
             _s(s.get("latency_p50_s")), _f(s.get("tokens_per_s"), 1)] for n, s in summary["systems"].items()]
    t = _table(["system", "set-up (index + fine-tuning)", "model load",
                f"answering {summary.get('n_questions', '?')} questions", "latency p50", "tokens/s"], rows)
    extra = []
    if cost.get("index_build_s") is not None:
        extra.append(f"index build {_s(cost['index_build_s'])}" + (" (reused)" if cost.get("index_reused") else ""))
    if cost.get("finetune_s") is not None:
        toks = f", {cost['finetune_tokens']:,} tokens" if cost.get("finetune_tokens") else ""
        extra.append(f"fine-tuning {_s(cost['finetune_s'])}{toks}")
    if cost.get("peak_rss_mb") is not None:
        extra.append(f"peak memory {cost['peak_rss_mb']:.0f} MB")
    if cost.get("eval_s") is not None:
        extra.append(f"evaluation {_s(cost['eval_s'])}")
    if cost.get("model_backend") == "openai":  # generation ran on a served model, not on this machine
        remote = cost.get("remote") or {}
        extra.append(f"the model was remote ({remote.get('model') or 'first listed'} at {remote.get('base_url')}; "
                     f"copy decoding {_REMOTE_COPY.get(remote.get('copy'), 'off')})")
    return t + ("\n\n" + "; ".join(extra) + "." if extra else "")


# --- failures ------------------------------------------------------------------------------------

def worst_failures(rows: list[dict], system: str, n: int = N_FAILURES) -> list[dict]:
    """A system's worst answers: answerable questions it got wrong (lowest F1 first, confident wrong
    answers before refusals), then unanswerable questions it answered anyway."""
    mine = [r for r in rows if r["system"] == system]
    wrong = sorted((r for r in mine if r["answerable"] and (r.get("f1") or 0) < 1.0),
                   key=lambda r: (r.get("f1") or 0, r.get("abstained", False), r["id"]))
    made_up = [r for r in mine if not r["answerable"] and not r.get("abstained")]
    n_made_up = min(len(made_up), max(1, n // 2)) if made_up else 0
    return wrong[: n - n_made_up] + made_up[:n_made_up]


def _failure_md(r: dict) -> str:
    gold = " / ".join(r["gold"]) if r["gold"] else "(unanswerable: should decline)"
    lines = [f"- **{_cell(r['question'])}** ({r.get('kind') or 'other'}, id {_cell(r['id'])})",
             f"  - gold: {_cell(gold)}",
             f"  - prediction: {_cell(r['prediction']) or '(empty)'}"
             + (f" — F1 {_f(r.get('f1'))}" if r.get("f1") is not None else "")]
    for h in r.get("retrieved", [])[:3]:
        lines.append(f"  - passage [{h['rank']}] {_cell(h['doc'])} (score {_f(h['score'], 3)}): "
                     f"{_cell(h['text'], 220)}")
    if r["answerable"] and r.get("retrieved") and r.get("doc"):
        if not any(h["doc"] == r["doc"] for h in r["retrieved"]):
            lines.append(f"  - the gold document {_cell(r['doc'])} was not retrieved")
    return "\n".join(lines)


def side_effects_section(summary: dict) -> list[str]:
    """The "Side effects on general ability" section (markdown lines); empty without a ``side_effects`` block."""
    se = summary.get("side_effects")
    if not se:
        return []
    out = ["## Side effects on general ability", "",
           f"The base model answers {se.get('n_kept', 0)} of the {se.get('n_questions', 0)} general-knowledge probe "
           f"questions right; perplexity on a general text sample ({se.get('text_tokens', 0):,} tokens): base "
           f"{_f((se.get('base') or {}).get('perplexity'), 1)}.", ""]
    rows = []
    for label, a in (se.get("adapters") or {}).items():
        rows.append([label, f"`{a.get('adapter', '?')}`",
                     f"{_pct(a.get('still_right'))} ({a.get('kept_right', 0)} of {se.get('n_kept', 0)})",
                     _f(a.get("perplexity"), 1), f"{100 * a['perplexity_change']:+.0f}%"
                     if a.get("perplexity_change") is not None else "–"])
    if rows:
        out += [_table(["system", "adapter", "still answers right", "perplexity", "change vs base"], rows), ""]
        worst = max(se["adapters"].items(), key=lambda kv: (1 - (kv[1].get("still_right") or 1),
                                                            kv[1].get("perplexity_change") or 0))
        sr = worst[1].get("still_right")
        if sr is not None and sr < 1:
            out += [f"**{worst[0]}** lost most: it still answers {_pct(sr)} of the probe questions the base model "
                    f"knew, and its perplexity changed by {100 * (worst[1].get('perplexity_change') or 0):+.0f}%.", ""]
        elif sr is not None:
            out += ["Every adapter still answers all the probe questions the base model knew.", ""]
    return out


# --- the report ----------------------------------------------------------------------------------

def build_report(summary: dict, rows: list[dict], plots: list[str] | None = None) -> str:
    """The report as markdown: verdict, tables, plots, worst failures per system."""
    corpus = summary.get("corpus", "?")
    out = [f"# Evaluation: {Path(corpus).name}", "",
           f"{summary.get('n_questions', '?')} eval questions ({summary.get('n_answerable', '?')} answerable, "
           f"{summary.get('n_unanswerable', '?')} unanswerable) from `{summary.get('qa', '?')}`; "
           f"created {summary.get('created', '?')}.", "", "## Verdict", ""]
    out += verdict(summary)
    out += ["", "## Systems", "", _systems_table(summary), "",
            "F1, EM, contains and ROUGE-L are SQuAD-normalised, over answerable questions; intervals are "
            "95% bootstrap intervals over questions; differences are tested with a paired sign-flip "
            f"permutation test (significant when p < {ALPHA}).", ""]
    out += ["## By kind of question", "", _kind_table(summary), ""]
    out += abstention_table(summary)
    if len(summary["systems"]) > 1:
        out += ["## Pairwise differences", "", _pairwise_table(summary), "",
                "p-values are Holm-adjusted over the pairs (per measure) when the run recorded them.", ""]
    for title, body in (("Retrieval", _retrieval_table(summary)), ("ragas metrics", _ragas_table(summary))):
        if body:
            out += [f"## {title}", "", body, ""]
    out += ["## Cost", "", _cost_table(summary), ""]
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{p})" for p in plots] + [""]
    out += side_effects_section(summary)
    out += ["## Worst failures", ""]
    for name in summary["systems"]:
        fails = worst_failures(rows, name)
        out += [f"### {name}", ""]
        out += [_failure_md(r) for r in fails] if fails else ["No failures."]
        out.append("")
    return "\n".join(out)


def write_report(run_dir: Path) -> Path:
    """(Re)build report.md of an existing run folder from its summary.json and results.jsonl."""

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = list(read_jsonl(run_dir / "results.jsonl"))
    plots = sorted(p.name for p in (run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    path = run_dir / "report.md"
    path.write_text(build_report(summary, rows, plots), encoding="utf-8")
    return path
