"""ragas metrics for every system: string and context metrics always, judge metrics when configured.

Uses ragas 0.4: ``NonLLMStringSimilarity`` and ``RougeScore`` from ``ragas.metrics.collections`` (the
modern API), ``NonLLMContextRecall`` / ``NonLLMContextPrecisionWithReference`` from the classic
single-turn API (they have no collections version yet), and the judge metrics ``Faithfulness``,
``AnswerRelevancy`` (ragas' new name for ResponseRelevancy) and ``FactualCorrectness`` from collections,
driven by any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama) through ``llm_factory``.

A metric that cannot run is reported in ``skipped`` with the reason, never as 0; a judge answer that
fails to parse (or gives no score) is counted in ``failures`` and left out of the mean, never a NaN.
"""
from __future__ import annotations

import asyncio
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from workbench.retrieval.embed import Embedder

JUDGE_METRICS = ("faithfulness", "answer_relevancy", "factual_correctness")
STRING_METRICS = ("string_similarity", "rouge_l")
CONTEXT_METRICS = ("context_recall", "context_precision")


@dataclass
class RagasSample:
    """One (question, system) pair as the ragas metrics see it.

    Attributes:
        question: the question text.
        response: the system's answer.
        references: acceptable gold answers (empty for unanswerable questions).
        retrieved_contexts: passages the system was given (None: closed book).
        reference_contexts: passages that hold the answer (None/empty: unknown).
        abstained: the system declined to answer (no claims to judge).
    """

    question: str
    response: str
    references: list[str]
    retrieved_contexts: list[str] | None = None
    reference_contexts: list[str] | None = None
    abstained: bool = False


@dataclass
class JudgeConfig:
    """An OpenAI-compatible chat endpoint that judges answers."""

    base_url: str
    model: str | None = None
    """Model name; None takes the first one the endpoint lists."""
    api_key: str | None = None
    """None reads OPENAI_API_KEY (local servers accept any value)."""
    timeout_s: float = 120.0
    concurrency: int = 4
    embedder: str | None = None
    """Embedder for answer relevancy (a workbench.retrieval.embed.Embedder name); None = the default."""
    checked: bool = False
    """Set by ``resolve_judge``: reachability was checked and ``model`` is filled in."""


@dataclass
class RagasResult:
    """Means over the samples each metric could score, per-sample values, and what did not run."""

    scores: dict[str, float] = field(default_factory=dict)
    per_item: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    n_scored: dict[str, int] = field(default_factory=dict)


def _quiet_ragas() -> None:
    # ragas sends usage analytics unless told not to; nothing here may reach the network uninvited.
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")


def ragas_scores(samples: list[RagasSample], judge: JudgeConfig | None = None,
                 judge_skipped: str | None = None) -> RagasResult:
    """Run the ragas metrics on one system's answers.

    Args:
        samples: one per question, in question order.
        judge: endpoint for the judge metrics; None skips them (reported as skipped).
        judge_skipped: why there is no judge (e.g. it was unreachable), for the skipped entries.

    Returns:
        RagasResult; ``per_item[i]`` maps metric name to the value for sample i where it ran.
    """
    _quiet_ragas()
    result = RagasResult(per_item=[{} for _ in samples])
    tasks = _string_tasks(samples) + _context_tasks(samples, result)
    if judge is not None and not judge.checked:
        judge, judge_skipped = resolve_judge(judge)
    if judge is None:
        why = judge_skipped or "no judge configured (set eval.judge_base_url)"
        result.skipped.update({m: why for m in JUDGE_METRICS})
    else:
        tasks += _judge_tasks(samples, judge, result)
    _run(tasks, result, concurrency=judge.concurrency if judge else 8)
    for name in {t[0] for t in tasks}:
        vals = [row[name] for row in result.per_item if name in row]
        if vals:
            result.scores[name] = sum(vals) / len(vals)
            result.n_scored[name] = len(vals)
        elif name not in result.skipped:
            result.skipped[name] = f"all {result.failures.get(name, 0)} calls failed"
    return result


Task = tuple[str, int, Callable[[], Awaitable[float]]]


def _string_tasks(samples: list[RagasSample]) -> list[Task]:
    from ragas.metrics.collections import NonLLMStringSimilarity, RougeScore

    sim, rouge = NonLLMStringSimilarity(), RougeScore(rouge_type="rougeL", mode="fmeasure")

    def best(metric, s: RagasSample):
        async def go() -> float:
            return max([(await metric.ascore(reference=r, response=s.response)).value for r in s.references])
        return go

    tasks: list[Task] = []
    for i, s in enumerate(samples):
        if s.references:
            tasks += [("string_similarity", i, best(sim, s)), ("rouge_l", i, best(rouge, s))]
    return tasks


