"""The ``workbench`` command line: each command parses arguments and calls one stage function.

Heavy libraries are imported inside the commands so ``workbench --help`` starts instantly.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional

import typer

from workbench.core.config import IngestConfig
from workbench.core.errors import WorkbenchError

# a transformers deprecation raised inside peft's own calls: nothing a user can act on
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

app = typer.Typer(
    help="RAG vs fine-tuning workbench: build both from one corpus, score them side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

PRESET_HELP = "Shipped preset name (quick, full, multilingual) or the path of a YAML preset file."


def _print_version(value: bool) -> None:
    """Print the installed version and exit (``workbench --version``)."""
    if value:
        from workbench import __version__

        typer.echo(f"workbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """RAG vs fine-tuning workbench: build both from one corpus, score them side by side."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """One line on stderr for every failure: a WorkbenchError (exit 2), Ctrl-C (130), or an internal error
    (exit 1, its traceback saved to a log file whose path the line gives)."""
    try:
        yield
    except WorkbenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written under the final name; run the same command again to "
                   "continue (fine-tuning picks up from its last checkpoint)", err=True)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as e:  # a bug, not the user's input: keep the traceback for the report
        from workbench.core.crashlog import save_traceback

        log = save_traceback(e, sys.argv)
        typer.echo(f"error: internal error ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                   f"the traceback is in {log} (please attach it to a bug report)", err=True)
        raise typer.Exit(1) from None


def _preset_name(preset: str, profile: str | None) -> str:
    """``--preset``, or ``--profile`` (its old name, kept hidden for a release) when only that was given.

    Raises:
        WorkbenchError: both given, naming different presets.
    """
    if profile is None or profile == preset:
        return preset
    if preset != "quick":
        raise WorkbenchError(f"--preset {preset} and --profile {profile} disagree",
                             "pass --preset only (--profile is its old name)")
    return profile


def _run_dir(name: str | None) -> Path | None:
    """``runs/NAME`` for a run name given on the command line (checked to be a plain name)."""
    from workbench.core.paths import artifact_dir

    return artifact_dir("run", name) if name is not None else None


# --- commands (one section per stage) -------------------------------------------------------

# @@doctor
@app.command()
def doctor(
    no_models: bool = typer.Option(False, "--no-models", help="Skip loading the embedded embedder and base LLM."),
):
    """Check the install: library versions, device (CUDA/MPS/CPU), offline mode, and that the embedded models load."""
    with user_errors():
        from workbench.cli.diagnose import run_checks

        failed = 0
        for check in run_checks(models=not no_models):
            typer.echo(check.line())
            failed += check.status == "fail"
        if failed:
            typer.echo(f"{failed} check(s) failed: see the lines marked ✘", err=True)
            raise typer.Exit(1)

# @@ingest
@app.command()
def ingest(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder: .txt .md .rst .html files (recursively)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Chunks JSON Lines file (default: ./CORPUS_NAME.chunks.jsonl)."),
    chunk_tokens: Optional[int] = typer.Option(
        None, help=f"Chunk budget in tokenizer tokens (default: {IngestConfig.chunk_tokens})."),
    overlap: Optional[int] = typer.Option(
        None, help=f"Tokens of whole sentences repeated between chunks (default: {IngestConfig.overlap_tokens})."),
    language: Optional[str] = typer.Option(
        None, help=f"Corpus language: an ISO 639-1 code such as en or pt, or auto to detect it per document "
                   f"(default: {IngestConfig.language})."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer the budget is counted in: default (the "
                                                       "embedded MiniLM's), whitespace, a folder or a hub id."),
):
    """Clean, deduplicate and chunk a corpus; write the chunks and print what was read, skipped and dropped."""
    with user_errors():
        from workbench.core.artifacts import write_json
        from workbench.corpus.ingest import (
            check_chunks_target,
            chunks_manifest,
            chunks_manifest_path,
            ingest_corpus,
            write_chunks,
        )

        given = {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap, "language": language,
                 "tokenizer": tokenizer}
        cfg = IngestConfig(**{k: v for k, v in given.items() if v is not None})
        path = out or Path(f"{corpus_dir.resolve().name}.chunks.jsonl")
        check_chunks_target(path)
        result = ingest_corpus(corpus_dir, cfg)
        write_chunks(result.chunks, path)
        write_json(chunks_manifest_path(path), chunks_manifest(result, cfg, corpus_dir))
        typer.echo(result.report.summary())
        typer.echo(f"wrote {result.report.n_chunks} chunks to {path}")


# @@index
@app.command()
def index(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder to index."),
    name: Optional[str] = typer.Option(None, "--name", help="Index name, a plain name (letters, digits, '.-_'); "
                                       "written to indices/NAME (default: the corpus folder's name)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="FAISS index: auto (flat < 20k chunks, HNSW up to "
                                       "~1M, IVF-PQ beyond), flat, hnsw or ivfpq (default: the preset's)."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Sentence-transformers model: the embedded "
                                           "all-MiniLM-L6-v2, a local folder, or a cached hub id."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-encode everything even if a current or "
                                 "reusable index exists."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Build or update indices/NAME/: chunks, embeddings, FAISS + BM25, manifest (only changed chunks re-encoded)."""
    with user_errors():
        from workbench.core.config import load_preset, override
        from workbench.retrieval.index import build_index

        cfg = override(load_preset(preset), index={"kind": kind or None, "embedder": embedder or None})
        result = build_index(corpus_dir, cfg.index, cfg.ingest, name=name, rebuild=rebuild, progress=not quiet)
        typer.echo(result.summary())


