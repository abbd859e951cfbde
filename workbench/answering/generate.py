"""Batched and streaming text generation over a chat model, shared by every system and the app.

Prompts are rendered with the tokenizer's chat template (a plain "Question:/Answer:" layout when it has
none), sorted by token length and cut into batches so each batch carries little left padding, generated
greedily (temperature 0) or sampled, and returned in input order. Generation stops at the model's end
of turn, at a stop string, or at ``max_new_tokens``.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from workbench.answering.copying import CopyVocab, SpanCopyProcessor
from workbench.answering.models import prepare_tokenizer
from workbench.core.config import GenerateConfig
from workbench.core.text import ABSTAIN

if TYPE_CHECKING:
    from workbench.answering.copying import Source

Conversation = list[dict[str, str]]


@dataclass
class Generation:
    """One generated reply.

    Attributes:
        text: the reply, special tokens removed, cut before any stop string, stripped.
        n_prompt_tokens: prompt length in tokens (after any truncation).
        n_new_tokens: tokens generated (end-of-turn and padding not counted).
        latency_s: wall time of the batch that produced it.
    """

    text: str
    n_prompt_tokens: int
    n_new_tokens: int
    latency_s: float
    logprobs: list[float] = field(default_factory=list)
    """Per reply token, its log-probability under the model (before copy constraints)."""
    copy_logprobs: list[float] = field(default_factory=list)
    """Per reply token, its log-probability among the tokens copying allowed (empty for a free reply)."""
    abstain_logprob: float | None = None
    """Log-probability, at the reply's first step, of starting the abstention phrase (model distribution)."""
    copy_abstain_logprob: float | None = None
    """The same among the tokens copying allowed, with its start prior (None for a free reply)."""


def render_prompt(tokenizer: Any, messages: Conversation) -> str:
    """The prompt text exactly as the model sees it: chat template plus the assistant generation prompt.

    A conversation ending with an assistant message is a reply already begun: it is rendered open, and
    the model continues it. Tokenizers without a chat template get a plain layout: the system text, then
    ``Question: ...`` / ``Answer: ...`` per turn, ending with ``Answer:``.
    """
    open_reply = bool(messages) and messages[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not open_reply,
                                             continue_final_message=open_reply)
    parts = []
    for m in messages:
        label = {"system": "", "user": "Question: ", "assistant": "Answer: "}.get(m["role"], f"{m['role']}: ")
        parts.append(label + m["content"].strip())
    return "\n\n".join(parts) + ("" if open_reply else "\nAnswer:")


def _padded_after(ids: list[int], j: int) -> bool:
    """Whether ``ids[j:]`` is all one token (the pad run that ends a finished row)."""
    return all(t == ids[j] for t in ids[j:])


