"""``workbench update``: what it costs RAG and fine-tuning when the documents change, what each answers
afterwards, and what fine-tuning forgets.

Starting from the base corpus's artifacts (its index and ``<corpus>-sft`` adapter, built when missing and
reused when current), the update folder (``workbench.update.folder``) is applied to a copy of the corpus
(``.workbench/updates/NAME/corpus``; the corpus and the update folder are only read), then each strategy
brings a system up to date and is timed:

- ``reindex``: ``indices/NAME``, the updated corpus's index, built from the base index's embeddings: only
  chunks whose text is new are encoded;
- ``continue``: ``adapters/NAME-continue``, the old adapter trained further on the update's training
  questions (synthesized from the changed documents when the update has none); with ``--replay R`` also
  ``adapters/NAME-replay``, the same plus a share R of the old training questions that still hold;
- ``retrain``: ``adapters/NAME-retrain``, a fresh adapter on the old and new training questions.

Every system (base, rag, ft = the old adapter, ft_continue, ft_replay, ft_retrain and their ``_rag``
variants) answers the invariant / updated / new eval questions through the evaluation harness; the systems
that read the old index (rag, ft_rag) also answer them before the update, which FUAR and forgetting need
(``workbench.update.measures``). The run folder ``runs/NAME`` is an evaluation run whose summary.json has
the additive ``update`` and ``side_effects`` sections and whose report.md ends with "After the update".
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from workbench.core.artifacts import check_replaceable
from workbench.core.config import RunConfig
from workbench.core.console import Stages, stage_console
from workbench.core.errors import WorkbenchError
from workbench.core.locks import acquire_locks, lock_name, release_locks
from workbench.core.measure import measured
from workbench.core.paths import QA_FILE, adapters_dir, check_name, indices_dir, runs_dir, safe_name, state_dir
from workbench.core.records import read_chunks, read_jsonl, write_jsonl
from workbench.core.text import normalize_answer
from workbench.corpus.ingest import decode_bytes, ingest_corpus, list_documents
from workbench.corpus.qa import QAItem, load_qa
from workbench.evaluation.evaluate import score_run, write_run
from workbench.evaluation.side_effects import side_effects as general_probe
from workbench.evaluation.systems import UPDATE_ROLES, adapter_plan
from workbench.retrieval.index import CHUNKS, build_index, default_index_name, load_index, resolve_index_dir
from workbench.retrieval.retrieve import Retriever
from workbench.training.adapters import adapter_dir, default_adapter_name
from workbench.training.finetune import FinetuneResult, continue_finetune, finetune
from workbench.update.folder import QuestionSets, UpdatePlan, question_sets, read_update, write_updated_corpus
from workbench.update.measures import system_update
from workbench.update.report import update_appendix

STRATEGIES = ("reindex", "continue", "retrain")


@dataclass
class UpdateConfig:
    """What ``workbench update`` does on top of the run settings."""

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    """Any of reindex (incremental index update), continue (train the old adapter further), retrain (a fresh
    adapter on old + new data). Retrieval systems need reindex."""
    replay: float = 0.0
    """With continue: also train ``ft_replay``, the old adapter continued with this share of the old training
    questions mixed in (0: no replay run)."""
    invariant_limit: int | None = None
    """Score at most this many invariant questions (a seeded sample); None: all."""
    seed: int = 0

    def __post_init__(self):
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise WorkbenchError(f"unknown update strategy {unknown[0]!r}" if unknown else "no update strategy",
                                 f"use some of: {', '.join(STRATEGIES)}")
        if not 0 <= self.replay <= 1:
            raise WorkbenchError(f"--replay {self.replay} is not a share", "use a fraction between 0 and 1")
        if self.invariant_limit is not None and self.invariant_limit < 1:
            raise WorkbenchError(f"invariant limit {self.invariant_limit} leaves no questions", "use a positive limit")


# --- what the strategies train on ----------------------------------------------------------------------

def _norm_docs(root: Path) -> str:
    docs, _ = list_documents(root)
    return " ".join(f" {normalize_answer(decode_bytes(d.read_bytes())[0] or '')} " for d in docs)


def replay_pool(sets: QuestionSets, old_adapter: Path, corpus_text: Callable[[], str]) -> list[QAItem]:
    """The old training questions that still hold after the update: the base corpus's gold train questions
    (``sets.old_train``), or, when it had none, the questions the old adapter was trained on
    (``train_data.jsonl``) whose answer still occurs in the updated corpus (``corpus_text()``)."""
    if sets.old_train:
        return list(sets.old_train)
    path = old_adapter / "train_data.jsonl"
    if not path.is_file():
        return []
    text = corpus_text()
    rows = [r for r in read_jsonl(path) if r.get("split") == "train" and r.get("question") and r.get("target")]
    return [QAItem(id=f"old{i}", question=r["question"], answers=[r["target"]], split="train",
                   fact_id=r.get("fact_id"))
            for i, r in enumerate(rows) if f" {normalize_answer(r['target'])} " in text]


def sample_replay(pool: list[QAItem], share: float, seed: int = 0) -> list[QAItem]:
    """``round(share * len(pool))`` questions of the pool (seeded, file order kept)."""
    k = round(share * len(pool))
    keep = set(random.Random(seed).sample(range(len(pool)), k)) if k else set()
    return [q for i, q in enumerate(pool) if i in keep]


# --- the scenario --------------------------------------------------------------------------------------

@dataclass
class _Names:
    run: str
    index_old: str
    adapter_old: str
    index_new: str
    adapters: dict[str, str]
    """Update role -> adapter name."""
    work: Path

    @property
    def corpus(self) -> Path:
        return self.work / "corpus"


def _names(corpus: Path, name: str | None, cfg: RunConfig, ucfg: UpdateConfig) -> _Names:
    run = check_name(name, "run") if name is not None else safe_name(f"{Path(corpus).resolve().name}-update")
    roles = [r for r, s in UPDATE_ROLES.items() if s in ucfg.strategies or (s == "replay" and ucfg.replay > 0
                                                                            and "continue" in ucfg.strategies)]
    mode = adapter_plan(cfg, {"ft"})["ft"]
    names = _Names(run, default_index_name(corpus), default_adapter_name(corpus, mode), check_name(run, "index"),
                   {r: check_name(f"{run}-{UPDATE_ROLES[r]}", "adapter") for r in roles},
                   state_dir() / "updates" / run)
    check_replaceable(runs_dir() / run, "run")
    check_replaceable(indices_dir() / names.index_new, "index")
    for a in names.adapters.values():
        check_replaceable(adapters_dir() / a, "adapter")
    return names


def _systems(names: _Names, ucfg: UpdateConfig) -> list[str]:
    rag = "reindex" in ucfg.strategies
    out = ["base"] + (["rag"] if rag else []) + ["ft"] + (["ft_rag"] if rag else [])
    for role in names.adapters:  # replay is compared with continue closed book (forgetting, FUAR): no _rag twin
        out += [role] + ([f"{role}_rag"] if rag and role != "ft_replay" else [])
    return out


def same_passages(items: list[QAItem], old_index: str, new_index: str, cfg: RunConfig) -> set[str]:
    """Ids of the questions for which both indices put the same passages in the prompt (the top ``k``).

    Answering is deterministic (greedy) given the weights and the prompt, so a retrieval system's answer to
    such a question before the update is the one it gives after; only the others are answered again.
    """
    questions = [q.question for q in items]
    k = cfg.retrieve.k
    hits = [Retriever(load_index(name), cfg.retrieve).search_batch(questions, k=k) for name in (old_index, new_index)]
    return {q.id for q, a, b in zip(items, *hits) if [h.chunk.text for h in a] == [h.chunk.text for h in b]}


def _predecessor(system: str) -> str:
    """The system whose answers before the update a system is compared with (see update_measures)."""
    for role in UPDATE_ROLES:
        if system.startswith(role):
            return "ft" + system[len(role):]
    return system


def _write_qa(path: Path, items: list[QAItem]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, (q.to_json() for q in items))
    return path


def _predictions(rows: list[dict]) -> dict[str, dict[str, str]]:
    """system -> question id -> prediction, from a scored run's results rows."""
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        out.setdefault(r["system"], {})[r["id"]] = r.get("prediction") or ""
    return out


