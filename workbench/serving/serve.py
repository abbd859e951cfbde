"""``workbench serve``: an OpenAI-compatible HTTP API over the base model, adapters and their RAG variants.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (``stream`` true or false), ``POST
/v1/embeddings`` (the index's embedder). Model names are those of ``workbench.serving.pool`` (``base``,
``ft:ADAPTER``, ``rag:INDEX``, ``ft_rag:ADAPTER:INDEX``); a retrieval model's reply carries its passages in
the extra field ``workbench`` (``sources``, ``citations``, ``raw``).

Requests that arrive together are generated in one batch: every generation goes through one worker
thread (``Batcher``) that waits ``batch_wait_s`` after the first request for others, groups compatible
ones (same weights, reply budget, temperature, stop strings) and makes one ``Generator.generate`` call per
group. A streamed plain-model reply is generated alone with ``Generator.stream``, piece by piece; a
retrieval model's answer, cleaned after generation, is batched and then sent word by word. At most ``max_queue`` requests wait or run at once; the next is answered 503. A bad request gets a
4xx with an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import asyncio
import dataclasses
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

from workbench.answering.generate import Generation
from workbench.core.errors import WorkbenchError
from workbench.serving.pool import ModelPool, Route, bind

MAX_STOP = 4
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
    """Environment variable holding the API key clients must send (``Authorization: Bearer KEY``); unset or
    empty: no key needed."""

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise WorkbenchError(f"port {self.port} is out of range", "use 1-65535, or 0 for any free port")
        if self.max_queue < 1 or self.batch_wait_s < 0 or self.max_tokens < 1:
            raise WorkbenchError("max_queue and max_tokens must be >= 1 and batch_wait_s >= 0", "fix the options")


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
                    self._stream(j)
                if len(streamed) < len(jobs):
                    self._run([j for j in jobs if j.pieces is None])
            with self._lock:
                self._pending -= len(batch)

    def _stream(self, job: Job) -> None:
        """Generate one reply with ``Generator.stream``, handing each piece to the waiting request."""
        t0 = time.perf_counter()
        try:
            gen = self.pool.generator(job.adapter)
            base_cfg = gen.cfg
            gen.cfg = dataclasses.replace(base_cfg, max_new_tokens=job.max_tokens, temperature=job.temperature)
            text = ""
            try:
                for piece in gen.stream(job.messages, stop=job.stop):
                    text += piece
                    job.pieces.put(piece)
            finally:
                gen.cfg = base_cfg
            n_new = len(gen.tokenizer(text, add_special_tokens=False)["input_ids"])
            job.future.set_result(Generation(text, 0, n_new, time.perf_counter() - t0))
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

    def generate(self, conversations: list[list[dict[str, str]]], progress: bool = False,
                 stop: Sequence[str] = (), sources: Any = None) -> list[Generation]:
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
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}] needs a role of system, user or assistant", param="messages")
        messages.append({"role": m["role"], "content": _content(m, i)})
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
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise ApiError(400, "'logprobs' must be true or false", param="logprobs")
    return ChatRequest(model, messages, max_tokens, float(temperature), tuple(stop), stream, logprobs)


def _sources(answer: Any) -> dict[str, Any]:
    """The extra ``workbench`` field of a retrieval model's reply: passages in prompt order ([n] is
    ``sources[n-1]``), the ones the answer cites or contains, and the reply before cleaning."""
    return {"sources": [{"n": n, "id": h.chunk.id, "doc": h.chunk.doc, "heading": h.chunk.heading,
                         "score": round(float(h.score), 4), "text": h.chunk.text}
                        for n, h in enumerate(answer.hits, 1)],
            "citations": [dataclasses.asdict(c) for c in answer.citations],
            "raw": answer.raw}


@dataclass
class Reply:
    """What a chat completion returns: text, token counts, why it stopped, and the retrieval extra."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    extra: dict[str, Any] | None = None


class Server:
    """The request logic, apart from HTTP: answers chat and embedding requests from the loaded pool."""

    def __init__(self, pool: ModelPool, cfg: ServeConfig):
        self.pool, self.cfg = pool, cfg
        self.batcher = Batcher(pool, cfg.max_queue, cfg.batch_wait_s)

    def route(self, model: str) -> Route:
        try:
            return self.pool.route(model)
        except WorkbenchError as e:
            raise ApiError(404, str(e), param="model", code="model_not_found") from None

    def chat(self, req: ChatRequest) -> Reply:
        """One chat completion (blocking: call it from a worker thread)."""
        route = self.route(req.model)
        try:
            if route.index is None:  # a plain model: the caller's conversation as is
                max_tokens = req.max_tokens or self.cfg.max_tokens
                g = self.batcher.submit(Job(route.adapter, req.messages, req.stop, max_tokens,
                                            req.temperature)).result()
                # asked for, the reply's token log-probabilities go in the extra field (what the remote
                # backend reads for the confidence of an answer)
                extra = {"logprobs": g.logprobs, "abstain_logprob": g.abstain_logprob} if req.logprobs else None
                return Reply(g.text, g.n_prompt_tokens, g.n_new_tokens, _finish(g.n_new_tokens, max_tokens), extra)
            question = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
            max_tokens = req.max_tokens or self.pool.cfg.generate.max_new_tokens
            gen = BatchedGenerator(self.batcher, route.adapter, max_tokens, req.temperature)
            answer = self.pool.answer(question, route, gen)
            return Reply(answer.text, 0, answer.n_new_tokens, _finish(answer.n_new_tokens, max_tokens),
                         _sources(answer))
        except QueueFull:
            raise self._busy() from None
        except WorkbenchError as e:
            raise ApiError(400, str(e)) from None

    def stream_job(self, req: ChatRequest, route: Route) -> Job:
        """Queue a plain model's reply to be streamed as it is generated (``Job.pieces``).

        Raises:
            ApiError: 503 when the queue is full.
        """
        job = Job(route.adapter, req.messages, req.stop, req.max_tokens or self.cfg.max_tokens, req.temperature,
                  pieces=queue.Queue())
        try:
            self.batcher.submit(job)
        except QueueFull:
            raise self._busy() from None
        return job

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
        now = int(time.time())
        # bare adapter names too: vLLM lists its LoRA modules so, and the remote backend asks for them
        ids = self.pool.model_ids() + self.pool.adapters + [f"embed:{i}" for i in self.pool.indices]
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "workbench"}
                                           for m in ids]}


