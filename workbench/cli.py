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

from workbench.errors import WorkbenchError

# a transformers deprecation raised inside peft's own calls: nothing a user can act on
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

app = typer.Typer(
    help="RAG vs fine-tuning workbench: build both from one corpus, score them side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a WorkbenchError (and Ctrl-C) into one line on stderr and exit code 2 (130)."""
    try:
        yield
    except WorkbenchError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written under the final name; re-run to resume", err=True)
        raise typer.Exit(130) from None


# --- commands (one section per stage) -------------------------------------------------------

# @@doctor
@app.command()
def doctor(
    no_models: bool = typer.Option(False, "--no-models", help="Skip loading the embedded embedder and base LLM."),
):
    """Check the install: library versions, device (CUDA/MPS/CPU), offline mode, and that the embedded models load."""
    with user_errors():
        from workbench.doctor import run_checks

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
        None, "--out", "-o", help="Chunks JSON Lines file [default: ./CORPUS_NAME.chunks.jsonl]."),
    chunk_tokens: Optional[int] = typer.Option(None, help="Chunk budget in tokenizer tokens [default: 256]."),
    overlap: Optional[int] = typer.Option(None, help="Tokens of whole sentences repeated between chunks "
                                                     "[default: 32]."),
    language: Optional[str] = typer.Option(None, help="spaCy language code for sentence splitting "
                                                      "[default: en; xx = multi-language]."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer the budget is counted in: default (the "
                                                       "embedded MiniLM's), whitespace, a folder or a hub id."),
):
    """Clean, deduplicate and chunk a corpus; write the chunks and print what was read, skipped and dropped."""
    with user_errors():
        from workbench.artifacts import write_json
        from workbench.config import IngestConfig
        from workbench.ingest import chunks_manifest, ingest_corpus, write_chunks

        given = {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap, "language": language,
                 "tokenizer": tokenizer}
        cfg = IngestConfig(**{k: v for k, v in given.items() if v is not None})
        path = out or Path(f"{corpus_dir.resolve().name}.chunks.jsonl")
        if path.is_dir():
            raise WorkbenchError(f"--out {path} is a directory", "pass a file path such as chunks.jsonl")
        result = ingest_corpus(corpus_dir, cfg)
        write_chunks(result.chunks, path)
        write_json(path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json"),
                   chunks_manifest(result, cfg, corpus_dir))
        typer.echo(result.report.summary())
        typer.echo(f"wrote {result.report.n_chunks} chunks to {path}")


