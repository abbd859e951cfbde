"""Fine-tuning: LoRA instruction tuning (sft), continued pre-training (cpt), RAFT, training from scratch.

``finetune`` builds the training data (gold ``train`` split or synthesized, leakage-guarded), trains with
Hugging Face ``Trainer`` and peft LoRA, and writes ``adapters/NAME/`` atomically: a standard PEFT folder
(scratch: a full model folder), the tokenizer, ``manifest.json``, the resolved config, the training
curve (CSV + PNG), TensorBoard logs and the training examples. Checkpoints live in a separate work
folder ``adapters/.NAME.work/`` so an interrupted run continues with ``resume=True``.

The same code runs unchanged under ``torchrun --nproc_per_node N`` (DDP; gloo on CPU) and
``accelerate launch``: only rank 0 writes the artifact.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.artifacts import (atomic_dir, check_replaceable, hash_bytes, hash_file, make_manifest, recover_leftovers,
                                 write_json)
from workbench.config import FinetuneConfig, IngestConfig, ModelConfig, RunConfig, to_dict
from workbench.errors import WorkbenchError
from workbench.locks import acquire_locks, lock_name, release_locks
from workbench.paths import adapters_dir, check_name
from workbench.train_data import Example, require_enough

FORMAT_VERSION = 1
KIND = "adapter"


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced (or reused)."""

    path: Path
    name: str
    reused: bool
    seconds: float
    tokens_seen: int
    train_loss: float | None
    heldout_loss: float | None
    data_source: str
    """ "gold" (the QA file's train split), "synthesized", "gold+synthesized", or "corpus" (cpt)."""
    mode: str = "sft"
    n_examples: int = 0

    def summary(self) -> str:
        if self.reused:
            return f"adapter {self.name} is current ({self.path}); reused"
        loss = f"train loss {self.train_loss:.3f}" if self.train_loss is not None else "train loss n/a"
        held = f", held-out loss {self.heldout_loss:.3f}" if self.heldout_loss is not None else ""
        return (f"adapter {self.name} ({self.mode}, {self.data_source} data, {self.n_examples} examples): "
                f"{loss}{held}, {self.tokens_seen:,} tokens in {self.seconds:.0f}s -> {self.path}")


@dataclass
class TrainingData:
    """Examples for one run, with where they came from."""

    train: list[Example]
    heldout: list[Example]
    source: str
    n_leakage_dropped: int = 0
    pretrain: list[Example] = field(default_factory=list)
    """Scratch mode: plain-text pre-training examples (the corpus chunks)."""

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
    from workbench import synth, train_data
    from workbench.qa import QAItem, load_qa

    run_cfg = run_cfg or RunConfig()
    qa_path = Path(qa_path) if qa_path else Path(corpus_dir) / "qa.jsonl"
    items = load_qa(qa_path) if qa_path.exists() else []
    eval_questions = [q.question for q in items if q.split == "eval"]
    gold = [q for q in items if q.split == "train" and q.answerable and q.answers]
    needs_chunks = cfg.mode != "sft" or not gold or cfg.synthesize == "always" or cfg.anchor_questions > 0
    if chunks is None:  # gold-only SFT never reads the documents
        chunks = _chunks(corpus_dir, run_cfg.ingest, progress) if needs_chunks else []

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
    if use_synth:
        qa += [QAItem(id=f"synth{i}", question=s.question, answers=[s.answer], split="train", doc=s.doc,
                      fact_id=s.fact_id, kind=f"synth-{s.style}")
               for i, s in enumerate(_synthesize(chunks, cfg, run_cfg, progress))]
    if cfg.anchor_questions > 0 and gold:
        qa += _anchor_questions(gold, chunks, cfg, run_cfg)
    origin.update({it.id: "synth" for it in qa if it.id not in origin})
    qa += [QAItem(id=f"{it.id}~p{j}", question=p, answers=it.answers, split="train", doc=it.doc,
                  fact_id=it.fact_id or it.id, kind="paraphrase")
           for it in list(qa) for j, p in enumerate(synth.paraphrase_question(it.question, cfg.paraphrases, cfg.seed))]
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
    return TrainingData(tr, held, source, n_dropped, pretrain)


