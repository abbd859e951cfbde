"""A served model as the generator: prompts go to an OpenAI-compatible server (``model.backend: openai``).

``RemoteGenerator`` has the ``Generator`` interface the answering path uses (``generate``, ``tokenizer``,
``cfg``), so evaluation, ``workbench ask`` and the app answer through the same ``workbench.answering.answer`` code
whether the weights are here or on a vLLM / llama.cpp / Ollama server or a ``workbench serve``. Prompts
are built here (retrieval, passages, the opened reply); the server only generates.

Copy-constrained decoding needs the model's logits, which a server does not expose: with
``model.remote_copy: snap`` a grounded reply is replaced after generation by the word-aligned span of the
passage sentences it could have copied that overlaps it most (``snap_to_span``); with ``free`` it is kept.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from workbench.answering.copying import CopySource, Source, source_text
from workbench.answering.generate import Conversation, Generation, cut_at_stop
from workbench.answering.models import resolve_base_model
from workbench.core.config import GenerateConfig, ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.text import ABSTAIN, is_abstention, normalize_answer

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
"""HTTP statuses worth another try (a full queue answers 503)."""
_SPAN_SLACK = 4
"""A snapped span may be at most this many words longer than the reply."""


def api_key(cfg: ModelConfig) -> str | None:
    """The API key from the environment variable the config names (None: unset or empty)."""
    return os.environ.get(cfg.api_key_env) or None


def _headers(cfg: ModelConfig) -> dict[str, str]:
    key = api_key(cfg)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _base(cfg: ModelConfig) -> str:
    return (cfg.base_url or "").rstrip("/")


def served_models(cfg: ModelConfig) -> list[str]:
    """The model names the server lists at ``GET {base_url}/models``.

    Raises:
        WorkbenchError: the server cannot be reached or refuses (one line naming the URL tried).
    """
    import httpx

    url = f"{_base(cfg)}/models"
    try:
        r = httpx.get(url, headers=_headers(cfg), timeout=min(10.0, cfg.timeout_s))
    except httpx.HTTPError as e:
        raise WorkbenchError(f"model backend {url} is unreachable ({type(e).__name__})",
                             "start the server (e.g. `workbench serve`), or fix model.base_url") from None
    if r.status_code != 200:
        raise WorkbenchError(f"model backend {url} answered HTTP {r.status_code}: {_error_text(r)}",
                             f"check model.base_url and the key in ${cfg.api_key_env}")
    try:
        return [m["id"] for m in r.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise WorkbenchError(f"model backend {url} did not answer with a model list",
                             "point model.base_url at an OpenAI-compatible /v1 URL") from None


def served_name(cfg: ModelConfig, adapter: str | None) -> str | None:
    """The model name to request: ``cfg.model`` for the base model (None: the server's first), or the
    served LoRA name of an adapter (``cfg.lora_model`` with ``{adapter}`` filled in)."""
    if adapter is None:
        return cfg.model
    return cfg.lora_model.format(adapter=Path(str(adapter)).name)


def check_backend(cfg: ModelConfig, adapters: Sequence[str | None] = (None,)) -> list[str]:
    """Fail fast, before any question is sent: the server answers and serves every model needed.

    Args:
        cfg: the model config (backend openai).
        adapters: None for the base model, else adapter names whose served LoRA names must be listed.

    Returns:
        The names the server lists.

    Raises:
        WorkbenchError: unreachable server, or a needed model it does not list.
    """
    listed = served_models(cfg)
    if not listed:
        raise WorkbenchError(f"model backend {_base(cfg)} serves no model", "load a model on the server")
    for a in adapters:
        name = served_name(cfg, a)
        if name is None or name in listed:
            continue
        serves = f"it serves {', '.join(listed[:10])}"
        if a is None:
            raise WorkbenchError(f"model backend {_base(cfg)} does not serve model.model {name!r}", serves)
        short = Path(str(a)).name
        raise WorkbenchError(f"model backend {_base(cfg)} does not serve adapter {short!r} (as {name!r})",
                             f"{serves}; start vLLM with --enable-lora --lora-modules {name}=adapters/{short}, "
                             f"or `workbench serve --adapters {short}`")
    return listed


def _error_text(r: Any) -> str:
    try:
        return str(r.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return r.text[:200].replace("\n", " ")


def load_tokenizer(cfg: ModelConfig) -> Any:
    """``cfg.base_model``'s tokenizer (prompt budgets count its tokens), or None when it is not available
    here (prompts are then budgeted at about four characters a token)."""
    try:
        folder = resolve_base_model(cfg.base_model, progress=False)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    except (WorkbenchError, OSError, ValueError):
        return None


# --- snapping a free reply onto what it could have copied ---------------------------------------

@dataclass(frozen=True)
class _Words:
    """A source text's words, their positions, and their normalised forms."""

    text: str
    spans: list[tuple[int, int]]
    norm: list[str]

    @classmethod
    def of(cls, text: str) -> "_Words":
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        return cls(text, spans, [normalize_answer(text[a:b]) for a, b in spans])


def _f1(pred: list[str], gold: list[str]) -> float:
    common = sum(min(pred.count(w), gold.count(w)) for w in set(pred))
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def snap_to_span(reply: str, sources: Sequence[Source]) -> str:
    """The word-aligned span of ``sources`` closest to ``reply`` (token F1), or ``ABSTAIN``.

    What copy-constrained decoding would have allowed: a reply that declines stays "I don't know"; any
    other reply becomes the span sharing most words with it (ties: the shorter, then the first), never one
    starting with a word its source bans (``CopySource.no_start``) unless nothing else matches; a reply
    sharing no word with the sources becomes "I don't know".
    """
    target = normalize_answer(reply).split()
    if is_abstention(reply) or not target:
        return ABSTAIN
    best: tuple[bool, float, int] = (False, 0.0, 0)  # (allowed start, F1, -length)
    best_text = ""
    for src in sources:
        words = _Words.of(source_text(src.text if isinstance(src, CopySource) else src))
        banned = src.no_start if isinstance(src, CopySource) else frozenset()
        for i in range(len(words.spans)):
            if not words.norm[i]:
                continue
            allowed = words.text[slice(*words.spans[i])].strip("\"'“”‘’«»()[]*_`.,;:!?").casefold() not in banned
            for j in range(i + 1, min(len(words.spans), i + len(target) + _SPAN_SLACK) + 1):
                toks = " ".join(words.norm[i:j]).split()
                f1 = _f1(toks, target)
                score = (allowed and f1 > 0, f1, -(j - i))
                if toks and score > best:
                    best = score
                    best_text = words.text[words.spans[i][0]:words.spans[j - 1][1]]
                if words.text[words.spans[j - 1][1] - 1] in ".!?":  # a span never runs past a sentence end
                    break
    if best[1] <= 0:
        return ABSTAIN
    return best_text.strip().rstrip(".,;:!?")


# --- the generator -------------------------------------------------------------------------------

class RemoteGenerator:
    """Replies to conversations from a model served over the OpenAI chat-completions API.

    Args:
        cfg: the model config (base_url, key, concurrency, timeouts, retries, remote_copy).
        gen_cfg: decoding settings (max_new_tokens, temperature, copy_spans, context_tokens).
        model: the served model name (None: the first the server lists).
        tokenizer: counts prompt tokens (None: ``load_tokenizer(cfg)`` on first use).
    """

    def __init__(self, cfg: ModelConfig, gen_cfg: GenerateConfig | None = None, model: str | None = None,
                 tokenizer: Any = None):
        gen_cfg = gen_cfg or GenerateConfig()
        self.model_cfg = cfg
        # without logits there is nothing to constrain: "free" skips computing the copy sources altogether
        self.cfg = replace(gen_cfg, copy_spans=False) if cfg.remote_copy == "free" else gen_cfg
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)

    def describe(self) -> str:
        """``model @ base_url``, for reports."""
        return f"{self.model} @ {_base(self.model_cfg)}"

    def with_config(self, gen_cfg: GenerateConfig) -> "RemoteGenerator":
        """A generator over the same served model and tokenizer with other decoding settings."""
        return RemoteGenerator(self.model_cfg, gen_cfg, self.model, self.tokenizer)

    def stream(self, conversation: Conversation, stop: Sequence[str] = (), sources: Sequence[Source] | None = None,
               stats: dict[str, Any] | None = None) -> Iterator[str]:
        """The reply to one conversation as one piece (the server is asked without streaming); ``stats``, when
        given, gets the reply's log-probabilities as ``Generator.stream`` fills them."""
        (g,) = self.generate([conversation], stop=stop, sources=None if sources is None else [sources])
        if stats is not None:
            stats.update(logprobs=g.logprobs, copy_logprobs=g.copy_logprobs, abstain_logprob=g.abstain_logprob,
                         copy_abstain_logprob=g.copy_abstain_logprob)
        if g.text:
            yield g.text

    def _payload(self, conversation: Conversation, stop: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": conversation, "logprobs": True,
                                "max_tokens": self.cfg.max_new_tokens, "temperature": self.cfg.temperature}
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most four
        if conversation and conversation[-1]["role"] == "assistant":
            # a reply already begun (the RAG prompt opens it): vLLM's and workbench serve's extension
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _post(self, client: Any, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion, retried on connection failures, timeouts and HTTP 429/5xx."""
        import httpx

        url = f"{_base(self.model_cfg)}/chat/completions"
        why = ""
        for attempt in range(self.model_cfg.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            try:
                r = client.post(url, json=body, headers=_headers(self.model_cfg))
            except httpx.HTTPError as e:
                why = type(e).__name__
                continue
            if r.status_code == 200:
                return r.json()
            why = f"HTTP {r.status_code}: {_error_text(r)}"
            if r.status_code not in RETRY_STATUS:
                break
        raise WorkbenchError(f"model backend {url} failed for model {body['model']!r} ({why})",
                             "check that the server is up and serves that model; nothing was written")

    def generate(self, conversations: list[Conversation], progress: bool = False, stop: Sequence[str] = (),
                 sources: Sequence[Sequence[Source] | None] | None = None) -> list[Generation]:
        """Reply to each conversation (``model_cfg.concurrency`` requests in flight); input order kept.

        With ``sources`` (and ``remote_copy: snap``), each grounded reply is snapped onto its sources.

        Raises:
            WorkbenchError: a request still failing after the retries (the caller stops; nothing is kept).
        """
        import httpx
        from tqdm.auto import tqdm

        if self.model is None:
            self.model = served_models(self.model_cfg)[0]
        with httpx.Client(timeout=self.model_cfg.timeout_s) as client, \
                ThreadPoolExecutor(self.model_cfg.concurrency) as pool, \
                tqdm(total=len(conversations), desc="generate", unit="prompt", disable=not progress) as bar:
            def one(conv: Conversation) -> tuple[dict[str, Any], float]:
                t0 = time.perf_counter()
                out = self._post(client, self._payload(conv, stop))
                bar.update(1)
                return out, time.perf_counter() - t0

            replies = list(pool.map(one, conversations))
        gens = []
        for i, (reply, latency) in enumerate(replies):
            text = str(((reply.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
            text = cut_at_stop(text, stop)[0].strip()
            if sources is not None and sources[i] is not None and self.model_cfg.remote_copy == "snap":
                text = snap_to_span(text, sources[i])
            usage = reply.get("usage") or {}
            lps, abstain = _logprobs(reply)
            gens.append(Generation(text, int(usage.get("prompt_tokens") or 0),
                                   int(usage.get("completion_tokens") or 0), latency, logprobs=lps,
                                   abstain_logprob=abstain))
        return gens


def _logprobs(reply: dict[str, Any]) -> tuple[list[float], float | None]:
    """The reply's token log-probabilities (the confidence of an answer reads them): OpenAI's
    ``choices[0].logprobs.content`` (vLLM, llama.cpp), else ``workbench serve``'s extra field, which also
    holds the log-probability of starting "I don't know" instead; ``([], None)`` when the server sent none."""
    extra = reply.get("workbench") or {}
    content = (((reply.get("choices") or [{}])[0].get("logprobs") or {}).get("content")) or []
    lps = [float(t["logprob"]) for t in content if isinstance(t, dict) and "logprob" in t]
    if not lps:
        lps = [float(x) for x in extra.get("logprobs") or []]
    abstain = extra.get("abstain_logprob")
    return lps, None if abstain is None else float(abstain)


def backend_cost(cfg: ModelConfig, copy_spans: bool = True) -> dict[str, Any]:
    """summary.json ``cost`` entries saying where the model ran: ``model_backend`` and, for a served model,
    ``remote``: URL, model names, and ``copy``, what became of copy-constrained decoding ("snap": replies
    snapped onto passage spans after generation, "free": left free, "off": ``generate.copy_spans`` off)."""
    if cfg.backend != "openai":
        return {"model_backend": "local"}
    return {"model_backend": "openai",
            "remote": {"base_url": _base(cfg), "model": cfg.model, "lora_model": cfg.lora_model,
                       "copy": cfg.remote_copy if copy_spans else "off"}}
