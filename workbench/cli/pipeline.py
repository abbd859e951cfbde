"""``workbench run``: corpus -> index -> training data -> fine-tuning -> evaluation -> report, in one go.

Every artifact whose manifest is current is reused (a second run on an unchanged corpus trains
nothing); stale ones are rebuilt. Each stage is printed with its timing, and the run ends with the
summary table in the terminal.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.console import Stages, stage_console
from workbench.core.errors import WorkbenchError
from workbench.corpus.qa import load_qa, split_items
from workbench.evaluation.evaluate import ensure_index, load_eval_items, run_folder, run_lock, score_run, write_run
from workbench.evaluation.report import SUMMARY_COLUMNS, kind_table, summary_table, verdict
from workbench.evaluation.side_effects import side_effects
from workbench.evaluation.systems import adapter_plan, resolve_systems
from workbench.training.adapters import adapter_status, default_adapter_name
from workbench.training.finetune import finetune


def run(corpus_dir: Path, cfg: RunConfig, qa_path: Path | None = None, out: Path | None = None,
        progress: bool = True) -> Path:
    """Build everything the configured systems need from a corpus, evaluate them, write the report.

    Args:
        corpus_dir: the corpus folder; its ``qa.jsonl`` (or ``qa_path``) supplies the eval questions
            and, when it has a train split, the fine-tuning questions (else they are synthesized).
        cfg: the resolved configuration (a profile such as ``quick`` or ``full``).
        qa_path: question file (default ``CORPUS_DIR/qa.jsonl``).
        out: run folder (default ``runs/<corpus>-<timestamp>``).
        progress: progress bars and stage output.

    Returns:
        The run folder (results.jsonl, summary.json, report.md, plots/).
    """

    console = stage_console()
    corpus_dir = Path(corpus_dir)
    qa, eval_qs = load_eval_items(corpus_dir, qa_path, cfg.eval.limit)   # bad questions fail before any work
    specs = resolve_systems(cfg.eval.systems)
    folder = run_folder(corpus_dir, out)                                  # refuse a bad --out up front
    roles = {s.adapter for s in specs if s.adapter and s.build is None}
    plan = adapter_plan(cfg, roles)
    needs_index = any(s.retrieval and s.build is None for s in specs) or "raft" in plan.values()
    stages = Stages(2 + bool(needs_index) + 3 * bool(plan), console)
    console.print(f"[bold]workbench run[/bold] {corpus_dir} — systems {', '.join(s.name for s in specs)}; "
                  f"{len(eval_qs)} eval questions from {qa}")
    t_start = time.perf_counter()
    extra: dict[str, Any] = {}

    index_name = None
    if needs_index:
        def index_stage() -> Any:
            index, cost = ensure_index(corpus_dir, cfg, None, progress)
            n = len(getattr(index, "chunks", []) or [])
            what = "reused (current)" if cost["index_reused"] else "built"
            console.print(f"index {cost['index']}: {what}, {n} chunks")
            return cost
        index_cost = stages.run("ingest + index", index_stage)
        index_name = index_cost["index"]
        extra.update(index_cost)  # this run's build (evaluate then finds the index current)

    names: dict[str, str] = {}
    if plan:
        all_items = load_qa(qa) if qa.exists() else []
        n_train = len(split_items(all_items, "train"))

        def data_stage() -> None:
            syn = cfg.finetune.synthesize
            if not n_train and syn == "never" and set(plan.values()) - {"cpt"}:
                raise WorkbenchError(f"{qa} has no train split and synthesis is off (finetune.synthesize: never)",
                                     "add \"split\": \"train\" questions, or set finetune.synthesize to auto")
            if syn == "always" or not n_train:
                why = "as configured" if syn == "always" else f"{qa.name} has no train split"
                gold = f", alongside the {n_train} gold train questions" if n_train and syn == "always" else ""
                console.print(f"question-answer training data: synthesized from the corpus chunks ({why}){gold}; "
                              "eval questions are never trained on")
            else:
                console.print(f"question-answer training data: the gold train split of {qa.name} "
                              f"({n_train} questions)")
            if "cpt" in plan.values() or "scratch" in plan.values():
                console.print("pre-training data: the corpus chunks")
        stages.run("training data", data_stage)

        def finetune_stage() -> None:
            for role, mode in plan.items():
                fcfg = replace(cfg.finetune, mode=mode)
                name = default_adapter_name(corpus_dir, mode)
                status = adapter_status(name, corpus_dir, fcfg, cfg.model, qa, cfg)
                console.print(f"adapter {name} ({mode}): {status}" + ("" if status == "current" else "; training"))
                res = finetune(corpus_dir, fcfg, cfg.model, name=name, qa_path=qa, progress=progress, run_cfg=cfg)
                console.print(res.summary())
                names[role] = res.name
                extra.setdefault("finetune_reused", {})[name] = res.reused
        stages.run("fine-tune", finetune_stage)

    with run_lock(folder):
        def eval_stage() -> Any:
            extra["pipeline_s"] = round(time.perf_counter() - t_start, 2)
            return score_run(corpus_dir, cfg, qa_path=qa, index=index_name, out=folder, progress=progress,
                             extra_cost=extra, adapters=names)
        result = stages.run("evaluate", eval_stage)

        if plan:
            def side_effects_stage() -> None:
                block = side_effects(cfg, names)
                result.summary["side_effects"] = block
                for label, a in block["adapters"].items():
                    console.print(f"{label}: still answers {a['kept_right']} of the {block['n_kept']} general "
                                  f"probe questions the base model answers; perplexity "
                                  f"{a['perplexity_change']:+.0%} vs base")
            stages.run("side effects", side_effects_stage)

        def report_stage() -> None:
            result.summary.setdefault("cost", {})["stages_s"] = {k: round(v, 2) for k, v in stages.timings.items()}
            write_run(result)
            console.print(f"report: {folder / 'report.md'}")
            console.print(f"plots:  {', '.join(sorted(p.name for p in (folder / 'plots').glob('*.png')))}")
        stages.run("report", report_stage)
    print_summary(folder, console)
    return folder


def print_summary(folder: Path, console: Any = None) -> None:
    """The run's summary table (the report's) and verdict in the terminal (rich)."""
    from rich.markup import escape
    from rich.table import Table


    console = console or stage_console()
    s = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    table = Table(title=f"{s['n_questions']} eval questions — {Path(s['corpus']).name}")
    for col in SUMMARY_COLUMNS:
        table.add_column(col, justify="left" if col in ("system", "weights") else "right")
    for row in summary_table(s):
        table.add_row(*(escape(c) for c in row))
    console.print(table)
    columns, rows = kind_table(s)
    if rows:
        kinds = Table(title="by kind of question")
        for col in columns:
            kinds.add_column(escape(col), justify="left" if col == columns[0] else "right")
        for row in rows:
            kinds.add_row(*(escape(c) for c in row))
        console.print(kinds)
    for line in verdict(s):
        console.print(_rich_markup(line))
    console.print(f"\nrun folder: {folder}  (report.md, summary.json, results.jsonl, plots/)")


def _rich_markup(md: str) -> str:
    """The verdict's markdown emphasis as rich markup (and rich's own brackets escaped)."""
    import re

    from rich.markup import escape

    text = escape(md)
    text = re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", text)
    return re.sub(r"\*(.+?)\*", r"[italic]\1[/italic]", text)