def _leak_free(qa: list, eval_questions: list[str]) -> list:
    from workbench.train_data import leakage_guard

    examples = [Example(messages=None, completion="", source="", question=it.question, meta={"i": i})
                for i, it in enumerate(qa)]
    kept, _ = leakage_guard(examples, eval_questions)
    return [qa[e.meta["i"]] for e in kept]


def _chunks(corpus_dir: Path, ingest_cfg: IngestConfig, progress: bool) -> list:
    from workbench.ingest import ingest_corpus

    return ingest_corpus(Path(corpus_dir), ingest_cfg, progress=progress).chunks


def _synthesize(chunks: list, cfg: FinetuneConfig, run_cfg: RunConfig, progress: bool) -> list:
    from workbench import synth

    if cfg.synth_generator == "rules":
        return synth.synthesize_rules(chunks, run_cfg.ingest.language, cfg.synth_per_chunk, cfg.seed, progress)
    if cfg.synth_endpoint:
        complete = synth.endpoint_completer(cfg.synth_endpoint, cfg.synth_model or "default",
                                            os.environ.get("OPENAI_API_KEY"))
    else:
        from workbench.models import load_base_model

        model, tok = load_base_model(run_cfg.model)
        complete = synth.model_completer(model, tok)
    return synth.synthesize_llm(chunks, complete, cfg.synth_per_chunk, progress)


def _anchor_questions(gold: list, chunks: list, cfg: FinetuneConfig, run_cfg: RunConfig) -> list:
    """Questions worded like the documents: synthesized from the gold chunk, same answer as the fact."""
    from workbench import synth
    from workbench.qa import QAItem
    from workbench.train_data import gold_chunk

    by_chunk: dict[str, list] = {}
    where = {}
    for it in gold:
        c = gold_chunk(it, chunks)
        if c is not None:
            by_chunk.setdefault(c.id, []).append(it)
            where[c.id] = c
    if not where:
        return []
    made = synth.synthesize_rules(list(where.values()), run_cfg.ingest.language, max_per_chunk=50, seed=cfg.seed)
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
    from workbench.index import build_index, load_index
    from workbench.retrieve import Retriever

    built = build_index(corpus_dir, run_cfg.index, run_cfg.ingest, progress=progress)
    return Retriever(load_index(built.path, corpus_dir), run_cfg.retrieve)


# --- engine ----------------------------------------------------------------------------------------

