"""``workbench mcp``: the project's corpus search and systems as tools for agents, on the official MCP SDK.

Tools (typed arguments, structured results; a problem is returned as a tool error, never a crash):

Every tool only reads: indices and adapters are named (never a path), must already be built in the project,
and nothing is built or written (tools carry the ``readOnlyHint`` annotation).

- ``search(query, index, k)``: the index's top-k passages.
- ``ask(question, system, index, adapter)``: one system's answer with its sources.
- ``compare(question, index, adapter)``: every system the project can run, side by side.
- ``list_artifacts()``: built indices, adapters and runs.
- ``report(run)``: a run's report (markdown) and headline scores.

Answers come from ``workbench.serving.pool.ModelPool.answer``, i.e. ``workbench.answering.answer.answer_questions``: the
path evaluation scores. Models load on first use and stay loaded; tool calls are served one at a time.
"""
from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from workbench.core import catalogue
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.serving.pool import (
    SYSTEM_NAMES,
    ModelPool,
    Route,
    bind,
    built_adapters,
    built_artifact,
    built_indices,
    route_for,
)

INSTRUCTIONS = ("Search a document corpus and ask questions of the systems built from it: the base model "
                "(closed book), rag (base model + retrieved passages), ft (a fine-tuned adapter) and ft_rag "
                "(adapter + passages). Use compare to see them side by side, list_artifacts for what exists.")
MAX_K = 50
System = Literal[SYSTEM_NAMES]  # an enum in the tool schema
K = Annotated[int, Field(ge=1, le=MAX_K, description=f"passages to return (1-{MAX_K})")]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
"""Every tool: reads the project's built artifacts, writes nothing, reaches nothing outside the project."""


class Passage(BaseModel):
    """A retrieved passage."""

    n: int = Field(description="position in the prompt / ranking, from 1")
    score: float = Field(description="retrieval score (higher is closer)")
    doc: str = Field(description="document path, relative to the corpus")
    heading: str = Field(description="section heading, may be empty")
    chunk_id: str
    text: str


class SearchResult(BaseModel):
    index: str
    query: str
    passages: list[Passage]


class SystemAnswer(BaseModel):
    """One system's answer."""

    system: str = Field(description="base, rag, ft or ft_rag")
    model: str = Field(description="the served model name (base, ft:A, rag:I, ft_rag:A:I)")
    answer: str
    sources: list[Passage] = Field(description="passages in the prompt ([n] is sources[n-1]); empty closed book")
    cited: list[int] = Field(description="numbers of the sources the answer cites or contains")
    latency_s: float
    confidence: float | None = Field(description="probability that the answer is right (calibrated where a run "
                                                 "on this corpus and index calibrated the system)")
    declined: str | None = Field(description="why the answer was replaced by \"I don't know\", or null")
    calibration: str = Field(description="how this system's answers are declined here, and which run says so")


class Comparison(BaseModel):
    question: str
    answers: list[SystemAnswer] = Field(description="one per system the project can run")


class IndexInfo(BaseModel):
    name: str
    corpus: str | None
    chunks: int | None
    embedder: str | None
    created: str | None


class AdapterInfo(BaseModel):
    name: str
    mode: str | None
    base_model: str | None
    created: str | None


class RunInfo(BaseModel):
    name: str
    created: str | None
    systems: list[str]


class Artifacts(BaseModel):
    indices: list[IndexInfo]
    adapters: list[AdapterInfo]
    runs: list[RunInfo]


class RunReport(BaseModel):
    run: str
    report: str = Field(description="report.md: verdict, tables with 95% intervals, cost, failures")
    scores: dict[str, dict[str, float | None]] = Field(
        description="per system: f1, em, contains, abstain_unanswerable, latency_p50_s")


def _passages(hits: list[Any]) -> list[Passage]:
    return [Passage(n=n, score=round(float(h.score), 4), doc=h.chunk.doc, heading=h.chunk.heading or "",
                    chunk_id=h.chunk.id, text=h.chunk.text) for n, h in enumerate(hits, 1)]


def _only(names: list[str], given: str | None, kind: str) -> str:
    """``given``, else the project's only (or first) built index / adapter."""
    if given:
        return given
    if not names:
        raise WorkbenchError(f"no {kind} is built in this project", f"build one with `workbench "
                             f"{'index' if kind == 'index' else 'finetune'} CORPUS`")
    return names[0]


