"""Training examples for every fine-tuning mode, tokenized with answer-only loss, and the leakage guard.

SFT and RAFT prompts are rendered with the very prompt builder evaluation uses
(``workbench.answering.prompt.build_messages``), so a fine-tuned model is trained on exactly the text it sees when
it is scored. Only the assistant's answer (and the end-of-turn token) carries loss; the prompt's labels
are ``-100``. CPT examples are plain corpus text with loss on every token.

The leakage guard drops every training question that equals, or nearly equals, an eval question
(normalised token-set Jaccard, or one question's tokens almost wholly contained in the other's).
"""
from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable

from workbench.answering.generate import render_prompt as _render
from workbench.answering.prompt import build_messages
from workbench.core.config import PromptConfig
from workbench.core.errors import WorkbenchError
from workbench.core.language import ARTICLES_EN
from workbench.core.records import Chunk, Hit
from workbench.corpus.qa import QAItem

IGNORE_INDEX = -100
MIN_EXAMPLES = 4
"""Fewer training examples than this is refused as "corpus too small"."""
NEAR_DUPLICATE_JACCARD = 0.8


@dataclass
class Example:
    """One training example before tokenization.

    Attributes:
        messages: the chat prompt (SFT/RAFT), or None for plain text (CPT / pre-training).
        completion: the assistant's answer (SFT/RAFT) or the text itself (CPT).
        source: where it came from: "gold", "paraphrase", "synth", "corpus".
        question: the question text (for the leakage guard), "" for plain text.
        fact_id: groups wordings of one fact.
    """

    messages: list[dict[str, str]] | None
    completion: str
    source: str
    question: str = ""
    fact_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --- leakage guard ---------------------------------------------------------------------------------

def question_tokens(text: str) -> frozenset[str]:
    """Normalised word set of a question: NFKC, lower case, punctuation and articles dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return frozenset(t for t in re.findall(r"\w+", text) if t not in ARTICLES_EN)


def is_near_duplicate(a: frozenset[str], b: frozenset[str], threshold: float = NEAR_DUPLICATE_JACCARD) -> bool:
    """Whether two normalised questions are the same question in all but trivial wording.

    True when their token-set Jaccard is at least ``threshold``, or the shorter one (4+ words) is at
    least 90% contained in the longer one and at least half its length (a question wrapped in a
    framing like "According to the docs, ...").
    """
    if not a or not b:
        return a == b
    inter = len(a & b)
    if inter / len(a | b) >= threshold:
        return True
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    return len(small) >= 4 and inter / len(small) >= 0.9 and len(small) / len(large) >= 0.5


def leakage_guard(examples: list[Example], eval_questions: Iterable[str],
                  threshold: float = NEAR_DUPLICATE_JACCARD) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (kept, dropped): dropped ones ask an eval question or a near-duplicate.

    Plain-text examples (no question) are always kept.
    """
    evals = [question_tokens(q) for q in eval_questions]
    index: dict[str, list[int]] = {}
    for i, toks in enumerate(evals):
        for t in toks:
            index.setdefault(t, []).append(i)
    kept, dropped = [], []
    for ex in examples:
        if not ex.question:
            kept.append(ex)
            continue
        toks = question_tokens(ex.question)
        candidates = {i for t in toks for i in index.get(t, ())}
        if any(is_near_duplicate(toks, evals[i], threshold) for i in candidates) or (not toks and not evals):
            dropped.append(ex)
        else:
            kept.append(ex)
    return kept, dropped


# --- example builders ------------------------------------------------------------------------------

def sft_examples(items: list[QAItem], tokenizer: Any = None, source: str = "gold",
                 prompt: PromptConfig | None = None) -> list[Example]:
    """Closed-book question -> answer examples, prompts exactly as evaluation renders them.

    Args:
        items: answerable QA items (unanswerable ones are skipped); the first answer is the target.
        tokenizer: the model's tokenizer (handed to ``build_messages``).
        source: provenance label stored on each example.
    """
    out = []
    for it in items:
        if not it.answerable or not it.answers:
            continue
        out.append(Example(messages=build_messages(it.question, None, tokenizer, cfg=prompt),
                           completion=it.answers[0],
                           source=source, question=it.question, fact_id=it.fact_id))
    return out


def cpt_examples(chunks: list[Chunk]) -> list[Example]:
    """Plain-text examples (continued pre-training): one per chunk, heading kept as context."""
    out = []
    for c in chunks:
        text = f"{c.heading}\n{c.text}" if c.heading and not c.text.startswith(c.heading) else c.text
        out.append(Example(messages=None, completion=text.strip(), source="corpus", meta={"chunk": c.id}))
    return out


def gold_chunk(item: QAItem, chunks: list[Chunk]) -> Chunk | None:
    """The chunk that holds the item's answer: in its ``doc`` if named, else anywhere in the corpus."""
    answers = [a.lower() for a in item.answers if a]
    pool = [c for c in chunks if c.doc == item.doc] if item.doc else chunks
    for c in pool or chunks:
        if any(a in c.text.lower() for a in answers):
            return c
    return None