class _Rows:
    """A map-style dataset over tokenized rows (lists of ints)."""

    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def make_collator(tokenizer: Any, packing: bool) -> Any:
    """Packing: the batch flattened into one row with per-example position ids (no padding; the model
    masks attention across examples from the position-id resets). Else: right-padded batches."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        return DataCollatorWithFlattening()
    tokenizer.padding_side = "right"
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")


def answer_only_loss(model: Any, inputs: dict[str, Any], num_items: Any = None) -> tuple[Any, Any]:
    """Causal-LM loss computing logits only at positions that predict a labelled token.

    With answer-only labels (SFT/RAFT) most positions are prompt: skipping their vocabulary projection
    (a fifth of a small model's compute) and softmax makes training faster with the same loss as
    ``model(**inputs, labels=...)``. Shapes: labels (batch, seq); positions kept: (k,) where any row's
    next token is labelled; logits (batch, k, vocab).

    Returns:
        (loss: sum over labelled tokens / ``num_items`` (default: their count), model outputs).
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    targets = inputs.pop("labels")[:, 1:]                      # position t predicts token t+1
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    outputs = model(**inputs, logits_to_keep=keep)
    logits = outputs.logits.float()
    tgt = targets[:, keep]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss / (num_items if num_items is not None else (tgt != -100).sum().clamp(min=1)), outputs


def _trainer_class() -> type:
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        """Trainer whose loss projects to the vocabulary only where there is a label to predict."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = answer_only_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # as Trainer does: DDP averages over ranks
            return (loss, outputs) if return_outputs else loss

    return AnswerOnlyTrainer


def prepare_for_training(model: Any) -> None:
    """Settings every training forward needs.

    No KV cache: with a cache object present, transformers skips the packed-sequence detection from
    position ids, and packed examples would attend to each other (tested in test_train_data).
    """
    model.config.use_cache = False


def _progress_callback(enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """tqdm bar with loss, tokens/s and ETA (tqdm's own estimate from the step rate)."""

        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, unit="step",
                            disable=not enabled or not state.is_world_process_zero, dynamic_ncols=True)
            self.t0, self.tok0, self.loss = time.perf_counter(), state.num_input_tokens_seen, None

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_step_end(self, args, state, control, **kw):
            rate = (state.num_input_tokens_seen - self.tok0) / max(time.perf_counter() - self.t0, 1e-9)
            post = {"tok/s": f"{rate:.0f}"}
            if self.loss is not None:
                post["loss"] = f"{self.loss:.3f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return Progress()


@dataclass
class TrainOutcome:
    tokens_seen: int
    train_loss: float | None
    heldout_loss: float | None
    global_step: int
    resumed_from_step: int
    train_seconds: float
    log_history: list[dict]
    world_size: int


def train_model(model: Any, tokenizer: Any, train_rows: list, heldout_rows: list, cfg: FinetuneConfig,
                work: Path, *, epochs: float, learning_rate: float, max_steps: int, resume: bool,
                progress: bool, desc: str, device: str, bf16: bool, sampling: str | None = None) -> TrainOutcome:
    """Run Hugging Face Trainer on tokenized rows; checkpoints and TensorBoard logs go under ``work``.

    Batches are packed (``cfg.packing``) or padded and length-grouped; ``sampling`` overrides the
    Trainer's sampler ("random", "group_by_length") for benchmarks.

    Raises:
        WorkbenchError: CUDA out of memory (naming the knobs to turn).
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PrinterCallback, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    ckpt_dir = work / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = max(1, -(-len(train_rows) // (cfg.batch_size * cfg.grad_accum * world)))
    total = max_steps if max_steps > 0 else max(1, int(per_epoch * epochs + 0.999))
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        max_steps=max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        weight_decay=0.0,
        logging_steps=max(1, total // 50),
        eval_strategy="steps" if heldout_rows else "no",
        eval_steps=max(1, total // 4),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        remove_unused_columns=False,
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        train_sampling_strategy=sampling or ("random" if cfg.packing else "group_by_length"),
        use_cpu=device == "cpu",
        bf16=bf16,
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        dataloader_num_workers=0,
        log_level="warning",
        prediction_loss_only=True,
    )
    prepare_for_training(model)
    tb = SummaryWriter(log_dir=str(work / "tensorboard"))
    trainer = _trainer_class()(model=model, args=args, train_dataset=_Rows(train_rows),
                      eval_dataset=_Rows(heldout_rows) if heldout_rows else None,
                      data_collator=make_collator(tokenizer, cfg.packing), processing_class=tokenizer,
                      callbacks=[TensorBoardCallback(tb_writer=tb), _progress_callback(progress, desc)])
    trainer.remove_callback(PrinterCallback)  # our bar shows the numbers; no log dicts on stdout
    last = last_complete_checkpoint(ckpt_dir) if resume else None
    resumed_from = int(Path(last).name.split("-")[-1]) if last else 0
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=last)
    except torch.OutOfMemoryError:
        raise WorkbenchError(
            f"out of GPU memory while training (batch_size={cfg.batch_size}, max_seq_len={cfg.max_seq_len})",
            "lower finetune.batch_size (raise finetune.grad_accum to keep the effective batch) "
            "or finetune.max_seq_len") from None
    finally:
        tb.close()
    train_seconds = time.perf_counter() - t0
    model.config.use_cache = True  # for generation afterwards
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    heldout = None
    if heldout_rows:
        heldout = (evals[-1]["eval_loss"] if evals and evals[-1].get("step") == trainer.state.global_step
                   else trainer.evaluate()["eval_loss"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainOutcome(tokens_seen=int(trainer.state.num_input_tokens_seen),
                        train_loss=float(losses[-1]) if losses else None,
                        heldout_loss=float(heldout) if heldout is not None else None,
                        global_step=trainer.state.global_step, resumed_from_step=resumed_from,
                        train_seconds=train_seconds, log_history=list(trainer.state.log_history), world_size=world)


def write_curve(log_history: list[dict], folder: Path) -> None:
    """training_curve.csv (step, epoch, loss, heldout_loss, learning_rate, tokens_seen) and its PNG."""
    from workbench.plots import pyplot, save_figure

    plt = pyplot()

    rows = []
    for h in log_history:
        if "step" not in h or not ({"loss", "eval_loss"} & set(h)):
            continue
        rows.append({"step": h["step"], "epoch": h.get("epoch"), "loss": h.get("loss"),
                     "heldout_loss": h.get("eval_loss"), "learning_rate": h.get("learning_rate"),
                     "tokens_seen": h.get("num_input_tokens_seen")})
    with open(folder / "training_curve.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["step", "epoch", "loss", "heldout_loss", "learning_rate", "tokens_seen"])
        w.writeheader()
        w.writerows(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    tr = [(r["step"], r["loss"]) for r in rows if r["loss"] is not None]
    ev = [(r["step"], r["heldout_loss"]) for r in rows if r["heldout_loss"] is not None]
    if tr:
        ax.plot(*zip(*tr), label="train loss")
    if ev:
        ax.plot(*zip(*ev), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training curve")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, folder / "training_curve.png", dpi=100)


def _write_examples(data: TrainingData, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for split, exs in (("pretrain", data.pretrain), ("train", data.train), ("heldout", data.heldout)):
            for e in exs:
                row = {"split": split, "source": e.source, "question": e.question or None,
                       "fact_id": e.fact_id, "target": e.completion if e.messages is not None else None}
                if e.messages is None:
                    row["text"] = e.completion[:200]
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _lora_model(model: Any, cfg: FinetuneConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    targets: Any = cfg.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lora)


def _run_info(cfg: FinetuneConfig, model_cfg: ModelConfig, corpus_fp: str, qa_hash: str | None) -> dict:
    """What a checkpoint folder was made from; resuming requires the same."""
    return {"finetune": to_dict(cfg), "base_model": model_cfg.base_model if cfg.mode != "scratch" else None,
            "corpus_fingerprint": corpus_fp, "qa_hash": qa_hash}


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint under ``ckpt_dir`` that was completely written, else None.

    A run killed while saving leaves a checkpoint folder without its ``trainer_state.json`` (the Trainer
    writes it last); such folders are removed so that training continues from the one before.
    """
    steps = sorted(((int(c.name.rsplit("-", 1)[-1]), c) for c in Path(ckpt_dir).glob("checkpoint-*")
                    if c.is_dir() and c.name.rsplit("-", 1)[-1].isdigit()), reverse=True)
    for _, folder in steps:
        try:
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return str(folder)
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)  # half-written by a killed run
    return None


