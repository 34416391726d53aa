"""The command's messages off a terminal (a file, a pipe, CI, a cluster job's log): one logical line
per line whatever its length, so grep finds them; on a terminal, wrapped to the terminal's width."""

from __future__ import annotations

import io

from rich.table import Table
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.console import CommandConsole

BAD_SPEC = """\
kind: curate
name: typos
input:
  - format: text
    paths: ["*.txt"]
steps:
  - normalise: {}
  - length_filter: {min_words: 50, maxchars: 100000}
"""


def _long_dir(tmp_path):
    """A directory whose path alone is longer than rich's fallback width of 80 columns."""
    deep = tmp_path.joinpath(*(["a-directory-name-that-makes-the-path-long"] * 4))
    deep.mkdir(parents=True)
    assert len(str(deep)) > 160
    return deep


def _lines(result) -> list[str]:
    return result.output.splitlines()


def test_spec_errors_are_one_line_each_whatever_the_path_length(tmp_path):
    spec = _long_dir(tmp_path) / "spec.yaml"
    spec.write_text(BAD_SPEC)
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    lines = _lines(result)
    typo = [line for line in lines if "steps[0].normalise" in line]
    assert len(typo) == 1 and typo[0].startswith(f"  {spec}:7:5 steps[0].normalise: unknown op 'normalise'. "
                                                  "Did you mean 'normalize'? Registered ops: "), lines
    assert typo[0].rstrip().endswith("train_tokenizer"), "the list of ops stays on the message's line"
    key = [line for line in lines if "maxchars" in line]
    assert key == [f"  {spec}:8:36 steps[1].length_filter.maxchars: unknown key 'maxchars' (did you mean "
                   "'max_chars'?); allowed: min_chars, max_chars, min_words, max_words"], lines


def test_not_a_run_directory_on_one_line(tmp_path):
    missing = _long_dir(tmp_path) / "nothing-here [old]"  # brackets are text, not rich markup
    for command in ("status", "report"):
        result = CliRunner().invoke(app, [command, str(missing)])
        assert result.exit_code == 2, result.output
        assert f"{missing} is not a run directory (no manifest.json)" in _lines(result), result.output


def test_tables_keep_every_cell_whole_off_a_terminal():
    buffer = io.StringIO()
    console = CommandConsole(file=buffer)
    assert not console.is_terminal
    path = "/" + "/".join(["segment"] * 40)
    table = Table("stage", "path")
    table.add_row("corpus", path)
    console.print(table)
    row = [line for line in buffer.getvalue().splitlines() if "corpus" in line]
    assert len(row) == 1 and path in row[0]


def test_on_a_terminal_text_wraps_to_its_width():
    buffer = io.StringIO()
    console = CommandConsole(file=buffer, force_terminal=True, width=40, color_system=None)
    message = " ".join(["word"] * 30)
    console.print(message)
    lines = buffer.getvalue().splitlines()
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
    assert " ".join(lines).split() == message.split()