class Tools:
    """The tools' logic over one model pool (tested directly and through the SDK)."""

    def __init__(self, cfg: RunConfig):
        self.pool = ModelPool(cfg, any_built=True)
        self._lock = threading.Lock()

    def search(self, query: str, index: str | None = None, k: int = 5) -> SearchResult:
        name = _only(built_indices(), index, "index")
        if not 1 <= k <= MAX_K:
            raise WorkbenchError(f"k={k}", f"ask for 1 to {MAX_K} passages")
        with self._lock:
            retriever = self.pool.retriever(name)
            hits = retriever.search(retriever.check_query(query), k=k)
        return SearchResult(index=name, query=query, passages=_passages(hits))

    def _answer(self, question: str, route: Route) -> SystemAnswer:
        with self._lock:
            a = self.pool.answer(question, route)
        return SystemAnswer(system=route.system, model=route.model_id, answer=a.text, sources=_passages(a.hits),
                            cited=sorted({c.n for c in a.citations}), latency_s=round(a.latency_s, 3),
                            confidence=a.confidence, declined=a.declined, calibration=a.calibration)

    def ask(self, question: str, system: str = "rag", index: str | None = None,
            adapter: str | None = None) -> SystemAnswer:
        if system.endswith("rag"):
            index = _only(built_indices(), index, "index")
        if system.startswith("ft"):
            adapter = _only(built_adapters(), adapter, "adapter")
        return self._answer(question, route_for(system, adapter, index))

    def compare(self, question: str, index: str | None = None, adapter: str | None = None) -> Comparison:
        indices, adapters = built_indices(), built_adapters()
        index = index or (indices[0] if indices else None)
        adapter = adapter or (adapters[0] if adapters else None)
        for kind, name in (("index", index), ("adapter", adapter)):  # refused before any system answers
            if name is not None:
                built_artifact(kind, name)
        routes = [Route(a, i) for a in dict.fromkeys([None, adapter]) for i in dict.fromkeys([None, index])]
        return Comparison(question=question, answers=[self._answer(question, r) for r in routes])

    def list_artifacts(self) -> Artifacts:
        indices = [IndexInfo(name=a.name, corpus=a.info.get("corpus"), chunks=a.info.get("n_chunks"),
                             embedder=a.info.get("embedder"), created=a.info.get("created"))
                   for a in catalogue.list_indices()]
        adapters = [AdapterInfo(name=a.name, mode=a.info.get("mode"), base_model=a.info.get("base_model"),
                                created=a.info.get("created")) for a in catalogue.list_adapters()]
        runs = [RunInfo(name=a.name, created=a.info.get("created"), systems=list(a.info["systems"]))
                for a in catalogue.list_runs()]
        return Artifacts(indices=indices, adapters=adapters, runs=runs)

    def report(self, run: str | None = None) -> RunReport:
        found = catalogue.resolve("run", run) if run is not None else catalogue.newest_run()
        if found is None:
            raise WorkbenchError("no run in this project", "score the systems with `workbench eval CORPUS`")
        run, folder, s = found.name, found.path, found.info
        report = (folder / "report.md").read_text(encoding="utf-8") if (folder / "report.md").is_file() else ""
        keys = ("f1", "em", "contains", "abstain_unanswerable", "latency_p50_s")
        scores = {name: {k: b.get(k) for k in keys} for name, b in s.get("systems", {}).items()}
        return RunReport(run=run, report=report, scores=scores)


def _tool_errors(fn: Any) -> Any:
    """Run ``fn``, turning a WorkbenchError into a tool error the agent reads (not a crash)."""
    try:
        return fn()
    except WorkbenchError as e:
        raise ToolError(str(e)) from None


def build_server(cfg: RunConfig) -> MCPServer:
    """The MCP server with the five tools over this project (``WORKBENCH_HOME`` or the current folder)."""
    tools = Tools(cfg)
    server = MCPServer("workbench", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(annotations=READ_ONLY)
    def search(query: str, index: str | None = None, k: K = 5) -> SearchResult:
        """Search a corpus index (hybrid BM25 + dense) and return the top-k passages with scores.

        Args:
            query: the question or keywords.
            index: name of a built index, never a path (default: the project's first; list_artifacts shows them).
            k: passages to return (1-50).
        """
        return _tool_errors(lambda: tools.search(query, index, k))

    @server.tool(annotations=READ_ONLY)
    def ask(question: str, system: System = "rag", index: str | None = None, adapter: str | None = None
            ) -> SystemAnswer:
        """Answer a question with one system: base (closed book), rag (retrieved passages), ft (fine-tuned
        adapter) or ft_rag (adapter + passages). Returns the answer, its sources and which it cites.

        Args:
            question: the question.
            system: base, rag, ft or ft_rag.
            index: name of a built index for rag / ft_rag (default: the project's first).
            adapter: name of a built adapter for ft / ft_rag (default: the project's first).
        """
        return _tool_errors(lambda: tools.ask(question, system, index, adapter))

    @server.tool(annotations=READ_ONLY)
    def compare(question: str, index: str | None = None, adapter: str | None = None) -> Comparison:
        """Answer a question with every system the project can run (base; rag with an index; ft and ft_rag
        with an adapter), side by side, each with its sources.

        Args:
            question: the question.
            index: name of a built index for the retrieval systems (default: the project's first).
            adapter: name of a built adapter for the fine-tuned systems (default: the project's first).
        """
        return _tool_errors(lambda: tools.compare(question, index, adapter))

    @server.tool(annotations=READ_ONLY)
    def list_artifacts() -> Artifacts:
        """The project's built indices (corpus, chunks, embedder), adapters (mode, base model) and runs."""
        return _tool_errors(tools.list_artifacts)

    @server.tool(annotations=READ_ONLY)
    def report(run: str | None = None) -> RunReport:
        """A scored run's report (markdown: verdict, scores with 95% intervals, cost) and per-system scores.

        Args:
            run: run name under runs/ (default: the latest).
        """
        return _tool_errors(lambda: tools.report(run))

    return server


def run_mcp(cfg: RunConfig, transport: str = "stdio", host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve the tools over stdio (an MCP client launches this) or streamable HTTP (``/mcp``).

    Raises:
        WorkbenchError: an unknown transport, or (http) the port is in use.
    """
    if transport not in ("stdio", "http"):
        raise WorkbenchError(f"unknown transport {transport!r}", "use stdio or http")
    if transport == "http":
        bind(host, port).close()  # a port in use is one line now, not a server log later
    server = build_server(cfg)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
