"""What a fine-tuning run trains on: the corpus's chunks (read from its current index, else ingested
once), gold ``train`` questions, synthesized questions and paraphrases, leakage-guarded against every eval
question, turned into examples by ``workbench.training.train_data``. Shared by LoRA fine-tuning and training from
scratch."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.answering.models import load_base_model
from workbench.core.artifacts import atomic_path, hash_bytes
from workbench.core.config import FinetuneConfig, RunConfig
from workbench.core.errors import WorkbenchError
from workbench.core.paths import qa_path as default_qa_path
from workbench.core.records import read_chunks
from workbench.corpus.ingest import ingest_corpus
from workbench.corpus.qa import QAItem, load_qa
from workbench.retrieval.index import (
    CHUNKS,
    build_index,
    default_index_name,
    index_status,
    load_index,
    resolve_index_dir,
)
from workbench.retrieval.retrieve import Retriever
from workbench.training import synth, train_data
from workbench.training.train_data import Example, require_enough


@dataclass
class TrainingData:
    """Examples for one run, with where they came from."""

    train: list[Example]
    heldout: list[Example]
    source: str
    n_leakage_dropped: int = 0
    pretrain: list[Example] = field(default_factory=list)
    """Scratch mode: plain-text pre-training examples (the corpus chunks)."""
    synthesis: dict[str, Any] | None = None
    """What synthesized questions were made with, and how many (``Synthesis.summary``); None without."""

    def counts(self) -> dict[str, Any]:
        """Facts and wordings the question examples hold (a fact: one ``fact_id``, else one question), and
        the synthesis summary: the adapter manifest's ``training_data``."""
        asked = [e for e in self.train + self.heldout if e.question]
        facts = {e.fact_id or e.question for e in asked}
        by_source: dict[str, int] = {}
        for e in asked:
            by_source[e.source] = by_source.get(e.source, 0) + 1
        return {"n_facts": len(facts), "n_wordings": len(asked), "wordings_per_fact":
                round(len(asked) / len(facts), 2) if facts else 0.0, "by_source": by_source,
                "synthesis": self.synthesis}

    def digest(self) -> str:
        """Content hash of the examples (the manifest's data hash)."""
        rows = [json.dumps([e.messages, e.completion], ensure_ascii=False).encode()
                for e in self.pretrain + self.train + self.heldout]
        return hash_bytes(*rows)


# --- data ------------------------------------------------------------------------------------------

def build_training_data(corpus_dir: Path, cfg: FinetuneConfig, tokenizer: Any, qa_path: Path | None = None,
                        run_cfg: RunConfig | None = None, retriever: Any = None,
                        progress: bool = False, chunks: list | None = None) -> TrainingData:
    """Training examples for ``cfg.mode`` from the corpus and its QA file.

    Gold ``train`` questions are used when present; synthesis runs when ``cfg.synthesize`` says so
    (auto: only without a train split). Every question-bearing example passes the leakage guard
    against all eval questions.

    Raises:
        WorkbenchError: no train split and synthesis disabled, or too few examples.
    """
    run_cfg = run_cfg or RunConfig()
    qa_path = default_qa_path(corpus_dir, qa_path)
    items = load_qa(qa_path) if qa_path.exists() else []
    eval_questions = [q.question for q in items if q.split == "eval"]
    gold = [q for q in items if q.split == "train" and q.answerable and q.answers]
    needs_chunks = cfg.mode != "sft" or not gold or cfg.synthesize == "always" or cfg.anchor_questions > 0
    if chunks is None:  # gold-only SFT never reads the documents
        chunks = corpus_chunks(corpus_dir, run_cfg, progress) if needs_chunks else []

    if cfg.mode == "cpt":
        train = train_data.cpt_examples(chunks)
        require_enough(len(train), "chunks")
        tr, held = train_data.split_heldout(train, cfg.heldout_fraction, cfg.seed)
        return TrainingData(tr, held, "corpus")

    use_synth = cfg.synthesize == "always" or (cfg.synthesize == "auto" and not gold)
    if not gold and not use_synth:
        raise WorkbenchError(f"{qa_path.name if items else 'the corpus'} has no `split: train` questions and "
                             "synthesis is disabled (finetune.synthesize: never)",
                             "set finetune.synthesize to auto or always, or add train questions to qa.jsonl")
    qa = list(gold)
    origin = {it.id: "gold" for it in gold}  # -> Example.source (held-out picks non-gold first)
    # gold questions get rule paraphrases; synthesized facts come with their own wordings (synth.wordings)
    qa += [QAItem(id=f"{it.id}~p{j}", question=p, answers=it.answers, split="train", doc=it.doc,
                  fact_id=it.fact_id or it.id, kind="paraphrase")
           for it in gold for j, p in enumerate(synth.paraphrase_question(it.question, cfg.paraphrases, cfg.seed))]
    made = None
    if use_synth:
        made = _synthesize(chunks, cfg, run_cfg, progress)
        qa += [QAItem(id=f"synth{i}", question=s.question, answers=[s.answer], split="train", doc=s.doc,
                      fact_id=s.fact_id, kind=f"synth-{s.style}") for i, s in enumerate(made.items)]
    if cfg.anchor_questions > 0 and gold:
        qa += _anchor_questions(gold, chunks, cfg, run_cfg)
    origin.update({it.id: "synth" for it in qa if it.id not in origin and it.kind != "paraphrase"})
    before = len(qa)
    qa = _leak_free(qa, eval_questions)
    n_dropped = before - len(qa)
    require_enough(len(qa), "training questions")
    source = "gold+synthesized" if gold and use_synth else ("gold" if gold else "synthesized")

    if cfg.mode == "raft":
        retriever = retriever or _default_retriever(corpus_dir, run_cfg, progress)
        hits = retriever.search_batch([q.question for q in qa], k=cfg.raft_passages + 1)
        examples = train_data.raft_examples(qa, chunks, hits, cfg.raft_passages, cfg.raft_distractor_only,
                                            tokenizer, run_cfg.generate.context_tokens, cfg.seed, run_cfg.prompt)
    else:
        examples = [ex for it in qa
                    for ex in train_data.sft_examples([it], tokenizer, source=origin.get(it.id, "paraphrase"),
                                                      prompt=run_cfg.prompt)]
    tr, held = train_data.split_heldout(examples, cfg.heldout_fraction, cfg.seed)
    pretrain = train_data.cpt_examples(chunks) if cfg.mode == "scratch" else []
    return TrainingData(tr, held, source, n_dropped, pretrain, made.summary() if made else None)


