"""The training loop: Hugging Face ``Trainer`` over tokenized rows, with an answer-only loss, packing or
length-grouped batches, checkpoints a killed run resumes from, TensorBoard logs and the loss curve.
Shared by LoRA fine-tuning and training from scratch."""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.answering.models import native_bf16_cpu
from workbench.core.config import FinetuneConfig
from workbench.core.errors import WorkbenchError
from workbench.core.figures import pyplot, save_figure


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


@dataclass
class Trained:
    """A finished training: the model in eval mode, its tokenizer, what it was trained on, how it went."""

    model: Any
    tokenizer: Any
    data: Any
    """The ``workbench.training.trainset.TrainingData`` it was trained on."""
    outcome: TrainOutcome
    device: str


def train_model(model: Any, tokenizer: Any, train_rows: list, heldout_rows: list, cfg: FinetuneConfig,
                work: Path, *, epochs: float, learning_rate: float, max_steps: int, resume: bool,
                progress: bool, desc: str, device: str, bf16: bool, sampling: str | None = None) -> TrainOutcome:
    """Run Hugging Face Trainer on tokenized rows; checkpoints and TensorBoard logs go under ``work``.

    Batches are packed (``cfg.packing``) or padded and length-grouped; ``sampling`` overrides the
    Trainer's sampler ("random", "group_by_length") for benchmarks. ``bf16`` trains under bfloat16 autocast;
    on CPU ``cfg.cpu_bf16`` turns it on where the CPU computes bfloat16 natively.

    Raises:
        WorkbenchError: CUDA out of memory (naming the knobs to turn).
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PrinterCallback, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    bf16 = bf16 or (device == "cpu" and cfg.cpu_bf16 and native_bf16_cpu())
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
