"""The systems under comparison: a small registry from a name to how that system answers questions.

Every built-in system answers through the same batched path (``workbench.answering.answer.answer_questions``);
they differ only in the weights (the base model or an adapter) and in whether passages are retrieved.
Every system is declared in ``SYSTEMS`` here, those ``workbench update`` trains included; ``register``
adds one that answers some other way through ``build`` (a remote endpoint, or a fake in tests).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.answering.answer import Answer, answer_questions, check_question
from workbench.answering.loader import adapter_dir, load_generator
from workbench.answering.remote import check_backend
from workbench.core.config import ModelConfig, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.corpus.qa import QAItem
from workbench.retrieval.index import build_index, load_index
from workbench.retrieval.retrieve import Retriever
from workbench.training.adapters import default_adapter_name

ADAPTER_MODES = {"ft": "sft", "raft": "raft", "scratch": "scratch"}
"""Adapter role -> the fine-tuning mode that builds it by default (``workbench finetune --mode``)."""


def default_adapters(corpus_dir: Path) -> dict[str, str]:
    """Adapter role -> the name its adapter gets by default: ``<corpus>-<mode>`` from ``workbench finetune``,
    ``<corpus>-update-<strategy>`` from ``workbench update`` (roles in ``UPDATE_ROLES``)."""
    return {**{role: default_adapter_name(corpus_dir, mode) for role, mode in ADAPTER_MODES.items()},
            **{role: default_adapter_name(corpus_dir, f"update-{s}") for role, s in UPDATE_ROLES.items()}}


@dataclass(frozen=True)
class SystemSpec:
    """How one system answers.

    Attributes:
        name: registry key, used in summary.json and on the command line.
        description: one line for reports.
        retrieval: passages are retrieved and put in the prompt.
        adapter: None for the base model, else the adapter role ("ft", "raft", "scratch") whose
            adapter supplies the weights.
        build: optional custom answerer: ``build(ctx) -> fn(items) -> list of answers`` (objects with
            text, hits, citations, latency_s, n_new_tokens like ``workbench.answering.answer.Answer``).
    """

    name: str
    description: str
    retrieval: bool
    adapter: str | None = None
    build: Callable[["SystemContext"], Callable[[list[QAItem]], list[Any]]] | None = None


UPDATE_ROLES = {"ft_continue": "continue", "ft_replay": "replay", "ft_retrain": "retrain"}
"""Adapter role of a system ``workbench update`` brings up to date -> the update strategy that trains its
adapter (``adapters/RUN-<strategy>``; by default RUN is ``<corpus>-update``)."""


def _update_systems() -> list[SystemSpec]:
    specs = []
    for role, strategy in UPDATE_ROLES.items():
        specs.append(SystemSpec(role, f"old adapter after update strategy {strategy}, closed book",
                                retrieval=False, adapter=role))
        specs.append(SystemSpec(f"{role}_rag", f"old adapter after update strategy {strategy} + retrieved "
                                "passages (updated index)", retrieval=True, adapter=role))
    return specs


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in [
    SystemSpec("base", "base model, closed book", retrieval=False),
    SystemSpec("rag", "base model + retrieved passages", retrieval=True),
    SystemSpec("ft", "fine-tuned adapter, closed book", retrieval=False, adapter="ft"),
    SystemSpec("ft_rag", "fine-tuned adapter + retrieved passages", retrieval=True, adapter="ft"),
    SystemSpec("raft", "RAFT adapter (trained to read passages) + retrieved passages", retrieval=True,
               adapter="raft"),
    SystemSpec("scratch", "model trained from scratch on the corpus, closed book", retrieval=False,
               adapter="scratch"),
    *_update_systems(),
]}
"""Every system, declared here: name -> how it answers."""


def register(spec: SystemSpec) -> SystemSpec:
    """Add (or replace) a system in the registry (a system answering some other way, through ``build``)."""
    SYSTEMS[spec.name] = spec
    return spec


def resolve_systems(names: Sequence[str]) -> list[SystemSpec]:
    """Look up system names (order kept, duplicates dropped).

    Raises:
        WorkbenchError: an unknown name, or none at all.
    """
    out: list[SystemSpec] = []
    for n in names:
        n = n.strip()
        if not n or any(s.name == n for s in out):
            continue
        if n not in SYSTEMS:
            raise WorkbenchError(f"unknown system {n!r}", f"known systems: {', '.join(SYSTEMS)}")
        out.append(SYSTEMS[n])
    if not out:
        raise WorkbenchError("no systems to evaluate", f"pick some of: {', '.join(SYSTEMS)}")
    return out


def check_adapters(specs: list[SystemSpec], adapters: dict[str, str], corpus_dir: Path,
                   model_cfg: ModelConfig | None = None) -> None:
    """Fail fast, before any model loads, when a system's adapter does not exist; over a served model
    (``model_cfg.backend`` openai), when the server is unreachable or does not serve the models needed.

    Raises:
        WorkbenchError: naming the system, the adapter, and the command that builds it (or the URL tried).
    """
    if model_cfg is not None and model_cfg.backend == "openai":
        check_backend(model_cfg, [None if s.adapter is None else adapters[s.adapter] for s in specs
                                  if s.build is None])
        return
    for spec in specs:
        if spec.adapter is None or spec.build is not None:
            continue
        name = adapters[spec.adapter]
        if not (adapter_dir(name) / "manifest.json").exists():
            raise WorkbenchError(
                f"system {spec.name!r} needs adapter {name!r}, which is not built ({adapter_dir(name)} missing)",
                _build_hint(spec.adapter, name, corpus_dir))


def _build_hint(role: str, name: str, corpus_dir: Path) -> str:
    """The command that builds the adapter ``name`` of ``role``."""
    if role in UPDATE_ROLES:
        how = "continue --replay SHARE" if role == "ft_replay" else UPDATE_ROLES[role]
        return f"build it with `workbench update {corpus_dir} UPDATE_DIR --strategies {how}`"
    return (f"build it with `workbench finetune {corpus_dir} --mode {ADAPTER_MODES[role]} --name {name}`, or run "
            f"`workbench run {corpus_dir}`")


class CachedRetriever:
    """Serves passages retrieved once for all questions, so every retrieval system sees the same ones.

    Falls back to the live retriever for a query it has not seen.
    """

    def __init__(self, retriever: Any, queries: list[str], hits: list[list[Any]]):
        self.retriever = retriever
        self._hits = dict(zip(queries, hits))

    @property
    def embedder(self) -> Any:
        """The live retriever's embedder (it ranks the passage sentences a reply may copy from)."""
        return getattr(self.retriever, "embedder", None)

    @property
    def language(self) -> str:
        """The live retriever's corpus language (answer cleaning uses its stopwords)."""
        return self.retriever.language

    def search(self, query: str, k: int | None = None) -> list[Any]:
        if query in self._hits:
            return self._hits[query][:k] if k else self._hits[query]
        return self.retriever.search(query, k=k)

    def search_batch(self, queries: list[str], k: int | None = None) -> list[list[Any]]:
        return [self.search(q, k) for q in queries]


