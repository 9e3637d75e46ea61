"""Renamed options: the new name is shown, the former one still works, hidden (README, "What changed")."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from naslung.cli.app import app

runner = CliRunner()
RENAMED = [  # (command, new name, former name)
    (["train"], "--batch-size", "--batch"),
    (["cv"], "--batch-size", "--batch"),
    (["predict"], "--batch-size", "--batch"),
    (["search"], "--max-trials", "--budget-trials"),
    (["search"], "--max-minutes", "--budget-minutes"),
    (["search"], "--max-latency-ms", "--latency-budget-ms"),
    (["demo"], "--max-latency-ms", "--latency-budget-ms"),
]


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize(("command", "new", "old"), RENAMED)
def test_the_new_name_is_shown_and_the_former_hidden(command: list[str], new: str, old: str):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    shown = _options(res.output)
    assert new in shown and old not in shown


@pytest.mark.parametrize(("command", "new", "old"), [
    (["train", "--data", "missing.h5"], "--batch-size", "--batch"),
    (["cv", "--data", "missing.h5"], "--batch-size", "--batch"),
    (["search", "--data", "missing.h5"], "--max-trials", "--budget-trials"),
    (["search", "--data", "missing.h5"], "--max-minutes", "--budget-minutes"),
    (["search", "--data", "missing.h5"], "--max-latency-ms", "--latency-budget-ms"),
])
def test_both_names_with_different_values_are_refused(command, new, old, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*command, new, "8", old, "16"])
    text = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 2 and f"{old} is the former name of {new}" in text, res.output


def test_the_former_name_gives_the_same_value():
    from naslung.cli.common import from_alias

    assert from_alias(None, 16, "--batch-size", "--batch") == 16
    assert from_alias(16, None, "--batch-size", "--batch") == 16
    assert from_alias(16, 16, "--batch-size", "--batch") == 16
    assert from_alias(64, 8, "--batch-size", "--batch", default=64) == 8