def update(corpus_dir: Path, update_dir: Path, cfg: RunConfig, ucfg: UpdateConfig | None = None,
           name: str | None = None, progress: bool = True, side_effects: bool = True) -> Path:
    """Apply an update folder to a corpus, bring RAG and fine-tuning up to date, and score what each answers.

    Args:
        corpus_dir: the base corpus (documents + qa.jsonl); only read.
        update_dir: the update folder (see ``workbench.update.folder``); only read.
        cfg: the run settings (a profile such as ``quick``); ``cfg.eval.systems`` is not used.
        ucfg: strategies, replay share, invariant sample.
        name: the run name (a plain name; default ``<corpus>-update``): ``runs/NAME``, ``indices/NAME``,
            ``adapters/NAME-continue|-replay|-retrain``.
        progress: progress bars and stage output.
        side_effects: run the general-ability probe on the adapters.

    Returns:
        The run folder.

    Raises:
        WorkbenchError: a bad update folder (before anything is written), a bad name or a folder in the way.
    """
    ucfg = ucfg or UpdateConfig()
    corpus_dir, update_dir = Path(corpus_dir), Path(update_dir)
    plan = read_update(corpus_dir, update_dir)
    base_qa = corpus_dir / QA_FILE
    base_items = load_qa(base_qa) if base_qa.exists() else []
    sets = question_sets(plan, base_items, ucfg.invariant_limit, ucfg.seed)
    if not sets.eval:
        raise WorkbenchError("there are no questions to score the update on (no answerable eval questions in the "
                             "corpus's qa.jsonl, no eval questions in the update's)",
                             "add eval questions of kind new or updated to the update's qa.jsonl")
    names = _names(corpus_dir, name, cfg, ucfg)
    locks = acquire_locks([lock_name("run", names.run)])  # one update of a name at a time (its work folder too)
    try:
        return _update_locked(corpus_dir, update_dir, cfg, ucfg, plan, base_items, sets, names, progress,
                              side_effects)
    finally:
        release_locks(locks)


