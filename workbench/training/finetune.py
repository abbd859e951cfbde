"""Fine-tuning: LoRA instruction tuning (sft), continued pre-training (cpt), RAFT, training from scratch.

``finetune`` builds the training data (``workbench.training.trainset``: gold ``train`` split or synthesized,
leakage-guarded), trains with Hugging Face ``Trainer`` and peft LoRA (``workbench.training.trainer``), and writes ``adapters/NAME/`` atomically: a standard PEFT folder
(scratch: a full model folder), the tokenizer, ``manifest.json``, the resolved config, the training
curve (CSV + PNG), TensorBoard logs and the training examples. Checkpoints live in a separate work
folder ``adapters/.NAME.work/``: running the same command again continues an interrupted run.

The same code runs unchanged under ``torchrun --nproc_per_node N`` (DDP; gloo on CPU) and
``accelerate launch``: only rank 0 writes the artifact.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.answering.loader import ADAPTER_FORMAT, ADAPTER_KIND, load_finetuned
from workbench.answering.models import (
    load_base_model,
    model_fingerprint,
    pick_device,
    pick_dtype,
    portable_base_name,
)
from workbench.core.artifacts import (
    atomic_dir,
    check_replaceable,
    hash_bytes,
    hash_file,
    make_manifest,
    recover_leftovers,
    write_json,
)
from workbench.core.config import FinetuneConfig, ModelConfig, RunConfig, to_dict
from workbench.core.errors import WorkbenchError
from workbench.core.locks import acquire_locks, artifact_lock, lock_name, release_locks
from workbench.core.paths import adapters_dir, check_name
from workbench.core.paths import qa_path as default_qa_path
from workbench.corpus.ingest import corpus_fingerprint
from workbench.corpus.qa import QAItem, load_qa, warn_unknown_docs
from workbench.training.adapters import adapter_dir, adapter_status, default_adapter_name, read_adapter_manifest
from workbench.training.scratch import train_scratch
from workbench.training.train_data import require_enough, sft_examples, tokenize_examples
from workbench.training.trainer import Trained, train_model, write_curve
from workbench.training.trainset import TrainingData, build_training_data

FORMAT_VERSION = ADAPTER_FORMAT
KIND = ADAPTER_KIND


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


# --- the adapter -------------------------------------------------------------------------------------

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


def _run_info(cfg: FinetuneConfig, run_cfg: RunConfig, base_hash: str | None, corpus_fp: str,
              qa_hash: str | None) -> dict:
    """What a checkpoint folder was made from (settings, prompts, base weights, data); resuming requires the
    same."""
    return {"finetune": to_dict(cfg), "prompt": to_dict(run_cfg.prompt), "ingest": to_dict(run_cfg.ingest),
            "base_model": run_cfg.model.base_model if cfg.mode != "scratch" else None, "base_model_hash": base_hash,
            "corpus_fingerprint": corpus_fp, "qa_hash": qa_hash}


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
    made = work.exists() and any(p.name != "run.json" for p in work.iterdir())  # checkpoints, a finished phase
    if resume is not False and same:
        if progress and steps:
            print(f"continuing the interrupted run from its checkpoint at step {steps} ({work})")
        return True
    if resume and not work.exists():
        if progress:
            print("no interrupted run to resume; starting from the beginning")
    elif resume or (resume is None and made):
        at = f" (step {steps})" if steps else ""
        raise WorkbenchError(f"the checkpoints in {work}{at} were made with other settings or data",
                             "re-run with the settings they were made with to continue them, or pass --restart "
                             "to discard them and start over")
    if work.exists():
        if progress and made:
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
    the build holds the adapter's lock (``workbench.core.locks``) so two builds of one adapter never race.

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

    t_start = time.perf_counter()
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise WorkbenchError(f"corpus folder {corpus_dir} not found", "pass an existing corpus directory")
    run_cfg = run_cfg or RunConfig(finetune=cfg, model=model_cfg)
    name = check_name(name, "adapter") if name is not None else default_adapter_name(corpus_dir, cfg.mode)
    final = adapters_dir() / name
    check_replaceable(final, KIND)
    qa_file = default_qa_path(corpus_dir, qa_path)
    if qa_path is not None or qa_file.exists():
        warn_unknown_docs(load_qa(qa_file), corpus_dir, qa_file)  # a bad file fails before any folder is touched
    base_name, base_hash = None, None
    if cfg.mode != "scratch":
        base_name, base_hash = model_cfg.base_model, model_fingerprint(model_cfg.base_model)
    rank0_env = int(os.environ.get("RANK", "0")) == 0
    locks = acquire_locks([lock_name("adapter", name)]) if rank0_env else []
    try:
        if rank0_env:
            for line in recover_leftovers(final):  # before the status check: a swap cut short is undone
                if progress:
                    print(f"adapter {name}: {line}")
        if not rebuild and adapter_status(name, corpus_dir, cfg, model_cfg, qa_file, run_cfg) == "current":
            m = read_adapter_manifest(final)
            return FinetuneResult(final, name, True, time.perf_counter() - t_start, m.get("tokens_seen", 0),
                                  m.get("train_loss"), m.get("heldout_loss"), m.get("data_source", "?"),
                                  cfg.mode, m.get("n_train_examples", 0))
        corpus_fp = corpus_fingerprint(corpus_dir)
        qa_hash = hash_file(qa_file) if qa_file.exists() else None
        rank0 = _init_distributed(model_cfg)
        work = final.with_name(f".{name}.work")
        if rank0:
            _prepare_work(work, _run_info(cfg, run_cfg, base_hash, corpus_fp, qa_hash), resume, progress)
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
        trained = train_scratch(corpus_dir, cfg, work, qa_file, run_cfg, resume=resume, progress=progress)
    else:
        trained = _train_lora(corpus_dir, cfg, model_cfg, work, qa_file, run_cfg, retriever, resume, progress)
    data, outcome = trained.data, trained.outcome
    base_name, base_hash = base
    result = FinetuneResult(final, name, False, time.perf_counter() - t_start, outcome.tokens_seen,
                            outcome.train_loss, outcome.heldout_loss, data.source, cfg.mode, len(data.train))
    if not rank0:
        return result
    _write_adapter(final, trained, cfg, model_cfg, run_cfg, work, t_start, name=name, mode=cfg.mode,
                   base_model=base_name, base_model_hash=base_hash,
                   corpus=str(corpus_dir.resolve()), corpus_fingerprint=corpus_fp,
                   qa_file=str(qa_file.resolve()) if qa_file.exists() else None, qa_hash=qa_hash)
    shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - t_start
    return result


def _write_adapter(final: Path, trained: Trained, cfg: FinetuneConfig, model_cfg: ModelConfig, run_cfg: RunConfig,
                   work: Path, t_start: float, **fields: Any) -> None:
    """Write a trained adapter to ``final`` atomically: weights, tokenizer, curve, TensorBoard logs, the
    examples and the manifest (``fields``: what it was built from)."""
    model, tokenizer, data, outcome = trained.model, trained.tokenizer, trained.data, trained.outcome
    tokenizer.padding_side = "left"  # as generation wants it (training may have padded on the right)
    if fields.get("base_model") and fields.get("mode") != "scratch":
        # adapter_config.json names the base for PeftModel.from_pretrained on any machine (the manifest keeps
        # the exact base: its name as given and its fingerprint)
        for peft_cfg in model.peft_config.values():
            peft_cfg.base_model_name_or_path = portable_base_name(fields["base_model"])
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
            KIND, FORMAT_VERSION, **fields,
            data_source=data.source, data_hash=data.digest(), n_train_examples=len(data.train),
            n_heldout_examples=len(data.heldout), n_pretrain_examples=len(data.pretrain),
            n_leakage_dropped=data.n_leakage_dropped, training_data=data.counts(), synth=to_dict(run_cfg.synth),
            hyperparameters=to_dict(cfg), prompt=to_dict(run_cfg.prompt),
            ingest=to_dict(run_cfg.ingest),
            tokens_seen=outcome.tokens_seen, global_step=outcome.global_step,
            resumed_from_step=outcome.resumed_from_step, train_seconds=round(outcome.train_seconds, 2),
            seconds=round(time.perf_counter() - t_start, 2), train_loss=outcome.train_loss,
            heldout_loss=outcome.heldout_loss, device=trained.device, world_size=outcome.world_size))


def continue_finetune(adapter: str, corpus_dir: Path, cfg: FinetuneConfig, model_cfg: ModelConfig, name: str,
                      qa_path: Path, run_cfg: RunConfig, *, chunks: list | None = None,
                      replay: list[QAItem] | None = None, progress: bool = True,
                      rebuild: bool = False) -> FinetuneResult:
    """Continue training an existing LoRA adapter on new data and write the result as ``adapters/NAME``
    (reusing one made from the same adapter, data and settings unless ``rebuild``).

    The training questions are the train split of ``qa_path`` (synthesized from ``chunks`` when it has none,
    leakage-guarded against its eval split, as :func:`finetune` does), plus ``replay``: earlier training
    questions mixed back in against forgetting. The old adapter is only read.

    Args:
        adapter: the adapter to continue (name or folder); its base model must be ``model_cfg``'s.
        corpus_dir: the corpus the new data comes from (recorded in the manifest).
        cfg: fine-tuning settings (epochs, learning rate, ...; mode must be sft).
        model_cfg: the base model.
        name: the new adapter's name (a plain name).
        qa_path: the new questions (train split trained on, eval split guarded against).
        run_cfg: prompt and chunking settings.
        chunks: chunks to synthesize questions from when ``qa_path`` has no train split.
        replay: earlier training questions to add (already sampled).
        progress: progress bars.
        rebuild: train again even when ``adapters/NAME`` is this very continuation.

    Raises:
        WorkbenchError: an invalid name, a folder that is not an adapter there, an adapter that is not a
            LoRA adapter of this base model, or too little training data.
    """
    t_start = time.perf_counter()
    name = check_name(name, "adapter")
    final = adapters_dir() / name
    check_replaceable(final, KIND)
    old = adapter_dir(adapter)
    m = read_adapter_manifest(old)
    if m.get("mode") not in ("sft", "cpt", "raft"):
        raise WorkbenchError(f"adapter {old.name} ({m.get('mode')}) is not a LoRA adapter; it cannot be continued",
                             "continue an sft adapter")
    base_hash = model_fingerprint(model_cfg.base_model)
    if m.get("base_model_hash") != base_hash:
        raise WorkbenchError(f"adapter {old.name} was trained on base model {m.get('base_model')!r}, not "
                             f"{model_cfg.base_model!r}", "pass the base model it was trained on")
    built_from = dict(continued_from=old.name, continued_from_created=m.get("created"),
                      corpus_fingerprint=corpus_fingerprint(corpus_dir), qa_hash=hash_file(qa_path),
                      base_model_hash=base_hash, n_replay_examples=len(replay or []))
    if replay:
        built_from["replay_hash"] = hash_bytes(*(json.dumps(q.to_json()).encode() for q in replay))
    with artifact_lock("adapter", name):
        recover_leftovers(final)
        if not rebuild and (final / "manifest.json").exists():
            done = read_adapter_manifest(final)
            same = {**built_from, "hyperparameters": to_dict(cfg), "prompt": to_dict(run_cfg.prompt)}
            if all(done.get(k) == v for k, v in same.items()) and done.get("replay_hash") == built_from.get(
                    "replay_hash"):  # the same continuation, already made
                return FinetuneResult(final, name, True, time.perf_counter() - t_start, done.get("tokens_seen", 0),
                                      done.get("train_loss"), done.get("heldout_loss"), done.get("data_source", "?"),
                                      cfg.mode, done.get("n_train_examples", 0))
        device = pick_device(model_cfg.device)
        model, tokenizer, _ = load_finetuned(old, model_cfg, trainable=True)
        data = build_training_data(corpus_dir, cfg, tokenizer, qa_path, run_cfg, progress=progress, chunks=chunks)
        data.train += sft_examples(list(replay or []), tokenizer, source="replay", prompt=run_cfg.prompt)
        train_rows = tokenize_examples(data.train, tokenizer, cfg.max_seq_len)
        held_rows = tokenize_examples(data.heldout, tokenizer, cfg.max_seq_len)
        require_enough(len(train_rows), "training examples")
        work = final.with_name(f".{name}.work")
        _prepare_work(work, {"continue": str(old), "finetune": to_dict(cfg)}, False, False)
        outcome = train_model(model, tokenizer, train_rows, held_rows, cfg, work, epochs=cfg.epochs,
                              learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, resume=False,
                              progress=progress, desc=f"continue {old.name}", device=device,
                              bf16=str(pick_dtype(model_cfg.dtype, device)).endswith("bfloat16"))
        model.eval()
        trained = Trained(model, tokenizer, data, outcome, device)
        _write_adapter(final, trained, cfg, model_cfg, run_cfg, work, t_start, name=name, mode=cfg.mode,
                       base_model=model_cfg.base_model, corpus=str(Path(corpus_dir).resolve()),
                       qa_file=str(Path(qa_path).resolve()), **built_from)
        shutil.rmtree(work, ignore_errors=True)
    return FinetuneResult(final, name, False, time.perf_counter() - t_start, outcome.tokens_seen,
                          outcome.train_loss, outcome.heldout_loss, data.source, cfg.mode, len(data.train))


def _init_distributed(model_cfg: ModelConfig) -> bool:
    """Under torchrun / accelerate launch, start the process group now (gloo on CPU) so ranks can
    synchronise before the Trainer exists. Returns whether this is the main process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState


        PartialState(cpu=pick_device(model_cfg.device) == "cpu")
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _train_lora(corpus_dir: Path, cfg: FinetuneConfig, model_cfg: ModelConfig, work: Path, qa_file: Path,
                run_cfg: RunConfig, retriever: Any, resume: bool, progress: bool) -> Trained:
    """LoRA on the base model: the training data, the adapter's layers, the training loop."""
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
              f"{len(held_rows)} held out, {data.n_leakage_dropped} dropped by the leakage guard; "
              f"{data.counts()['n_facts']} facts in {data.counts()['n_wordings']} wordings")
    model = _lora_model(model, cfg)
    outcome = train_model(model, tokenizer, train_rows, held_rows, cfg, work, epochs=cfg.epochs,
                          learning_rate=cfg.learning_rate, max_steps=cfg.max_steps, resume=resume,
                          progress=progress, desc=f"finetune {cfg.mode}", device=device,
                          bf16=str(dtype).endswith("bfloat16"))
    model.eval()
    return Trained(model, tokenizer, data, outcome, device)
