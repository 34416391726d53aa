"""docs/spec-reference.md is generated from the spec models; it must match what the code accepts."""

from pipelines.spec_reference import REFERENCE_FILE, render


def test_spec_reference_is_current():
    expected = render()
    current = REFERENCE_FILE.read_text(encoding="utf-8") if REFERENCE_FILE.exists() else ""
    assert current == expected, ("docs/spec-reference.md is out of date: run "
                                 "`python -m pipelines.spec_reference --write` and commit the result")


def test_reference_lists_every_kind_format_and_op():
    from curation.ingest.base import registered_readers
    from curation.operator import registered_ops
    from pipelines.specs import KINDS

    text = render()
    for kind in KINDS:
        assert f"### `kind: {kind}`" in text
    for fmt in registered_readers():
        assert f"### `format: {fmt}`" in text
    for op in registered_ops():
        assert f"### `{op}`" in text
    # Field descriptions come from the models themselves.
    assert "fewest words (punctuation-only words not counted)" in text


def test_every_op_states_what_it_holds():
    from curation.operator import registered_ops

    silent = [name for name, op in registered_ops().items() if not op.memory.strip()]
    assert not silent, f"ops without a `memory` statement (per document and per block): {silent}"
