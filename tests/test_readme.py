"""The README's usage lines and the commands' options say the same thing, so neither drifts from the other."""

from __future__ import annotations

import re

import click
import pytest

from engine.cli import cli
from tests.support import FIXTURES

README = (FIXTURES.parent / "README.md").read_text(encoding="utf-8")


def _usage(command: str) -> str:
    """The README's usage line of ``biconic COMMAND`` (a backticked span, possibly over several lines): the
    command, then its argument (``PATH``) or its first ``[--option]``."""
    found = re.findall(rf"`(biconic {command} (?:[A-Z]+ |(?=\[))[^`]*)`", README)
    assert found, f"the README has no usage line for biconic {command}"
    return max(found, key=len)


def _options(command: str) -> set[str]:
    cmd = cli.commands[command]
    return {opt for p in cmd.params if isinstance(p, click.Option) for opt in p.opts if opt.startswith("--")}


@pytest.mark.parametrize("command", ["load", "run", "loads", "quarantine"])
def test_readme_usage_lists_exactly_the_commands_options(command: str) -> None:
    shown = set(re.findall(r"--[a-z][a-z-]*", _usage(command)))
    assert shown == _options(command), (f"README only: {sorted(shown - _options(command))}; "
                                        f"--help only: {sorted(_options(command) - shown)}")


@pytest.mark.parametrize("command", ["load", "run", "loads", "quarantine"])
def test_readme_choices_match_the_help(command: str) -> None:
    usage = _usage(command)
    for param in cli.commands[command].params:
        if isinstance(param, click.Option) and isinstance(param.type, click.Choice):
            flag = max(param.opts, key=len)
            assert f"{flag} {'|'.join(map(str, param.type.choices))}" in usage, (flag, usage)
