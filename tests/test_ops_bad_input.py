"""Every registered row-wise op survives hostile text: empty, whitespace, punctuation only, a 5 MB
single line, mixed scripts, control characters, null — and keeps the Decision contract."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.operator import RowOp, registered_ops

HOSTILE = [
    "", "   \n\t ", "!!!???...,,,;;;", "a" * 5_000_000, ("word " * 1_000_000).strip(),
    "English, русский, 中文, العربية, हिन्दी and emoji 🎉🎉 in one line.", "\x00\x01\x02 nul and controls \x7f",
    None, "Normal sentence with a full stop. Another one here.",
]

# Ops that need a model path only a classifier run provides; covered in test_e2e_filters.
NEEDS_ARTIFACT = {"quality_classifier"}


def batch() -> pa.Table:
    n = len(HOSTILE)
    return pa.table({"doc_id": pa.array(range(n), pa.int64()), "text": pa.array(HOSTILE, pa.string()),
                     "source": pa.array(["t"] * n), "reason": pa.nulls(n, pa.string()),
                     "reason_detail": pa.nulls(n, pa.string()), "_rejected_by": pa.nulls(n, pa.string())})


@pytest.mark.parametrize("name", [n for n, cls in registered_ops().items()
                                  if issubclass(cls, RowOp) and n not in NEEDS_ARTIFACT])
def test_row_op_survives_hostile_text(name):
    cls = registered_ops()[name]
    op = cls(cls.Config())
    op.setup()
    try:
        for table in (batch(), batch().slice(0, 0)):
            decision = op.process(table)
            assert decision.table.num_rows == table.num_rows
            if decision.keep is not None:
                assert len(decision.keep) == table.num_rows
                assert decision.reason is not None and len(decision.reason) == table.num_rows
    finally:
        op.teardown()
