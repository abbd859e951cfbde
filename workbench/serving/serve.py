"""``workbench serve``: an OpenAI-compatible HTTP API over the base model, adapters and their RAG variants.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions`` (``stream`` true or
false, ``stream_options.include_usage``, ``logprobs`` / ``top_logprobs``), ``POST /v1/embeddings`` (the index's
embedder), and ``GET /health`` (no key needed). Model names are those of ``workbench.serving.pool`` (``base``,
``ft:ADAPTER``, ``rag:INDEX``, ``ft_rag:ADAPTER:INDEX``); a retrieval model's reply carries its passages in
the extra field ``workbench`` (``sources``, ``citations``, ``raw``).

Requests that arrive together are generated in one batch: every generation goes through one worker
thread (``Batcher``) that waits ``batch_wait_s`` after the first request for others, groups compatible
ones (same weights, reply budget, temperature, stop strings) and makes one ``Generator.generate`` call per
group. A streamed plain-model reply is generated alone with ``Generator.stream``, piece by piece; a
retrieval model's answer, cleaned after generation, is batched and then sent word by word. At most ``max_queue`` requests wait or run at once; the next is answered 503. A bad request gets a
4xx with an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``; a body over
``max_body_mb`` is a 413 before it is parsed. A prompt longer than the model's context (beside the reply
budget) is cut from its start: the reply says so in the ``X-Workbench-Prompt-Truncated`` header (tokens cut)
and the server logs a line. A streamed reply whose client goes away stops generating at the next token.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import os
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from workbench.answering.generate import Generation, fit_prompt
from workbench.core.errors import WorkbenchError
from workbench.serving.pool import ModelPool, Route, bind

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Message roles taken, and the role each is given (OpenAI's ``developer`` is the system prompt)."""
PUBLIC_PATHS = {"/health"}
"""Paths answered without the API key."""
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ServeConfig:
    """How ``workbench serve`` listens and batches."""

    host: str = "127.0.0.1"
    """Interface to bind: localhost only by default; 0.0.0.0 exposes the server to the network."""
    port: int = 8000
    """TCP port (0: any free one; the URL is printed)."""
    max_queue: int = 64
    """Requests waiting or generating at once; more are answered 503."""
    batch_wait_s: float = 0.02
    """How long the first request of a batch waits for others."""
    max_tokens: int = 256
    """Default reply budget of a plain model (base, ft:A) when the request sets none; retrieval models use
    ``generate.max_new_tokens``."""
    max_tokens_limit: int = 2048
    """Largest reply budget a request may ask for."""
    api_key_env: str = "WORKBENCH_API_KEY"
    """Environment variable holding the API key clients must send (``Authorization: Bearer KEY``); unset: no
    key needed; set but empty: the server refuses to start."""
    max_body_mb: float = 1.0
    """Largest request body in megabytes (10^6 bytes); a larger one is answered 413 before it is parsed."""

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise WorkbenchError(f"port {self.port} is out of range", "use 1-65535, or 0 for any free port")
        if self.max_queue < 1 or self.batch_wait_s < 0 or self.max_tokens < 1:
            raise WorkbenchError("max_queue and max_tokens must be >= 1 and batch_wait_s >= 0", "fix the options")
        if not self.max_body_mb > 0:
            raise WorkbenchError(f"max_body_mb={self.max_body_mb}", "give a body limit above 0 megabytes")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1_000_000)

    def api_key(self) -> str | None:
        """The key clients must send, or None when ``api_key_env`` is unset.

        Raises:
            WorkbenchError: the variable is set but empty (auth would silently be off).
        """
        key = os.environ.get(self.api_key_env)
        if key is not None and not key.strip():
            raise WorkbenchError(f"${self.api_key_env} is set but empty",
                                 "set it to the key clients must send, or unset it to serve without a key")
        return key


class ApiError(Exception):
    """A request the server refuses: HTTP status and the OpenAI error fields."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# --- batching -----------------------------------------------------------------------------------

@dataclass
class Job:
    """One reply to generate, and the future its result is set on."""

    adapter: str | None
    messages: list[dict[str, str]]
    stop: tuple[str, ...]
    max_tokens: int
    temperature: float
    sources: Any = None
    future: Future = field(default_factory=Future)
    pieces: queue.Queue | None = None
    """For a streamed plain-model reply: the text pieces as they are generated, then None."""
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set when the streamed reply's client went away: generation stops at the next token (or never starts)."""

    def group(self) -> tuple:
        return (self.adapter, self.max_tokens, self.temperature, self.stop, self.sources is None)