def _context_tasks(samples: list[RagasSample], result: RagasResult) -> list[Task]:
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics._context_precision import NonLLMContextPrecisionWithReference
    from ragas.metrics._context_recall import NonLLMContextRecall

    recall, precision = NonLLMContextRecall(), NonLLMContextPrecisionWithReference()
    tasks: list[Task] = []
    for i, s in enumerate(samples):
        if s.retrieved_contexts and s.reference_contexts:
            st = SingleTurnSample(retrieved_contexts=s.retrieved_contexts,
                                  reference_contexts=s.reference_contexts)
            tasks += [("context_recall", i, lambda st=st: recall.single_turn_ascore(st)),
                      ("context_precision", i, lambda st=st: precision.single_turn_ascore(st))]
    if not any(s.retrieved_contexts for s in samples):
        result.skipped.update({m: "system retrieves no passages" for m in CONTEXT_METRICS})
    elif not tasks:
        result.skipped.update({m: "no question has known reference passages" for m in CONTEXT_METRICS})
    return tasks


def check_judge(judge: JudgeConfig) -> tuple[str | None, str | None]:
    """Ask the endpoint which models it serves.

    Returns:
        ``(model, None)`` when it answers (model: the configured one, else the first listed), or
        ``(None, why)`` when it cannot be reached.
    """
    import httpx

    url = judge.base_url.rstrip("/") + "/models"
    key = judge.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
    try:
        r = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=5.0)
    except httpx.HTTPError as e:
        return None, f"judge endpoint {judge.base_url} is unreachable ({type(e).__name__})"
    if r.status_code in (401, 403) or r.status_code >= 500:
        return None, f"judge endpoint {judge.base_url} answered HTTP {r.status_code}"
    model = judge.model
    if model is None:
        try:
            model = r.json()["data"][0]["id"]
        except Exception:
            return None, f"judge endpoint {judge.base_url} lists no models; set eval.judge_model"
    return model, None


def resolve_judge(judge: JudgeConfig) -> tuple[JudgeConfig | None, str | None]:
    """Check the judge endpoint once: ``(judge with its model filled in, None)`` when it answers, else
    ``(None, why)`` after a warning (the judge metrics are then skipped; the rest of the run goes on)."""
    from dataclasses import replace

    model, why = check_judge(judge)
    if why:
        warnings.warn(f"{why}: skipping judge metrics ({', '.join(JUDGE_METRICS)})", stacklevel=2)
        return None, why
    return replace(judge, model=model, checked=True), None


def _judge_tasks(samples: list[RagasSample], judge: JudgeConfig, result: RagasResult) -> list[Task]:
    model = judge.model
    from openai import AsyncOpenAI
    from ragas.llms import llm_factory
    from ragas.metrics.collections import AnswerRelevancy, FactualCorrectness, Faithfulness

    client = AsyncOpenAI(base_url=judge.base_url,
                         api_key=judge.api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
                         timeout=judge.timeout_s, max_retries=1)
    llm = llm_factory(model, client=client)
    faith, fact = Faithfulness(llm=llm), FactualCorrectness(llm=llm)
    relevancy = AnswerRelevancy(llm=llm, embeddings=_ragas_embedding(_judge_encoder(judge.embedder)))
    tasks: list[Task] = []
    for i, s in enumerate(samples):
        if not s.response.strip() or s.abstained:
            continue  # a refusal makes no claims to judge
        if s.retrieved_contexts:
            tasks.append(("faithfulness", i, _value(faith.ascore, user_input=s.question, response=s.response,
                                                    retrieved_contexts=s.retrieved_contexts)))
        tasks.append(("answer_relevancy", i, _value(relevancy.ascore, user_input=s.question,
                                                    response=s.response)))
        if s.references:
            tasks.append(("factual_correctness", i, _value(fact.ascore, response=s.response,
                                                           reference="; ".join(s.references))))
    if not any(s.retrieved_contexts for s in samples):
        result.skipped["faithfulness"] = "system retrieves no passages"
    return tasks


def _value(fn: Callable[..., Awaitable[Any]], **kwargs: Any) -> Callable[[], Awaitable[float]]:
    async def go() -> float:
        return (await fn(**kwargs)).value
    return go


def _run(tasks: list[Task], result: RagasResult, concurrency: int) -> None:
    """Run all metric calls concurrently; store finite values, count exceptions and NaNs as failures."""
    if not tasks:
        return

    async def main() -> list[Any]:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(make: Callable[[], Awaitable[float]]) -> Any:
            async with sem:
                try:
                    return await make()
                except Exception as e:  # a judge that returns unparseable output, a timeout, ...
                    return e
        return await asyncio.gather(*(one(make) for _, _, make in tasks))

    for (name, i, _), value in zip(tasks, _run_coroutine(main())):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            result.per_item[i][name] = float(value)
        else:
            result.failures[name] = result.failures.get(name, 0) + 1


def _run_coroutine(coro: Awaitable[Any]) -> Any:
    """asyncio.run, also from inside a running loop (e.g. Streamlit or Jupyter) via a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _judge_encoder(name: str | None) -> Callable[[list[str]], Any]:
    """``encode(texts) -> (n, dim) array`` of the workbench embedder (default: the embedded MiniLM)."""

    embedder = Embedder(name) if name else Embedder()
    return embedder.encode


def _ragas_embedding(encode: Callable[[list[str]], Any]) -> Any:
    """An ``encode`` function behind ragas' modern embedding interface (answer relevancy needs one)."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class WorkbenchEmbedding(BaseRagasEmbedding):
        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return [float(x) for x in encode([text])[0]]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return [[float(x) for x in row] for row in encode(list(texts))]

    return WorkbenchEmbedding()
