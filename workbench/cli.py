"""The ``workbench`` command line: each command parses arguments and calls one stage function.

Heavy libraries are imported inside the commands so ``workbench --help`` starts instantly.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from workbench.errors import WorkbenchError

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

# @@ingest

# @@index

# @@search

# @@ask

# @@finetune

# @@eval

# @@run


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