class QueueFull(Exception):
    pass


class Batcher:
    """One worker thread that generates every reply, in batches of the requests that wait together.

    Args:
        pool: the loaded generators.
        max_queue: most jobs waiting or running; ``submit`` raises ``QueueFull`` beyond.
        wait_s: how long a batch's first job waits for others.
    """

    def __init__(self, pool: ModelPool, max_queue: int, wait_s: float):
        self.pool, self.max_queue, self.wait_s = pool, max_queue, wait_s
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="workbench-batcher", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting or generating."""
        return self._pending

    def submit(self, job: Job) -> Future:
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull
            self._pending += 1
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch, deadline = [first], time.monotonic() + self.wait_s
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return batch
            if job is None:
                self._queue.put(None)
                return batch
            batch.append(job)

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.group(), []).append(job)
            for jobs in groups.values():
                streamed = [j for j in jobs if j.pieces is not None]
                for j in streamed:  # token by token holds the model for one reply: these go one at a time
                    if j.cancel.is_set():  # its client left while it waited
                        j.future.set_result(Generation("", 0, 0, 0.0))
                        j.pieces.put(None)
                    else:
                        self._stream(j)
                if len(streamed) < len(jobs):
                    self._run([j for j in jobs if j.pieces is None])
            with self._lock:
                self._pending -= len(batch)

    def _stream(self, job: Job) -> None:
        """Generate one reply with ``Generator.stream``, handing each piece to the waiting request, until
        the reply ends or ``job.cancel`` is set (checked between tokens)."""
        t0 = time.perf_counter()
        try:
            gen = self.pool.generator(job.adapter)
            base_cfg = gen.cfg
            gen.cfg = dataclasses.replace(base_cfg, max_new_tokens=job.max_tokens, temperature=job.temperature)
            text, n_prompt, stats = "", len(gen.encode(job.messages)), {}
            try:
                # closing the stream early stops its generation at the next token
                with contextlib.closing(gen.stream(job.messages, stop=job.stop, stats=stats,
                                                   cancel=job.cancel)) as pieces:
                    for piece in pieces:
                        if job.cancel.is_set():
                            break
                        text += piece
                        job.pieces.put(piece)
            finally:
                gen.cfg = base_cfg
            n_new = len(stats.get("logprobs", []))  # one per token generated, as Generator.generate counts them
            if job.cancel.is_set():
                print(f"stopped a streamed reply ({job.adapter or 'base model'}) after {n_new} of {job.max_tokens} "
                      "tokens: its client went away", file=sys.stderr, flush=True)
            job.future.set_result(Generation(text, n_prompt, n_new, time.perf_counter() - t0))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            job.future.set_exception(e)
        finally:
            job.pieces.put(None)

    def _run(self, jobs: list[Job]) -> None:
        """One ``Generator.generate`` call for jobs that share weights and decoding settings."""
        j0 = jobs[0]
        try:
            gen = self.pool.generator(j0.adapter)
            base_cfg = gen.cfg
            gen.cfg = dataclasses.replace(base_cfg, max_new_tokens=j0.max_tokens, temperature=j0.temperature)
            try:
                out = gen.generate([j.messages for j in jobs], stop=j0.stop,
                                   sources=None if j0.sources is None else [j.sources for j in jobs])
            finally:
                gen.cfg = base_cfg
        except BaseException as e:  # noqa: BLE001 - handed to every waiting request
            for j in jobs:
                j.future.set_exception(e)
            return
        for j, g in zip(jobs, out):
            j.future.set_result(g)


class BatchedGenerator:
    """The ``Generator`` interface over the batcher, so retrieval models answer through
    ``workbench.answering.answer.answer_questions`` while their generation joins the shared batches."""

    def __init__(self, batcher: Batcher, adapter: str | None, max_tokens: int, temperature: float):
        self.batcher, self.adapter = batcher, adapter
        gen = batcher.pool.generator(adapter)
        self.tokenizer = gen.tokenizer
        self.cfg = dataclasses.replace(gen.cfg, max_new_tokens=max_tokens, temperature=temperature)
        self.conversations: list[list[dict[str, str]]] = []
        """What was generated from: the conversations as ``answer_questions`` built them."""

    def generate(self, conversations: list[list[dict[str, str]]], progress: bool = False,
                 stop: Sequence[str] = (), sources: Any = None) -> list[Generation]:
        self.conversations += conversations
        jobs = [Job(self.adapter, c, tuple(stop), self.cfg.max_new_tokens, self.cfg.temperature,
                    None if sources is None else sources[i]) for i, c in enumerate(conversations)]
        return [self.batcher.submit(j).result() for j in jobs]


# --- requests -----------------------------------------------------------------------------------

@dataclass
class ChatRequest:
    """A checked ``/v1/chat/completions`` body."""

    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    stop: tuple[str, ...]
    stream: bool
    logprobs: bool = False
    top_logprobs: int = 0
    include_usage: bool = False
    """``stream_options.include_usage``: a last chunk (empty ``choices``) carries the usage."""


def _content(m: Any, i: int) -> str:
    c = m.get("content")
    if isinstance(c, list):  # [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in c):
            raise ApiError(400, f"messages[{i}].content: only text parts are supported", param="messages")
        c = "".join(p["text"] for p in c)
    if not isinstance(c, str):
        raise ApiError(400, f"messages[{i}].content must be a string", param="messages")
    return c


def parse_chat(body: Any, limit: int) -> ChatRequest:
    """Check a chat-completions body.

    Raises:
        ApiError: 400 naming the field that is missing or wrong.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required (a string; GET /v1/models lists them)", param="model")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] needs a role of {', '.join(ROLES)}", param="messages")
        messages.append({"role": ROLES[m["role"]], "content": _content(m, i)})
    if not body.get("continue_final_message", True) and messages[-1]["role"] == "assistant":
        raise ApiError(400, "a conversation ending with an assistant message is continued", param="messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or not 1 <= max_tokens <= limit):
        raise ApiError(400, f"'max_tokens' must be an integer from 1 to {limit}", param="max_tokens")
    temperature = body.get("temperature", 0.0)
    if temperature is None:
        temperature = 0.0
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ApiError(400, "'temperature' must be a number from 0 to 2", param="temperature")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be a string or a list of at most {MAX_STOP} strings", param="stop")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    _refuse_unsupported(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    logprobs = body.get("logprobs", False)
    if logprobs is None:
        logprobs = False
    if not isinstance(logprobs, bool):
        raise ApiError(400, "'logprobs' must be true or false", param="logprobs")
    top = body.get("top_logprobs")
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise ApiError(400, f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs")
    if top is not None and not logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    return ChatRequest(model, messages, max_tokens, float(temperature), tuple(stop), stream, logprobs, top or 0,
                       _include_usage(body.get("stream_options"), stream))


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """400 for what the served models cannot do (tool calls, JSON modes), rather than silently ignoring it."""
    for key in ("tools", "functions"):
        if body.get(key) is not None:
            raise ApiError(400, f"'{key}' is not supported: the served models reply in plain text, without tool "
                                "calls", param=key)
    for key in ("tool_choice", "function_call"):
        if body.get(key) not in (None, "none"):
            raise ApiError(400, f"'{key}' is not supported (only \"none\"): the served models make no tool calls",
                           param=key)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise ApiError(400, "only 'response_format' {\"type\": \"text\"} is supported (no JSON mode or schema)",
                       param="response_format")


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed with 'stream': true", param="stream_options")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "'stream_options' must be an object with 'include_usage': true or false",
                       param="stream_options")
    return options.get("include_usage", False)


def _sources(answer: Any) -> dict[str, Any]:
    """The extra ``workbench`` field of a retrieval model's reply: passages in prompt order ([n] is
    ``sources[n-1]``), the ones the answer cites or contains, the reply before cleaning, its confidence, why it
    was declined (None when it was not) and how this system's replies are declined here."""
    return {"sources": [{"n": n, "id": h.chunk.id, "doc": h.chunk.doc, "heading": h.chunk.heading,
                         "score": round(float(h.score), 4), "text": h.chunk.text}
                        for n, h in enumerate(answer.hits, 1)],
            "citations": [dataclasses.asdict(c) for c in answer.citations],
            "raw": answer.raw, "confidence": answer.confidence, "declined": answer.declined,
            "calibration": answer.calibration}


@dataclass
class Reply:
    """What a chat completion returns: text, token counts, why it stopped, the retrieval extra, the token
    log-probabilities (OpenAI's ``logprobs.content``, when asked for) and how many prompt tokens were cut."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    extra: dict[str, Any] | None = None
    logprobs: list[dict[str, Any]] | None = None
    prompt_cut: int = 0


@dataclass
class Prompt:
    """A prompt as the model is fed it: the token ids (the end of the rendered conversation that fits the
    context beside the reply budget, as ``Generator.encode`` keeps it) and how many were cut from its start."""

    ids: list[int]
    cut: int


def fit(gen: Any, messages: list[dict[str, str]], max_tokens: int) -> Prompt:
    """The prompt ``gen`` feeds the model for ``messages`` with a reply budget of ``max_tokens``."""
    whole = gen.prompt_ids(messages)
    ids = fit_prompt(whole, gen.window(), max_tokens)
    return Prompt(ids, len(whole) - len(ids))


def token_logprobs(gen: Any, prompt_ids: list[int], text: str, top: int = 0) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for ``text`` as the reply to a prompt, from one forward pass.

    Per token of the text: its piece of the text (the pieces join to the text), its log-probability under
    the model given the prompt and the tokens before it, its UTF-8 bytes, and the ``top`` likeliest tokens
    at that step with theirs.
    """
    import inspect

    import torch

    tok = gen.tokenizer
    reply = tok(text, add_special_tokens=False)["input_ids"]
    if not reply or not prompt_ids:
        return []
    # only the reply's logits: a long prompt's (prompt_len, vocab) logits would not fit in memory
    keep = "logits_to_keep" in inspect.signature(gen.model.forward).parameters
    kw = {"logits_to_keep": len(reply) + 1} if keep else {}
    with torch.inference_mode():
        ids = torch.tensor([list(prompt_ids) + reply], device=gen.model.device)
        logits = gen.model(input_ids=ids, **kw).logits[0, -len(reply) - 1:-1]  # (n_reply, vocab): row t predicts t
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(1, torch.tensor(reply, device=logp.device)[:, None]).squeeze(1).tolist()
    best = logp.topk(top, dim=-1) if top else None

    def entry(piece: str, lp: float) -> dict[str, Any]:
        return {"token": piece, "logprob": lp, "bytes": list(piece.encode("utf-8"))}

    out, before = [], ""
    for i, (t, lp) in enumerate(zip(reply, chosen)):
        upto = tok.decode(reply[:i + 1])  # decoded with what precedes it, as the text shows it
        piece = upto[len(before):] if upto.startswith(before) else tok.decode([t])
        before = upto
        alts = [] if best is None else [entry(tok.decode([a]), v) for a, v in
                                        zip(best.indices[i].tolist(), best.values[i].tolist())]
        out.append({**entry(piece, lp), "top_logprobs": alts})
    return out


class Server:
    """The request logic, apart from HTTP: answers chat and embedding requests from the loaded pool."""

    def __init__(self, pool: ModelPool, cfg: ServeConfig):
        self.pool, self.cfg = pool, cfg
        self.batcher = Batcher(pool, cfg.max_queue, cfg.batch_wait_s)
        self.started = int(time.time())

    def route(self, model: str) -> Route:
        try:
            return self.pool.route(model)
        except WorkbenchError as e:
            raise ApiError(404, str(e), param="model", code="model_not_found") from None

    def chat(self, req: ChatRequest) -> Reply:
        """One chat completion (blocking: call it from a worker thread)."""
        route = self.route(req.model)
        try:
            return self._plain(req, route) if route.index is None else self._retrieval(req, route)
        except QueueFull:
            raise self._busy() from None
        except WorkbenchError as e:
            raise ApiError(400, str(e)) from None

    def _plain(self, req: ChatRequest, route: Route) -> Reply:
        """A plain model's reply: the caller's conversation as is."""
        max_tokens = req.max_tokens or self.cfg.max_tokens
        prompt = self.prompt(route, req.messages, max_tokens)
        g = self.batcher.submit(Job(route.adapter, req.messages, req.stop, max_tokens, req.temperature)).result()
        # asked for, the log-probabilities the reply was generated with also go in the extra field (what the
        # remote backend reads for the confidence of an answer)
        extra = {"logprobs": g.logprobs, "abstain_logprob": g.abstain_logprob} if req.logprobs else None
        return Reply(g.text, len(prompt.ids), g.n_new_tokens, _finish(g.n_new_tokens, max_tokens), extra,
                     self.logprobs(req, route, prompt, g.text), prompt.cut)

    def _retrieval(self, req: ChatRequest, route: Route) -> Reply:
        """A retrieval model's answer to the last user message, through ``ModelPool.answer``."""
        question = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
        max_tokens = req.max_tokens or self.pool.cfg.generate.max_new_tokens
        gen = BatchedGenerator(self.batcher, route.adapter, max_tokens, req.temperature)
        answer = self.pool.answer(question, route, gen)
        prompt = self.prompt(route, gen.conversations[0], max_tokens)  # the prompt built around the passages
        return Reply(answer.text, len(prompt.ids), answer.n_new_tokens, _finish(answer.n_new_tokens, max_tokens),
                     _sources(answer), self.logprobs(req, route, prompt, answer.text), prompt.cut)

    def prompt(self, route: Route, messages: list[dict[str, str]], max_tokens: int) -> Prompt:
        return fit(self.pool.generator(route.adapter), messages, max_tokens)

    def logprobs(self, req: ChatRequest, route: Route, prompt: Prompt, text: str) -> list[dict[str, Any]] | None:
        """The reply's ``logprobs.content`` when the request asked for it, else None."""
        if not req.logprobs:
            return None
        return token_logprobs(self.pool.generator(route.adapter), prompt.ids, text, req.top_logprobs)

    def stream_job(self, req: ChatRequest, route: Route) -> tuple[Job, Prompt]:
        """Queue a plain model's reply to be streamed as it is generated (``Job.pieces``), with its prompt.

        Raises:
            ApiError: 503 when the queue is full.
        """
        max_tokens = req.max_tokens or self.cfg.max_tokens
        prompt = self.prompt(route, req.messages, max_tokens)
        job = Job(route.adapter, req.messages, req.stop, max_tokens, req.temperature, pieces=queue.Queue())
        try:
            self.batcher.submit(job)
        except QueueFull:
            raise self._busy() from None
        return job, prompt

    def _busy(self) -> ApiError:
        return ApiError(503, f"the server is busy ({self.cfg.max_queue} requests queued); retry later",
                        kind="server_error", code="queue_full")

    def embeddings(self, body: Any) -> dict[str, Any]:
        """``/v1/embeddings``: vectors from an index's embedder (model: ``INDEX``, ``rag:INDEX`` or
        ``embed:INDEX``; the only index when there is one)."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        model = body.get("model") or (self.pool.indices[0] if len(self.pool.indices) == 1 else None)
        name = model.split(":", 1)[1] if isinstance(model, str) and model.startswith(("rag:", "embed:")) else model
        if name not in self.pool.indices:
            raise ApiError(404, f"the embedding model {model!r} does not exist (serve an index with --index); "
                                f"served: {', '.join('embed:' + i for i in self.pool.indices) or 'none'}",
                           param="model", code="model_not_found")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "'input' must be a string or a non-empty list of strings", param="input")
        embedder = self.pool.retriever(name).embedder
        vectors = embedder.encode(texts, role="query")
        n_tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": f"embed:{name}",
                "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    def models(self) -> dict[str, Any]:
        # bare adapter names too: vLLM lists its LoRA modules so, and the remote backend asks for them
        ids = self.pool.model_ids() + self.pool.adapters + [f"embed:{i}" for i in self.pool.indices]
        return {"object": "list", "data": [self._model(m) for m in ids]}

    def model(self, model_id: str) -> dict[str, Any]:
        """``GET /v1/models/{id}``: one served model.

        Raises:
            ApiError: 404 when no such model is served.
        """
        if model_id not in [m["id"] for m in self.models()["data"]]:
            raise ApiError(404, f"the model {model_id!r} does not exist (GET /v1/models lists them)",
                           param="model", code="model_not_found")
        return self._model(model_id)

    def _model(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": self.started, "owned_by": "workbench"}

    def health(self) -> dict[str, Any]:
        """``GET /health``: the server is up and its models are loaded; how many requests wait or run."""
        return {"status": "ok", "queued": self.batcher.pending, "max_queue": self.cfg.max_queue}


def _finish(n_new: int, max_tokens: int) -> str:
    return "length" if n_new >= max_tokens else "stop"


def usage(reply: Reply) -> dict[str, int]:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _logprobs(reply: Reply) -> dict[str, Any] | None:
    """``choices[0].logprobs`` as OpenAI writes it (null unless asked for)."""
    return None if reply.logprobs is None else {"content": reply.logprobs, "refusal": None}


def completion(req: ChatRequest, reply: Reply) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object (plus ``workbench`` for retrieval models)."""
    out = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
           "model": req.model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                        "logprobs": _logprobs(reply), "finish_reason": reply.finish_reason}],
           "usage": usage(reply)}
    if reply.extra is not None:
        out["workbench"] = reply.extra
    return out


