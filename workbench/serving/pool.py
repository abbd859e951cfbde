"""What ``workbench serve`` and ``workbench mcp`` hold loaded, and the model names they answer to.

A served model name says which weights answer and whether passages are retrieved:

| name | system | weights | passages |
| --- | --- | --- | --- |
| ``base`` | base | the base model | none (the model as is: the prompt is the caller's) |
| ``ft:ADAPTER`` (or ``ADAPTER``, as vLLM names LoRA modules) | ft | the adapter | none |
| ``rag:INDEX`` | rag | the base model | the index's top-k, through ``workbench.answering.answer`` |
| ``ft_rag:ADAPTER:INDEX`` | ft_rag | the adapter | the same |

Retrieval systems answer through ``workbench.answering.answer.answer_questions``, the function evaluation and
``workbench ask`` use, so a served answer is the answer a run scores.
"""
from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.answering.answer import Answer, answer_questions, check_question
from workbench.answering.confidence import apply_calibrator
from workbench.answering.generate import Generator
from workbench.answering.loader import load_generator
from workbench.core import catalogue
from workbench.core.config import RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.paths import runs_dir
from workbench.evaluation.abstention import Calibration, calibrators_for
from workbench.evaluation.systems import open_retriever

SYSTEM_NAMES = ("base", "rag", "ft", "ft_rag")


@dataclass(frozen=True)
class Route:
    """Which weights answer a served model name (adapter None: the base model) and over which index."""

    adapter: str | None = None
    index: str | None = None

    @property
    def system(self) -> str:
        if self.index:
            return "ft_rag" if self.adapter else "rag"
        return "ft" if self.adapter else "base"

    @property
    def model_id(self) -> str:
        """The served name: ``base``, ``ft:A``, ``rag:I`` or ``ft_rag:A:I``."""
        if self.index is None:
            return f"ft:{self.adapter}" if self.adapter else "base"
        return f"ft_rag:{self.adapter}:{self.index}" if self.adapter else f"rag:{self.index}"


def route_for(system: str, adapter: str | None = None, index: str | None = None) -> Route:
    """The route of a system name (base, rag, ft, ft_rag) with its adapter and index.

    Raises:
        WorkbenchError: an unknown system, or one missing the adapter or index it needs.
    """
    if system not in SYSTEM_NAMES:
        raise WorkbenchError(f"unknown system {system!r}", f"use one of {', '.join(SYSTEM_NAMES)}")
    if system.startswith("ft") and not adapter:
        raise WorkbenchError(f"system {system} needs an adapter", "name one (list_artifacts shows them)")
    if system.endswith("rag") and not index:
        raise WorkbenchError(f"system {system} needs an index", "name one (list_artifacts shows them)")
    return Route(adapter if system.startswith("ft") else None, index if system.endswith("rag") else None)


def _mtime(folder: Path) -> float:
    """A folder's modification time (0 when it does not exist): it changes when a run is added or removed."""
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before any model loads.

    Raises:
        WorkbenchError: the port is in use or the address cannot be bound (one line).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise WorkbenchError(f"port {port} on {host} is already in use",
                                 "stop the program using it, or pass another --port") from None
        raise WorkbenchError(f"cannot listen on {host}:{port} ({e.strerror})", "check --host and --port") from None
    sock.listen(128)
    return sock


def built_indices() -> list[str]:
    return catalogue.names("index")


def built_adapters() -> list[str]:
    return catalogue.names("adapter")


def built_artifact(kind: str, name: str) -> Path:
    """The folder of the index or adapter ``name`` built in this project: what the served faces open.

    Only a plain name is accepted (never a path, ``..`` or an absolute path), and only an artifact the
    catalogue lists as built (its manifest says it is a ``kind``): a face never builds or writes one.

    Raises:
        WorkbenchError: not a plain name, or no such artifact is built.
    """
    return catalogue.resolve(kind, name).path


