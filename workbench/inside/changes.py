"""What fine-tuning changed: the gold answer's probability under the base model and under an adapter.

Teacher forcing: the closed-book prompt of a question (``workbench.answering.prompt.build_messages``) followed by
the gold answer, tokenized exactly as fine-tuning tokenizes a training example
(``workbench.training.train_data.tokenize_example``: the answer plus the end-of-turn token). One forward pass
gives, at every answer position, the log-probability the model puts on the gold token given the prompt
and the gold tokens before it. A fact the adapter learned shows as a gold answer whose log-probability
rose; over a batch of eval questions, split by kind, this shows which facts fine-tuning injected
(paraphrases of trained questions) and which it did not (unseen facts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from workbench.answering.answer import check_question
from workbench.answering.loader import adapter_dir, load_generator, read_adapter_manifest
from workbench.answering.prompt import build_messages
from workbench.core.config import ModelConfig
from workbench.core.errors import WorkbenchError
from workbench.core.paths import qa_path
from workbench.corpus.qa import eval_items, load_qa
from workbench.inside.nexttoken import NextToken, cache_argument, top_tokens
from workbench.inside.prompt import model_window
from workbench.inside.text import format_table, show_token, visible
from workbench.training.train_data import Example, tokenize_example


@dataclass
class GoldScores:
    """Teacher-forced scores of one answer under one model.

    Attributes:
        ids: the answer's token ids (the end-of-turn token last).
        logprobs: ``(n,)`` natural-log probability of each answer token given everything before it.
        first_logits: ``(vocab,)`` scores at the position that produces the answer's first token.
        eos: whether the last token is the end-of-turn (it is left out of ``total``).
    """

    ids: list[int]
    logprobs: np.ndarray
    first_logits: np.ndarray
    eos: bool

    @property
    def answer_logprobs(self) -> np.ndarray:
        """Log-probabilities of the answer's own tokens (end-of-turn left out)."""
        return self.logprobs[:-1] if self.eos else self.logprobs

    @property
    def total(self) -> float:
        """Log-probability of the whole answer (end-of-turn left out)."""
        return float(self.answer_logprobs.sum())


def example_ids(question: str, answer: str, tokenizer: Any, max_len: int = 2048) -> tuple[list[int], int]:
    """Token ids of the training example (closed-book prompt + answer + end of turn), and where the
    answer starts."""

    if not str(answer or "").strip():
        raise WorkbenchError("the gold answer is empty", "type the answer the model should give")
    question = check_question(question)
    example = Example(build_messages(question, None, tokenizer), answer.strip(), source="gold")
    row = tokenize_example(example, tokenizer, max_len)
    if row is None:
        raise WorkbenchError("nothing of the answer fits in the window", "use a shorter question or answer")
    start = next(i for i, label in enumerate(row["labels"]) if label != -100)
    return row["input_ids"], start


def gold_scores(model: Any, tokenizer: Any, question: str, answer: str) -> GoldScores:
    """Teacher-forced log-probabilities of ``answer`` after the closed-book prompt of ``question``."""
    return score_batch(model, tokenizer, [(question, answer)])[0]


