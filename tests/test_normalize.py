"""The `normalize` op: mojibake repair, control characters, Unicode forms, whitespace, the contract."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

import curation.normalize as normalize
from curation.operator import get_op


def run(texts: list[str | None], **config):
    op = get_op("normalize")(normalize.NormalizeConfig(**config))
    op.setup()
    batch = pa.table({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
    decision = op.process(batch)
    assert decision.table.num_rows == batch.num_rows
    assert decision.table.column("doc_id").to_pylist() == list(range(len(texts)))
    return decision


def texts_of(decision) -> list[str | None]:
    return decision.table.column("text").to_pylist()


def test_mojibake_is_repaired_and_marked_changed():
    decision = run(["schÃ¶n", "donâ€™t", "plain ascii", "already schön"])
    assert texts_of(decision) == ["schön", "don’t", "plain ascii", "already schön"]
    assert decision.table.column("normalize.changed").to_pylist() == [True, True, False, False]
    assert decision.keep is None and decision.reason is None


def test_ftfy_does_not_restyle_correct_text():
    text = "“Curly” quotes, the ﬁ ligature, ｆｕｌｌ width, &lt;tag&gt; and an ellipsis…"
    assert texts_of(run([text])) == [text]
    assert texts_of(run([text], unicode_form="NFKC")) == [
        "“Curly” quotes, the fi ligature, full width, &lt;tag&gt; and an ellipsis..."]
    assert texts_of(run(["schÃ¶n"], fix_mojibake=False)) == ["schÃ¶n"]


def test_ascii_documents_skip_ftfy(monkeypatch):
    seen = []
    real = normalize.ftfy.fix_text
    monkeypatch.setattr(normalize.ftfy, "fix_text", lambda text, config: seen.append(text) or real(text, config))
    run(["ascii only", "naïve", "more ascii", "schÃ¶n"])
    assert seen == ["naïve", "schÃ¶n"]


def test_unicode_forms():
    decomposed = "cafe\u0301"
    assert texts_of(run([decomposed])) == ["café"]
    assert texts_of(run([decomposed], unicode_form="none")) == [decomposed]


def test_control_and_invisible_characters():
    source = "a\x00b\x07c\x7fd\u200be\u200cf\u200dg\ufeffh\ti\nj"
    # ZWNJ / ZWJ stay: they change how Persian, Indic scripts and emoji sequences render.
    assert texts_of(run([source], collapse_whitespace=False)) == ["abcde\u200cf\u200dgh\ti\nj"]
    # Line breaks in disguise become newlines instead of gluing words.
    assert texts_of(run(["one\r\ntwo\rthree\x0cfour\x0bfive"], collapse_whitespace=False)) == [
        "one\ntwo\nthree\nfour\nfive"]
    # Without ftfy a C1 control is simply removed; with it, ftfy reads it as Windows-1252 first.
    assert texts_of(run(["wait\x85 what"], fix_mojibake=False)) == ["wait what"]
    assert texts_of(run(["wait\x85 what"])) == ["wait… what"]
    kept = "a\x00b\u200bc"
    assert texts_of(run([kept], remove_control_chars=False, fix_mojibake=False)) == [kept]


def test_whitespace_collapsing():
    source = "  Title \t here  \n\n\n\n\nBody\u00a0\u00a0text   \n \nend\u3000 \n\n"
    assert texts_of(run([source])) == ["Title here\n\nBody text\n\nend"]
    assert texts_of(run([source], collapse_whitespace=False, unicode_form="none")) == [source]


def test_documents_left_empty_are_dropped_and_null_does_not_crash():
    decision = run(["\u200b\u200b", "fine", None, " \x00 ", "\u200b", "x"], collapse_whitespace=False)
    assert decision.keep.to_pylist() == [False, True, False, False, False, True]
    assert decision.reason.to_pylist() == [
        "empty_after_normalize", None, "empty_after_normalize", "empty_after_normalize", "empty_after_normalize", None]
    assert texts_of(decision)[2] is None  # null stays null
    assert decision.table.column("normalize.changed").to_pylist()[2] is False


def test_zero_rows_and_repeated_application():
    decision = run([])
    assert decision.table.num_rows == 0
    assert decision.table.schema.field("normalize.changed").type == pa.bool_()
    assert decision.table.schema.field("text").type == pa.string()

    op = get_op("normalize")(normalize.NormalizeConfig())
    once = op.process(pa.table({"text": ["schÃ¶n  x"]})).table
    twice = op.process(once).table
    assert twice.column_names == ["text", "normalize.changed"]
    assert twice.column("normalize.changed").to_pylist() == [False]  # idempotent


def test_chunked_input_keeps_order():
    table = pa.Table.from_batches([pa.record_batch({"text": ["schÃ¶n", " a "]}),
                                   pa.record_batch({"text": ["b  c", "naïve"]})])
    decision = get_op("normalize")(normalize.NormalizeConfig()).process(table)
    assert texts_of(decision) == ["schön", "a", "b c", "naïve"]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        normalize.NormalizeConfig.model_validate({"unicode_form": "NFD"})
    with pytest.raises(ValidationError):
        normalize.NormalizeConfig.model_validate({"lowercase": True})