@dataclass
class SystemContext:
    """What the systems of one evaluation share: config, adapter names, retriever, one loaded model.

    Attributes:
        cfg: the run's RunConfig.
        adapters: adapter role -> adapter name or folder.
        retriever: a retriever (set by the harness when some system retrieves).
        progress: show progress bars.
    """

    cfg: Any
    adapters: dict[str, str] = field(default_factory=dict)
    retriever: Any = None
    progress: bool = False
    _loaded: tuple[str | None, Any] | None = None

    def generator(self, role: str | None) -> Any:
        """A Generator over the base model (role None) or an adapter; keeps one model in memory."""
        if self._loaded is not None and self._loaded[0] == role:
            return self._loaded[1]
        self.release()

        gen = load_generator(self.cfg.model, self.cfg.generate, None if role is None else self.adapters[role])
        self._loaded = (role, gen)
        return gen

    def weights(self, spec: SystemSpec) -> str:
        """What a system's weights are, for the report: the base model or the adapter name."""
        if spec.build is not None:
            return spec.name
        return self.cfg.model.base_model if spec.adapter is None else self.adapters[spec.adapter]

    def release(self) -> None:
        """Drop the loaded model (systems are run grouped by weights, so each loads once)."""
        if self._loaded is None:
            return
        self._loaded = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


@dataclass
class SystemRun:
    """One system's answers to the eval questions, with wall time."""

    name: str
    answers: list[Any]
    seconds: float
    weights: str
    description: str = ""
    retrieval: bool = False
    load_s: float = 0.0
    """Time to load the weights (0 when the previous system already had them loaded)."""


