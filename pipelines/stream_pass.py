"""The streaming curation pass: read units (input files) → fused row ops → write, on Ray Data.

Per-unit resume works like this. Every output file a writer task produces holds rows of exactly one
unit and is named ``part-u<unit>-<random>.parquet``. When a reader task has emitted a unit's last
row it writes ``_progress/<stage>/read-u<unit>.json`` with the unit's row count. The driver consumes
the writers' small summaries (never the data) and, once the rows written for a unit equal the rows
read, commits the unit with ``_progress/<stage>/u<unit>.json``. A rerun skips committed units and
deletes every ``part-u<unit>-*`` of the others before reading them again, so a killed pass neither
loses nor duplicates a document.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.ingest.base import BATCH_BYTES, BATCH_ROWS, get_reader
from curation.ingest.listing import filesystem_for
from curation.operator import (REASON, REASON_DETAIL, RECORD, REJECTED_BY, TEXT, UNIT)
from pipelines.planner import INGEST_LABEL
from pipelines.row_ops import apply_row_ops, cached_ops
from pipelines.rundir import RunDir, write_parquet_atomic

SUMMARY_SCHEMA = pa.schema([("unit", pa.int64()), ("target", pa.string()), ("rows", pa.int64()),
                            ("chars", pa.int64())])


@dataclass(frozen=True)
class Unit:
    """One input file of a stream stage: a spec input (read by its format's reader, ids assigned)
    or a Parquet file written by the stage before (ids kept)."""

    unit: int
    location: str
    reader: dict[str, Any] | None  # resolved input config; None → Parquet from the previous stage
    file_index: int


@dataclass
class PassContext:
    """Everything a worker needs, as plain picklable values."""

    run_location: str
    stage_id: str
    output_dir: str
    compression: str
    attempt: str = "a0"  # distinguishes this run's files from those of a killed earlier attempt
    # Kept rows go to <output_dir>/<name>=<value>/ folders (Hive style) when set: `langid`'s
    # split_by_language writes data/lang=en/, data/lang=de/ …
    partition_column: str | None = None
    # Cut read blocks to about this many bytes (see Resources.block_bytes); None: as the reader yields.
    block_bytes: int | None = None


def progress_dir(stage_id: str) -> str:
    return f"_progress/{stage_id}"


def unit_prefix(unit: int) -> str:
    return f"part-u{unit:06d}-"


def parse_part_name(name: str) -> tuple[int, str] | None:
    """``part-u000012-a1b2c3-….parquet`` → (12, "a1b2c3")."""
    parts = name.split("-")
    if len(parts) < 4 or parts[0] != "part" or not parts[1].startswith("u"):
        return None
    return int(parts[1][1:]), parts[2]


# ------------------------------------------------------------------------------------------- readers


# Input files smaller than this share a read task (each still its own unit, committed on its own):
# a task per file of a few KB cost ~60 ms of scheduling, per-block op overhead and bookkeeping each,
# 22 s for the demo's 343 files of 1-50 KB. A file this big is seconds of work: alone, as before.
GROUP_BYTES = 1 << 20


def group_units(units: list[tuple[dict[str, Any], int]], num_cpus: float,
                group_bytes: int = GROUP_BYTES) -> list[list[dict[str, Any]]]:
    """Consecutive ``(unit item, bytes)`` in groups of about ``group_bytes`` of input (a bigger file
    alone), but at least four groups per CPU where there are that many units, to balance the cores."""
    if not units:
        return []
    total = sum(size for _, size in units)
    wanted = min(len(units), max(4 * max(1, math.ceil(num_cpus)), math.ceil(total / group_bytes)))
    budget = max(1.0, total / wanted)  # empty files: one window
    # The input cut into `wanted` equal windows of bytes; a file joins the window its middle falls
    # in, so a big file ends its group and the small files after it start the next.
    groups: list[list[dict[str, Any]]] = []
    window_end = offset = 0.0
    for item, item_bytes in units:
        middle = offset + item_bytes / 2
        if not groups or middle > window_end:
            groups.append([])
            window_end = (math.floor(middle / budget) + 1) * budget
        groups[-1].append(item)
        offset += item_bytes
    return groups


def read_units(batch: pa.Table, ctx: PassContext) -> Iterator[pa.Table]:
    """Read each group of units (a JSON list per row) into blocks: one file's batches cut to
    ``ctx.block_bytes``, consecutive small tables of the same columns (files of one input) joined up
    to the reader's block size, so a task does not run every op on a block per small file."""
    run = RunDir.open(ctx.run_location)
    budget = ctx.block_bytes or BATCH_BYTES
    held: list[pa.Table] = []
    held_rows = held_bytes = 0
    for row in batch.to_pylist():
        for item in json.loads(row["units"]):
            unit = Unit(**item)
            rows = 0
            for read in _read_one(unit):
                for table in split_by_bytes(read, ctx.block_bytes):
                    table_bytes = int(row_bytes(table).sum())
                    if held and (table.schema != held[0].schema or held_rows + table.num_rows > BATCH_ROWS
                                 or held_bytes + table_bytes > budget):
                        yield pa.concat_tables(held) if len(held) > 1 else held[0]
                        held, held_rows, held_bytes = [], 0, 0
                    held.append(table)
                    held_rows += table.num_rows
                    held_bytes += table_bytes
                    rows += table.num_rows
            # The read marker goes out before any block holding the unit's last rows (they are still
            # held: a block is yielded only once the next table is read, or at the end), so the
            # summary of that block's write finds it and the driver commits the unit at once. (The
            # ops and the write run in this same task: a marker written after the last yield would
            # come after the last summary, and the unit would wait for the end of the pass.)
            run.write_json(f"{progress_dir(ctx.stage_id)}/read-u{unit.unit:06d}.json", {"rows": rows})
    if held:
        yield pa.concat_tables(held) if len(held) > 1 else held[0]


def row_bytes(table: pa.Table) -> np.ndarray:
    """Bytes of each row's string and binary values (what heavy ops chew on; numbers are noise)."""
    sizes = np.zeros(table.num_rows, np.int64)
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) \
                or pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            sizes += pc.fill_null(pc.binary_length(column), 0).to_numpy()
    return sizes


