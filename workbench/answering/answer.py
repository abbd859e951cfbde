"""Answering, the one path every face takes: prepare the prompts, generate, finish the replies.

``prepare`` builds each question's prompt (``workbench.answering.prompt``) and, for grounded replies, what it may
copy from; ``finish`` turns a raw reply into an ``Answer`` (``workbench.answering.postprocess``: cleaning,
quantity phrases, citations). ``answer_questions`` runs them around one batched generation (evaluation,
``workbench ask``); the app streams one question between the same two calls, so a fix to answering
lands everywhere at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from workbench.answering.confidence import Calibrator, answer_features, apply_calibrator, raw_confidence
from workbench.answering.copying import CopySource
from workbench.answering.postprocess import Citation, cite, clean_answer
from workbench.answering.prompt import ANSWER_STOPS, build_prompt, copy_sources
from workbench.core.config import PromptConfig
from workbench.core.errors import WorkbenchError
from workbench.core.language import DEFAULT_LANGUAGE
from workbench.core.records import Hit

MAX_QUESTION_CHARS = 4000


@dataclass
class Answer:
    """One answered question.

    Attributes:
        question: the question.
        text: the cleaned answer (``clean_answer`` of the raw reply).
        hits: the passages in the prompt, in prompt order ([n] is ``hits[n-1]``); empty when closed book.
        citations: passages the answer cites ([n] markers) or, failing those, that contain it.
        latency_s: generation wall time of its batch plus its share of retrieval time.
        n_new_tokens: tokens generated.
        raw: the reply before cleaning.
        features: confidence features of the reply (``workbench.answering.confidence.answer_features``).
        confidence: probability that the reply is a correct answer: calibrated when a calibrator was
            applied, else the reply's mean token probability (``workbench.answering.confidence``).
        declined: why the reply was replaced by the abstention phrase (low retrieval score, low answer
            confidence), or None.
        text_before_decline: the answer a decline replaced ("" when none was).
        calibration: how replies of this system are declined where it was answered (which run calibrated
            it, or why nothing is declined by threshold); "" where no one asked.
    """

    question: str
    text: str
    hits: list[Hit] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    latency_s: float = 0.0
    n_new_tokens: int = 0
    raw: str = ""
    features: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    declined: str | None = None
    text_before_decline: str = ""
    calibration: str = ""


@dataclass
class Prepared:
    """A question ready to generate: its chat messages, the passages in them, what the reply may copy.

    Attributes:
        question: the question.
        messages: the chat messages (``workbench.answering.prompt.build_prompt``).
        hits: the passages that fit into the prompt, in prompt order (empty when closed book).
        sources: what a copy-constrained reply may copy from (None: free reply).
        language: the corpus language (answer cleaning uses its stopwords).
    """

    question: str
    messages: list[dict[str, str]]
    hits: list[Hit]
    sources: list[CopySource] | None
    language: str = DEFAULT_LANGUAGE


def prepare(questions: Sequence[str], hits: Sequence[Sequence[Hit] | None], tokenizer: Any, context_tokens: int,
            cfg: PromptConfig, *, copy: bool = True, embedder: Any = None,
            language: str = DEFAULT_LANGUAGE, offer_abstain: bool = True) -> list[Prepared]:
    """Prompts (and copy sources) for a batch of questions.

    Args:
        questions: the questions.
        hits: per question, retrieved passages in rank order, or None for closed book.
        tokenizer: the model's tokenizer (token budgets).
        context_tokens: the prompt budget.
        cfg: prompt settings.
        copy: constrain grounded replies to copy from the passages (``GenerateConfig.copy_spans``).
        embedder: ranks the passage sentences a reply may copy from (None: word overlap).
        language: the corpus language.
        offer_abstain: a copy-constrained reply may be the abstention phrase (False: it always copies a span).
    """
    built = [build_prompt(q, h, tokenizer, context_tokens, cfg) for q, h in zip(questions, hits)]
    grounded = [i for i, h in enumerate(hits) if h is not None]
    sources: list[list[CopySource] | None] = [None] * len(built)
    if copy and grounded:
        ranked = copy_sources([questions[i] for i in grounded], [built[i][1] for i in grounded], embedder, cfg,
                              language, offer_abstain)
        for i, s in zip(grounded, ranked):
            sources[i] = s
    return [Prepared(q, messages, list(used), s, language)
            for q, (messages, used), s in zip(questions, built, sources)]


def finish(p: Prepared, raw: str, cfg: PromptConfig, latency_s: float = 0.0, n_new_tokens: int = 0,
           generation: Any = None) -> Answer:
    """The ``Answer`` for a prepared question and its raw reply: cleaned, widened, cited, with its confidence
    features (from ``generation``'s log-probabilities when given) and uncalibrated confidence."""
    text = clean_answer(raw, p.question, [h.chunk.text for h in p.hits], p.language, cfg)
    feats = answer_features(p.question, text, generation, p.hits, p.language)
    return Answer(p.question, text, list(p.hits), cite(raw, p.hits, text), latency_s, n_new_tokens, raw, feats,
                  raw_confidence(feats))


def answer_questions(questions: Sequence[str], generator: Any, retriever: Any = None, k: int | None = None,
                     progress: bool = False, prompt: PromptConfig | None = None, calibrator: Calibrator | None = None,
                     abstain: str = "calibrated") -> list[Answer]:
    """Answer questions in batches: closed book, or over the retriever's top-k passages.

    Args:
        questions: the questions, answered in this order.
        generator: a ``workbench.answering.generate.Generator`` (its config sets the reply and context budgets).
        retriever: a ``workbench.retrieval.retrieve.Retriever`` (``search_batch``; its ``language`` picks the stopwords
            of answer cleaning), or None for closed book.
        k: passages per question (None: the retriever's configured k).
        progress: show progress bars.
        prompt: prompt and post-processing settings (default ``PromptConfig()``).
        calibrator: turns confidence features into a calibrated confidence and a decline threshold
            (``workbench.evaluation.calibrate``); None leaves the raw confidence and declines nothing.
        abstain: "calibrated" (the model's own declines and the calibrator's), "model" (only the model's
            own), or "never" (copy-constrained replies are not offered the abstention phrase, and nothing is
            declined for low confidence).

    Returns:
        One ``Answer`` per question.
    """
    cfg = prompt or PromptConfig()
    questions = list(questions)
    hits: list[list[Hit] | None] = [None] * len(questions)
    retrieval_share = 0.0
    if retriever is not None and questions:
        t0 = time.perf_counter()
        hits = list(retriever.search_batch(questions, k=k))
        retrieval_share = (time.perf_counter() - t0) / len(questions)
    prepared = prepare(questions, hits, generator.tokenizer, generator.cfg.context_tokens, cfg,
                       copy=generator.cfg.copy_spans, embedder=getattr(retriever, "embedder", None),
                       language=retriever.language if retriever is not None else DEFAULT_LANGUAGE,
                       offer_abstain=abstain != "never")
    sources = [p.sources for p in prepared] if any(p.sources is not None for p in prepared) else None
    gens = generator.generate([p.messages for p in prepared], progress=progress, stop=ANSWER_STOPS,
                              sources=sources)
    answers = [finish(p, g.text, cfg, g.latency_s + retrieval_share, g.n_new_tokens, g) for p, g in zip(prepared, gens)]
    return apply_calibrator(answers, calibrator, decline=abstain == "calibrated")


def check_question(question: str) -> str:
    """The question stripped, or a WorkbenchError when it is empty or too long."""
    q = (question or "").strip()
    if not q:
        raise WorkbenchError("the question is empty", 'ask something, e.g. "How much does the Tern-3 weigh?"')
    if len(q) > MAX_QUESTION_CHARS:
        raise WorkbenchError(f"the question is too long ({len(q)} characters, at most {MAX_QUESTION_CHARS})",
                             "ask a shorter question")
    return q


def format_answer(answer: Answer) -> str:
    """The answer, its sources (cited passages marked) and timing, for the terminal."""
    lines = [answer.text or "(empty answer)"]
    if answer.declined:
        lines.append(f"(declined: {answer.declined}; the answer would have been {answer.text_before_decline!r})")
    cited = {c.n for c in answer.citations}
    if answer.hits:
        lines.append("")
        lines.append("sources:")
        for n, h in enumerate(answer.hits, 1):
            c = h.chunk
            mark = "*" if n in cited else " "
            where = c.doc + (f" › {c.heading}" if c.heading else "")
            lines.append(f" {mark}[{n}] {where}  (score {h.score:.3f}, {c.id})")
        if cited:
            lines.append("   (* = the answer is found in or cited from that passage)")
    lines.append("")
    tps = answer.n_new_tokens / answer.latency_s if answer.latency_s > 0 else 0.0
    conf = f"confidence {answer.confidence:.2f}, " if answer.confidence is not None else ""
    lines.append(f"{conf}latency {answer.latency_s:.2f} s, {answer.n_new_tokens} new tokens ({tps:.1f} tokens/s)")
    return "\n".join(lines)
