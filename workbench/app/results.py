"""Results page: a run's verdict, summary table with intervals, plots, and a per-question explorer.

The data side (loading a run folder, grouping results.jsonl by question, filters, CSV) is plain
functions so it is tested without a browser; ``page`` only lays it out.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from workbench.app import artifacts
from workbench.app.text import escape_markdown, highlight_overlap
from workbench.core.records import read_jsonl
from workbench.evaluation.abstention_report import abstention_sentences, abstention_table
from workbench.evaluation.metrics import RIGHT_F1
from workbench.evaluation.report import SUMMARY_COLUMNS, side_effects_section
from workbench.evaluation.report import kind_table as report_kind_table
from workbench.evaluation.report import summary_table as report_summary_table
from workbench.update.report import UPDATE_PLOT, update_section

PAGE_SIZE = 25

ALL, DISAGREE, A_NOT_B, UNANSWERABLE = ("All questions", "Systems disagree", "One right, other wrong",
                                        "Unanswerable")
FILTERS = (ALL, DISAGREE, A_NOT_B, UNANSWERABLE)
RIGHT, WRONG = ":green[:material/check_circle:]", ":red[:material/cancel:]"
"""Marks drawn with Streamlit's bundled icon font (emoji need a system font that servers often lack)."""


@dataclass
class RunData:
    """One run folder, read."""

    name: str
    path: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    report: str
    plots: list[Path]


@dataclass
class Question:
    """One eval question with every system's result row."""

    id: str
    question: str
    kind: str
    answerable: bool
    gold: list[str]
    doc: str | None
    by_system: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_run(name: str) -> RunData:
    """Read ``runs/NAME`` (summary.json, results.jsonl, report.md, plots/*.png).

    Raises:
        WorkbenchError: the run is not one listed under ``runs/``, or results.jsonl is malformed.
    """

    art = artifacts.resolve("run", name)
    results = art.path / "results.jsonl"
    rows = list(read_jsonl(results)) if results.is_file() else []
    report_path = art.path / "report.md"
    report = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    plots_dir = art.path / "plots"
    plots = sorted(p for p in plots_dir.glob("*.png") if p.is_file()) if plots_dir.is_dir() else []
    return RunData(art.name, art.path, art.info, rows, report, plots)