def _checkpoint_steps(work: Path) -> int:
    """The last checkpoint step saved under ``work`` (0 when there is none)."""
    steps = [int(c.name.rsplit("-", 1)[-1]) for c in work.glob("**/checkpoint-*") if c.name.rsplit("-", 1)[-1].isdigit()]
    return max(steps, default=0)


def _prepare_work(work: Path, info: dict, resume: bool | None, progress: bool) -> bool:
    """Get the checkpoint folder ready; returns whether training continues from its checkpoints.

    ``resume`` None (the default) continues an interrupted run made with the same settings and data,
    and starts afresh when there is none; True insists on continuing; False discards earlier checkpoints.
    Checkpoints made with other settings are never discarded silently.
    """
    stamp = work / "run.json"
    if work.exists() and not stamp.is_file():
        raise WorkbenchError(f"{work} exists but is not a workbench checkpoint folder (no run.json); refusing to "
                             "touch it", "move that folder away yourself")
    try:
        same = stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == info
    except (OSError, ValueError):
        same = False
    steps = _checkpoint_steps(work) if work.exists() else 0
    if resume is not False and same:
        if progress and steps:
            print(f"continuing the interrupted run from its checkpoint at step {steps} ({work})")
        return True
    if resume and not work.exists():
        if progress:
            print("no interrupted run to resume; starting from the beginning")
    elif resume or (resume is None and steps):
        raise WorkbenchError(f"the checkpoints in {work} (step {steps}) were made with other settings or data",
                             "re-run with the settings they were made with to continue them, or pass --restart "
                             "to discard them and start over")
    if work.exists():
        if progress and steps:
            print(f"discarding the checkpoints of an earlier run in {work} (--restart)")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stamp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return False