def _update_locked(corpus_dir: Path, update_dir: Path, cfg: RunConfig, ucfg: UpdateConfig, plan: UpdatePlan,
                   base_items: list[QAItem], sets: QuestionSets, names: _Names, progress: bool,
                   side_effects: bool) -> Path:
    """The stages of :func:`update`, holding the run's lock."""
    con = stage_console()
    systems = _systems(names, ucfg)
    rag = "reindex" in ucfg.strategies
    n_stages = 3 + rag + len(names.adapters) + side_effects
    stages = Stages(n_stages, con)
    n = {s: len(v) for s, v in sets.by_set().items()}
    con.print(f"[bold]workbench update[/bold] {corpus_dir} + {update_dir}\n{plan.summary()}\n"
              f"questions: {n['invariant']} invariant"
              + (f" (sampled from {sets.n_invariant_all})" if sets.n_invariant_all > n["invariant"] else "")
              + f", {n['updated']} updated, {n['new']} new; {len(sets.left_out)} base eval questions left out "
              f"(their answer changed or left the corpus); systems {', '.join(systems)}")

    def base_stage() -> None:
        fcfg = replace(cfg.finetune, mode=adapter_plan(cfg, {"ft"})["ft"])
        if rag:
            built = build_index(corpus_dir, cfg.index, cfg.ingest, name=names.index_old, progress=progress)
            con.print(built.summary())
        res = finetune(corpus_dir, fcfg, cfg.model, name=names.adapter_old, progress=progress, run_cfg=cfg)
        con.print(res.summary())
        # the corpus's questions that still hold: its train questions the update leaves true, its eval questions
        # not left out (the retrained adapter learns the former and is guarded against the latter)
        still = {q.id for q in sets.old_train} | {q.id for q in base_items if q.split == "eval"} - set(sets.left_out)
        kept = [q for q in base_items if q.id in still]
        _write_qa(names.work / "merged-qa.jsonl", kept + plan.questions)  # checked before the corpus is written
        write_updated_corpus(plan, names.corpus, load_qa(names.work / "merged-qa.jsonl"))
        con.print(f"updated corpus: {names.corpus}")
    stages.run("base artifacts + updated corpus", base_stage)

    strategy_cost: dict[str, dict] = {}
    if rag:
        def reindex_stage() -> None:
            built, cost = measured(lambda: build_index(names.corpus, cfg.index, cfg.ingest, name=names.index_new,
                                                       progress=progress, reuse_from=names.index_old))
            m = json.loads((built.path / "manifest.json").read_text(encoding="utf-8"))
            if built.reused:  # an earlier identical update: its build's cost, from the manifest
                cost = {"seconds": m.get("seconds"), "peak_rss_mb": None}
            strategy_cost["reindex"] = {**cost, "chunks_encoded": int(m.get("n_encoded", built.n_encoded)),
                                        "chunks_total": built.n_chunks, "encode_s": m.get("encode_seconds"),
                                        "tokens_trained": 0, "reused": built.reused, "index": built.name}
            con.print(f"index {built.name}: encoded {strategy_cost['reindex']['chunks_encoded']} of "
                      f"{built.n_chunks} chunks in {cost['seconds']} s")
        stages.run("reindex", reindex_stage)

    def train(role: str) -> None:
        strategy = UPDATE_ROLES[role]
        target = names.adapters[role]
        fcfg = replace(cfg.finetune, mode="sft")
        if strategy == "retrain":
            res, cost = measured(lambda: finetune(names.corpus, fcfg, cfg.model, name=target, progress=progress,
                                                  run_cfg=cfg))
        else:
            replay = []
            if strategy == "replay":
                pool = replay_pool(sets, adapter_dir(names.adapter_old), lambda: _norm_docs(names.corpus))
                replay = sample_replay(pool, ucfg.replay, ucfg.seed)
                con.print(f"replay: {len(replay)} of {len(pool)} old training questions ({ucfg.replay:.0%})")
            # the update's train questions, guarded against every eval question (the corpus's and the update's)
            qa = _write_qa(names.work / "continue-qa.jsonl",
                           [q for q in plan.questions if q.split == "train" or q.split == "eval"]
                           + [q for q in base_items if q.split == "eval"])
            chunks = None if sets.new_train else _touched_chunks(names, plan)
            res, cost = measured(lambda: continue_finetune(names.adapter_old, names.corpus, fcfg, cfg.model, target,
                                                           qa, cfg, chunks=chunks, replay=replay, progress=progress))
        con.print(res.summary())
        strategy_cost[strategy] = _train_cost(res, cost)
    for role in names.adapters:
        stages.run(UPDATE_ROLES[role], lambda role=role: train(role))

    adapters = {"ft": names.adapter_old, **names.adapters}
    scored: dict[str, Any] = {}

    def eval_stage() -> None:
        # train questions ride along (never scored): the harness calibrates on a file's train split
        train = sets.new_train + sets.old_train
        eval_qa = _write_qa(names.work / "eval-qa.jsonl", sets.eval + train)
        ecfg = replace(cfg, eval=replace(cfg.eval, systems=systems, limit=None))
        after = score_run(names.corpus, ecfg, qa_path=eval_qa, index=names.index_new if rag else None,
                          out=runs_dir() / names.run, progress=progress, adapters=adapters,
                          extra_cost={"update_strategies": strategy_cost})
        scored["after"] = after
        before_systems = [s for s in ("rag", "ft_rag") if s in systems]
        scored["before"] = {}
        if not before_systems:
            return
        same = same_passages(sets.eval, names.index_old, names.index_new, cfg)
        todo = [q for q in sets.eval if q.id not in same]
        con.print(f"before the update: {', '.join(before_systems)} answer the {len(todo)} questions whose passages "
                  f"the old index retrieves differently; for the other {len(same)} the prompt is the same, and so "
                  "the answer")
        if todo:
            base_docs = {d.relative_to(corpus_dir).as_posix() for d in list_documents(corpus_dir)[0]}
            before_qa = _write_qa(names.work / "before-qa.jsonl",
                                  [replace(q, doc=q.doc if q.doc in base_docs else None) for q in todo]
                                  + [q for q in base_items if q.split == "train"])
            before = score_run(corpus_dir, replace(cfg, eval=replace(cfg.eval, systems=before_systems, limit=None)),
                               qa_path=before_qa, index=names.index_old, out=names.work / "before",
                               progress=progress, adapters={"ft": names.adapter_old})
            scored["before"] = _predictions(before.rows)
        after_preds = _predictions(after.rows)
        for s in before_systems:
            scored["before"][s] = {**{q: after_preds[s][q] for q in same}, **scored["before"].get(s, {})}
    stages.run("evaluate (after and before the update)", eval_stage)

    if side_effects:
        def probe_stage() -> None:
            scored["side_effects"] = general_probe(cfg, adapters)
        stages.run("side effects (general-ability probe)", probe_stage)

    def report_stage() -> None:
        result = scored["after"]
        after = _predictions(result.rows)
        before = {s: scored["before"].get(s) or after[_predecessor(s)] for s in ("rag", "ft_rag") if s in after}
        by_set = sets.by_set()
        block = {"version": 1, "update_dir": str(update_dir.resolve()), "corpus": str(corpus_dir.resolve()),
                 "updated_corpus": str(names.corpus), "changes": plan.to_json(),
                 "sets": {**{s: len(v) for s, v in by_set.items()}, "invariant_available": sets.n_invariant_all,
                          "left_out": len(sets.left_out), "left_out_ids": sets.left_out},
                 "strategies": strategy_cost, "replay": ucfg.replay, "adapters": adapters,
                 "index_before": names.index_old, "index_after": names.index_new if rag else None,
                 "stages_s": {k: round(v, 2) for k, v in stages.timings.items()}, "systems": {}}
        for s in systems:
            pred = _predecessor(s)
            prior = before.get(pred) or after[pred]
            block["systems"][s] = {"predecessor": pred, "strategies": _strategies_of(s),
                                   "update_cost_s": _cost_of(s, strategy_cost),
                                   **system_update(after[s], prior, by_set)}
        result.summary["update"] = block
        if "side_effects" in scored:
            result.summary["side_effects"] = scored["side_effects"]
        result.appendix.append(update_appendix)
        scored["final"] = write_run(result)
        con.print(f"report: {scored['final'] / 'report.md'}")
    stages.run("report", report_stage)
    return scored["final"]