def score_batch(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> list[GoldScores]:
    """``gold_scores`` for many (question, answer) pairs, batched (same numbers, less work).

    Every example starts with the same system prompt and chat markup: that shared start is read once
    per batch and its key/value cache copied to each row; the rest is right-padded (a causal model never
    reads the padding after a real token), and the vocabulary projection runs only at the positions
    that predict an answer token.
    """
    import torch

    window = model_window(model, tokenizer)
    rows = [example_ids(q, a, tokenizer, window) for q, a in pairs]
    eos_id = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: dict[int, GoldScores] = {}
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths batch together
    for b in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[b:b + batch_size]]
        # shared start, cut before the first answer-predicting position so every one of them is computed below
        shared = min(_common_prefix([r for r, _ in chunk]), min(s for _, s in chunk) - 1)
        width = max(len(r) for r, _ in chunk) - shared
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for i, (r, _) in enumerate(chunk):
            ids[i, :len(r) - shared] = torch.tensor(r[shared:])
        # position t predicts token t+1: row i's answer is read off positions start-1 .. n-2 (minus the shared start)
        keep = sorted({t - shared for r, s in chunk for t in range(s - 1, len(r) - 1)})
        kwargs: dict[str, Any] = {}
        with torch.no_grad():
            if shared:
                head = model(input_ids=torch.tensor([chunk[0][0][:shared]], device=model.device), use_cache=True,
                             logits_to_keep=1)
                cache = head[cache_argument(model)]
                cache.batch_repeat_interleave(len(chunk))
                kwargs = {cache_argument(model): cache, "use_cache": True}
            logits = model(input_ids=ids.to(model.device), logits_to_keep=torch.tensor(keep, device=model.device),
                           **kwargs).logits.float()                                  # (b, len(keep), vocab)
        where = {t: j for j, t in enumerate(keep)}
        for i, (r, s) in enumerate(chunk):
            cols = [where[t - shared] for t in range(s - 1, len(r) - 1)]
            logp = torch.log_softmax(logits[i, cols], dim=-1)                       # (answer tokens, vocab)
            target = torch.tensor(r[s:], device=logp.device)
            lp = logp.gather(-1, target[:, None]).squeeze(-1).cpu().numpy()
            out[order[b + i]] = GoldScores(r[s:], lp.astype(np.float64), logits[i, cols[0]].cpu().numpy(),
                                           eos=eos_id is not None and r[-1] == eos_id)
    return [out[i] for i in range(len(rows))]


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest start all ``seqs`` share."""
    n = min(len(x) for x in seqs)
    for j in range(n):
        if any(x[j] != seqs[0][j] for x in seqs[1:]):
            return j
    return n


@dataclass
class AnswerChange:
    """One gold answer under the base model and the adapter.

    Attributes:
        tokens: each gold token as text.
        base, tuned: the scores under each model.
        top_base, top_tuned: each model's most likely first answer tokens.
    """

    question: str
    answer: str
    tokens: list[str]
    base: GoldScores
    tuned: GoldScores
    top_base: list[NextToken]
    top_tuned: list[NextToken]

    def log_ratios(self) -> np.ndarray:
        """``log p_tuned - log p_base`` per gold token (> 0: fine-tuning made the token more likely)."""
        return self.tuned.logprobs - self.base.logprobs


def compare_answer(base: tuple[Any, Any], tuned: tuple[Any, Any], question: str, answer: str,
                   n_top: int = 8) -> AnswerChange:
    """Teacher-forced per-token comparison of ``answer`` under the base model and the adapter.

    Args:
        base, tuned: ``(model, tokenizer)`` of the base model and of the fine-tuned model.

    Raises:
        WorkbenchError: the two tokenize the example differently (e.g. a from-scratch model).
    """
    (bm, bt), (tm, tt) = base, tuned
    b, t = gold_scores(bm, bt, question, answer), gold_scores(tm, tt, question, answer)
    if b.ids != t.ids:
        raise WorkbenchError("the fine-tuned model's tokenizer cuts the answer differently from the base model's",
                             "compare a LoRA adapter trained on this base model")
    return AnswerChange(question, answer, [show_token(bt, i) for i in b.ids], b, t,
                        top_tokens(b.first_logits, bt, n_top), top_tokens(t.first_logits, tt, n_top))


def load_pair(adapter: str, base_model: str | None = None, device: str = "auto"
              ) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """``((base model, tokenizer), (fine-tuned model, tokenizer))`` for an adapter under ``adapters/`` or a
    folder; the base model defaults to the one the adapter was trained on (its manifest)."""

    folder = adapter_dir(adapter)
    if not (folder / "manifest.json").exists():
        raise WorkbenchError(f"no adapter {adapter!r} at {folder}", "build one with `workbench finetune CORPUS_DIR`")
    trained_on = read_adapter_manifest(folder).get("base_model")
    cfg = ModelConfig(base_model=base_model or trained_on or ModelConfig().base_model, device=device)
    base, tuned = load_generator(cfg), load_generator(cfg, adapter=folder)
    return (base.model, base.tokenizer), (tuned.model, tuned.tokenizer)


def adapter_questions(adapter: str) -> Any:
    """The eval questions of the corpus an adapter was trained on (its ``qa.jsonl``)."""

    corpus = read_adapter_manifest(adapter_dir(adapter)).get("corpus")
    qa = qa_path(corpus)
    if qa is None or not qa.exists():
        raise WorkbenchError(f"adapter {adapter!r} names no corpus with a qa.jsonl", "pass --qa FILE")
    return eval_items(load_qa(qa))


@dataclass
class ItemShift:
    """A question's gold-answer log-probability before and after fine-tuning."""

    id: str
    question: str
    answer: str
    kind: str
    logp_base: float
    logp_tuned: float
    n_tokens: int

    @property
    def delta(self) -> float:
        return self.logp_tuned - self.logp_base