def split_by_bytes(table: pa.Table, budget: int | None) -> Iterator[pa.Table]:
    """Consecutive slices of ``table`` holding about ``budget`` bytes each (a row larger than the
    budget goes alone); the table itself when it is within budget or there is none."""
    if budget is None or table.num_rows <= 1:
        yield table
        return
    ends = np.cumsum(row_bytes(table))
    if ends[-1] <= budget:
        yield table
        return
    start = 0
    while start < table.num_rows:
        before = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + budget, side="right")))
        yield table.slice(start, stop - start)
        start = stop


def _read_one(unit: Unit) -> Iterator[pa.Table]:
    fs, path = filesystem_for(unit.location)
    unit_col = lambda n: pa.array([unit.unit] * n, pa.int64())  # noqa: E731
    if unit.reader is not None:
        cls = get_reader(unit.reader["format"])
        reader = cls(cls.Config.model_validate(unit.reader))
        for table in reader.read_file(path, unit.file_index, fs):
            # Keep the location as the user wrote it (a URI stays a URI) in `source`.
            if "://" in unit.location:
                table = table.set_column(table.schema.get_field_index("source"), "source",
                                         pa.array([unit.location] * table.num_rows, pa.string()))
            quarantined = pc.if_else(pc.is_null(table.column(REASON)), pa.scalar(None, pa.string()),
                                     pa.scalar(INGEST_LABEL, pa.string()))
            yield table.append_column(REJECTED_BY, quarantined).append_column(UNIT, unit_col(table.num_rows))
        return
    parquet = pq.ParquetFile(fs.open_input_file(path))
    for record_batch in parquet.iter_batches(batch_size=4096):
        table = pa.Table.from_batches([record_batch])
        n = table.num_rows
        nulls = pa.nulls(n, pa.string())
        for name in (REASON, REASON_DETAIL, REJECTED_BY):
            table = table.append_column(name, nulls)
        yield table.append_column(UNIT, unit_col(n))


