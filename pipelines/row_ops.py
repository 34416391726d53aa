"""Applying a sequence of row-wise ops to one Arrow batch, as the runner's Ray Data UDF.

Each op sees only the rows still alive; rows it drops are tagged with its step label and reason and
travel on to the writer, which files them under ``rejected/<step>/``. Rejected rows keep every score
computed up to their rejection; columns of later steps are null for them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.operator import REASON, REASON_DETAIL, REJECTED_BY, RowOp, get_op, set_column

# Ops set up in this worker process, keyed by their spec; Ray reuses worker processes across tasks,
# so a task-based op compiles its patterns once per process rather than once per batch.
_SETUP_CACHE: dict[str, list[RowOp]] = {}


def build_ops(step_specs: list[dict[str, Any]]) -> list[RowOp]:
    """``[{"op": name, "label": label, "config": {...}}]`` → set-up op instances."""
    ops = []
    for spec in step_specs:
        cls = get_op(spec["op"])
        op = cls(cls.Config.model_validate(spec["config"]), step_label=spec["label"])
        op.setup()
        ops.append(op)  # type: ignore[arg-type]
    return ops


def cached_ops(key: str, step_specs: list[dict[str, Any]]) -> list[RowOp]:
    ops = _SETUP_CACHE.get(key)
    if ops is None:
        # One stage's ops per process: a model of the stage before (a multi-GB quality classifier)
        # is let go when the next stage's tasks reach this worker.
        _SETUP_CACHE.clear()
        ops = _SETUP_CACHE[key] = build_ops(step_specs)
    return ops


def apply_row_ops(table: pa.Table, ops: list[RowOp]) -> pa.Table:
    alive_mask = pc.is_null(table.column(REJECTED_BY))
    if pc.all(alive_mask).as_py() is not False:
        alive, parts = table, []
    else:
        alive, parts = table.filter(alive_mask), [table.filter(pc.invert(alive_mask))]
    for op in ops:
        alive, rejected = _apply_one(op, alive)
        if rejected is not None:
            parts.append(rejected)
    if not parts:
        return alive
    # A column an op removed (extract drops raw HTML) goes from every row of the batch, including
    # rows rejected earlier, so kept and rejected data share one schema.
    removed = [c for c in table.column_names if c not in alive.column_names]
    if removed:
        parts = [p.drop_columns([c for c in removed if c in p.column_names]) for p in parts]
    return pa.concat_tables([alive, *parts], promote_options="permissive")


def _apply_one(op: RowOp, batch: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    decision = op.process(batch)
    out = decision.table
    if out.num_rows != batch.num_rows:
        raise RuntimeError(f"op {op.step_label!r} returned {out.num_rows} rows for a batch of {batch.num_rows}")
    if decision.keep is None:
        return out, None
    keep = pc.fill_null(decision.keep, True)
    if pc.all(keep).as_py() is not False:
        return out, None
    drop = pc.invert(keep)
    rejected = out.filter(drop)
    n = rejected.num_rows
    reasons = decision.reason.filter(drop) if decision.reason is not None else None
    if reasons is None or reasons.null_count:
        fallback = pa.array([op.step_label] * n, pa.string())
        reasons = fallback if reasons is None else pc.coalesce(reasons, fallback)
    rejected = set_column(rejected, REJECTED_BY, pa.array([op.step_label] * n, pa.string()))
    rejected = set_column(rejected, REASON, reasons.cast(pa.string()))
    if decision.detail is not None:
        rejected = set_column(rejected, REASON_DETAIL, decision.detail.filter(drop).cast(pa.string()))
    return out.filter(keep), rejected