DONE = "data: [DONE]\n\n"


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class Events:
    """Server-sent events of one streamed chat completion (``chat.completion.chunk`` objects)."""

    def __init__(self, req: ChatRequest):
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": req.model}
        self.include_usage = req.include_usage

    def chunk(self, delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None,
              **more: Any) -> str:
        body = {**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
                **more}
        if self.include_usage:  # as OpenAI sends it: null on every chunk but the usage one
            body["usage"] = None
        return _event(body)

    def start(self) -> str:
        return self.chunk({"role": "assistant", "content": ""})

    def end(self, reply: Reply) -> list[str]:
        """The finish chunk (with the log-probabilities of the whole reply when asked for, and the retrieval
        extra), the usage chunk (empty ``choices``) when asked for, then ``[DONE]``."""
        more = {"workbench": reply.extra} if reply.extra is not None else {}
        out = [self.chunk({}, reply.finish_reason, _logprobs(reply), **more)]
        if self.include_usage:
            out.append(_event({**self.head, "choices": [], "usage": usage(reply)}))
        return out + [DONE]


def stream_chunks(req: ChatRequest, reply: Reply) -> list[str]:
    """The events of a finished reply (a retrieval model's, whose text is cleaned after generation): the
    role, the text word by word, the finish with the ``workbench`` extra, then ``[DONE]``. The deltas join
    to the non-streamed text."""
    ev = Events(req)
    pieces = [reply.text[i:j] for i, j in _word_cuts(reply.text)]
    return [ev.start()] + [ev.chunk({"content": p}) for p in pieces] + ev.end(reply)


