"""The evaluation harness: every system answers the same eval questions; one scorer; one run folder.

``evaluate`` writes ``runs/RUN/`` (results.jsonl, summary.json, report.md, plots/*.png) atomically: the
folder is built under a temporary name and renamed into place, so a failed run never replaces a
previous one. Callers that add sections of their own (``workbench run``: side effects and stage timings;
``workbench update``: the update section) call ``score_run`` inside ``run_lock``, add them to the
``RunResult``, and write it once with ``write_run``. ``build_results`` is the pure part (answers in, rows
and summary out), tested without models.
"""
from __future__ import annotations

import datetime as _dt
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from workbench.answering.remote import backend_cost
from workbench.core.artifacts import atomic_dir, check_replaceable, make_manifest, recover_leftovers, write_json
from workbench.core.config import RunConfig, to_dict
from workbench.core.errors import WorkbenchError
from workbench.core.locks import acquire_locks, lock_name, release_locks
from workbench.core.measure import PeakMemory
from workbench.core.paths import qa_path as default_qa_path
from workbench.core.paths import runs_dir, safe_name
from workbench.core.records import write_jsonl
from workbench.corpus.ingest import corpus_fingerprint
from workbench.corpus.qa import QAItem, eval_items, load_qa, warn_unknown_docs
from workbench.evaluation.abstention import (
    abstention_section,
    calibrate_runs,
    calibration_questions,
    calibration_rows,
    index_fingerprint,
)
from workbench.evaluation.metrics import (
    ANSWER_METRICS,
    bootstrap_ci,
    holm,
    mean,
    normalize_answer,
    paired_test,
    score_answers,
    wilson,
)
from workbench.evaluation.plots import make_plots
from workbench.evaluation.ragas_metrics import JudgeConfig, RagasSample, ragas_scores, resolve_judge
from workbench.evaluation.report import build_report
from workbench.evaluation.retrieval_eval import retrieval_metrics
from workbench.evaluation.systems import (
    CachedRetriever,
    SystemContext,
    check_adapters,
    default_adapters,
    order_by_weights,
    resolve_systems,
    run_system,
)
from workbench.retrieval.index import build_index, default_index_name, index_status, load_index
from workbench.retrieval.retrieve import Retriever
from workbench.training.adapters import adapter_dir
from workbench.training.trainset import corpus_chunks

RUN_FORMAT_VERSION = 1

