"""report.md's "After the update" section for summary.json's ``update`` block: a table, verdict sentences
computed from the numbers, and a plot of quality on each question set against update cost.

``update_section`` is a pure function of the summary, so the app shows the same text and tests build it from
constructed summaries; ``update_appendix`` is the section ``workbench update`` hands to ``write_run``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.figures import pyplot, save_figure
from workbench.evaluation.report import _f, _pct, _s
from workbench.evaluation.report import _table as table

SETS = ("invariant", "updated", "new")
UPDATE_PLOT = "update_quality_vs_cost.png"
SET_LABELS = {"invariant": "invariant (unchanged facts)", "updated": "updated (changed facts)",
              "new": "new (facts only in the update)"}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return table(header, rows).splitlines()


def _get(block: dict, set_name: str, key: str) -> Any:
    return (block.get(set_name) or {}).get(key)


def _counts(block: dict) -> dict[str, int]:
    c = block.get("counts") or {}
    return {k: c.get(k, 0) for k in ("forgotten", "updated", "acquired")}


def update_table(update: dict) -> list[str]:
    """One row per system: how it was brought up to date, at what cost, and what it answers on each set."""
    rows = []
    for name, b in update.get("systems", {}).items():
        how = " + ".join(b.get("strategies") or []) or "none"
        fuar = b.get("fuar")
        rows.append([name, how, _s(b.get("update_cost_s")), _f(_get(b, "invariant", "f1")),
                     _f(b.get("forgetting"), 3), _f(_get(b, "updated", "f1")), _pct(_get(b, "updated", "current")),
                     _pct(_get(b, "updated", "stale")), _f(_get(b, "new", "f1")),
                     "n.d." if fuar is None else _f(fuar),
                     "{forgotten} / {updated} / {acquired}".format(**_counts(b))])
    return _table(["system", "update", "update cost", "F1 invariant", "forgetting (ΔF1)", "F1 updated",
                   "new value", "stale", "F1 new", "FUAR", "forgotten / updated / acquired"], rows)


def _strategy_lines(update: dict) -> list[str]:
    st = update.get("strategies") or {}
    out = []
    if "reindex" in st:
        r = st["reindex"]
        out.append(f"- reindex: {_s(r.get('seconds'))}, {r.get('chunks_encoded', '?')} of {r.get('chunks_total', '?')} "
                   f"chunks re-encoded" + (f", peak memory {r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else ""))
    for key in ("continue", "replay", "retrain"):
        if key in st:
            t = st[key]
            extra = f" (replay share {update.get('replay', 0):.0%})" if key == "replay" else ""
            out.append(f"- {key}{extra}: {_s(t.get('seconds'))}, {t.get('tokens_trained') or 0:,} tokens trained on "
                       f"{t.get('n_examples', '?')} examples ({t.get('data_source', '?')} data)"
                       + (f", peak memory {t['peak_rss_mb']:.0f} MB" if t.get("peak_rss_mb") else "")
                       + (" (reused: cost from its build)" if t.get("reused") else ""))
    return out


def update_verdict(update: dict) -> list[str]:
    """Plain sentences computed from the ``update`` block: how well RAG and each fine-tuning strategy
    answer changed and new facts, how often the old value comes back, what re-indexing costs against
    retraining, and what continuing forgets with and without replay."""
    systems = update.get("systems", {})
    st = update.get("strategies") or {}
    lines: list[str] = []
    n_up = (update.get("sets") or {}).get("updated", 0)
    if "rag" in systems and n_up:
        r = systems["rag"]
        lines.append(f"After re-indexing, **rag** answers {_pct(_get(r, 'updated', 'current'))} of the {n_up} updated "
                     f"questions with the new value and {_pct(_get(r, 'updated', 'stale'))} with the old one "
                     f"(F1 {_f(_get(r, 'updated', 'f1'))}); on new facts its F1 is {_f(_get(r, 'new', 'f1'))}.")
    if "ft" in systems and n_up:
        f = systems["ft"]
        lines.append(f"The old adapter **ft**, untouched, gives the old value on {_pct(_get(f, 'updated', 'stale'))} of "
                     f"the updated questions and the new one on {_pct(_get(f, 'updated', 'current'))}.")
    scored = {n: b for n, b in systems.items() if _get(b, "updated", "f1") is not None}
    if scored:
        best = max(scored, key=lambda n: (_get(scored[n], "updated", "f1"), -(scored[n].get("update_cost_s") or 0)))
        lines.append(f"Best on updated facts: **{best}** (F1 {_f(_get(scored[best], 'updated', 'f1'))}, update cost "
                     f"{_s(scored[best].get('update_cost_s'))}).")
    new_scored = {n: b for n, b in systems.items() if _get(b, "new", "f1") is not None}
    if new_scored:
        best = max(new_scored, key=lambda n: _get(new_scored[n], "new", "f1"))
        lines.append(f"Best on new facts: **{best}** (F1 {_f(_get(new_scored[best], 'new', 'f1'))}).")
    re_s = (st.get("reindex") or {}).get("seconds")
    rt_s = (st.get("retrain") or {}).get("seconds")
    if re_s and rt_s:
        lines.append(f"Re-indexing took {_s(re_s)}, {rt_s / re_s:.0f}x less wall time than retraining ({_s(rt_s)}).")
    for role, label in (("ft_continue", "Continuing training"), ("ft_replay", "Continuing training with replay"),
                        ("ft_retrain", "Retraining from scratch")):
        b = systems.get(role)
        if b is None or b.get("forgetting") is None:
            continue
        fuar = b.get("fuar")
        verb = "lost" if b["forgetting"] > 0 else "gained"
        c = _counts(b)
        lines.append(f"{label} ({role}) {verb} {abs(b['forgetting']):.2f} F1 on invariant facts "
                     f"({c['forgotten']} forgotten against {c['updated']} updated and {c['acquired']} acquired: "
                     f"FUAR {'n.d.' if fuar is None else _f(fuar)}).")
    return lines


def update_section(summary: dict, plot: str | None = UPDATE_PLOT) -> list[str]:
    """The "After the update" section of report.md (markdown lines); empty without an ``update`` block."""
    u = summary.get("update")
    if not u:
        return []
    sets = u.get("sets") or {}
    ch = u.get("changes") or {}
    out = ["## After the update", "",
           f"Update `{u.get('update_dir', '?')}`: {len(ch.get('replaced', []))} documents replaced, "
           f"{len(ch.get('added', []))} added, {len(ch.get('removed', []))} removed. Questions: "
           f"{sets.get('invariant', 0)} invariant"
           + (f" (a sample of {sets['invariant_available']})" if sets.get("invariant_available", 0) > sets.get(
               "invariant", 0) else "")
           + f", {sets.get('updated', 0)} updated, {sets.get('new', 0)} new; {sets.get('left_out', 0)} base eval "
           "questions left out (their document changed and no longer holds their answer, or the update restates "
           "their fact).", ""]
    out += update_verdict(u) + [""]
    out += update_table(u) + [""]
    out += ["Forgetting: F1 on invariant questions before the update (the predecessor: the same system on the old "
            "index, or the old adapter for a strategy's adapter) minus after. New value / stale: share of updated "
            "questions answered with the current / a previous value. FUAR = forgotten / (updated + acquired), "
            "counted per question (Jang et al., ICLR 2022); n.d. when nothing was updated or acquired.", "",
            "Cost of each strategy (wall time; peak resident memory of the process while it ran):", ""]
    out += _strategy_lines(u) + [""]
    if plot:
        out += [f"![update quality vs cost](plots/{plot})", ""]
    return out


def plot_update(summary: dict, path: Path) -> Path | None:
    """F1 on each question set against the system's update cost (one panel per set)."""
    u = summary.get("update") or {}
    systems = u.get("systems") or {}
    if not systems:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, set_name in zip(axes, SETS):
        for name, b in systems.items():
            y = _get(b, set_name, "f1")
            if y is None:
                continue
            x = b.get("update_cost_s") or 0.0
            ax.plot([x], [y], "o")
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("update cost (s, wall time)")
        ax.set_title(SET_LABELS[set_name], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1")
    axes[0].set_ylim(0, 1.05)
    fig.suptitle("Quality on each question set against the cost of the update")
    return save_figure(fig, path)


def update_appendix(summary: dict, plots_dir: Path) -> list[str]:
    """The "After the update" section with its plot drawn into ``plots_dir``: a report appendix for
    ``write_run``."""
    plot = plot_update(summary, Path(plots_dir) / UPDATE_PLOT)
    return update_section(summary, plot.name if plot else None)
