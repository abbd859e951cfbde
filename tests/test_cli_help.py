"""Command-line conventions: --version, -h, and help text that renders exactly as written."""
import re

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from workbench import __version__
from workbench.cli import app
from workbench.core.config import IngestConfig

runner = CliRunner()


def _commands(cmd, path: tuple[str, ...] = ()):
    """Every command of the app as ``(path, command)``, groups and their subcommands included."""
    yield path, cmd
    if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
        for name, sub in cmd.commands.items():
            yield from _commands(sub, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))
IDS = [" ".join(path) or "workbench" for path, _ in COMMANDS]


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"workbench {__version__}"


@pytest.mark.parametrize("args", [[], ["ingest"], ["inspect"]], ids=["workbench", "ingest", "inspect"])
def test_short_help_option_matches_long(args):
    short = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "200"})
    assert short.exit_code == 0, short.output
    assert short.output == _help(*args)


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_help_text_is_not_eaten_as_markup(path, cmd):
    """Rich reads ``[word ...]`` as a style tag and drops it: ``"tokens [default: 256]."`` shows ``"tokens ."``."""
    texts = {"docstring": cmd.help or ""} | {p.name: getattr(p, "help", None) or "" for p in cmd.params}
    lost = {where: text for where, text in texts.items() if Text.from_markup(text).plain != text}
    assert not lost, f"{' '.join(path)}: help text Rich would cut: {lost}"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_rendered_help_has_no_gaps_left_by_dropped_text(path, cmd):
    shown = _help(*path)
    # a space before punctuation is where a bracketed phrase vanished
    assert not re.search(r"\w \.(\s|$)| ,| \)", shown), shown


def test_ingest_language_help_gives_the_config_default():
    shown = " ".join(_help("ingest").split())
    assert f"(default: {IngestConfig.language})" in shown
    assert IngestConfig.language == "auto"
