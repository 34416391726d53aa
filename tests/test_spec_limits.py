"""Hostile or broken specs are refused at once, with the position and the limit, before they can cost
time or memory: an alias bomb, very deep nesting (flow and block style), a file of megabytes, and the
same through `--set`. No Ray. Each refusal is timed in-process: it takes milliseconds, so a bound of
one second holds on a loaded machine; before the limits the alias bomb took over a minute and 4.7 GB."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.yaml_source import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES

HEAD = "kind: curate\nname: limits\n"
VALID = HEAD + "input:\n  - {format: text, paths: ['*.txt']}\n"
DEEP = 10_000


def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """The "billion laughs": each anchor a list of `fan` aliases of the one before (9^10 values, ~600 bytes)."""
    lines = ["lol0: &lol0 [" + ", ".join(['"lol"'] * fan) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * fan) + "]")
    return HEAD + "\n".join(lines) + "\n"


def validate(*args: str):
    """`gristmill validate` in-process: (result, seconds)."""
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["validate", *args])
    return result, time.perf_counter() - started


def refused(result) -> str:
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("text, where, limit", [
    # line 8 is lol5, whose first alias (column 14) takes the expanded count past 100,000: 74,743 values
    # before it, and lol4 holds 66,430
    pytest.param(alias_bomb(), ":8:14:", f"more than {MAX_NODES:,} values once aliases are expanded", id="alias-bomb"),
    pytest.param(HEAD + "input: " + "[" * DEEP + "]" * DEEP + "\n", f":3:{8 + MAX_DEPTH}:",
                 f"nesting deeper than {MAX_DEPTH} levels", id="flow-sequences"),
    pytest.param(HEAD + "input: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", ":3:", "nesting deeper than",
                 id="flow-mappings"),
    pytest.param(HEAD + "input:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(1_000)) + "v\n",
                 f":{3 + MAX_DEPTH - 1}:", "nesting deeper than", id="block-mappings"),
    pytest.param(HEAD + "input:\n" + "- " * DEEP + "x\n", ":4:", "nesting deeper than", id="block-sequences"),
    pytest.param(HEAD + "input: &loop [1, *loop]\n", ":3:18:", "alias *loop is used inside the value it names",
                 id="recursive-alias"),
])
def test_hostile_spec_is_refused_fast_with_its_position(tmp_path, text, where, limit):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    result, seconds = validate(str(spec))
    message = refused(result)
    assert f"{spec}{where}" in message and f"refused: {limit}" in message, message
    assert seconds < 1.0, f"refused after {seconds:.2f}s"


def test_multi_megabyte_spec_is_refused_without_being_parsed(tmp_path):
    spec = tmp_path / "huge.yaml"
    line = "  - " + "x" * 75 + "\n"  # 80 bytes
    spec.write_text(VALID + "description: >\n" + line * (5 * MAX_SPEC_BYTES // len(line)))
    assert spec.stat().st_size > 5 * MAX_SPEC_BYTES - 100
    result, seconds = validate(str(spec))
    message = refused(result)
    first_line_past = (MAX_SPEC_BYTES - len(VALID) - len("description: >\n")) // len(line) + 6
    assert f"{spec}:{first_line_past}:" in message, message
    assert "refused: larger than 1 MiB (the limit for a spec)" in message
    assert seconds < 1.0, f"refused after {seconds:.2f}s"


def test_alias_bomb_is_refused_before_anything_is_expanded(tmp_path):
    """Memory: the Python allocations of the whole refusal stay small (expanding it would take GBs)."""
    spec = tmp_path / "bomb.yaml"
    spec.write_text(alias_bomb())
    validate(str(spec))  # imports and first-use caches out of the measurement
    tracemalloc.start()
    try:
        result, _ = validate(str(spec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than 100,000 values" in refused(result)
    assert peak < 20 * 2**20, f"peak Python allocations {peak / 2**20:.1f} MiB"


def test_set_values_have_the_same_limits(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(VALID)
    bomb = "[" + ", ".join(f"&b{i} [" + ", ".join([f"*b{i - 1}" if i else "lol"] * 9) + "]" for i in range(10)) + "]"
    deep = "[" * DEEP + "]" * DEEP
    for value, limit in ((bomb, "more than 100,000 values"), (deep, "nesting deeper than 64 levels")):
        result, seconds = validate(str(spec), "--set", f"description={value}")
        message = refused(result)
        assert f"--set description: refused: {limit}" in message and "of the value" in message, message
        assert seconds < 1.0


def test_env_values_read_as_yaml_have_the_same_limits(tmp_path, monkeypatch):
    spec = tmp_path / "spec.yaml"
    spec.write_text(VALID + "description: ${env:GRISTMILL_TEST_DEEP}\n")
    monkeypatch.setenv("GRISTMILL_TEST_DEEP", "[" * DEEP + "]" * DEEP)
    result, seconds = validate(str(spec))
    message = refused(result)
    assert f"{spec}:5:14 description: the value of ${{env:GRISTMILL_TEST_DEEP}} is refused: nesting deeper" in message
    assert seconds < 1.0


def test_ordinary_aliases_and_nesting_still_work(tmp_path):
    spec = tmp_path / "reuse.yaml"
    spec.write_text(HEAD + """\
input:
  - &source {format: text, paths: ["a/*.txt"]}
  - *source
steps:
  - length_filter: &lengths {min_words: 5, max_chars: 1000}
  - normalize
  - length_filter: *lengths
""")
    result, _ = validate(str(spec))
    assert result.exit_code == 0, result.output
    assert "2 input(s), length_filter, normalize, length_filter_2" in result.output
    nested = tmp_path / "nested.yaml"
    nested.write_text(VALID + "description: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n")
    result, _ = validate(str(nested))  # the deepest nesting allowed gets to the model, which wants a string
    assert "description: Input should be a valid string" in refused(result)