def _touched_chunks(names: _Names, plan: UpdatePlan) -> list:
    """The updated index's chunks of replaced and added documents (what continue synthesizes questions from)."""
    folder = resolve_index_dir(names.index_new)
    if not (folder / CHUNKS).exists():
        chunks = ingest_corpus(names.corpus, progress=False).chunks
    else:
        chunks = read_chunks(folder / CHUNKS)
    touched = set(plan.touched)
    return [c for c in chunks if c.doc in touched]


def _train_cost(res: FinetuneResult, cost: dict) -> dict:
    if res.reused:  # current from an earlier identical update: the cost its manifest recorded
        m = json.loads((res.path / "manifest.json").read_text(encoding="utf-8"))
        cost = {"seconds": m.get("seconds"), "peak_rss_mb": None}
    return {**cost, "tokens_trained": res.tokens_seen, "n_examples": res.n_examples, "data_source": res.data_source,
            "adapter": res.name, "reused": res.reused}


def _strategies_of(system: str) -> list[str]:
    out = [UPDATE_ROLES[r] for r in UPDATE_ROLES if system.startswith(r)]
    if system.endswith("rag"):
        out.append("reindex")
    return out


def _cost_of(system: str, strategy_cost: dict[str, dict]) -> float:
    """A system's update cost in seconds: the strategies that brought it up to date (0 for base and ft)."""
    return round(sum((strategy_cost.get(s) or {}).get("seconds") or 0.0 for s in _strategies_of(system)), 2)