# @@search
@app.command()
def search(
    name: str = typer.Argument(..., help="Index name (under indices/) or folder."),
    query: str = typer.Argument(..., help="The question or keywords."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="Number of passages (default: the preset's)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="hybrid (BM25 + dense, fused by reciprocal rank), "
                                       "dense or sparse (default: the preset's)."),
    reranker: Optional[str] = typer.Option(None, "--reranker", help="Cross-encoder folder or cached hub id "
                                           "that reorders the candidates."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
):
    """Print the top-k chunks of an index for a query, with scores, document and heading."""
    with user_errors():
        from workbench.core.config import load_preset, override
        from workbench.retrieval.index import load_index
        from workbench.retrieval.retrieve import Retriever, format_hits

        cfg = override(load_preset(preset), retrieve={"k": k, "mode": mode, "reranker": reranker})
        retriever = Retriever(load_index(name, check_corpus=True), cfg.retrieve)
        typer.echo(format_hits(retriever.search(query)))


# @@ask
@app.command()
def ask(
    target: str = typer.Argument(..., help="Corpus folder (indexed if needed), index name, or index folder."),
    question: str = typer.Argument(..., help="The question."),
    system: str = typer.Option("rag", "--system", help="Any registered system: base (closed book), rag (base + "
                               "passages), ft (adapter, closed book), ft_rag (adapter + passages), raft, scratch."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter name or folder (read only) for the "
                                          "system's adapter (default <corpus>-<mode>, e.g. demo-sft)."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="Passages for rag / ft_rag (default: the preset's)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: name, local folder, .gguf or hub id."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Reply budget in tokens."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    decline: bool = typer.Option(True, "--decline/--no-decline", help="Decline (\"I don't know\") when the "
                                 "answer's confidence is below the threshold of the newest evaluation run on the "
                                 "same corpus and index content, where that run's calibration supports one; "
                                 "--no-decline shows the answer and its raw confidence."),
):
    """Answer one question with one system; print the answer, its confidence, its sources and the latency."""
    with user_errors():
        from workbench.answering.answer import format_answer
        from workbench.answering.confidence import apply_calibrator
        from workbench.core.config import load_preset, override
        from workbench.evaluation.abstention import calibrators_for
        from workbench.evaluation.systems import ask as ask_question

        cfg = override(load_preset(preset), model={"base_model": base or None},
                       generate={"max_new_tokens": max_new_tokens}, retrieve={"k": k})
        answer = ask_question(target, question, system, cfg, adapter=adapter)
        if decline:
            found = calibrators_for(target)
            apply_calibrator([answer], found.calibrators.get(system))
            typer.echo(f"({found.note(system)})", err=True)
        typer.echo(format_answer(answer))

# @@synth
@app.command()
def synth(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents; its qa.jsonl is not read)."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write: one synthesized question a line, with its "
                             "answer, source sentence, document and fact id."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    backend: Optional[str] = typer.Option(None, "--backend", help="rules, openai (a served model at --base-url) "
                                          "or model (the base model); default: the preset's synth.backend."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL (backend openai)."),
    model: Optional[str] = typer.Option(None, "--model", help="Served model name (backend openai)."),
    wordings: Optional[int] = typer.Option(None, "--wordings", help="Questions per fact (default: the preset's)."),
    sample: int = typer.Option(8, "--sample", help="Facts printed as a sample (0: none)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Write the questions fine-tuning would synthesize from a corpus, and print a sample of them."""
    with user_errors():
        from workbench.core.config import load_preset, override
        from workbench.training.trainset import synthesize_corpus

        cfg = override(load_preset(preset), synth={"backend": backend, "base_url": base_url, "model": model,
                                                   "wordings": wordings})
        made = synthesize_corpus(corpus_dir, cfg, out, progress=not quiet)
        summary = made.summary()
        typer.echo(f"{summary['n_facts']} facts in {summary['n_wordings']} questions ({made.backend}, "
                   f"{made.pipeline}; {made.n_dropped} candidates dropped) -> {out}")
        for s in made.sample(sample, cfg.finetune.seed):
            typer.echo(f"  {s.question}  -> {s.answer}" if s.style == "wording" else
                       f"- {s.question}  -> {s.answer}\n    from: {s.sentence[:160]}")


# @@finetune
@app.command()
def finetune(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents + optional qa.jsonl)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="sft (LoRA on QA pairs), cpt (LoRA on the corpus "
                                       "text), raft (QA pairs with retrieved passages), scratch (small model from "
                                       "zero) (default: the preset's finetune.mode)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: name, local folder, .gguf or hub id "
                                       "(default: the preset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name, a plain name (letters, digits, '.-_'); "
                                       "written to adapters/NAME (default CORPUS-MODE)."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file (default CORPUS_DIR/qa.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run from its last checkpoint "
                                "(fails if its settings changed). Default: continue it when its settings are the "
                                "same, else refuse."),
    restart: bool = typer.Option(False, "--restart", help="Discard the interrupted run's checkpoints."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps (N >= 1; "
                                            "default: the preset's epochs)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Retrain even if a current adapter exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Fine-tune on a corpus and write adapters/NAME/ (a PEFT folder; scratch: a full model).

    Runs unchanged on several processes: torchrun --nproc_per_node N -m workbench.cli finetune ...
    """
    with user_errors():
        from workbench.core.config import load_preset, override
        from workbench.training.finetune import finetune as run_finetune

        if resume and restart:
            raise WorkbenchError("--resume and --restart contradict each other", "give one of them, or neither")
        if max_steps is not None and max_steps < 1:
            raise WorkbenchError(f"--max-steps {max_steps}: give a number of optimizer steps >= 1",
                                 "leave it out to train for the preset's epochs")
        cfg = override(load_preset(preset), finetune={"mode": mode, "max_steps": max_steps},
                       model={"base_model": base or None})
        result = run_finetune(corpus_dir, cfg.finetune, cfg.model, name=name, qa_path=qa,
                              resume=True if resume else False if restart else None,
                              progress=not quiet, run_cfg=cfg, rebuild=rebuild)
        typer.echo(result.summary())


# @@eval
@app.command("eval")
def eval_(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents + qa.jsonl)."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file (default CORPUS_DIR/qa.jsonl); only "
                                      "its eval split is scored."),
    systems: Optional[str] = typer.Option(None, "--systems", help="Comma-separated systems: base, rag, ft, "
                                          "ft_rag, raft, scratch (default: the preset's)."),
    index: Optional[str] = typer.Option(None, "--index", help="Index name or folder (default: the corpus "
                                        "folder's name; built when missing or stale)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter for ft / ft_rag (default "
                                          "<corpus>-sft)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N eval questions."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name, a plain name; written to runs/NAME "
                                       "(default <corpus>-<time>)."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible base URL of a judge "
                                            "model for faithfulness / relevancy / factual correctness."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name (default: the "
                                              "first the endpoint lists)."),
):
    """Score systems side by side on the eval questions: results.jsonl, summary.json, report.md, plots/."""
    with user_errors():
        from workbench.cli.pipeline import print_summary
        from workbench.core.config import load_preset, override
        from workbench.evaluation.evaluate import evaluate

        cfg = override(load_preset(preset), eval={"systems": systems.split(",") if systems else None,
                                                  "limit": limit, "judge_base_url": judge_url,
                                                  "judge_model": judge_model})
        folder = evaluate(corpus_dir, cfg, qa_path=qa, index=index, adapter=adapter, out=_run_dir(name))
        print_summary(folder)
        typer.echo(str(folder))


# @@run
@app.command("run")
def run_(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents + qa.jsonl)."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file (default CORPUS_DIR/qa.jsonl)."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    profile: Optional[str] = typer.Option(None, "--profile", hidden=True, help="Old name of --preset."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name, a plain name; written to runs/NAME "
                                       "(default <corpus>-<time>)."),
):
    """Ingest, index, fine-tune, evaluate and report in one go, reusing every artifact that is current."""
    with user_errors():
        from workbench.cli.pipeline import run
        from workbench.core.config import load_preset

        folder = run(corpus_dir, load_preset(_preset_name(preset, profile)), qa_path=qa, out=_run_dir(name))
        typer.echo(str(folder))

# @@update
@app.command("update")
def update_(
    corpus_dir: Path = typer.Argument(..., help="The base corpus folder (documents + qa.jsonl); only read."),
    update_dir: Path = typer.Argument(..., help="The update folder: changed documents at the same relative paths, "
                                      "new documents, optional removed.txt and qa.jsonl (kind new/updated); only read."),
    strategies: str = typer.Option("reindex,continue,retrain", "--strategies", help="Comma-separated: reindex "
                                   "(incremental index update), continue (train the old adapter further), retrain "
                                   "(fresh adapter on old + new data)."),
    replay: float = typer.Option(0.0, "--replay", help="With continue: also train a copy continued with this share "
                                 "of the old training questions mixed in (0: none)."),
    invariant_limit: Optional[int] = typer.Option(None, "--invariant-limit", help="Score at most N invariant "
                                                  "questions (a seeded sample; default all)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name, a plain name: runs/NAME, indices/NAME, "
                                       "adapters/NAME-continue|-replay|-retrain (default <corpus>-update)."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    profile: Optional[str] = typer.Option(None, "--profile", hidden=True, help="Old name of --preset."),
    no_side_effects: bool = typer.Option(False, "--no-side-effects", help="Skip the general-ability probe."),
):
    """When the documents change: re-index, continue or retrain, then score every system on unchanged, updated
    and new facts (stale answers, forgetting, FUAR, cost)."""
    with user_errors():
        from workbench.core.config import load_preset
        from workbench.update.strategies import UpdateConfig, update

        ucfg = UpdateConfig(strategies=[s.strip() for s in strategies.split(",") if s.strip()], replay=replay,
                            invariant_limit=invariant_limit)
        folder = update(corpus_dir, update_dir, load_preset(_preset_name(preset, profile)), ucfg, name=name,
                        side_effects=not no_side_effects)
        typer.echo(str(folder))

# @@inspect
inspect_app = typer.Typer(help="Look inside the models on your own corpus: tokens, next-token probabilities, "
                          "attention, what fine-tuning changed, the embedding space (printed as tables).",
                          no_args_is_help=True)
app.add_typer(inspect_app, name="inspect")
_BASE_HELP = "Base model: name, local folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)."
_INDEX_HELP = "Index name or folder: build the RAG prompt over its top-k passages (default: closed book)."


@inspect_app.command("tokens")
def inspect_tokens(
    text: str = typer.Argument(..., help="Any text, e.g. \"The Tern-3 buoy weighs 42 kg\"."),
    base: Optional[str] = typer.Option(None, "--base", help=_BASE_HELP),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Embedder (default: the embedded MiniLM)."),
):
    """The text cut into the base model's tokens and the embedder's, side by side, with ids and counts."""
    with user_errors():
        from workbench.core.config import DEFAULT_BASE_MODEL, DEFAULT_EMBEDDER
        from workbench.inside.tokens import format_splits, load_tokenizers, split_all

        typer.echo(format_splits(split_all(text, load_tokenizers(base or DEFAULT_BASE_MODEL,
                                                                  embedder or DEFAULT_EMBEDDER))))


@inspect_app.command("next")
def inspect_next(
    question: str = typer.Argument(..., help="The question whose real prompt is read."),
    index: Optional[str] = typer.Option(None, "--index", help=_INDEX_HELP),
    k: int = typer.Option(2, "-k", "--k", help="Passages in the RAG prompt."),
    top: int = typer.Option(10, "--top", help="Next tokens listed."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (0 = greedy)."),
    top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0 = all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Keep the most likely tokens up to this mass (1 = all)."),
    samples: int = typer.Option(3, "--samples", help="Continuations sampled at these settings (0 = none)."),
    max_new_tokens: int = typer.Option(12, "--max-new-tokens", help="Tokens per sampled continuation."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    base: Optional[str] = typer.Option(None, "--base", help=_BASE_HELP),
):
    """The top next tokens after a question's prompt, their probabilities, and sampled continuations."""
    with user_errors():
        from workbench.inside.nexttoken import (
            check_sampling,
            format_next,
            read_prompt,
            sample_continuations,
            top_tokens,
        )
        from workbench.inside.prompt import load_question_prompt

        check_sampling(temperature, top_k, top_p)
        model, tokenizer, prompt = load_question_prompt(question, base, index, k)
        prefill = read_prompt(model, prompt)
        tokens = top_tokens(prefill.logits, tokenizer, top, temperature, top_k, top_p)
        drawn = sample_continuations(model, tokenizer, prompt, samples, max_new_tokens, temperature, top_k, top_p,
                                     seed, prefill) if samples else []
        typer.echo(format_next(prompt, tokens, drawn, temperature, top_k, top_p))


@inspect_app.command("attention")
def inspect_attention(
    question: str = typer.Argument(..., help="The question whose real prompt is read."),
    index: Optional[str] = typer.Option(None, "--index", help=_INDEX_HELP),
    k: int = typer.Option(2, "-k", "--k", help="Passages in the RAG prompt."),
    layer: int = typer.Option(-1, "--layer", help="Layer (0-based; negative counts from the last)."),
    head: Optional[int] = typer.Option(None, "--head", help="Attention head (default: the mean over heads)."),
    base: Optional[str] = typer.Option(None, "--base", help=_BASE_HELP),
):
    """How much the position that produces the answer's first token attends to each passage and the question."""
    with user_errors():
        from workbench.inside.attention import attention_view, format_attention
        from workbench.inside.prompt import load_question_prompt

        model, tokenizer, prompt = load_question_prompt(question, base, index, k)
        typer.echo(format_attention(attention_view(model, tokenizer, prompt, layer), head))


@inspect_app.command("changed")
def inspect_changed(
    adapter: str = typer.Argument(..., help="Adapter name (under adapters/) or folder."),
    question: Optional[str] = typer.Option(None, "--question", help="One question (with --answer): per-token view."),
    answer: Optional[str] = typer.Option(None, "--answer", help="The gold answer of --question."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file for the batch view (default: the eval "
                                      "questions of the adapter's corpus)."),
    limit: int = typer.Option(32, "--limit", help="Questions scored in the batch view."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the adapter's)."),
):
    """What fine-tuning changed: gold-answer probabilities under the base model and the adapter."""
    with user_errors():
        from workbench.inside import changes

        if (question is None) != (answer is None):
            raise WorkbenchError("--question and --answer go together", "pass both, or neither for the batch view")
        if qa is not None:
            from workbench.corpus.qa import eval_items, load_qa

            items = eval_items(load_qa(qa))
        elif question is None:
            items = changes.adapter_questions(adapter)
        pair = changes.load_pair(adapter, base)
        if question is not None:
            typer.echo(changes.format_change(changes.compare_answer(*pair, question, answer)))
        else:
            typer.echo(changes.format_shifts(changes.compare_items(*pair, items, limit)))


@inspect_app.command("space")
def inspect_space(
    index: str = typer.Argument(..., help="Index name or folder."),
    query: str = typer.Argument(..., help="The query placed among the chunks."),
    method: str = typer.Option("pca", "--method", help="pca, or umap when umap-learn is installed."),
    k: int = typer.Option(5, "-k", "--k", help="Nearest chunks listed."),
    seed: int = typer.Option(0, "--seed", help="Seed of the chunk sample and of UMAP."),
):
    """The query and its nearest chunks in the 2-D projection of the index's embedding space."""
    with user_errors():
        from workbench.inside.space import format_map, semantic_map
        from workbench.retrieval.index import load_index
        from workbench.retrieval.retrieve import Retriever

        retriever = Retriever(load_index(index))
        typer.echo(format_map(semantic_map(retriever.index, retriever.embedder, query, method, k, seed=seed)))


@inspect_app.command("similar")
def inspect_similar(
    sentences: list[str] = typer.Argument(..., help="Two or more sentences."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Embedder (default: the embedded MiniLM)."),
):
    """The cosine-similarity matrix of a few sentences."""
    with user_errors():
        from workbench.inside.space import format_similarity, similarity_matrix
        from workbench.retrieval.embed import Embedder

        typer.echo(format_similarity(*similarity_matrix(Embedder(embedder) if embedder else Embedder(), sentences)))


@inspect_app.command("arithmetic")
def inspect_arithmetic(
    index: str = typer.Argument(..., help="Index name or folder."),
    a: str = typer.Argument(..., help="Phrase A."),
    b: str = typer.Argument(..., help="Phrase B (subtracted)."),
    c: str = typer.Argument(..., help="Phrase C (added)."),
    k: int = typer.Option(5, "-k", "--k", help="Nearest chunks listed."),
):
    """Vector arithmetic: the chunks nearest to embed(A) - embed(B) + embed(C)."""
    with user_errors():
        from workbench.inside.space import format_arithmetic, vector_arithmetic
        from workbench.retrieval.index import load_index
        from workbench.retrieval.retrieve import Retriever

        retriever = Retriever(load_index(index))
        typer.echo(format_arithmetic(a, b, c, *vector_arithmetic(retriever.index, retriever.embedder, a, b, c, k)))


# @@serve
def _names(text: Optional[str]) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (localhost only by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free one; the URL is printed)."),
    index: Optional[str] = typer.Option(None, "--index", help="Indices to serve as rag:NAME (comma-separated "
                                        "names of indices built under indices/)."),
    adapters: Optional[str] = typer.Option(None, "--adapters", help="Adapters to serve as ft:NAME (comma-separated "
                                           "names of adapters built under adapters/)."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests waiting or generating at once; more get 503."),
    api_key_env: str = typer.Option("WORKBENCH_API_KEY", "--api-key-env", help="Environment variable whose value "
                                    "clients must send as 'Authorization: Bearer KEY' (unset: no key; set but "
                                    "empty: refused)."),
    max_body_mb: float = typer.Option(1.0, "--max-body-mb", help="Largest request body in MB; larger ones get 413."),
):
    """Serve base, adapters and their RAG variants over an OpenAI-compatible API (/v1/chat/completions,
    /v1/models, /v1/embeddings, /health); concurrent requests are generated in one batch."""
    with user_errors():
        from workbench.core.config import load_preset
        from workbench.serving.pool import ModelPool
        from workbench.serving.serve import ServeConfig
        from workbench.serving.serve import serve as run_server

        cfg = ServeConfig(host=host, port=port, max_queue=max_queue, api_key_env=api_key_env, max_body_mb=max_body_mb)
        run_server(ModelPool(load_preset(preset), _names(index), _names(adapters)), cfg)


# @@mcp
@app.command()
def mcp(
    transport: str = typer.Option("stdio", "--transport", help="stdio (launched by the MCP client) or http "
                                  "(streamable HTTP at http://HOST:PORT/mcp)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface for --transport http."),
    port: int = typer.Option(8001, "--port", help="Port for --transport http."),
    preset: str = typer.Option("quick", "--preset", help=PRESET_HELP),
):
    """An MCP server for agents: tools search, ask, compare, list_artifacts and report over this project."""
    with user_errors():
        from workbench.core.config import load_preset
        from workbench.serving.mcp_server import run_mcp

        run_mcp(load_preset(preset), transport, host, port)


# @@export
@app.command()
def export(
    adapter: str = typer.Argument(..., help="Adapter name (under adapters/) or folder."),
    merged: Path = typer.Option(..., "--merged", help="Folder to write: the base model with the adapter merged "
                                "(safetensors + tokenizer); replaced only if an earlier export wrote it."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the one the adapter was "
                                       "trained on)."),
):
    """Write the base model with an adapter merged in, as a folder transformers and vLLM load."""
    with user_errors():
        from workbench.training.export import export_merged

        typer.echo(export_merged(adapter, merged, base).summary())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