def finetune(corpus_dir: Path, cfg: FinetuneConfig, model_cfg: ModelConfig, name: str | None = None,
             qa_path: Path | None = None, resume: bool | None = None, progress: bool = True, *,
             run_cfg: RunConfig | None = None, retriever: Any = None, rebuild: bool = False) -> FinetuneResult:
    """Fine-tune on a corpus and write ``adapters/NAME/`` (reusing a current one unless ``rebuild``).

    Everything is checked (name, corpus, question file, base model) before any folder is touched, and
    the build holds the adapter's lock (``workbench.locks``) so two builds of one adapter never race.

    Args:
        corpus_dir: the corpus folder (documents + optional qa.jsonl).
        cfg: fine-tuning settings (``cfg.mode``: sft, cpt, raft or scratch).
        model_cfg: the base model (ignored by scratch, which trains its own).
        name: adapter name, a plain name (default ``<corpus>-<mode>``); written to ``adapters/NAME`` only.
        qa_path: question file (default ``CORPUS_DIR/qa.jsonl``).
        resume: None continues an interrupted run with the same settings if there is one; True insists
            on continuing; False discards earlier checkpoints and starts over.
        progress: show progress bars and stage messages.
        run_cfg: the other stages' settings (ingest, index/retrieve for RAFT, generate.context_tokens).
        retriever: a ready retriever for RAFT (else the corpus index is built or reused).
        rebuild: retrain even when a current adapter exists.

    Returns:
        FinetuneResult with the adapter path, losses, tokens seen and timing.

    Raises:
        WorkbenchError: invalid name, missing corpus, bad question file or base model, a folder that is
            not an adapter at ``adapters/NAME``, another build of it running, no training data, corpus too
            small, CUDA out of memory, or resume with changed settings.
    """
    from workbench.adapters import adapter_status, default_adapter_name, read_adapter_manifest
    from workbench.ingest import corpus_fingerprint
    from workbench.qa import load_qa, warn_unknown_docs

    t_start = time.perf_counter()
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise WorkbenchError(f"corpus folder {corpus_dir} not found", "pass an existing corpus directory")
    run_cfg = run_cfg or RunConfig(finetune=cfg, model=model_cfg)
    name = check_name(name, "adapter") if name is not None else default_adapter_name(corpus_dir, cfg.mode)
    final = adapters_dir() / name
    check_replaceable(final, KIND)
    qa_file = Path(qa_path) if qa_path else corpus_dir / "qa.jsonl"
    if qa_path is not None or qa_file.exists():
        warn_unknown_docs(load_qa(qa_file), corpus_dir, qa_file)  # a bad file fails before any folder is touched
    base_name, base_hash = None, None
    if cfg.mode != "scratch":
        from workbench.models import model_fingerprint

        base_name, base_hash = model_cfg.base_model, model_fingerprint(model_cfg.base_model)
    if not rebuild and adapter_status(name, corpus_dir, cfg, model_cfg, qa_file) == "current":
        m = read_adapter_manifest(final)
        return FinetuneResult(final, name, True, time.perf_counter() - t_start, m.get("tokens_seen", 0),
                              m.get("train_loss"), m.get("heldout_loss"), m.get("data_source", "?"),
                              cfg.mode, m.get("n_train_examples", 0))
    corpus_fp = corpus_fingerprint(corpus_dir)
    qa_hash = hash_file(qa_file) if qa_file.exists() else None
    locks = acquire_locks([lock_name("adapter", name)]) if int(os.environ.get("RANK", "0")) == 0 else []
    try:
        rank0 = _init_distributed(model_cfg)
        work = final.with_name(f".{name}.work")
        if rank0:
            for line in recover_leftovers(final):
                if progress:
                    print(f"adapter {name}: {line}")
            _prepare_work(work, _run_info(cfg, model_cfg, corpus_fp, qa_hash), resume, progress)
        _barrier()  # the other ranks wait until the work folder is ready
        return _train_and_write(corpus_dir, cfg, model_cfg, run_cfg, name, final, work, qa_file, corpus_fp,
                                qa_hash, (base_name, base_hash), retriever, rank0, progress, t_start)
    finally:
        release_locks(locks)