# @@index
@app.command()
def index(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder to index."),
    name: Optional[str] = typer.Option(None, "--name", help="Index name under indices/ (default: the corpus "
                                       "folder's name)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="FAISS index: auto (flat < 20k chunks, HNSW up to "
                                       "~1M, IVF-PQ beyond), flat, hnsw or ivfpq (default: the preset's)."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Sentence-transformers model: the embedded "
                                           "all-MiniLM-L6-v2, a local folder, or a cached hub id."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-encode everything even if a current or "
                                 "reusable index exists."),
    preset: str = typer.Option("quick", "--preset", help="Preset name (configs/NAME.yaml) or YAML file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Build or update indices/NAME/: chunks, embeddings, FAISS + BM25, manifest (only changed chunks re-encoded)."""
    with user_errors():
        from workbench.config import load_preset, override
        from workbench.index import build_index

        cfg = override(load_preset(preset), index={"kind": kind or None, "embedder": embedder or None})
        result = build_index(corpus_dir, cfg.index, cfg.ingest, name=name, rebuild=rebuild, progress=not quiet)
        typer.echo(result.summary())


# @@search
@app.command()
def search(
    name: str = typer.Argument(..., help="Index name (under indices/) or folder."),
    query: str = typer.Argument(..., help="The question or keywords."),
    k: int = typer.Option(5, "-k", "--k", help="Number of passages."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (BM25 + dense, fused by reciprocal rank), dense "
                             "or sparse."),
    reranker: Optional[str] = typer.Option(None, "--reranker", help="Cross-encoder folder or cached hub id "
                                           "that reorders the candidates."),
):
    """Print the top-k chunks of an index for a query, with scores, document and heading."""
    with user_errors():
        from workbench.config import RetrieveConfig
        from workbench.index import load_index
        from workbench.retrieve import Retriever, format_hits

        retriever = Retriever(load_index(name, check_corpus=True), RetrieveConfig(mode=mode, k=k, reranker=reranker))
        typer.echo(format_hits(retriever.search(query)))


# @@ask
@app.command()
def ask(
    target: str = typer.Argument(..., help="Corpus folder (indexed if needed), index name, or index folder."),
    question: str = typer.Argument(..., help="The question."),
    system: str = typer.Option("rag", "--system", help="base (closed book), rag (base + passages), ft "
                               "(adapter, closed book) or ft_rag (adapter + passages)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter for ft / ft_rag (default <corpus>-sft)."),
    k: Optional[int] = typer.Option(None, "-k", "--k", help="Passages for rag / ft_rag (default: the preset's)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: name, local folder, .gguf or hub id."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Reply budget in tokens."),
    preset: str = typer.Option("quick", "--preset", help="Preset name (configs/NAME.yaml) or YAML file."),
):
    """Answer one question with one system; print the answer, its sources and the latency."""
    with user_errors():
        from workbench.answer import ask as ask_question, format_answer
        from workbench.config import load_preset, override

        cfg = override(load_preset(preset), model={"base_model": base or None},
                       generate={"max_new_tokens": max_new_tokens or None}, retrieve={"k": k})
        typer.echo(format_answer(ask_question(target, question, system, cfg, adapter=adapter)))

# @@finetune
@app.command()
def finetune(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents + optional qa.jsonl)."),
    mode: str = typer.Option("sft", "--mode", help="sft (LoRA on QA pairs), cpt (LoRA on the corpus text), "
                             "raft (QA pairs with retrieved passages), scratch (small model from zero)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: name, local folder, .gguf or hub id "
                                       "(default: the preset's)."),
    name: Optional[str] = typer.Option(None, "--name", help="Adapter name under adapters/ (default CORPUS-MODE)."),
    preset: str = typer.Option("quick", "--preset", help="Preset name (configs/NAME.yaml) or YAML file."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file (default CORPUS_DIR/qa.jsonl)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Retrain even if a current adapter exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Fine-tune on a corpus and write adapters/NAME/ (a PEFT folder; scratch: a full model).

    Runs unchanged on several processes: torchrun --nproc_per_node N -m workbench.cli finetune ...
    """
    with user_errors():
        from workbench.config import load_preset, override
        from workbench.finetune import finetune as run_finetune

        cfg = override(load_preset(preset), finetune={"mode": mode, "max_steps": max_steps},
                       model={"base_model": base or None})
        result = run_finetune(corpus_dir, cfg.finetune, cfg.model, name=name, qa_path=qa, resume=resume,
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
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/<corpus>-<time>)."),
    preset: str = typer.Option("quick", "--preset", help="Preset name (configs/NAME.yaml) or YAML file."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="OpenAI-compatible base URL of a judge "
                                            "model for faithfulness / relevancy / factual correctness."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge model name (default: the "
                                              "first the endpoint lists)."),
):
    """Score systems side by side on the eval questions: results.jsonl, summary.json, report.md, plots/."""
    with user_errors():
        from workbench.config import load_preset, override
        from workbench.evaluate import evaluate
        from workbench.pipeline import print_summary

        cfg = override(load_preset(preset), eval={"systems": systems.split(",") if systems else None,
                                                  "limit": limit, "judge_base_url": judge_url,
                                                  "judge_model": judge_model})
        folder = evaluate(corpus_dir, cfg, qa_path=qa, index=index, adapter=adapter, out=out)
        print_summary(folder)
        typer.echo(str(folder))


# @@run
@app.command("run")
def run_(
    corpus_dir: Path = typer.Argument(..., help="Corpus folder (documents + qa.jsonl)."),
    qa: Optional[Path] = typer.Option(None, "--qa", help="Question file (default CORPUS_DIR/qa.jsonl)."),
    profile: str = typer.Option("quick", "--profile", help="quick (CPU, embedded models) or full (GPU), or a "
                                "preset YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/<corpus>-<time>)."),
):
    """Ingest, index, fine-tune, evaluate and report in one go, reusing every artifact that is current."""
    with user_errors():
        from workbench.config import load_preset
        from workbench.pipeline import run

        folder = run(corpus_dir, load_preset(profile), qa_path=qa, out=out)
        typer.echo(str(folder))

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