def run_system(spec: SystemSpec, ctx: SystemContext, items: list[QAItem]) -> SystemRun:
    """Answer every question with one system (batched). Loading the weights is timed apart from answering."""
    t0 = time.perf_counter()
    if spec.build is not None:
        answer = spec.build(ctx)
    else:
        if spec.retrieval and ctx.retriever is None:
            raise WorkbenchError(f"system {spec.name!r} needs an index", "pass --index NAME")
        generator = ctx.generator(spec.adapter)
        retriever = ctx.retriever if spec.retrieval else None
        k = ctx.cfg.retrieve.k if spec.retrieval else None

        def answer(qs: list[QAItem]) -> list[Any]:
            return answer_questions([q.question for q in qs], generator, retriever=retriever, k=k,
                                    progress=ctx.progress, prompt=ctx.cfg.prompt, abstain=ctx.cfg.eval.abstain)
    t1 = time.perf_counter()
    answers = list(answer(items))
    seconds = time.perf_counter() - t1
    if len(answers) != len(items):
        raise RuntimeError(f"system {spec.name} returned {len(answers)} answers for {len(items)} questions")
    return SystemRun(spec.name, answers, seconds, ctx.weights(spec), spec.description, spec.retrieval,
                     load_s=t1 - t0)


def order_by_weights(specs: list[SystemSpec]) -> list[SystemSpec]:
    """Group systems that share weights so each model is loaded once (stable within a group)."""
    roles: list[str | None] = []
    for s in specs:
        if s.adapter not in roles:
            roles.append(s.adapter)
    return sorted(specs, key=lambda s: roles.index(s.adapter))


# --- one question (``workbench ask``) ------------------------------------------------------------------

def open_retriever(target: str, cfg: RunConfig, progress: bool = True) -> Any:
    """A Retriever over ``target``: an index folder, an index name, or a corpus folder (indexed if needed).

    A corpus folder's index (named after the folder, under ``indices/``) is built when missing and updated
    when stale, re-encoding only changed chunks; an index given by name or folder is only read.
    """

    path = Path(target)
    if path.is_dir() and not (path / "manifest.json").exists():
        result = build_index(path, cfg.index, cfg.ingest, progress=progress)
        index = load_index(result.path, corpus_dir=path)
    else:
        index = load_index(target, check_corpus=True)
    return Retriever(index, cfg.retrieve)


def ask(target: str, question: str, system: str = "rag", cfg: RunConfig | None = None, adapter: str | None = None,
        progress: bool = True) -> Answer:
    """Answer one question with any registered system (what ``workbench ask`` runs), through the same
    ``run_system`` path evaluation uses.

    Args:
        target: corpus folder, index name or index folder (retrieval systems read passages from it; the
            default adapter names come from its folder name).
        question: the question.
        system: a registered system name (base, rag, ft, ft_rag, raft, scratch, ...).
        cfg: a ``RunConfig`` (model, generation, prompt and retrieval settings); default: the built-in ones.
        adapter: adapter name or folder for the system's adapter role (default ``<target>-<mode>``).
        progress: show index-building progress.

    Raises:
        WorkbenchError: unknown system, empty or over-long question, missing index or adapter.
    """
    cfg = cfg or RunConfig()
    spec = resolve_systems([system])[0]
    question = check_question(question)
    adapters = default_adapters(Path(target))
    if adapter is not None and spec.adapter is not None:
        adapters[spec.adapter] = adapter
    check_adapters([spec], adapters, Path(target), cfg.model)
    ctx = SystemContext(cfg=cfg, adapters=adapters, progress=False)
    if spec.retrieval:
        ctx.retriever = open_retriever(target, cfg, progress)
        ctx.retriever.check_query(question)
    return run_system(spec, ctx, [QAItem(id="ask", question=question)]).answers[0]


def adapter_plan(cfg: RunConfig, roles: set[str]) -> dict[str, str]:
    """Adapter role -> fine-tuning mode: ``ft`` uses the configured mode when it is sft or cpt."""

    plan = {}
    for role in sorted(roles):
        mode = ADAPTER_MODES[role]
        if role == "ft" and cfg.finetune.mode in ("sft", "cpt"):
            mode = cfg.finetune.mode
        plan[role] = mode
    return plan