def _train_and_write(corpus_dir: Path, cfg: FinetuneConfig, model_cfg: ModelConfig, run_cfg: RunConfig, name: str,
                     final: Path, work: Path, qa_file: Path, corpus_fp: str, qa_hash: str | None,
                     base: tuple[str | None, str | None], retriever: Any, rank0: bool, progress: bool,
                     t_start: float) -> FinetuneResult:
    """Train (continuing from ``work``'s checkpoints when there are any) and write the adapter atomically."""
    resume = any(p.name != "run.json" for p in work.iterdir())  # kept by _prepare_work: continue from it
    if cfg.mode == "scratch":
        from workbench.scratch import train_scratch

        trained = train_scratch(corpus_dir, cfg, work, qa_file, run_cfg, resume=resume, progress=progress)
        model, tokenizer, data, outcome, device = trained
    else:
        model, tokenizer, data, outcome, device = _train_lora(corpus_dir, cfg, model_cfg, work, qa_file, run_cfg,
                                                              retriever, resume, progress)
    base_name, base_hash = base

    n_examples = len(data.train)
    result = FinetuneResult(final, name, False, time.perf_counter() - t_start, outcome.tokens_seen,
                            outcome.train_loss, outcome.heldout_loss, data.source, cfg.mode, n_examples)
    if not rank0:
        return result
    tokenizer.padding_side = "left"  # as generation wants it (training may have padded on the right)
    with atomic_dir(final, kind=KIND) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_curve(outcome.log_history, tmp)
        for tb in sorted(work.rglob("tensorboard")):  # scratch has one per phase
            rel = tb.parent.relative_to(work)
            shutil.copytree(tb, tmp / "tensorboard" / rel if rel.parts else tmp / "tensorboard")
        _write_examples(data, tmp / "train_data.jsonl")
        # not config.json: in a PEFT folder that name would pass for a model config
        write_json(tmp / "workbench_config.json", {"finetune": to_dict(cfg), "model": to_dict(model_cfg)})
        write_json(tmp / "manifest.json", make_manifest(
            KIND, FORMAT_VERSION, name=name, mode=cfg.mode,
            base_model=base_name, base_model_hash=base_hash,
            corpus=str(corpus_dir.resolve()), corpus_fingerprint=corpus_fp,
            qa_file=str(qa_file.resolve()) if qa_file.exists() else None, qa_hash=qa_hash,
            data_source=data.source, data_hash=data.digest(), n_train_examples=n_examples,
            n_heldout_examples=len(data.heldout), n_pretrain_examples=len(data.pretrain),
            n_leakage_dropped=data.n_leakage_dropped, hyperparameters=to_dict(cfg), prompt=to_dict(run_cfg.prompt),
            tokens_seen=outcome.tokens_seen, global_step=outcome.global_step,
            resumed_from_step=outcome.resumed_from_step, train_seconds=round(outcome.train_seconds, 2),
            seconds=round(time.perf_counter() - t_start, 2), train_loss=outcome.train_loss,
            heldout_loss=outcome.heldout_loss, device=device, world_size=outcome.world_size))
    shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - t_start
    return result


def _init_distributed(model_cfg: ModelConfig) -> bool:
    """Under torchrun / accelerate launch, start the process group now (gloo on CPU) so ranks can
    synchronise before the Trainer exists. Returns whether this is the main process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        from workbench.models import pick_device

        PartialState(cpu=pick_device(model_cfg.device) == "cpu")
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _train_lora(corpus_dir: Path, cfg: FinetuneConfig, model_cfg: ModelConfig, work: Path, qa_file: Path,
                run_cfg: RunConfig, retriever: Any, resume: bool, progress: bool):
    from workbench.models import load_base_model, pick_device, pick_dtype
    from workbench.train_data import tokenize_examples

    device = pick_device(model_cfg.device)
    dtype = pick_dtype(model_cfg.dtype, device)
    model, tokenizer = load_base_model(model_cfg)
    data = build_training_data(corpus_dir, cfg, tokenizer, qa_file if qa_file.exists() else None, run_cfg,
                               retriever, progress)
    train_rows = tokenize_examples(data.train, tokenizer, cfg.max_seq_len)
    held_rows = tokenize_examples(data.heldout, tokenizer, cfg.max_seq_len)
    require_enough(len(train_rows), "training examples")
    if progress:
        n_tok = sum(len(r["input_ids"]) for r in train_rows)
        print(f"training data: {len(train_rows)} examples ({data.source}), {n_tok:,} tokens per epoch, "
              f"{len(held_rows)} held out, {data.n_leakage_dropped} dropped by the leakage guard")
    model = _lora_model(model, cfg)
    outcome = train_model(model, tokenizer, train_rows, held_rows, cfg, work, epochs=cfg.epochs,
                          learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, resume=resume,
                          progress=progress, desc=f"finetune {cfg.mode}", device=device,
                          bf16=str(dtype).endswith("bfloat16"))
    model.eval()
    return model, tokenizer, data, outcome, device