def verdict(report: str) -> str:
    """The report's opening verdict: the "## Verdict" section, or the text before the first table heading."""
    lines = report.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip().lower() == "## verdict"), None)
    if start is None:
        start = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def _fmt(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def summary_table(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The report's summary table (``workbench.evaluation.report.summary_table``), one dict per system."""
    return [dict(zip(SUMMARY_COLUMNS, row)) for row in report_summary_table(summary)]


def kind_table(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The report's kind table (``workbench.evaluation.report.kind_table``), one dict per kind."""
    columns, rows = report_kind_table(summary)
    return [dict(zip(columns, row)) for row in rows]


def questions(rows: list[dict[str, Any]]) -> list[Question]:
    """results.jsonl rows grouped by question id (file order kept)."""
    out: dict[str, Question] = {}
    for r in rows:
        qid = str(r.get("id"))
        q = out.get(qid)
        if q is None:
            q = out[qid] = Question(qid, str(r.get("question", "")), str(r.get("kind") or "other"),
                                    bool(r.get("answerable", True)), list(r.get("gold") or []), r.get("doc"))
        q.by_system[str(r.get("system"))] = r
    return list(out.values())


def is_right(row: dict[str, Any], answerable: bool) -> bool:
    """Answered right: an answerable question by the one right-answer rule (``metrics.RIGHT_F1``: a contained
    gold answer or token F1 at least that); an unanswerable question declined."""
    if not answerable:
        return bool(row.get("abstained"))
    return bool(row.get("contains")) or (row.get("f1") or 0.0) >= RIGHT_F1


def filter_questions(qs: list[Question], how: str = ALL, kinds: list[str] | None = None,
                     a: str | None = None, b: str | None = None, systems: list[str] | None = None
                     ) -> list[Question]:
    """Questions matching a filter and (optionally) a set of kinds.

    Args:
        qs: grouped questions.
        how: ALL, DISAGREE (the systems do not all agree on right/wrong), A_NOT_B (system ``a`` right
            and ``b`` wrong), or UNANSWERABLE.
        kinds: keep only these kinds (None or empty: all).
        a: for A_NOT_B, the system that must be right.
        b: for A_NOT_B, the system that must be wrong.
        systems: for DISAGREE, the systems compared (default: all of each question's systems).
    """
    out = []
    for q in qs:
        if kinds and q.kind not in kinds:
            continue
        if how == UNANSWERABLE and q.answerable:
            continue
        if how == DISAGREE:
            names = [s for s in (systems or list(q.by_system)) if s in q.by_system]
            if len({is_right(q.by_system[s], q.answerable) for s in names}) < 2:
                continue
        if how == A_NOT_B:
            if a not in q.by_system or b not in q.by_system:
                continue
            if not (is_right(q.by_system[a], q.answerable) and not is_right(q.by_system[b], q.answerable)):
                continue
        out.append(q)
    return out


def _csv_cell(x: Any) -> Any:
    """Defuse spreadsheet formulas in text cells (a cell starting with = + - @ is prefixed with ')."""
    if isinstance(x, str) and x[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + x
    return x


def to_csv(qs: list[Question], systems: list[str]) -> str:
    """The questions as CSV: one row per question, prediction and scores per system."""
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["id", "question", "kind", "answerable", "gold"]
    for s in systems:
        header += [f"{s}_prediction", f"{s}_f1", f"{s}_em", f"{s}_contains", f"{s}_abstained", f"{s}_right"]
    w.writerow(header)
    for q in qs:
        row: list[Any] = [q.id, q.question, q.kind, q.answerable, " | ".join(q.gold)]
        for s in systems:
            r = q.by_system.get(s)
            if r is None:
                row += [""] * 6
            else:
                row += [r.get("prediction", ""), r.get("f1"), r.get("em"), r.get("contains"), r.get("abstained"),
                        is_right(r, q.answerable)]
        w.writerow([_csv_cell(x) for x in row])
    return buf.getvalue()


# --- page ----------------------------------------------------------------------------------------

def _render_question(q: Question, systems: list[str]) -> None:
    gold = ", ".join(q.gold) if q.gold else "(unanswerable: the corpus does not hold the answer)"
    st.markdown(f"**Gold:** {escape_markdown(gold)}" + (f" · doc {escape_markdown(q.doc)}" if q.doc else ""))
    for s in systems:
        r = q.by_system.get(s)
        if r is None:
            continue
        mark = RIGHT if is_right(r, q.answerable) else WRONG
        scores = f"F1 {_fmt(r.get('f1'), 2)} · EM {_fmt(r.get('em'), 0)}" if q.answerable else (
            "declined" if r.get("abstained") else "answered anyway")
        conf = f" · confidence {r['confidence']:.2f}" if r.get("confidence") is not None else ""
        st.markdown(f"{mark} **{escape_markdown(s)}** ({scores}{conf}): {escape_markdown(r.get('prediction', ''))}")
        if r.get("declined_at_operating_point"):
            st.caption(f"The calibrated operating point would decline this answer "
                       f"({escape_markdown(r['declined_at_operating_point'])}); it is scored as given above.")
        for h in r.get("retrieved") or []:
            head = f" › {escape_markdown(h.get('heading') or '')}" if h.get("heading") else ""
            st.caption(f"[{h.get('rank', '?')}] score {_fmt(h.get('score'), 4)} · "
                       f"{escape_markdown(str(h.get('doc', '')))}{head}")
            if h.get("text"):
                st.markdown(highlight_overlap(h["text"], r.get("prediction", ""), max_chars=500))


def page() -> None:
    """The results page."""
    st.title("Results")
    runs = artifacts.list_runs()
    if not runs:
        st.info("No evaluation run yet. Start one on the Build page (Full run), or run "
                "`workbench run corpora/demo` (`make demo`); runs appear here under runs/.")
        return
    by_name = {r.name: r for r in runs}
    name = st.selectbox("Run", list(by_name), key="results_run", help="Folders under runs/, newest first.")
    st.caption(escape_markdown(by_name[name].describe()))
    data = load_run(name)
    summary = data.summary
    st.subheader("Verdict")
    text = verdict(data.report)
    st.markdown(text if text else "_report.md is missing from this run._")
    st.subheader("Systems")
    st.dataframe(summary_table(summary), hide_index=True)
    kinds = kind_table(summary)
    if kinds:
        st.caption("By kind of question (F1 over answerable questions; abstention rate on unanswerable ones)")
        st.dataframe(kinds, hide_index=True)
    knowing_when_not_to_answer(summary)
    after_the_update(data)
    retrieval = summary.get("retrieval") or {}
    cost = summary.get("cost") or {}
    with st.expander("Retrieval and cost"):
        st.json({"retrieval": retrieval, "cost": cost}, expanded=True)
    if data.plots:
        st.subheader("Plots")
        cols = st.columns(2)
        for i, p in enumerate(data.plots):
            cols[i % 2].image(str(p), caption=p.stem)
    explorer(data)


def knowing_when_not_to_answer(summary: dict[str, Any]) -> None:
    """The run's abstention measures (the same text as report.md): who makes things up less, HasAns F1,
    NoAns accuracy, wrong answers, AURC; the risk–coverage plot is among the plots."""
    table = abstention_table(summary)
    if not table:
        return
    st.subheader("Knowing when not to answer")
    st.markdown("\n".join(line for line in abstention_sentences(summary) if line))
    st.markdown("\n".join(table[2:]))


def after_the_update(data: RunData) -> None:
    """A ``workbench update`` run's "After the update" section (verdict, table, cost) and any run's side
    effects on general ability, from summary.json (the same text as report.md)."""
    update = update_section(data.summary, plot=None)
    if update:
        st.subheader("After the update")
        st.markdown("\n".join(update[1:]))
        st.caption(f"The plot {UPDATE_PLOT} below shows quality on each question set against update cost.")
    effects = side_effects_section(data.summary)
    if effects:
        st.subheader("Side effects on general ability")
        st.markdown("\n".join(effects[1:]))


def explorer(data: RunData) -> None:
    """Per-question explorer: filters, expandable rows, CSV download."""
    st.subheader("Questions")
    qs = questions(data.rows)
    if not qs:
        st.info("This run has no results.jsonl rows.")
        return
    systems = list(data.summary.get("systems") or {}) or sorted({s for q in qs for s in q.by_system})
    all_kinds = sorted({q.kind for q in qs})
    c1, c2 = st.columns([2, 3])
    how = c1.radio("Show", FILTERS, key="results_filter")
    kinds = c2.multiselect("Kinds", all_kinds, key="results_kinds")
    a = b = None
    if how == A_NOT_B:
        d1, d2 = st.columns(2)
        a = d1.selectbox("Right", systems, index=systems.index("rag") if "rag" in systems else 0, key="results_a")
        rest = [s for s in systems if s != a] or systems
        b = d2.selectbox("Wrong", rest, index=rest.index("ft") if "ft" in rest else 0, key="results_b")
    shown = filter_questions(qs, how, kinds, a, b)
    st.caption(f"{len(shown)} of {len(qs)} questions")
    st.download_button("Download CSV", to_csv(shown, systems), file_name=f"{data.name}-questions.csv",
                       mime="text/csv", key="results_csv")
    pages = max(1, (len(shown) + PAGE_SIZE - 1) // PAGE_SIZE)
    page_no = int(st.number_input("Page", 1, pages, 1, key="results_page")) if pages > 1 else 1
    for q in shown[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]:
        marks = "".join(RIGHT if is_right(q.by_system[s], q.answerable) else WRONG for s in systems if s in q.by_system)
        with st.expander(f"{marks} {escape_markdown(q.id)} · {escape_markdown(q.kind)} · {escape_markdown(q.question[:90])}"):
            _render_question(q, systems)
