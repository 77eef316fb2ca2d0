"""The README's commands table and the command line agree, option for option, so that the two cannot drift."""

import re
from pathlib import Path

import click
import pytest

from producers.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def commands() -> dict[str, click.Command]:
    """Every command a user runs, a group's by their two words (``model add``)."""
    found = {}
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def readme_rows() -> dict[str, str]:
    """Each command's rows of the README's commands table, joined: ``{"screen": "...", "model add": ...}``."""
    rows: dict[str, str] = {}
    for line in README.read_text().splitlines():
        if match := re.match(r"\| `waveshield ([a-z-]+(?: [a-z][a-z-]*)?)", line):
            name = match.group(1) if match.group(1) in commands() else match.group(1).split()[0]
            rows[name] = rows.get(name, "") + line
    return rows


def cli_options(command: click.Command) -> list[set[str]]:
    """The options a user can pass (hidden ones aside), each as its long spellings (both of a flag pair)."""
    return [{n for n in [*p.opts, *p.secondary_opts] if n.startswith("--")} for p in command.params
            if isinstance(p, click.Option) and not p.hidden]


def test_every_command_has_a_row_and_every_row_a_command():
    assert set(readme_rows()) == set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_commands_row_names_exactly_its_options(name):
    row = readme_rows()[name]
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", row))
    options = cli_options(commands()[name])
    missing = [sorted(spellings) for spellings in options if not spellings & named]  # one spelling of a pair will do
    assert missing == [], f"{name}: options missing from the README's row"
    assert named - set().union(*options) == set(), f"{name}: the README's row names options the command does not have"


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_commands_row_names_its_arguments_as_help_does(name):
    command = commands()[name]
    with click.Context(command, info_name=name) as ctx:
        usage = " ".join(p.make_metavar(ctx) for p in command.params if isinstance(p, click.Argument))
    row = readme_rows()[name].replace("\\|", "|")
    for metavar in usage.split():
        assert metavar.rstrip(".").strip("[]") in row, f"{name}: {metavar} is not in the README's row"