def _stop_prefix_len(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def fit_prompt(ids: list[int], window: int, max_new_tokens: int) -> list[int]:
    """The end of a prompt's token ids that leaves room for a reply of ``max_new_tokens`` in a context of
    ``window`` tokens (all of them when they fit, or when the reply budget alone fills the context)."""
    limit = window - max_new_tokens
    return ids[-limit:] if len(ids) > limit > 0 else ids


class _Stopped:
    """A stopping criterion that ends generation at the next token once any of ``events`` is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [e for e in events if e is not None]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = any(e.is_set() for e in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class LogprobRecorder:
    """A pass-through logits processor that records each row's chosen-token log-probabilities.

    Placed in a processor list, it sees the scores as the processors before it left them (the model's own
    distribution when first, the copy-constrained one when after ``SpanCopyProcessor``). It keeps one step
    of log-probabilities at a time: the token chosen from step t is read from the input at step t+1, and
    the last one from the finished sequences (``finish``). At the first step it also records the
    log-probability of starting with any of ``first_ids`` (the abstention phrase's first token).
    """

    def __init__(self, prompt_width: int, first_ids: Sequence[int] = ()):
        self.width = prompt_width
        self.first_ids = sorted(set(first_ids))
        self._prev: Any = None
        self.steps: list[Any] = []  # per step: (batch,) log-probs of the chosen tokens
        self.first: Any = None  # (batch,) log-prob of starting with first_ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._prev is not None and input_ids.shape[1] > self.width:
            self.steps.append(self._prev.gather(1, input_ids[:, -1:]).squeeze(1).cpu())
        logp = torch.log_softmax(scores.float(), dim=-1)
        if self.first is None and self.first_ids:
            ids = [i for i in self.first_ids if i < logp.shape[1]]
            self.first = torch.logsumexp(logp[:, ids], dim=-1).cpu() if ids else None
        self._prev = logp
        return scores

    def finish(self, sequences: Any) -> list[list[float]]:
        """Per row, the log-probability of every generated token (pads after a finished row included)."""
        if self._prev is not None:
            t = self.width + len(self.steps)
            if t < sequences.shape[1]:
                self.steps.append(self._prev.gather(1, sequences[:, t:t + 1].to(self._prev.device)).squeeze(1).cpu())
            self._prev = None
        if not self.steps:
            return [[] for _ in range(sequences.shape[0])]
        import torch

        return torch.stack(self.steps, dim=1).tolist()

    def first_logprobs(self, n: int) -> list[float | None]:
        return [None] * n if self.first is None else [float(x) for x in self.first.tolist()]


class Generator:
    """Generates replies to conversations with one loaded model.

    Args:
        model: a causal LM (eval mode, on its device).
        tokenizer: its tokenizer; left padding and a pad token are set here if missing.
        cfg: max new tokens, temperature (0 = greedy), batch size.
    """

    def __init__(self, model: Any, tokenizer: Any, cfg: GenerateConfig | None = None):
        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.cfg = cfg or GenerateConfig()
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self._copy_vocab: Any = None  # workbench.answering.copying.CopyVocab, made on first use
        self._abstain_ids: list[int] | None = None

    def with_config(self, cfg: GenerateConfig) -> "Generator":
        """A generator over the same loaded model and tokenizer with other decoding settings."""
        other = copy.copy(self)
        other.cfg = cfg
        return other

    # --- prompt side ---------------------------------------------------------------------------

    def encode(self, conversation: Conversation) -> list[int]:
        """Token ids of a rendered conversation, left-truncated to leave room for the reply."""
        return fit_prompt(self.prompt_ids(conversation), self.window(), self.cfg.max_new_tokens)

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """Token ids of a rendered conversation, whole (``encode`` keeps the end that fits the context)."""
        text = render_prompt(self.tokenizer, conversation)
        # Chat templates already hold their special tokens; the plain layout gets the tokenizer's BOS.
        return self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"]

    def window(self) -> int:
        """The model's context length in tokens (position embeddings, else the tokenizer's limit)."""
        n = getattr(self.model.config, "max_position_embeddings", None) or 0
        t = getattr(self.tokenizer, "model_max_length", 0) or 0
        n = n or (t if t < 1_000_000 else 2048)
        return int(n)

    def stop_ids(self) -> list[int]:
        """End-of-turn token ids: the tokenizer's eos, the model's configured eos ids, and ChatML's."""
        ids: list[int] = []
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids += eos if isinstance(eos, list) else [eos]
        ids.append(self.tokenizer.eos_token_id)
        for t in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = self.tokenizer.convert_tokens_to_ids(t) if t in self.tokenizer.get_vocab() else None
            ids.append(tid)
        return sorted({i for i in ids if isinstance(i, int) and i >= 0})

    def _gen_kwargs(self, stop: Sequence[str]) -> dict[str, Any]:
        kw: dict[str, Any] = dict(max_new_tokens=self.cfg.max_new_tokens, eos_token_id=self.stop_ids(),
                                  pad_token_id=self.tokenizer.pad_token_id)
        if self.cfg.temperature > 0:
            kw.update(do_sample=True, temperature=self.cfg.temperature, top_p=1.0, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        return kw

    # --- batched generation --------------------------------------------------------------------

    def batches(self, lengths: Sequence[int], items: Sequence[int]) -> Iterator[list[int]]:
        """``items`` (sorted by their prompt ``lengths``, ascending) cut into batches of at most
        ``cfg.batch_size`` items whose padded size (items x longest) stays within ``cfg.batch_tokens``;
        a prompt longer than the token budget goes alone."""
        batch: list[int] = []
        for n, item in zip(lengths, items):
            if batch and (len(batch) >= self.cfg.batch_size or (len(batch) + 1) * n > self.cfg.batch_tokens):
                yield batch
                batch = []
            batch.append(item)
        if batch:
            yield batch

    def abstain_ids(self) -> list[int]:
        """First token of the abstention phrase, as a reply would start it (with and without a space)."""
        if self._abstain_ids is None:
            firsts = (self.tokenizer(t, add_special_tokens=False)["input_ids"][:1] for t in (ABSTAIN, " " + ABSTAIN))
            self._abstain_ids = sorted({ids[0] for ids in firsts if ids})
        return self._abstain_ids

    def _processors(self, sources: Sequence[Sequence[Source]] | None,
                    width: int) -> tuple[dict[str, Any], LogprobRecorder, LogprobRecorder | None]:
        """``logits_processor`` recording the model's log-probs and, with ``sources``, restricting each row's
        reply to spans of its sources and recording the constrained log-probs too."""
        from transformers import LogitsProcessorList

        model_lp = LogprobRecorder(width, self.abstain_ids())
        if sources is None:
            return {"logits_processor": LogitsProcessorList([model_lp])}, model_lp, None
        self._copy_vocab = self._copy_vocab or CopyVocab(self.tokenizer)
        proc = SpanCopyProcessor(self.tokenizer, sources, width, self.stop_ids(), self._copy_vocab)
        copy_lp = LogprobRecorder(width, self.abstain_ids())
        return {"logits_processor": LogitsProcessorList([model_lp, proc, copy_lp])}, model_lp, copy_lp

    def generate(self, conversations: list[Conversation], progress: bool = False,
                 stop: Sequence[str] = (), sources: Sequence[Sequence[Source]] | None = None) -> list[Generation]:
        """Reply to each conversation, batched; results come back in input order.

        Prompts are sorted by length and batched, at most ``cfg.batch_size`` prompts and
        ``cfg.batch_tokens`` padded prompt tokens at a time, left-padded, so greedy outputs match
        one-at-a-time generation while the model runs on full batches.

        Args:
            conversations: chat messages (``{"role", "content"}`` dicts) per prompt.
            progress: show a progress bar over prompts.
            stop: strings that end a reply early (the reply is cut before them).
            sources: per conversation, texts (or ``CopySource``) the reply must be copied from
                (``workbench.answering.copying``);
                None generates freely.

        Returns:
            One ``Generation`` per conversation.
        """
        import torch
        from tqdm.auto import tqdm

        encoded = [self.encode(c) for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[Generation | None] = [None] * len(encoded)
        kw = self._gen_kwargs(stop)
        eos = set(kw["eos_token_id"])
        pad = self.tokenizer.pad_token_id
        device = self.model.device
        with tqdm(total=len(encoded), desc="generate", unit="prompt", disable=not progress) as bar:
            for idx in self.batches([len(encoded[i]) for i in order], order):
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx])
                mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx])
                t0 = time.perf_counter()
                with torch.inference_mode():
                    procs, model_lp, copy_lp = self._processors(
                        None if sources is None else [sources[i] for i in idx], width)
                    seqs = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                               **kw, **procs)
                latency = time.perf_counter() - t0
                lps = model_lp.finish(seqs)
                copy_lps = copy_lp.finish(seqs) if copy_lp else [[] for _ in idx]
                firsts = model_lp.first_logprobs(len(idx))
                copy_firsts = copy_lp.first_logprobs(len(idx)) if copy_lp else [None] * len(idx)
                for row, i in enumerate(idx):
                    new = seqs[row, width:].tolist()
                    # a finished row is filled with pad after its end of turn (or its stop string)
                    n_new = next((j for j, t in enumerate(new) if t in eos), len(new))
                    while n_new and new[n_new - 1] == pad and pad not in eos and _padded_after(new, n_new - 1):
                        n_new -= 1
                    text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
                    text, _ = cut_at_stop(text, stop)
                    out[i] = Generation(text.strip(), len(encoded[i]), n_new, latency, lps[row][:n_new],
                                        copy_lps[row][:n_new], firsts[row], copy_firsts[row])
                bar.update(len(idx))
        return [g for g in out if g is not None]

    # --- streaming -----------------------------------------------------------------------------

    def stream(self, conversation: Conversation, stop: Sequence[str] = (),
               sources: Sequence[Source] | None = None, stats: dict[str, Any] | None = None,
               cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply to one conversation piece by piece as it is generated.

        The pieces join to exactly ``generate([conversation], stop=stop, sources=[sources])[0].text``
        (``sources=None``: unconstrained): leading and
        trailing whitespace is held back, and nothing from a stop string on is yielded. ``stats``, when
        given, is filled at the end with the reply's log-probabilities (the ``Generation`` fields
        ``logprobs``, ``copy_logprobs``, ``abstain_logprob``, ``copy_abstain_logprob``). Setting ``cancel``, or
        closing the iterator early (the reader went away), stops generation at the next token.
        """
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        ids = self.encode(conversation)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []
        stopped = threading.Event()

        def work() -> None:
            try:
                procs, model_lp, copy_lp = self._processors(None if sources is None else [sources], len(ids))
                with torch.inference_mode():
                    seqs = self.model.generate(input_ids=torch.tensor([ids], device=self.model.device),
                                               attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                         device=self.model.device),
                                               streamer=streamer, **self._gen_kwargs(stop), **procs,
                                               stopping_criteria=StoppingCriteriaList([_Stopped(stopped, cancel)]))
                if stats is not None:
                    new = seqs[0, len(ids):].tolist()
                    n = next((j for j, t in enumerate(new) if t in set(self.stop_ids())), len(new))
                    stats.update(logprobs=model_lp.finish(seqs)[0][:n], abstain_logprob=model_lp.first_logprobs(1)[0],
                                 copy_logprobs=copy_lp.finish(seqs)[0][:n] if copy_lp else [],
                                 copy_abstain_logprob=copy_lp.first_logprobs(1)[0] if copy_lp else None)
            except BaseException as e:  # noqa: BLE001 - re-raised in the consuming thread
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text, sent, done = "", 0, False
        try:
            for piece in streamer:
                if done:
                    continue  # drain until generation stops
                text += piece
                visible, done = cut_at_stop(text, stop)
                ready = visible.strip()
                if not done:  # hold back a tail that may be the start of a stop string
                    ready = ready[:len(ready) - _stop_prefix_len(ready, stop)]
                if len(ready) > sent:
                    yield ready[sent:]
                    sent = len(ready)
        finally:  # finished, or closed early: either way the model is free once this returns
            stopped.set()
            thread.join()
        if failure:
            raise failure[0]
        final = cut_at_stop(text, stop)[0].strip()
        if len(final) > sent:
            yield final[sent:]