class ModelPool:
    """Generators per adapter (None: the base model) and retrievers per index, loaded once each.

    Args:
        cfg: model, generation, prompt and retrieval settings.
        indices: index names served (``rag:INDEX``); others load on first use when ``any_built``.
        adapters: adapter names served (``ft:ADAPTER``); the same.
        any_built: serve every index and adapter built in the project (the MCP tools), not only those listed.

    Every name must be a built artifact of the project (``built_artifact``): paths are refused and nothing is
    ever built or written.
    """

    def __init__(self, cfg: RunConfig, indices: list[str] = (), adapters: list[str] = (), any_built: bool = False):
        if cfg.model.backend != "local":
            raise WorkbenchError("workbench serve and mcp run the model here (model.backend local)",
                                 "use a preset with model.backend: local")
        self.cfg = cfg
        self.indices = list(dict.fromkeys(indices))
        self.adapters = list(dict.fromkeys(adapters))
        self.any_built = any_built
        self._generators: dict[str | None, Generator] = {}
        self._retrievers: dict[str, Any] = {}
        self._calibration: dict[tuple[str | None, float], Calibration] = {}
        self._lock = threading.RLock()

    def load(self) -> None:
        """Load everything listed now (a serve start fails here on a name that is not a built artifact,
        before any model loads)."""
        for kind, names in (("adapter", self.adapters), ("index", self.indices)):
            for name in names:
                built_artifact(kind, name)
        self.generator(None)
        for a in self.adapters:
            self.generator(a)
        for i in self.indices:
            self.retriever(i)

    def _check(self, name: str, listed: list[str], kind: str) -> Path:
        """The built artifact's folder, when ``name`` names one this pool serves."""
        folder = built_artifact(kind, name)
        if name not in listed and not self.any_built:
            raise WorkbenchError(f"{kind} {name!r} is not served", f"served: {', '.join(listed) or 'none'}")
        return folder

    def generator(self, adapter: str | None) -> Generator:
        """The Generator over the base model or an adapter (LoRA merged into a copy of the base)."""
        with self._lock:
            if adapter not in self._generators:
                if adapter is not None:
                    self._check(adapter, self.adapters, "adapter")
                # the one loader evaluation uses (same dtype and CPU preparation)
                self._generators[adapter] = load_generator(self.cfg.model, self.cfg.generate, adapter)
            return self._generators[adapter]

    def retriever(self, index: str) -> Any:
        """The Retriever over a built index, by name."""
        with self._lock:
            if index not in self._retrievers:
                folder = self._check(index, self.indices, "index")
                # the folder, not the name: a same-named folder in the working directory is never indexed
                self._retrievers[index] = open_retriever(str(folder), self.cfg, progress=False)
            return self._retrievers[index]

    def model_ids(self) -> list[str]:
        """Every served chat model name (``base``, ``ft:A``, ``rag:I``, ``ft_rag:A:I``)."""
        routes = [Route(a, i) for i in [None, *self.indices] for a in [None, *self.adapters]]
        return [r.model_id for r in routes]

    def route(self, model: str) -> Route:
        """The route of a served model name; a bare adapter name means ``ft:ADAPTER``.

        Raises:
            WorkbenchError: a name that is not served.
        """
        kind, _, rest = model.partition(":")
        if not rest and model in self.adapters:
            return Route(model)
        if kind == "ft_rag":
            adapter, _, index = rest.partition(":")
            r = Route(adapter or None, index or None)
        else:
            r = {"base": Route(), "ft": Route(rest or None), "rag": Route(None, rest or None)}.get(kind, Route(""))
        if r.model_id != model or model not in self.model_ids():
            raise WorkbenchError(f"the model {model!r} does not exist",
                                 f"served models: {', '.join(self.model_ids())}")
        return r

    def answer(self, question: str, route: Route, generator: Any = None) -> Answer:
        """Answer one question as the route's system, through ``workbench.answering.answer.answer_questions``.

        Args:
            question: the question.
            route: weights and index.
            generator: what generates (default: the route's Generator; serve passes its batching one).
        """
        question = check_question(question)
        retriever = self.retriever(route.index) if route.index else None
        if retriever is not None:
            retriever.check_query(question)
        gen = generator if generator is not None else self.generator(route.adapter)
        k = self.cfg.retrieve.k if retriever is not None else None
        answer = answer_questions([question], gen, retriever=retriever, k=k, prompt=self.cfg.prompt)[0]
        found = self.calibration(route.index)
        apply_calibrator([answer], found.calibrators.get(route.system))  # the rule ask and the chat decline by
        answer.calibration = found.note(route.system)
        return answer

    def calibration(self, index: str | None) -> Calibration:
        """The calibrators ``ask`` would decline with over ``index`` (``calibrators_for``: the newest run on the
        same corpus and index content), looked up again whenever a run is added or removed."""
        key = (index, _mtime(runs_dir()))
        if key not in self._calibration:
            self._calibration = {key: calibrators_for(built_artifact("index", index) if index else None)}
        return self._calibration[key]