def _leak_free(qa: list, eval_questions: list[str]) -> list:
    examples = [Example(messages=None, completion="", source="", question=it.question, meta={"i": i})
                for i, it in enumerate(qa)]
    kept, _ = train_data.leakage_guard(examples, eval_questions)
    return [qa[e.meta["i"]] for e in kept]


def corpus_chunks(corpus_dir: Path, run_cfg: RunConfig, progress: bool = False) -> list:
    """The corpus's chunks: those of its index when that index is current for these chunking settings (so
    a run ingests the corpus once), else a fresh ingestion. The embedder does not matter: chunks do not
    depend on it."""
    name = default_index_name(corpus_dir)
    if index_status(name, corpus_dir, None, run_cfg.ingest) == "current":
        try:
            return read_chunks(resolve_index_dir(name) / CHUNKS)
        except (OSError, WorkbenchError):  # being rebuilt right now: read the corpus instead
            pass
    return ingest_corpus(Path(corpus_dir), run_cfg.ingest, progress=progress).chunks


def _synthesize(chunks: list, cfg: FinetuneConfig, run_cfg: RunConfig, progress: bool) -> synth.Synthesis:
    """Questions from the chunks with the run's ``synth`` settings (the base model loaded only for backend
    model)."""
    complete, name = None, ""
    if run_cfg.synth.backend == "model":
        model, tok = load_base_model(run_cfg.model)
        complete, name = synth.model_completer(model, tok), run_cfg.model.base_model
    return synth.synthesize(chunks, run_cfg.synth, run_cfg.ingest.language, cfg.seed, progress, complete, name)


def synthesize_corpus(corpus_dir: Path, run_cfg: RunConfig, out: Path | None = None,
                      progress: bool = False) -> synth.Synthesis:
    """The questions fine-tuning would synthesize from a corpus (``workbench synth``, the app's sample).

    Args:
        corpus_dir: the corpus folder (its chunks are read as a fine-tuning run reads them).
        run_cfg: settings (``synth``, ``ingest``, ``finetune.seed``; ``model`` for backend model).
        out: JSONL file to write atomically, one question a line with its answer, source sentence, document
            and fact id; None writes nothing.
        progress: show progress bars.

    Raises:
        WorkbenchError: the corpus folder does not exist, or nothing could be synthesized from it.
    """
    if not Path(corpus_dir).is_dir():
        raise WorkbenchError(f"corpus folder {corpus_dir} does not exist", "give the folder holding the documents")
    made = _synthesize(corpus_chunks(Path(corpus_dir), run_cfg, progress), run_cfg.finetune, run_cfg, progress)
    if not made.items:
        raise WorkbenchError(f"no question could be synthesized from {corpus_dir} ({made.pipeline})",
                             "add documents with full sentences, or use synth.backend openai")
    if out is not None:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text("".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in made.items),
                           encoding="utf-8")
    return made


def _anchor_questions(gold: list, chunks: list, cfg: FinetuneConfig, run_cfg: RunConfig) -> list:
    """Questions worded like the documents: synthesized from the gold chunk, same answer as the fact."""
    by_chunk: dict[str, list] = {}
    where = {}
    for it in gold:
        c = train_data.gold_chunk(it, chunks)
        if c is not None:
            by_chunk.setdefault(c.id, []).append(it)
            where[c.id] = c
    if not where:
        return []
    made = synth.synthesize_rules(list(where.values()), run_cfg.ingest.language, max_per_chunk=50, seed=cfg.seed,
                                  max_words=run_cfg.synth.max_words)
    out, seen = [], set()
    for s in made:
        for it in by_chunk.get(s.chunk_id, []):
            key = (it.fact_id or it.id, s.question)
            if key in seen or not any(a.lower() == s.answer.lower() for a in it.answers):
                continue
            if sum(1 for k in seen if k[0] == key[0]) >= cfg.anchor_questions:
                continue
            seen.add(key)
            out.append(QAItem(id=f"{it.id}~a{len(out)}", question=s.question, answers=it.answers, split="train",
                              doc=it.doc, fact_id=it.fact_id or it.id, kind="synth-anchor"))
    return out


def _default_retriever(corpus_dir: Path, run_cfg: RunConfig, progress: bool) -> Any:
    built = build_index(corpus_dir, run_cfg.index, run_cfg.ingest, progress=progress)
    return Retriever(load_index(built.path, corpus_dir), run_cfg.retrieve)