# ---------------------------------------------------------------------------------------------- ops


def ops_key(stage_steps: list[dict[str, Any]]) -> str:
    """The worker-process cache key of a stage's ops: their labels and configs."""
    return "|".join(f"{s['label']}={s['config']}" for s in stage_steps)


def step_specs(stage_steps: list[Any]) -> list[dict[str, Any]]:
    return [{"op": step.op, "label": step.label, "config": step.config.model_dump(mode="json")} for step in stage_steps]


def process_and_write(table: pa.Table, ctx: PassContext, steps: list[dict[str, Any]]) -> pa.Table:
    """Every row op of the stage on one block, then its rows written: one task does the whole chain.

    Ops that load a model (langid, classifiers) are set up once per worker process and kept
    (:func:`pipelines.row_ops.cached_ops`; Ray reuses a worker process for the tasks after it), so
    they need no actor pool of their own. With actor pools, each pool held a slice of the CPUs for
    the whole pass and a 2-CPU node had none left for the tasks between and after them: at 40 input
    files the filters and writers waited for every read to finish, nothing was committed for minutes
    and blocks piled up in the object store. One task per block keeps every core on the same chain
    and commits input files as they finish."""
    return write_outputs(apply_row_ops(table, cached_ops(ops_key(steps), steps)), ctx)


# ------------------------------------------------------------------------------------------- writer


def _partitions(part: pa.Table, target: str, column: str | None) -> list[tuple[str, pa.Table]]:
    """(folder, rows) pairs: one pair, or one per value of ``column`` (null → ``<name>=unknown``)."""
    if not column or column not in part.column_names:
        return [(target, part)]
    key = column.rsplit(".", 1)[-1]
    values = part.column(column)
    out = []
    for value in pc.unique(values).to_pylist():
        mask = pc.is_null(values) if value is None else pc.equal(values, value)
        safe = "unknown" if value is None else "".join(c if c.isalnum() or c in "-_" else "_" for c in str(value))
        out.append((f"{target}/{key}={safe}", part.filter(mask)))
    return out


def write_outputs(table: pa.Table, ctx: PassContext) -> pa.Table:
    """Write one batch: kept rows to the stage's output folder, dropped rows to ``rejected/<step>/``,
    one file per (unit, destination). Returns a small summary table for the driver."""
    run = RunDir.open(ctx.run_location)
    summary: dict[str, list] = defaultdict(list)
    units = table.column(UNIT)
    for unit in pc.unique(units).to_pylist():
        unit_rows = table.filter(pc.equal(units, unit))
        labels = unit_rows.column(REJECTED_BY)
        for label in pc.unique(labels).to_pylist():
            mask = pc.is_null(labels) if label is None else pc.equal(labels, label)
            part = unit_rows.filter(mask)
            target = ctx.output_dir if label is None else f"rejected/{label}"
            drop = [UNIT, REJECTED_BY] + ([REASON, REASON_DETAIL, RECORD] if label is None else [])
            part = part.drop_columns([c for c in drop if c in part.column_names])
            for folder, piece in _partitions(part, target, ctx.partition_column if label is None else None):
                name = f"{unit_prefix(unit)}{ctx.attempt}-{uuid.uuid4().hex[:12]}.parquet"
                write_parquet_atomic(run.fs, run.path(folder, name), piece, ctx.compression)
                chars = pc.sum(pc.utf8_length(piece.column(TEXT))).as_py() if TEXT in piece.column_names else 0
                for k, v in (("unit", unit), ("target", target), ("rows", piece.num_rows), ("chars", chars or 0)):
                    summary[k].append(v)
    return pa.table(summary, schema=SUMMARY_SCHEMA)