RETRIEVAL_KS = (1, 3, 5, 10)
SUMMARY_VERSION = 1
NO_KIND = "other"


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays clean for results."""
    print(msg, file=sys.stderr, flush=True)


# --- inputs --------------------------------------------------------------------------------------

def load_eval_items(corpus_dir: Path, qa_path: Path | None, limit: int | None) -> tuple[Path, list[QAItem]]:
    """The eval split of the corpus's (or the given) question file, first ``limit`` questions.

    Raises:
        WorkbenchError: missing corpus folder or question file, bad lines, no eval questions.
    """

    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise WorkbenchError(f"corpus folder {corpus_dir} not found", "pass the folder that holds the documents")
    qa = default_qa_path(corpus_dir, qa_path)
    items = eval_items(load_qa(qa))
    warn_unknown_docs(items, corpus_dir, qa)
    if limit is not None:
        if limit < 1:
            raise WorkbenchError(f"--limit {limit} leaves no questions", "use a positive limit")
        items = items[:limit]
    return qa, items


def run_folder(corpus_dir: Path, out: Path | None) -> Path:
    """Where the run goes: ``out``, or ``runs/<corpus>-<timestamp>``.

    Raises:
        WorkbenchError: ``out`` exists and is not an earlier run folder (it would be replaced).
    """
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return runs_dir() / f"{safe_name(Path(corpus_dir).resolve().name)[:100]}-{stamp}"

    out = Path(out)
    check_replaceable(out, "run")
    return out


def ensure_index(corpus_dir: Path, cfg: RunConfig, name: str | None, progress: bool = True) -> tuple[Any, dict]:
    """Load the corpus's index, building (or incrementally updating) it first when missing or stale.

    Returns:
        ``(index, cost)`` where cost holds the index name, ``index_build_s`` (this build's time, or the
        reused index's original build time from its manifest) and ``index_reused``.
    """

    name = name or default_index_name(corpus_dir)
    status = index_status(name, corpus_dir, cfg.index, cfg.ingest)
    built = None
    if status != "current" and ("/" in str(name) or "\\" in str(name)):
        raise WorkbenchError(f"index folder {name} is {status}",
                             "a folder given as a path is only read, never rebuilt: build a current index with "
                             "`workbench index CORPUS --name NAME` and pass --index NAME")
    if status != "current":
        log(f"index {name}: {status}; building it")
        built = build_index(corpus_dir, cfg.index, cfg.ingest, name=name, progress=progress)
        log(built.summary())
    index = load_index(name, corpus_dir)
    build_s = built.seconds if built is not None else index.manifest.get("seconds")
    return index, {"index": index.name, "index_build_s": build_s, "index_reused": built is None}


def adapter_cost(adapters: dict[str, str], roles: set[str]) -> dict:
    """Fine-tuning time and tokens of the adapters used, read from their manifests."""
    import json


    per: dict[str, dict] = {}
    for role in sorted(roles):
        path = adapter_dir(adapters[role]) / "manifest.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        per[adapters[role]] = {
            "mode": m.get("mode"),
            "seconds": m.get("seconds"),
            "tokens": m.get("tokens_seen"),
            "data_source": m.get("data_source"),
        }
    secs = [v["seconds"] for v in per.values() if v["seconds"] is not None]
    toks = [v["tokens"] for v in per.values() if v["tokens"] is not None]
    return {"finetune_s": sum(secs) if secs else None, "finetune_tokens": sum(toks) if toks else None,
            "adapters": per}


def reference_contexts(items: list[QAItem], chunks: list[Any]) -> list[list[str]]:
    """Per question, the index chunks that hold a gold answer (from its ``doc`` when it names one).

    These are the "reference contexts" of ragas' context recall/precision.
    """
    norm = [f" {normalize_answer(c.text)} " for c in chunks]
    out = []
    for q in items:
        golds = [f" {normalize_answer(a)} " for a in q.answers if normalize_answer(a)]
        refs = [c.text for c, t in zip(chunks, norm)
                if (not q.doc or c.doc == q.doc) and any(g in t for g in golds)]
        out.append(refs)
    return out


# --- the harness ---------------------------------------------------------------------------------

@dataclass
class RunResult:
    """A scored evaluation before it is written: the rows of results.jsonl, the summary, extra JSON Lines
    files (name -> rows), and report sections a caller appends (markdown lines, given the plots folder so a
    section may draw its own plot)."""

    folder: Path
    rows: list[dict]
    summary: dict
    extra: dict[str, list[dict]] = field(default_factory=dict)
    appendix: list[Callable[[dict, Path], list[str]]] = field(default_factory=list)


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run's lock (only for a folder under ``runs/``) while it is scored and written."""
    locks = acquire_locks([lock_name("run", folder.name)]) if folder.parent == runs_dir() else []
    try:
        yield
    finally:
        release_locks(locks)


def evaluate(corpus_dir: Path, cfg: RunConfig, qa_path: Path | None = None, index: str | None = None,
             adapter: str | None = None, out: Path | None = None, progress: bool = True,
             extra_cost: dict | None = None, adapters: dict[str, str] | None = None) -> Path:
    """Score every configured system on the corpus's eval questions and write a run folder.

    Args:
        corpus_dir: the corpus folder.
        cfg: resolved configuration (``cfg.eval.systems`` picks the systems).
        qa_path: question file (default: ``CORPUS/qa.jsonl``); only its eval split is used.
        index: index name or folder (default: the corpus folder's name; built if missing or stale).
        adapter: adapter for the ``ft`` / ``ft_rag`` systems (default ``<corpus>-sft``).
        out: run folder (default ``runs/<corpus>-<timestamp>``).
        progress: progress bars and stage messages.
        extra_cost: cost entries measured by the caller, merged into ``cost``.
        adapters: adapter role ("ft", "raft", "scratch", ...) -> name or folder, overriding the defaults
            (``<corpus>-sft``, ``<corpus>-raft``, ``<corpus>-scratch``); ``adapter`` overrides "ft".

    Returns:
        The run folder.
    """
    folder = run_folder(Path(corpus_dir), out)
    with run_lock(folder):
        return write_run(score_run(corpus_dir, cfg, qa_path=qa_path, index=index, adapter=adapter, out=folder,
                                   progress=progress, extra_cost=extra_cost, adapters=adapters))


def score_run(corpus_dir: Path, cfg: RunConfig, qa_path: Path | None = None, index: str | None = None,
              adapter: str | None = None, out: Path | None = None, progress: bool = True,
              extra_cost: dict | None = None, adapters: dict[str, str] | None = None) -> RunResult:
    """Answer and score like ``evaluate`` (same arguments), without writing: the caller adds its sections to
    the result and writes it once with ``write_run`` (holding ``run_lock``)."""

    t_start = time.perf_counter()
    corpus_dir = Path(corpus_dir)
    qa, items = load_eval_items(corpus_dir, qa_path, cfg.eval.limit)
    specs = resolve_systems(cfg.eval.systems)
    adapters = {**default_adapters(corpus_dir), **(adapters or {})}
    if adapter:
        adapters["ft"] = adapter
    check_adapters(specs, adapters, corpus_dir, cfg.model)
    folder = run_folder(corpus_dir, out)
    with PeakMemory() as memory:
        return _score_into(folder, corpus_dir, cfg, qa, items, specs, adapters, index, progress, t_start,
                           extra_cost, memory)


def _score_into(folder: Path, corpus_dir: Path, cfg: RunConfig, qa: Path, items: list[QAItem], specs: list,
                   adapters: dict[str, str], index: str | None, progress: bool, t_start: float,
                extra_cost: dict | None, memory: PeakMemory) -> RunResult:
    """Answer with every system and score (nothing written)."""
    ctx = SystemContext(cfg=cfg, adapters=adapters, progress=progress)
    cost: dict[str, Any] = {"index_build_s": None, "finetune_s": None, "finetune_tokens": None}
    cost.update(backend_cost(cfg.model, cfg.generate.copy_spans))  # where the model ran (a served model: URL, copy decoding)
    retrieval: dict[str, Any] = {}
    # the corpus language, as the index recorded it (unknown without retrieval unless ingest.language is set)
    language: dict[str, Any] = {"language": None if cfg.ingest.language == "auto" else cfg.ingest.language}
    refs: list[list[str]] | None = None
    hits: list[list[Any]] | None = None
    chunks: list[Any] | None = None
    fingerprints: dict[str, str | None] = {"corpus_fingerprint": None, "index_fingerprint": None}
    if any(s.retrieval and s.build is None for s in specs):
        idx, index_cost = ensure_index(corpus_dir, cfg, index, progress)
        language = {"language": idx.language, "languages": idx.manifest.get("languages") or {}}
        cost.update(index_cost)
        live = Retriever(idx, cfg.retrieve)
        k_max = max(max(RETRIEVAL_KS), cfg.retrieve.k)
        t0 = time.perf_counter()
        hits = live.search_batch([q.question for q in items], k=k_max)
        retrieval_s = time.perf_counter() - t0
        retrieval = retrieval_block(items, hits, cfg, retrieval_s)
        refs = reference_contexts(items, idx.chunks)
        chunks = idx.chunks
        fingerprints = {"corpus_fingerprint": idx.manifest.get("corpus_fingerprint"),
                        "index_fingerprint": index_fingerprint(idx.manifest)}
    fingerprints["corpus_fingerprint"] = fingerprints["corpus_fingerprint"] or corpus_fingerprint(corpus_dir)
    calib = calibration_questions(qa, items, chunks if chunks is not None else corpus_chunks(corpus_dir, cfg), cfg)
    if hits is not None:
        calib_q = [q.question for q in calib.items]
        ctx.retriever = CachedRetriever(live, [q.question for q in items] + calib_q,
                                        hits + live.search_batch(calib_q, k=k_max))
    cost.update(adapter_cost(adapters, {s.adapter for s in specs if s.adapter and s.build is None}))

    runs, calib_runs = [], {}
    for spec in order_by_weights(specs):
        if progress:
            log(f"answering {len(items)} questions with {spec.name} ({spec.description}), then "
                f"{len(calib.items)} calibration questions")
        runs.append(run_system(spec, ctx, items))
        calib_runs[spec.name] = run_system(spec, ctx, calib.items)
    ctx.release()
    runs.sort(key=lambda r: [s.name for s in specs].index(r.name))  # back to the requested order
    calibrators = calibrate_runs(runs, calib_runs, calib, cfg, folder.name)
    # calibration's cost: the time every system spent answering its calibration questions (measured, not
    # estimated), against the whole evaluation's wall time
    cost["calibration_s"] = round(sum(r.seconds for r in calib_runs.values()), 3)
    cost["calibration_questions"] = len(calib.items)

    cost["eval_s"] = time.perf_counter() - t_start
    cost["peak_rss_mb"] = memory.mb
    cost.update(extra_cost or {})
    if progress:
        log("scoring (metrics, bootstrap intervals, paired tests, ragas)")
    cost["calibration_share"] = round(cost["calibration_s"] / cost["eval_s"], 4) if cost["eval_s"] else None
    rows, summary = build_results(items, runs, cfg, corpus=str(corpus_dir), qa=str(qa), retrieval=retrieval,
                                  cost=cost, reference_contexts=refs)
    summary["abstention"] = abstention_section(items, runs, calibrators, calib, calib_runs, cfg, fingerprints)
    extra = {"calibration.jsonl": calibration_rows(calib, calib_runs, calibrators)}
    summary["config"]["adapters"] = {r: adapters[r] for r in {s.adapter for s in specs if s.adapter}}
    summary["index"] = {"name": cost.get("index"), "fingerprint": fingerprints["index_fingerprint"]}
    summary.update(language)
    return RunResult(folder, rows, summary, extra)


def retrieval_block(items: list[QAItem], hits: list[list[Any]], cfg: RunConfig, seconds: float) -> dict:
    """summary.json's ``retrieval``: the scalar retrieval metrics, plus mode, k and timing."""

    m = retrieval_metrics(items, hits, ks=RETRIEVAL_KS)
    block = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    block.update(mode=cfg.retrieve.mode, k=cfg.retrieve.k, n=sum(q.answerable for q in items),
                 query_s_mean=seconds / max(1, len(items)))
    return block


# --- scoring (pure) ------------------------------------------------------------------------------

def build_results(items: list[QAItem], runs: list[Any], cfg: RunConfig, *, corpus: str, qa: str,
                  retrieval: dict | None = None, cost: dict | None = None,
                  reference_contexts: list[list[str]] | None = None,
                  is_abstention: Callable[[str], bool] | None = None) -> tuple[list[dict], dict]:
    """Score the systems' answers: results.jsonl rows and the summary.json dict (design.md contract).

    Args:
        items: the eval questions.
        runs: one ``SystemRun`` per system (answers in question order).
        cfg: the run's config (bootstrap size, seed, judge).
        corpus: corpus path (for the summary).
        qa: question file path.
        retrieval: the retrieval block.
        cost: the cost block (build times, peak memory).
        reference_contexts: per question, passages holding the answer (for ragas context metrics).
        is_abstention: abstention rule (default ``workbench.core.text.is_abstention``).

    Returns:
        ``(rows, summary)``.
    """

    golds = [q.answers for q in items]
    answerable = [q.answerable for q in items]
    judge, judge_skipped = None, None
    if cfg.eval.judge_base_url:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported below as one line, and in the summary
            judge, judge_skipped = resolve_judge(JudgeConfig(cfg.eval.judge_base_url, cfg.eval.judge_model,
                                                             embedder=cfg.index.embedder))
        if judge_skipped:
            log(f"warning: {judge_skipped}; judge metrics (faithfulness, answer relevancy, factual "
                f"correctness) are skipped, everything else is scored")
    rows: list[dict] = []
    systems: dict[str, dict] = {}
    per_system_items: dict[str, list[dict]] = {}
    for run in runs:
        texts = [a.text for a in run.answers]
        scored = score_answers(texts, golds, answerable, is_abstention)
        samples = [RagasSample(q.question, t, q.answers, _contexts(a),
                               reference_contexts[i] if reference_contexts else None, s["abstained"])
                   for i, (q, t, a, s) in enumerate(zip(items, texts, run.answers, scored["per_item"]))]
        rg = ragas_scores(samples, judge, judge_skipped)
        per_system_items[run.name] = scored["per_item"]
        systems[run.name] = _system_block(run, items, scored, rg, cfg)
        for q, a, s, r in zip(items, run.answers, scored["per_item"], rg.per_item):
            rows.append(_row(q, run.name, a, s, r))
    summary = {
        "version": SUMMARY_VERSION,
        "corpus": corpus, "qa": qa, "n_questions": len(items),
        "n_answerable": sum(answerable), "n_unanswerable": len(items) - sum(answerable),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "prompt": to_dict(cfg.prompt),  # how every system was prompted and its replies post-processed
        "systems": systems,
        "retrieval": retrieval or {},
        "cost": cost or {},
        "pairwise": pairwise(items, per_system_items, cfg),
        "pairwise_by_kind": pairwise_by_kind(items, per_system_items, cfg),
    }
    return rows, summary


def _contexts(answer: Any) -> list[str] | None:
    hits = getattr(answer, "hits", None)
    return [h.chunk.text for h in hits] if hits else None


def _round(x: Any, nd: int = 4) -> Any:
    return round(x, nd) if isinstance(x, float) else x


def _system_block(run: Any, items: list[QAItem], scored: dict, rg: Any, cfg: RunConfig) -> dict:
    per = scored["per_item"]
    s = scored["score"]
    n_boot, seed = cfg.eval.bootstrap, cfg.eval.seed
    block: dict[str, Any] = {m: _round(s[m]) for m in ANSWER_METRICS}
    ci = {m: bootstrap_ci([p[m] for p in per if p[m] is not None], n_boot, seed) for m in ANSWER_METRICS}
    abst = [p["abstained"] for p, q in zip(per, items) if not q.answerable]
    ci["abstain_unanswerable"] = wilson(sum(abst), len(abst))  # a rate: Wilson, not a degenerate bootstrap
    block["ci95"] = {k: [_round(v[0]), _round(v[1])] if v else None for k, v in ci.items()}
    block["abstain_unanswerable"] = _round(s["abstain_unanswerable"])
    block["abstain_answerable"] = _round(s["abstain_answerable"])
    block["n_answerable"], block["n_unanswerable"] = s["n_answerable"], s["n_unanswerable"]
    lat = [float(a.latency_s) for a in run.answers if getattr(a, "latency_s", None) is not None]
    new_tokens = sum(int(getattr(a, "n_new_tokens", 0) or 0) for a in run.answers)
    block["latency_p50_s"] = _round(_quantile(lat, 0.5))
    block["latency_p95_s"] = _round(_quantile(lat, 0.95))
    block["tokens_per_s"] = _round(new_tokens / run.seconds) if run.seconds > 0 else None
    block["answer_s"] = _round(run.seconds)
    block["load_s"] = _round(float(getattr(run, "load_s", 0.0)))
    block["new_tokens"] = new_tokens
    block["weights"] = run.weights
    block["description"] = run.description
    block["retrieval"] = bool(getattr(run, "retrieval", False))
    block["ragas"] = {k: _round(v) for k, v in sorted(rg.scores.items())}
    block["ragas_n"] = dict(sorted(rg.n_scored.items()))
    block["ragas_skipped"] = dict(sorted(rg.skipped.items()))
    block["ragas_failures"] = dict(sorted(rg.failures.items()))
    block["by_kind"] = by_kind(items, per, cfg)
    return block


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.quantile(np.asarray(values), q))


