"""Next token: logits → softmax → probabilities, reshaped by temperature, top-k and top-p, and sampled.

The model's last position gives one score (logit) per vocabulary entry; softmax turns them into
probabilities, ``p_i = exp(z_i / T) / Σ_j exp(z_j / T)``. A temperature T below 1 sharpens the
distribution, above 1 flattens it, 0 is greedy (all mass on the best token); top-k keeps the k most
likely tokens and top-p the fewest whose probabilities add up to p, then the rest is renormalised. This
is the order Hugging Face's samplers apply them in, and the one ``sample_continuations`` draws from.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.answering.generate import Generator
from workbench.core.errors import WorkbenchError
from workbench.inside.prompt import Prompt
from workbench.inside.text import format_table, show_token, visible


@dataclass
class NextToken:
    """One candidate next token.

    Attributes:
        rank: 1 = most likely under the raw softmax.
        id: token id.
        token: the token as readable text.
        logit: the model's raw score.
        p_raw: softmax probability at temperature 1, nothing cut.
        p: probability after temperature, top-k and top-p.
    """

    rank: int
    id: int
    token: str
    logit: float
    p_raw: float
    p: float


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """WorkbenchError for a negative temperature, negative top-k or top-p outside (0, 1]."""
    if temperature < 0:
        raise WorkbenchError(f"temperature {temperature} is negative", "use 0 (greedy) or more")
    if top_k < 0:
        raise WorkbenchError(f"top-k {top_k} is negative", "use 0 (no cut) or a positive number")
    if not 0 < top_p <= 1:
        raise WorkbenchError(f"top-p {top_p} is outside (0, 1]", "use e.g. 0.9, or 1 for no cut")


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities from scores along the last axis (shifted by the max so exp never overflows)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reshape(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The sampling distribution over the vocabulary: temperature, then top-k, then top-p.

    Args:
        logits: ``(vocab,)`` or ``(rows, vocab)`` scores.
        temperature: 0 = greedy (probability 1 on the highest logit).
        top_k: keep the k highest-scoring tokens (0 = all).
        top_p: keep the most likely tokens until their probability reaches ``top_p`` (1 = all).

    Returns:
        float64 probabilities of the same shape, each row summing to 1.
    """
    check_sampling(temperature, top_k, top_p)
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        out = np.zeros_like(z)
        np.put_along_axis(out, z.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return out
    z = z / temperature
    if 0 < top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]  # the k-th highest score per row
        z = np.where(z >= kth, z, -np.inf)
    p = softmax(z)
    if top_p < 1:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        # keep a token while the mass before it is still short of top_p (the first token always stays)
        keep_sorted = (np.cumsum(sorted_p, axis=-1) - sorted_p) < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p = p / p.sum(axis=-1, keepdims=True)
    return p


@dataclass
class Prefill:
    """A prompt read once: the scores for the next token and the key/value cache to continue from.

    Attributes:
        logits: ``(vocab,)`` float32 scores at the last position.
        cache: the prompt's key/value cache (``sample_continuations`` copies it, never changes it).
    """

    logits: np.ndarray
    cache: Any


def cache_argument(model: Any) -> str:
    """The name of the key/value cache argument and output: transformers 5 renamed ``past_key_values``
    to ``cache``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def read_prompt(model: Any, prompt: Prompt) -> Prefill:
    """Read ``prompt`` once, keeping the next-token scores and the cache sampling continues from."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt.ids], device=model.device), use_cache=True, logits_to_keep=1)
    return Prefill(out.logits[0, -1].float().cpu().numpy(), out[cache_argument(model)])


def next_logits(model: Any, prompt: Prompt) -> np.ndarray:
    """The model's scores for the token after ``prompt``: ``(vocab,)`` float32."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt.ids], device=model.device), logits_to_keep=1)
    return out.logits[0, -1].float().cpu().numpy()


def top_tokens(logits: np.ndarray, tokenizer: Any, n: int = 10, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0) -> list[NextToken]:
    """The ``n`` most likely next tokens with raw and reshaped probabilities."""
    p_raw = softmax(logits)
    p = reshape(logits, temperature, top_k, top_p)
    best = np.argsort(-logits, kind="stable")[:n]
    return [NextToken(r, int(i), show_token(tokenizer, int(i)), float(logits[i]), float(p_raw[i]), float(p[i]))
            for r, i in enumerate(best, 1)]


def sample_continuations(model: Any, tokenizer: Any, prompt: Prompt, n: int = 3, max_new_tokens: int = 12,
                         temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                         prefill: Prefill | None = None) -> list[str]:
    """``n`` continuations of ``prompt`` drawn from ``reshape`` at the given settings (reproducible by seed).

    The prompt is read once (or its ``prefill`` reused) and its key/value cache copied to the ``n`` rows,
    which then advance one token per step together; each row stops at the model's end of turn.
    """
    import copy

    import torch

    check_sampling(temperature, top_k, top_p)
    if not 1 <= n <= 16 or not 1 <= max_new_tokens <= 256:
        raise WorkbenchError("samples must be 1-16 and new tokens 1-256", "lower the numbers")
    stops = set(Generator(model, tokenizer).stop_ids())
    prefill = prefill or read_prompt(model, prompt)
    cache_arg = cache_argument(model)
    cache = copy.deepcopy(prefill.cache)
    cache.batch_repeat_interleave(n)  # (1, kv heads, T, d) -> (n, kv heads, T, d) per layer
    logits = np.repeat(prefill.logits[None], n, axis=0)  # (n, vocab)
    rng = np.random.default_rng(seed)
    rows: list[list[int]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            p = reshape(logits, temperature, top_k, top_p)
            nxt = np.array([rng.choice(p.shape[-1], p=row) for row in p])
            for i, t in enumerate(nxt):
                if not done[i]:
                    done[i] = int(t) in stops
                    if not done[i]:
                        rows[i].append(int(t))
            if done.all():
                break
            out = model(input_ids=torch.tensor(nxt[:, None], device=model.device), use_cache=True,
                        **{cache_arg: cache})
            cache = out[cache_arg]
            logits = out.logits[:, -1].float().cpu().numpy()
    return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]


def format_next(prompt: Prompt, tokens: list[NextToken], samples: list[str], temperature: float, top_k: int,
                top_p: float) -> str:
    """Terminal view: the prompt's size, the top next tokens, and the sampled continuations."""
    out = [f"prompt: {prompt.n_tokens} tokens" + (f", {len(prompt.hits)} passages" if prompt.hits else ", closed book")]
    out += [f"note: {n}" for n in prompt.notes]
    out.append(f"softmax turns logits into probabilities: p = exp(logit / T) / sum(exp(logits / T)); "
               f"T={temperature:g}, top-k={top_k or 'off'}, top-p={top_p:g}")
    rows = [(t.rank, t.token, t.id, f"{t.logit:.2f}", f"{t.p_raw:.4f}", f"{t.p:.4f}") for t in tokens]
    out.append(format_table(["rank", "token", "id", "logit", "p (T=1)", "p (settings)"], rows, right=(0, 2, 3, 4, 5)))
    if samples:
        out.append("")
        out.append("sampled continuations:")
        out += [f"  {i}. {visible(s) or '(ended at once)'}" for i, s in enumerate(samples, 1)]
    return "\n".join(out)