def compare_items(base: tuple[Any, Any], tuned: tuple[Any, Any], items: Sequence[Any], limit: int = 8
                  ) -> list[ItemShift]:
    """Gold-answer log-probabilities of up to ``limit`` answerable QA items under both models.

    Args:
        items: ``workbench.corpus.qa.QAItem``s (the first answer is the gold one); unanswerable ones are skipped.
    """
    chosen = [it for it in items if it.answerable and it.answers][:limit]
    if not chosen:
        raise WorkbenchError("no answerable question with a gold answer to score", "use a qa.jsonl with answers")
    pairs = [(it.question, it.answers[0]) for it in chosen]
    before, after = score_batch(*base, pairs), score_batch(*tuned, pairs)
    return [ItemShift(it.id, it.question, it.answers[0], it.kind or "(no kind)", b.total, a.total,
                      len(b.answer_logprobs)) for it, b, a in zip(chosen, before, after)]


@dataclass
class KindSummary:
    """Gold-answer log-probability of one kind of question, before and after fine-tuning."""

    kind: str
    n: int
    median_base: float
    median_tuned: float
    share_up: float
    """Share of its questions whose gold answer became more likely."""


def by_kind(shifts: Sequence[ItemShift]) -> list[KindSummary]:
    """Per kind (and "all"), median gold log-probability before and after, and the share that rose."""
    groups: dict[str, list[ItemShift]] = {}
    for s in shifts:
        groups.setdefault(s.kind, []).append(s)
    groups["all"] = list(shifts)
    return [KindSummary(k, len(g), float(np.median([s.logp_base for s in g])),
                        float(np.median([s.logp_tuned for s in g])), sum(s.delta > 0 for s in g) / len(g))
            for k, g in groups.items()]


def format_change(change: AnswerChange) -> str:
    """Terminal view: per gold token, its probability under both models and the log-ratio."""
    rows = [(visible(tok), f"{math.exp(b):.4f}", f"{math.exp(t):.4f}", f"{t - b:+.2f}")
            for tok, b, t in zip(change.tokens, change.base.logprobs, change.tuned.logprobs)]
    out = [f"gold answer {change.answer!r}: log-probability {change.base.total:.2f} (base) -> "
           f"{change.tuned.total:.2f} (fine-tuned), end-of-turn left out",
           format_table(["gold token", "p base", "p fine-tuned", "log-ratio"], rows, right=(1, 2, 3)), "",
           "most likely first answer token:"]
    rows = [(t.rank, t.token, f"{t.p_raw:.4f}", u.token, f"{u.p_raw:.4f}")
            for t, u in zip(change.top_base, change.top_tuned)]
    out.append(format_table(["rank", "base", "p", "fine-tuned", "p"], rows, right=(0, 2, 4)))
    return "\n".join(out)


def format_shifts(shifts: Sequence[ItemShift]) -> str:
    """Terminal view: per kind summary, then per question before/after log-probabilities."""
    kinds = [(k.kind, k.n, f"{k.median_base:.2f}", f"{k.median_tuned:.2f}", f"{100 * k.share_up:.0f}%")
             for k in by_kind(shifts)]
    out = [format_table(["kind", "n", "median log p base", "median log p fine-tuned", "rose"], kinds,
                        right=(1, 2, 3, 4)), ""]
    rows = [(s.id, s.kind, f"{s.logp_base:.2f}", f"{s.logp_tuned:.2f}", f"{s.delta:+.2f}", s.answer[:30])
            for s in sorted(shifts, key=lambda s: -s.delta)]
    out.append(format_table(["id", "kind", "log p base", "log p fine-tuned", "change", "gold"], rows, right=(2, 3, 4)))
    return "\n".join(out)