def _kinds(items: list[QAItem]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, q in enumerate(items):
        out.setdefault(q.kind or NO_KIND, []).append(i)
    return out


def by_kind(items: list[QAItem], per: list[dict], cfg: RunConfig) -> dict[str, dict]:
    """Per ``kind``: F1/EM/contains over its answerable questions, abstention over its unanswerable ones."""
    out = {}
    for kind, idx in _kinds(items).items():
        f1 = [per[i]["f1"] for i in idx if items[i].answerable]
        abst = [float(per[i]["abstained"]) for i in idx if not items[i].answerable]
        ci = bootstrap_ci(f1, cfg.eval.bootstrap, cfg.eval.seed) if f1 else None
        out[kind] = {
            "n": len(idx),
            "f1": _round(mean(f1)),
            "em": _round(mean([per[i]["em"] for i in idx if items[i].answerable])),
            "contains": _round(mean([per[i]["contains"] for i in idx if items[i].answerable])),
            "abstain": _round(mean(abst)),
            "f1_ci95": [_round(ci[0]), _round(ci[1])] if ci else None,
        }
    return out


def _metric_values(items: list[QAItem], per: list[dict], idx: list[int], metric: str) -> list[float]:
    if metric == "abstain":
        return [float(per[i]["abstained"]) for i in idx if not items[i].answerable]
    return [per[i][metric] for i in idx if items[i].answerable]


def _compare(items: list[QAItem], per_sys: dict[str, list[dict]], idx: list[int], metric: str,
             cfg: RunConfig) -> dict[str, dict]:
    out = {}
    for a, b in itertools.combinations(per_sys, 2):
        va, vb = (_metric_values(items, per_sys[s], idx, metric) for s in (a, b))
        if not va:
            continue
        t = paired_test(va, vb, n_resamples=max(2000, cfg.eval.bootstrap), seed=cfg.eval.seed)
        out[f"{a}_vs_{b}"] = {"metric": metric, "delta": _round(t["delta"]), "p_value": _round(t["p_value"]),
                              "ci95": [_round(x) for x in t["ci95"]], "n": t["n"]}
    return out


def pairwise(items: list[QAItem], per_sys: dict[str, list[dict]], cfg: RunConfig) -> dict[str, dict]:
    """Every pair of systems (in run order): F1 difference on answerable questions with its p-value,
    and the abstention difference on unanswerable ones."""
    idx = list(range(len(items)))
    f1 = _compare(items, per_sys, idx, "f1", cfg)
    em = _compare(items, per_sys, idx, "em", cfg)
    ab = _compare(items, per_sys, idx, "abstain", cfg)
    out = {}
    for a, b in itertools.combinations(per_sys, 2):
        key = f"{a}_vs_{b}"
        d: dict[str, Any] = {}
        if key in f1:
            d.update(delta_f1=f1[key]["delta"], p_value=f1[key]["p_value"], ci95_f1=f1[key]["ci95"],
                     delta_em=em[key]["delta"], p_value_em=em[key]["p_value"])
        if key in ab:
            d.update(delta_abstain=ab[key]["delta"], p_value_abstain=ab[key]["p_value"])
        out[key] = d
    for measure in ("p_value", "p_value_abstain"):  # Holm over the pairs, per measure
        keys = [k for k, d in out.items() if d.get(measure) is not None]
        for k, adj in zip(keys, holm([out[k][measure] for k in keys])):
            out[k][measure + "_holm"] = _round(adj)
    return out


def pairwise_by_kind(items: list[QAItem], per_sys: dict[str, list[dict]], cfg: RunConfig) -> dict[str, dict]:
    """Per kind, every pair on the kind's own measure: F1 when it has answerable questions, else abstention."""
    out = {}
    for kind, idx in _kinds(items).items():
        metric = "f1" if any(items[i].answerable for i in idx) else "abstain"
        out[kind] = _compare(items, per_sys, idx, metric, cfg)
    return out


def _row(q: QAItem, system: str, answer: Any, scores: dict, ragas: dict) -> dict:
    hits = getattr(answer, "hits", None) or []
    return {
        "id": q.id, "system": system, "question": q.question, "kind": q.kind, "answerable": q.answerable,
        "gold": q.answers, "doc": q.doc, "prediction": answer.text,
        "abstained": scores["abstained"], **{m: scores[m] for m in ANSWER_METRICS},
        "retrieved": [{"id": h.chunk.id, "doc": h.chunk.doc, "heading": h.chunk.heading,
                       "score": _round(float(h.score)), "rank": h.rank, "text": h.chunk.text} for h in hits],
        "citations": _jsonable(getattr(answer, "citations", None)),
        "latency_s": _round(getattr(answer, "latency_s", None)),
        "n_new_tokens": getattr(answer, "n_new_tokens", None),
        "confidence": _round(getattr(answer, "confidence", None)),
        "confidence_features": {k: _round(v) for k, v in (getattr(answer, "features", None) or {}).items()},
        "declined_at_operating_point": getattr(answer, "declined_at_operating_point", None),
        "ragas": {k: _round(v) for k, v in ragas.items()},
    }


def _jsonable(x: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def write_run(result: RunResult) -> Path:
    """Write results.jsonl, summary.json, report.md (with the result's appendix sections), plots/, the run's
    manifest and the extra JSON Lines files into ``result.folder`` atomically, once (the caller holds the
    run's lock)."""

    folder = Path(result.folder)
    recover_leftovers(folder)
    with atomic_dir(folder, kind="run") as tmp:
        write_jsonl(tmp / "results.jsonl", result.rows)
        for name, extra_rows in result.extra.items():
            write_jsonl(tmp / name, extra_rows)
        write_json(tmp / "summary.json", result.summary)
        plots = make_plots(result.summary, tmp / "plots")
        appendix = [line for section in result.appendix for line in section(result.summary, tmp / "plots")]
        plot_names = sorted(p.name for p in (tmp / "plots").glob("*.png")) if appendix else [p.name for p in plots]
        report = build_report(result.summary, result.rows, plot_names)
        if appendix:
            report = report.rstrip("\n") + "\n\n" + "\n".join(appendix).rstrip("\n") + "\n"
        (tmp / "report.md").write_text(report, encoding="utf-8")
        write_json(tmp / "manifest.json", make_manifest("run", RUN_FORMAT_VERSION, name=folder.name,
                                                        corpus=result.summary.get("corpus"),
                                                        qa=result.summary.get("qa")))
    return folder
