"""Attention: for each layer and head, how much each prompt token reads from each earlier one.

Each row of an attention map is a softmax over the earlier positions, so it sums to 1. The last prompt
position is where the answer's first token is produced; its row, summed over the tokens of each passage
and of the question, says where the model "looks" while it starts answering.

Fast attention kernels (SDPA, flash attention) never build the weights, so a model loaded with one is
switched to the eager kernel for the pass (under the caller's model lock in the app) and switched back;
the view says so in its notes.
"""
from __future__ import annotations

import bisect
import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.inside.prompt import Prompt
from workbench.inside.text import format_table, show_token

_WORD = re.compile(r"\w+")


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[str | None]:
    """Run the block with the eager attention kernel; yields a note when the model had to be switched."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl == "eager":
        yield None
        return
    model.set_attn_implementation("eager")
    try:
        yield (f"the model's {impl} attention kernel cannot return attention weights: this view ran it with "
               "the eager kernel (same numbers, slower)")
    finally:
        model.set_attn_implementation(impl)


@dataclass
class AttentionView:
    """Attention over one prompt.

    Attributes:
        prompt: the prompt read.
        layer: the layer ``maps`` belongs to (0-based).
        maps: ``(heads, T, T)`` attention of that layer; row t: how much position t reads from each
            position (zero after t).
        last_rows: ``(layers, heads, T)``: the last position's row in every layer (the position that
            produces the answer's first token).
        answer_token: the model's most likely first answer token (greedy).
        notes: e.g. the eager-kernel switch, truncation.
    """

    prompt: Prompt
    layer: int
    maps: np.ndarray
    last_rows: np.ndarray
    answer_token: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return int(self.last_rows.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.last_rows.shape[1])

    def heatmap(self, head: int | None = None) -> np.ndarray:
        """``(T, T)`` map of ``self.layer`` for one head, or the mean over heads (None)."""
        return self.maps.mean(axis=0) if head is None else self.maps[self._head(head)]

    def answer_row(self, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """``(T,)`` attention of the answer-producing position: one layer (None: mean over layers), one
        head (None: mean over heads)."""
        rows = self.last_rows if layer is None else self.last_rows[_index(layer, self.n_layers, "layer")][None]
        rows = rows.mean(axis=1) if head is None else rows[:, self._head(head)]
        return rows.mean(axis=0)

    def segment_shares(self, layer: int | None = None, head: int | None = None) -> list[tuple[str, float]]:
        """Share of the answer-producing position's attention on each segment (passages, question, ...),
        and on the rest of the prompt ("template": chat markup), in prompt order."""
        row = self.answer_row(layer, head)
        shares = [(s.label, float(row[s.start:s.end].sum())) for s in self.prompt.segments]
        return shares + [("template", float(row.sum()) - sum(v for _, v in shares))]

    def top_words(self, n: int = 8, layer: int | None = None, head: int | None = None,
                  prefix: str = "passage") -> list[tuple[str, str, int, int, float]]:
        """The ``n`` words of the passages the answer-producing position attends to most.

        Returns:
            ``(segment label, word, start char, end char, weight)`` best first; a word's weight is the
            sum over its tokens.
        """
        row = self.answer_row(layer, head)
        text, offsets = self.prompt.text, self.prompt.offsets
        spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        starts = [a for a, _ in spans]
        words: dict[int, list] = {}  # word index -> [segment label, weight]
        for seg in (s for s in self.prompt.segments if s.label.startswith(prefix)):
            for t in range(seg.start, seg.end):
                a, b = offsets[t]
                j = bisect.bisect_right(starts, b - 1) - 1  # the last word starting inside or before the token
                if b > a and j >= 0 and spans[j][1] > a:
                    words.setdefault(j, [seg.label, 0.0])[1] += float(row[t])
        best = sorted(words.items(), key=lambda kv: -kv[1][1])[:n]
        return [(lab, text[spans[j][0]:spans[j][1]], *spans[j], wt) for j, (lab, wt) in best]

    def _head(self, head: int) -> int:
        return _index(head, self.n_heads, "head")


def _index(i: int, n: int, what: str) -> int:
    if not -n <= i < n:
        raise WorkbenchError(f"{what} {i} does not exist (the model has {n} {what}s: 0-{n - 1})",
                             f"pick a {what} from 0 to {n - 1} (or -1 for the last)")
    return i % n


def attention_view(model: Any, tokenizer: Any, prompt: Prompt, layer: int = -1) -> AttentionView:
    """Read ``prompt`` once with attention weights returned.

    Args:
        model, tokenizer: the model (switched to eager attention for the pass when needed).
        prompt: the prompt (see ``workbench.inside.prompt``).
        layer: the layer whose full maps are kept (negative counts from the last).

    Raises:
        WorkbenchError: a layer the model does not have.
    """
    import torch

    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    if n_layers:
        layer = _index(layer, n_layers, "layer")
    ids = torch.tensor([prompt.ids], device=model.device)
    with eager_attention(model) as note, torch.no_grad():
        out = model(input_ids=ids, output_attentions=True, logits_to_keep=1)
    atts = [a for a in (out.attentions or ()) if a is not None]
    if not atts:
        raise WorkbenchError("this model returned no attention weights",
                             "use a transformers model with eager attention")
    layer = _index(layer, len(atts), "layer")
    maps = atts[layer][0].float().cpu().numpy()                                     # (heads, T, T)
    last_rows = torch.stack([a[0, :, -1, :] for a in atts]).float().cpu().numpy()   # (layers, heads, T)
    first = int(out.logits[0, -1].argmax())
    notes = list(prompt.notes) + ([note] if note else [])
    return AttentionView(prompt, layer, maps, last_rows, show_token(tokenizer, first), notes)


def format_attention(view: AttentionView, head: int | None = None, n_words: int = 8) -> str:
    """Terminal view: segment shares (this layer and the mean over layers) and the most-read words."""
    which = "mean over heads" if head is None else f"head {head}"
    out = [f"prompt: {view.prompt.n_tokens} tokens; layer {view.layer} of {view.n_layers} ({which}); "
           f"answer's first token (greedy): {view.answer_token}"]
    out += [f"note: {n}" for n in view.notes]
    mine, overall = view.segment_shares(view.layer, head), dict(view.segment_shares(None, head))
    rows = [(label, f"{share:.3f}", f"{overall[label]:.3f}") for label, share in mine]
    out.append("attention of the position that produces the answer's first token:")
    out.append(format_table(["part", f"layer {view.layer}", "mean of layers"], rows, right=(1, 2)))
    words = view.top_words(n_words, view.layer, head)
    if words:
        out.append("")
        out.append(f"passage words it reads most (layer {view.layer}):")
        out.append(format_table(["passage", "word", "weight"], [(s, w, f"{wt:.3f}") for s, w, _, _, wt in words],
                                right=(2,)))
    return "\n".join(out)