def _finish(n_new: int, max_tokens: int) -> str:
    return "length" if n_new >= max_tokens else "stop"


def completion(req: ChatRequest, reply: Reply) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object (plus ``workbench`` for retrieval models)."""
    out = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
           "model": req.model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                        "finish_reason": reply.finish_reason}],
           "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                     "total_tokens": reply.prompt_tokens + reply.completion_tokens}}
    if reply.extra is not None:
        out["workbench"] = reply.extra
    return out


class Events:
    """Server-sent events of one streamed chat completion (``chat.completion.chunk`` objects)."""

    def __init__(self, model: str):
        self.head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        body = {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def start(self) -> str:
        return self.chunk({"role": "assistant", "content": ""})

    def end(self, finish: str, extra: dict[str, Any] | None = None) -> list[str]:
        more = {"workbench": extra} if extra is not None else {}
        return [self.chunk({}, finish, **more), "data: [DONE]\n\n"]


def stream_chunks(req: ChatRequest, reply: Reply) -> list[str]:
    """The events of a finished reply (a retrieval model's, whose text is cleaned after generation): the
    role, the text word by word, the finish with the ``workbench`` extra, then ``[DONE]``. The deltas join
    to the non-streamed text."""
    ev = Events(req.model)
    pieces = [reply.text[i:j] for i, j in _word_cuts(reply.text)]
    return [ev.start()] + [ev.chunk({"content": p}) for p in pieces] + ev.end(reply.finish_reason, reply.extra)


def _word_cuts(text: str) -> list[tuple[int, int]]:
    """Cut points that split ``text`` into words, each piece carrying the space before it."""
    starts = [0] + [i for i in range(1, len(text)) if text[i - 1] == " " and text[i] != " "]
    return list(zip(starts, starts[1:] + [len(text)])) if text else []


# --- HTTP ---------------------------------------------------------------------------------------

def create_app(server: Server) -> Any:
    """The FastAPI application over a ``Server``."""
    app = FastAPI(title="workbench", description="OpenAI-compatible API over the workbench systems")
    key = os.environ.get(server.cfg.api_key_env) or None

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(ApiError(e.status_code, str(e.detail), kind).body(), status_code=e.status_code)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if key and request.headers.get("authorization", "") != f"Bearer {key}":
            return JSONResponse(ApiError(401, "a valid API key is required (Authorization: Bearer KEY)",
                                         code="invalid_api_key").body(), status_code=401)
        return await call_next(request)

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({str(e).splitlines()[0][:120]})") from None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.models()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = parse_chat(await json_body(request), server.cfg.max_tokens_limit)
        route = server.route(req.model)  # an unknown model is a 404 before anything else
        if req.stream and route.index is None:  # a plain model streams as it generates
            return StreamingResponse(live_events(req, server.stream_job(req, route)), media_type="text/event-stream")
        reply = await run_in_threadpool(server.chat, req)
        if not req.stream:
            return completion(req, reply)

        async def events() -> Any:
            for e in stream_chunks(req, reply):
                yield e
                await asyncio.sleep(0)
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        return await run_in_threadpool(server.embeddings, body)

    return app


async def live_events(req: ChatRequest, job: Job) -> Any:
    """The events of a plain model's reply, each piece sent as soon as it is generated."""
    ev = Events(req.model)
    yield ev.start()
    while (piece := await run_in_threadpool(job.pieces.get)) is not None:
        yield ev.chunk({"content": piece})
    try:
        g = job.future.result()
    except Exception as e:  # noqa: BLE001 - the status line is sent: report it in the stream
        yield f"data: {json.dumps(ApiError(500, str(e)[:300], kind='server_error').body())}\n\n"
        yield "data: [DONE]\n\n"
        return
    for e in ev.end(_finish(g.n_new_tokens, job.max_tokens)):
        yield e


def serve(pool: ModelPool, cfg: ServeConfig) -> None:
    """Bind, load the models (failing fast on a missing adapter or index), and serve until Ctrl-C.

    Raises:
        WorkbenchError: the port is in use, or a model, adapter or index cannot be loaded.
    """
    import uvicorn

    sock = bind(cfg.host, cfg.port)
    try:
        if cfg.host not in LOOPBACK and not os.environ.get(cfg.api_key_env):
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
