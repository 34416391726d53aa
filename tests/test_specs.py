"""Spec loading and validation: every error names file:line:column, the field path, and what was
expected. No Ray here."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipelines.errors import SpecError
from pipelines.specs import json_schemas, load_spec

GOOD = """\
kind: curate
name: tiny
input:
  - format: jsonl
    paths: ["docs/*.jsonl"]
steps:
  - normalize: {}
  - length_filter: {min_words: 3}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def errors_of(path: str, overrides=None, env=None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides, env)
    return [str(i) for i in info.value.issues]


def test_valid_spec_resolves_defaults_and_paths(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.kind == "curate" and spec.name == "tiny"
    assert [s.label for s in spec.steps] == ["normalize", "length_filter"]
    resolved = spec.resolved()
    assert resolved["input"][0]["paths"] == [str(tmp_path / "docs" / "*.jsonl")]
    assert resolved["input"][0]["text_field"] == "text"  # default filled in
    assert resolved["steps"][1]["length_filter"]["min_words"] == 3


def test_repeated_op_gets_distinct_labels(tmp_path):
    spec = load_spec(write(tmp_path, GOOD + "  - length_filter: {max_chars: 10}\n"))
    assert [s.label for s in spec.steps] == ["normalize", "length_filter", "length_filter_2"]


def test_value_out_of_range_names_line_and_path(tmp_path):
    path = write(tmp_path, GOOD.replace("{min_words: 3}", "{min_words: -3}"))
    assert errors_of(path) == [
        f"{path}:8:32 steps[1].length_filter.min_words: Input should be greater than or equal to 0, got -3"]


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = write(tmp_path, GOOD + "colour: blue\n")
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:9:1 colour: unknown key 'colour'; allowed: kind, name, description, input, steps")


def test_unknown_key_inside_op_config_suggests_closest(tmp_path):
    path = write(tmp_path, GOOD.replace("{min_words: 3}", "{min_word: 3}"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:8:21 steps[1].length_filter.min_word: unknown key 'min_word' "
                          "(did you mean 'min_words'?); allowed: ")
    assert "max_chars" in msg


def test_misspelled_op_lists_registered_ops_and_closest(tmp_path):
    path = write(tmp_path, GOOD.replace("- length_filter:", "- lenght_filter:"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:8:5 steps[1].lenght_filter: unknown op 'lenght_filter'. "
                          "Did you mean 'length_filter'? Registered ops: ")
    assert "normalize" in msg


def test_unknown_input_format(tmp_path):
    path = write(tmp_path, GOOD.replace("format: jsonl", "format: jsnol"))
    assert errors_of(path) == [f"{path}:4:13 input[0].format: unknown input format 'jsnol' (did you mean 'jsonl'?); "
                               "expected one of: arc, crawl, jsonl, parquet, text, warc, wet"]


def test_missing_required_field_and_several_errors_at_once(tmp_path):
    path = write(tmp_path, GOOD.replace("name: tiny\n", "").replace("{min_words: 3}", "{min_words: many}"))
    msgs = errors_of(path)
    assert f"{path}:1:1 name: required field is missing" in msgs
    assert any(m.startswith(f"{path}:7:32 steps[1].length_filter.min_words: Input should be a valid integer") for m in msgs)


def test_wrong_type_for_list(tmp_path):
    path = write(tmp_path, GOOD.replace('paths: ["docs/*.jsonl"]', "paths: 7"))
    assert errors_of(path) == [f"{path}:5:12 input[0].paths: Input should be a valid list, got 7"]


def test_yaml_syntax_error_has_position(tmp_path):
    path = write(tmp_path, "kind: curate\nname: [unclosed\n")
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:3:1: invalid YAML:")


def test_duplicate_keys_are_errors(tmp_path):
    path = write(tmp_path, GOOD + "name: again\n")
    assert f"{path}:9:1 name: duplicate key" in errors_of(path)


def test_unknown_kind_suggests(tmp_path):
    path = write(tmp_path, GOOD.replace("kind: curate", "kind: curat"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:1:7 kind: unknown kind 'curat' (did you mean 'curate'?)")


def test_yaml_tags_cannot_construct_objects(tmp_path):
    path = write(tmp_path, GOOD + "description: !!python/object/apply:os.system ['echo hacked']\n")
    (msg,) = errors_of(path)
    assert "unsupported YAML" in msg and "python/object/apply" in msg


def test_env_substitution_typed_and_defaults(tmp_path):
    text = GOOD.replace("{min_words: 3}", "{min_words: '${env:MIN_WORDS}', max_chars: '${env:MAX:-500}'}")
    spec = load_spec(write(tmp_path, text), env={"MIN_WORDS": "12"})
    config = spec.steps[1].config
    assert (config.min_words, config.max_chars) == (12, 500)


def test_missing_env_var_is_an_error(tmp_path):
    path = write(tmp_path, GOOD.replace("name: tiny", "name: ${env:RUN_NAME}"))
    assert errors_of(path, env={}) == [f"{path}:2:7 name: environment variable RUN_NAME is not set "
                                       "(write ${env:RUN_NAME:-default} to give a default)"]


def test_set_overrides_are_typed_by_the_model(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), ["steps[1].length_filter.min_words=25", "ray.num_cpus=2",
                                             "steps.0.normalize.unicode_form=NFKC"])
    assert spec.steps[1].config.min_words == 25
    assert spec.model.ray.num_cpus == 2
    assert spec.steps[0].config.unicode_form == "NFKC"


def test_bad_set_value_points_at_the_command_line(tmp_path):
    path = write(tmp_path, GOOD)
    assert errors_of(path, ["steps[1].length_filter.min_words=-1"]) == [
        "--set steps[1].length_filter.min_words: Input should be greater than or equal to 0, got -1"]
    assert errors_of(path, ["nonsense"]) == [
        "--set nonsense: expected KEY=VALUE, e.g. steps[1].length_filter.min_chars=100"]


def test_missing_file(tmp_path):
    assert errors_of(str(tmp_path / "nope.yaml")) == [f"{tmp_path / 'nope.yaml'}: cannot read the spec: No such file or directory"]


def test_step_must_be_one_key_mapping(tmp_path):
    path = write(tmp_path, GOOD + "  - {normalize: {}, length_filter: {}}\n")
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:9:5 steps[2]: each step is a one-key mapping")


def test_json_schema_covers_ops_and_formats():
    schemas = json_schemas()
    curate = schemas["curate"]
    step_names = [next(iter(s["properties"])) for s in curate["properties"]["steps"]["items"]["oneOf"]]
    assert {"normalize", "length_filter"} <= set(step_names)
    formats = [s["properties"]["format"] for s in curate["properties"]["input"]["items"]["oneOf"]]
    assert len(formats) >= 3
    json.dumps(schemas)  # serialisable


def test_shipped_specs_validate():
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.yaml")):
        load_spec(str(path))


def test_tab_indentation_says_tab(tmp_path):
    path = write(tmp_path, GOOD.replace("  - format: jsonl", "\t- format: jsonl"))
    (msg,) = errors_of(path)
    assert msg.startswith(f"{path}:4:1: invalid YAML:") and "a tab: YAML indents with spaces only" in msg


def test_bare_op_name_is_shorthand_for_empty_config(tmp_path):
    for steps in ("steps:\n  - normalize\n  - length_filter: {min_words: 3}\n", "steps: [normalize]\n"):
        text = GOOD[: GOOD.index("steps:")] + steps
        spec = load_spec(write(tmp_path, text))
        assert spec.steps[0].op == "normalize" and spec.steps[0].label == "normalize"
    path = write(tmp_path, GOOD[: GOOD.index("steps:")] + "steps: [3]\n")
    assert errors_of(path) == [f"{path}:6:9 steps[0]: each step is a one-key mapping `op_name: {{config}}`, got 3"]
