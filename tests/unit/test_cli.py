"""The CLI's words: help for every command, --version, a file that is not a Poll, columns
that hold long names."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from privpoll import __version__
from privpoll.cli import main
from privpoll.text_table import polls_table, results_table


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(commands(command, f"{prefix}{name} "))
    return found


def test_every_command_has_help_and_there_is_a_version() -> None:
    for name, command in commands(main):
        assert command.help, f"privpoll {name} has no help text"
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"privpoll {__version__}"
    vote = CliRunner().invoke(main, ["vote", "--help"])
    assert "INVITATION is the whole link" in vote.output


def test_a_file_that_is_not_a_poll_says_so(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yaml"
    path.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n")
    result = CliRunner().invoke(main, ["poll", "create", "-f", str(path)])
    assert result.exit_code != 0
    assert "this is not a Poll (kind: Deployment)" in result.output


def test_columns_stretch_to_the_longest_name() -> None:
    long = "a-very-long-poll-name-that-goes-on-and-on"
    table = polls_table(
        [
            {"name": long, "phase": "Open", "turnout": {"voters": 3, "eligible": 10}, "spec": {}},
            {"name": "x", "phase": "Closed", "turnout": {"voters": 1, "eligible": 2}, "spec": {}},
        ]
    ).splitlines()
    starts = {line.index(phase) for line, phase in zip(table[1:], ["Open", "Closed"], strict=True)}
    assert len(starts) == 1, table
    results = results_table(
        [{"choice": "a choice with a long name", "estimate": 1.0, "ci95": [0.0, 2.0], "stored": 3}]
    )
    assert "a choice with a long name  " in results