def _word_cuts(text: str) -> list[tuple[int, int]]:
    """Cut points that split ``text`` into words, each piece carrying the space before it."""
    starts = [0] + [i for i in range(1, len(text)) if text[i - 1] == " " and text[i] != " "]
    return list(zip(starts, starts[1:] + [len(text)])) if text else []


TRUNCATED_HEADER = "X-Workbench-Prompt-Truncated"
"""Response header: how many tokens were cut from the start of the prompt (absent when none were)."""


def prompt_notice(model: str, prompt_tokens: int, cut: int) -> dict[str, str]:
    """Headers saying a prompt was cut to the model's context (none when it was not), and a log line."""
    if not cut:
        return {}
    print(f"warning: a request to {model}: the prompt ({prompt_tokens + cut} tokens) was cut to its last "
          f"{prompt_tokens} tokens to fit the model's context beside the reply", file=sys.stderr, flush=True)
    return {TRUNCATED_HEADER: str(cut)}


# --- HTTP ---------------------------------------------------------------------------------------

def _key_matches(request: Request, key: str) -> bool:
    sent = request.headers.get("authorization", "").encode("latin-1")  # the header's bytes as sent
    return hmac.compare_digest(sent, f"Bearer {key}".encode())  # constant time: no timing oracle


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over {limit:,} bytes (the server's --max-body-mb)",
                    code="request_too_large")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over ``limit`` bytes (by its declared
    length, else while it arrives): an oversized body is never parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def create_app(server: Server) -> Any:
    """The FastAPI application over a ``Server``."""
    app = FastAPI(title="workbench", description="OpenAI-compatible API over the workbench systems")
    key = server.cfg.api_key()

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(ApiError(e.status_code, str(e.detail), kind).body(), status_code=e.status_code)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if key is not None and request.url.path not in PUBLIC_PATHS and not _key_matches(request, key):
            return JSONResponse(ApiError(401, "a valid API key is required (Authorization: Bearer KEY)",
                                         code="invalid_api_key").body(), status_code=401)
        return await call_next(request)

    async def json_body(request: Request) -> Any:
        body = await read_body(request, server.cfg.max_body_bytes)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({str(e).splitlines()[0][:120]})") from None

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.models()

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        return server.model(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = parse_chat(await json_body(request), server.cfg.max_tokens_limit)
        route = server.route(req.model)  # an unknown model is a 404 before anything else
        if req.stream and route.index is None:  # a plain model streams as it generates
            job, prompt = await run_in_threadpool(server.stream_job, req, route)
            return StreamingResponse(live_events(server, req, route, job, prompt, request),
                                     media_type="text/event-stream",
                                     headers=prompt_notice(req.model, len(prompt.ids), prompt.cut))
        reply = await run_in_threadpool(server.chat, req)
        headers = prompt_notice(req.model, reply.prompt_tokens, reply.prompt_cut)
        if not req.stream:
            return JSONResponse(completion(req, reply), headers=headers)

        async def events() -> Any:
            for e in stream_chunks(req, reply):
                yield e
                await asyncio.sleep(0)
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        return await run_in_threadpool(server.embeddings, body)

    return app


POLL_S = 0.25
"""How often a streamed reply waiting for its next piece checks that its client is still there."""


async def _next_piece(job: Job, request: Request) -> str | None:
    """The job's next piece, or None at the reply's end or once the client has gone (the job is cancelled:
    generation stops at the next token, or never starts if the job still waits)."""
    while True:
        if await request.is_disconnected():
            job.cancel.set()
            return None
        try:
            return await run_in_threadpool(job.pieces.get, True, POLL_S)
        except queue.Empty:
            continue


async def live_events(server: Server, req: ChatRequest, route: Route, job: Job, prompt: Prompt,
                      request: Request) -> Any:
    """The events of a plain model's reply, each piece sent as soon as it is generated; the client leaving
    (seen between pieces, or as a failed send) stops the generation."""
    ev = Events(req)
    try:
        yield ev.start()
        while (piece := await _next_piece(job, request)) is not None:
            yield ev.chunk({"content": piece})
        if job.cancel.is_set():
            return
        try:
            g = job.future.result()
        except Exception as e:  # noqa: BLE001 - the status line is sent: report it in the stream
            yield _event(ApiError(500, str(e)[:300], kind="server_error").body())
            yield DONE
            return
        lp = await run_in_threadpool(server.logprobs, req, route, prompt, g.text)
        reply = Reply(g.text, len(prompt.ids), g.n_new_tokens, _finish(g.n_new_tokens, job.max_tokens),
                      logprobs=lp, prompt_cut=prompt.cut)
        for e in ev.end(reply):
            yield e
    finally:  # the reply ended, or the client went away mid-stream: stop generating
        job.cancel.set()


def serve(pool: ModelPool, cfg: ServeConfig) -> None:
    """Bind, load the models (failing fast on a missing adapter or index), and serve until Ctrl-C.

    Raises:
        WorkbenchError: the API key variable is set but empty, the port is in use, or a model, adapter or
            index cannot be loaded.
    """
    import uvicorn

    key = cfg.api_key()  # before anything binds or loads
    sock = bind(cfg.host, cfg.port)
    try:
        if cfg.host not in LOOPBACK and key is None:
            print(f"warning: listening on {cfg.host} without an API key: anyone who reaches this machine can use "
                  f"it (set ${cfg.api_key_env})", file=sys.stderr, flush=True)
        pool.load()
        server = Server(pool, cfg)
        port = sock.getsockname()[1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        print(f"serving {', '.join(pool.model_ids())} at http://{host}:{port}/v1", file=sys.stderr, flush=True)
        config = uvicorn.Config(create_app(server), log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
        server.batcher.close()
    finally:
        sock.close()
