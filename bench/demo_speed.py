"""Time each stage of ``make demo`` (index, fine-tune, answering per system) under two settings in one run,
and how far their answers agree.

The baseline is the preset with ``--baseline`` changes (default none: the shipped settings), the new one the
preset with ``--new`` changes (default ``model.cpu_dtype=auto``: bfloat16 answering where the CPU computes it
natively). Both run in this process, one after the other per stage, their order alternating from system to
system so that a change of machine load hits both alike; ratios are baseline seconds / new seconds. A stage
whose settings are the same under both (e.g. the index when only answering settings differ) runs once.
Builds go to a temporary project folder: ``indices/``, ``adapters/`` and ``runs/`` are never touched.

Answer agreement is per system over the corpus's eval questions: the share of identical answers and the
F1 / EM of both (the evaluation's own scorer, ``workbench.evaluation.metrics.score_answers``).

    .venv/bin/python bench/demo_speed.py                                   # everything (~20 min on 2 cores)
    .venv/bin/python bench/demo_speed.py --stages answer --limit 60        # answering only, 60 questions
    .venv/bin/python bench/demo_speed.py --stages answer --new model.cpu_dtype=int8
    .venv/bin/python bench/demo_speed.py --stages finetune --new finetune.cpu_bf16=true    # training precision
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("index", "finetune", "answer")


def apply_settings(cfg: Any, changes: list[str]) -> Any:
    """``cfg`` with ``group.key=value`` changes (values read as YAML: ``8``, ``true``, ``float32``)."""
    import yaml

    from workbench.core.config import override

    groups: dict[str, dict[str, Any]] = {}
    for change in changes:
        key, sep, value = change.partition("=")
        group, dot, field = key.partition(".")
        if not sep or not dot:
            sys.exit(f"bad setting {change!r}: use group.key=value, e.g. model.cpu_dtype=float32")
        groups.setdefault(group, {})[field] = yaml.safe_load(value)
    return override(cfg, **groups)


def differs(a: Any, b: Any, groups: tuple[str, ...], ignore: tuple[str, ...] = ()) -> bool:
    """Whether two run configs differ in the settings of ``groups`` (``group.key`` names in ``ignore`` aside)."""
    from workbench.core.config import to_dict

    def pick(cfg: Any) -> dict:
        d = {g: to_dict(getattr(cfg, g)) for g in groups}
        for name in ignore:
            group, _, key = name.partition(".")
            d.get(group, {}).pop(key, None)
        return d
    return pick(a) != pick(b)


def load_now() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def time_index(corpus: Path, cfg: Any, name: str) -> dict:
    from workbench.retrieval.index import build_index

    t0 = time.perf_counter()
    result = build_index(corpus, cfg.index, cfg.ingest, name=name, rebuild=True, progress=False)
    return {"seconds": time.perf_counter() - t0, "name": result.path.name}


def time_finetune(corpus: Path, cfg: Any, name: str) -> dict:
    from workbench.training.adapters import read_adapter_manifest
    from workbench.training.finetune import finetune

    t0 = time.perf_counter()
    res = finetune(corpus, cfg.finetune, cfg.model, name=name, run_cfg=cfg, progress=False, rebuild=True,
                   resume=False)
    m = read_adapter_manifest(res.path)
    return {"seconds": time.perf_counter() - t0, "train_s": m["train_seconds"], "tokens": res.tokens_seen,
            "heldout_loss": res.heldout_loss, "train_loss": res.train_loss, "path": str(res.path),
            "steps": m.get("global_step")}


@dataclass
class Answered:
    """One system's answers under one setting: wall and CPU seconds of answering (weights loaded before the
    clock starts), and the dtype it answered in on CPU."""

    run: Any
    cpu_s: float
    kind: str


def answer_all(cfg: Any, spec: Any, items: list, retriever: Any, adapters: dict[str, str]) -> Answered:
    """One system's answers to every item through evaluation's own path (``run_system``)."""
    from workbench.evaluation.systems import SystemContext, run_system

    ctx = SystemContext(cfg=cfg, adapters=adapters, retriever=retriever)
    try:
        model = ctx.generator(spec.adapter).model
        cpu0 = time.process_time()
        run = run_system(spec, ctx, items)
        return Answered(run, time.process_time() - cpu0, str(model.workbench_cpu_dtype))
    finally:
        ctx.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", type=Path, default=Path("corpora/demo"))
    ap.add_argument("--preset", default="quick", help="the preset make demo runs (default quick)")
    ap.add_argument("--baseline", nargs="*", default=[], help="changes to the preset for the baseline (default "
                    "none: the shipped settings)")
    ap.add_argument("--new", nargs="*", default=["model.cpu_dtype=auto"],
                    help="changes to the preset for the new setting (default: model.cpu_dtype=auto)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--systems", default=None, help="comma-separated (default: the preset's eval.systems)")
    ap.add_argument("--limit", type=int, default=None, help="first N eval questions (default: all)")
    ap.add_argument("--show-differences", action="store_true", help="print every answer that differs")
    ap.add_argument("--adapter", default=None, help="adapter folder for ft systems when the finetune stage is "
                    "not run (default: the project's adapters/<corpus>-sft)")
    args = ap.parse_args()

    import torch

    from workbench.answering.models import cpu_answering_dtype, native_bf16_cpu, physical_cores
    from workbench.core.config import load_preset
    from workbench.core.paths import project_root

    corpus = args.corpus.resolve()
    preset = load_preset(args.preset)
    cfgs = {"baseline": apply_settings(preset, args.baseline), "new": apply_settings(preset, args.new)}
    project = project_root()
    print(f"{corpus.name}, preset {args.preset}; baseline: {' '.join(args.baseline) or 'the preset'}; "
          f"new: {' '.join(args.new) or 'the preset'}")
    print(f"CPU: {physical_cores()} physical cores, native bf16 {native_bf16_cpu()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; answering dtype on CPU: baseline "
          f"{cpu_answering_dtype(cfgs['baseline'].model)}, new {cpu_answering_dtype(cfgs['new'].model)}")
    print(f"at start: {load_now()}", flush=True)
    rows: list[tuple[str, float | None, float | None, str]] = []
    t_all = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="demo-speed-") as home:
        os.environ["WORKBENCH_HOME"] = home  # every build goes to this throwaway project folder
        index_name = adapter_path = None
        if "index" in args.stages:
            labels = ["baseline", "new"] if differs(*cfgs.values(), ("ingest", "index")) else ["new"]
            got = {lab: time_index(corpus, cfgs[lab], f"speed-{lab}") for lab in labels}
            index_name = got["new"]["name"]
            rows.append(("index (ingest + embed)", got.get("baseline", got["new"])["seconds"], got["new"]["seconds"],
                         "" if len(labels) == 2 else "same settings: run once"))
            print(f"index: {got['new']['seconds']:.1f} s  ({load_now()})", flush=True)
        if "finetune" in args.stages:
            two = differs(*cfgs.values(), ("finetune", "model", "prompt"), ignore=("model.cpu_dtype",))
            order = ["baseline", "new"] if two else ["new"]
            got = {lab: time_finetune(corpus, cfgs[lab], f"speed-{lab}-sft") for lab in order}
            adapter_path = got["new"]["path"]
            for lab in order:
                g = got[lab]
                print(f"fine-tune {lab}: {g['seconds']:.0f} s, {g['tokens']:,} tokens in {g['train_s']:.0f} s of "
                      f"training ({g['tokens'] / g['train_s']:.0f} tokens/s), {g['steps']} steps, train loss "
                      f"{g['train_loss']:.3f}, held-out loss {g['heldout_loss']:.3f}  ({load_now()})", flush=True)
            b = got.get("baseline", got["new"])
            rows.append(("fine-tune (LoRA sft)", b["seconds"], got["new"]["seconds"],
                         f"tokens/s {b['tokens'] / b['train_s']:.0f} -> {got['new']['tokens'] / got['new']['train_s']:.0f}; "
                         f"held-out loss {b['heldout_loss']:.3f} -> {got['new']['heldout_loss']:.3f}"
                         if two else "same settings: run once"))
        if "answer" in args.stages:
            agreement = answer_stage(args, cfgs, corpus, project, index_name, adapter_path, rows)
        else:
            agreement = []

    print(f"\n{'stage':<26}{'baseline s':>11}{'new s':>9}{'speed-up':>10}  notes")
    for name, b, n, note in rows:
        ratio = f"{b / n:.2f}x" if b and n else ""
        print(f"{name:<26}{b:>11.1f}{n:>9.1f}{ratio:>10}  {note}")
    if agreement:
        print(f"\n{'answers':<10}{'identical':>10}{'F1 base':>9}{'F1 new':>8}{'ΔF1':>8}{'EM base':>9}{'EM new':>8}")
        for name, same, fb, fn, eb, en in agreement:
            print(f"{name:<10}{100 * same:>9.1f}%{fb:>9.3f}{fn:>8.3f}{fn - fb:>+8.3f}{eb:>9.3f}{en:>8.3f}")
        worst = min(a[1] for a in agreement)
        dmax = max(abs(a[3] - a[2]) for a in agreement)
        print(f"targets: every system >= 97% identical ({'met' if worst >= 0.97 else 'NOT met'}: lowest "
              f"{100 * worst:.1f}%), |ΔF1| <= 0.01 ({'met' if dmax <= 0.01 else 'NOT met'}: largest {dmax:.3f})")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbench wall {time.perf_counter() - t_all:.0f} s; peak RSS of this process {peak:.0f} MB "
          f"(it holds one model at a time, as make demo does); at end: {load_now()}")


def answer_stage(args: argparse.Namespace, cfgs: dict, corpus: Path, project: Path, index_name: str | None,
                 adapter_path: str | None, rows: list) -> list[tuple]:
    """Answer the eval questions with every system under both settings (order alternating per system)."""
    from workbench.evaluation.evaluate import load_eval_items
    from workbench.evaluation.metrics import score_answers
    from workbench.evaluation.systems import CachedRetriever, default_adapters, order_by_weights, resolve_systems
    from workbench.retrieval.index import default_index_name, load_index
    from workbench.retrieval.retrieve import Retriever

    new = cfgs["new"]
    _, items = load_eval_items(corpus, None, args.limit)
    specs = order_by_weights(resolve_systems((args.systems or ",".join(new.eval.systems)).split(",")))
    adapters = {role: str(project / "adapters" / name) for role, name in default_adapters(corpus).items()}
    if adapter_path or args.adapter:
        adapters["ft"] = str(Path(adapter_path or args.adapter).resolve())
    retriever = None
    if any(s.retrieval for s in specs):
        index = load_index(index_name) if index_name else load_index(
            str(project / "indices" / default_index_name(corpus)), corpus_dir=corpus)
        live = Retriever(index, new.retrieve)
        questions = [q.question for q in items]
        retriever = CachedRetriever(live, questions, live.search_batch(questions, k=new.retrieve.k))
    golds = [q.answers for q in items]
    answerable = [q.answerable for q in items]
    agreement = []
    totals = {"baseline": [0.0, 0.0], "new": [0.0, 0.0]}  # wall s, CPU s
    for i, spec in enumerate(specs):
        order = ["baseline", "new"] if i % 2 == 0 else ["new", "baseline"]
        got: dict[str, Answered] = {}
        for lab in order:
            got[lab] = a = answer_all(cfgs[lab], spec, items, retriever, adapters)
            totals[lab][0] += a.run.seconds
            totals[lab][1] += a.cpu_s
            print(f"answer {spec.name:<7} {lab:<9} ({a.kind}): {a.run.seconds:6.1f} s wall, {a.cpu_s:6.1f} s CPU  "
                  f"({load_now()})", flush=True)
        b, n = got["baseline"], got["new"]
        same = sum(x.text == y.text for x, y in zip(b.run.answers, n.run.answers)) / len(items)
        sb = score_answers([a.text for a in b.run.answers], golds, answerable)["score"]
        sn = score_answers([a.text for a in n.run.answers], golds, answerable)["score"]
        agreement.append((spec.name, same, sb["f1"] or 0.0, sn["f1"] or 0.0, sb["em"] or 0.0, sn["em"] or 0.0))
        print(f"  {spec.name}: {100 * same:.1f}% identical answers, F1 {sb['f1'] or 0:.3f} -> {sn['f1'] or 0:.3f}, "
              f"{b.run.seconds / n.run.seconds:.2f}x wall, {b.cpu_s / n.cpu_s:.2f}x CPU", flush=True)
        for q, x, y in zip(items, b.run.answers, n.run.answers):
            if x.text != y.text and args.show_differences:
                print(f"    {q.question[:70]!r}: {x.text!r} -> {y.text!r}")
        rows.append((f"answer {spec.name} ({len(items)} q)", b.run.seconds, n.run.seconds,
                     f"{b.kind} -> {n.kind}; CPU s {b.cpu_s:.0f} -> {n.cpu_s:.0f} ({b.cpu_s / n.cpu_s:.2f}x)"))
    (bw, bc), (nw, nc) = totals["baseline"], totals["new"]
    rows.append((f"answering, {len(specs)} systems", bw, nw,
                 f"CPU s {bc:.0f} -> {nc:.0f} ({bc / nc:.2f}x); model loading excluded"))
    return agreement


if __name__ == "__main__":
    main()