def raft_examples(items: list[QAItem], chunks: list[Chunk], hits: list[list[Hit]], n_passages: int = 3,
                  distractor_only: float = 0.2, tokenizer: Any = None, context_tokens: int = 2048,
                  seed: int = 0, prompt: PromptConfig | None = None) -> list[Example]:
    """RAFT examples: retrieved passages (gold + distractors) in the prompt, the answer as target.

    For each answerable item the gold chunk is made sure to be among ``n_passages`` passages (the
    retriever's other hits are the distractors, in a shuffled order); for a share ``distractor_only`` of
    the items the gold chunk is removed and only distractors remain, so the model also learns to answer
    from what it has learned when retrieval misses (as in the RAFT paper).

    Args:
        items: training QA items.
        chunks: the corpus chunks (to find each item's gold chunk).
        hits: retriever results per item (same order as ``items``).
        n_passages: passages per prompt.
        distractor_only: share of examples without the gold passage.
        tokenizer, context_tokens: handed to ``build_messages``.
        seed: shuffling seed.
        prompt: prompt settings (the run's ``RunConfig.prompt``).
    """
    rng = random.Random(seed)
    out = []
    for it, item_hits in zip(items, hits):
        if not it.answerable or not it.answers:
            continue
        gold = gold_chunk(it, chunks)
        distractors = [h.chunk for h in item_hits if gold is None or h.chunk.id != gold.id]
        no_gold = gold is None or rng.random() < distractor_only
        passages = distractors[:n_passages] if no_gold else [gold] + distractors[:n_passages - 1]
        rng.shuffle(passages)
        ranked = [Hit(chunk=c, score=0.0, rank=i + 1) for i, c in enumerate(passages)]
        out.append(Example(messages=build_messages(it.question, ranked, tokenizer, context_tokens, prompt),
                           completion=it.answers[0], source="raft", question=it.question, fact_id=it.fact_id,
                           meta={"gold_in_context": not no_gold}))
    return out


# --- tokenization ----------------------------------------------------------------------------------

def render_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The prompt text exactly as generation sees it (the model's chat template + generation prompt)."""

    return _render(tokenizer, messages)


def tokenize_example(ex: Example, tokenizer: Any, max_len: int) -> dict[str, list[int]] | None:
    """Token ids and labels for one example; prompt labels are ``-100`` (answer-only loss).

    Chat examples: prompt = rendered messages with the generation prompt (or the open reply they end
    with), completion = the answer plus the end-of-turn token. Prompt and completion are tokenized separately, as at generation time.
    Over-long chat examples lose prompt tokens from the left (the answer is kept); plain text is cut to
    ``max_len``. Returns None when nothing trainable is left.
    """
    eos = tokenizer.eos_token or ""
    if ex.messages is None:
        ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        ids = (ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []))[:max_len]
        return {"input_ids": ids, "labels": list(ids)} if len(ids) > 1 else None
    prompt = render_prompt(ex.messages, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # a reply already begun ("The answer is:") is continued after a space, as generation continues it
    lead = " " if ex.messages[-1]["role"] == "assistant" else ""
    c_ids = tokenizer(lead + ex.completion.strip() + eos, add_special_tokens=False)["input_ids"]
    c_ids = c_ids[:max_len - 1]
    p_ids = p_ids[-(max_len - len(c_ids)):]
    if not c_ids:
        return None
    return {"input_ids": p_ids + c_ids, "labels": [IGNORE_INDEX] * len(p_ids) + c_ids}


def tokenize_examples(examples: list[Example], tokenizer: Any, max_len: int) -> list[dict[str, list[int]]]:
    """Tokenize many examples (dropping empty ones); plain text longer than ``max_len`` is windowed."""
    out = []
    for ex in examples:
        if ex.messages is None:
            ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
            if tokenizer.eos_token_id is not None:
                ids = ids + [tokenizer.eos_token_id]
            for start in range(0, len(ids), max_len):
                window = ids[start:start + max_len]
                if len(window) > 1:
                    out.append({"input_ids": window, "labels": list(window)})
            continue
        row = tokenize_example(ex, tokenizer, max_len)
        if row is not None:
            out.append(row)
    return out


def split_heldout(examples: list[Example], fraction: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of the examples for the held-out loss (none below 8 examples).

    Augmented examples (paraphrases, synthesized) are held out first, so the gold questions the user
    wrote are all trained on; held-out wordings of trained facts make the held-out loss measure how
    well the knowledge transfers to new wordings.
    """
    n = len(examples)
    k = 0 if n < 8 or fraction <= 0 else max(1, round(n * fraction))
    if k == 0:
        return list(examples), []
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    order.sort(key=lambda i: examples[i].source == "gold")  # stable: augmented first
    held = set(order[:k])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def require_enough(n: int, what: str) -> None:
    """Refuse to train on fewer than ``MIN_EXAMPLES`` examples."""
    if n < MIN_EXAMPLES:
        raise WorkbenchError(f"corpus too small to train on: only {n} {what} (need at least {MIN_EXAMPLES})",
                             "add documents or `split: train` questions to the corpus")
