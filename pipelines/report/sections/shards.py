"""Token counts and shard statistics, from ``shards/manifest.json`` (format ``gristmill-shards/1``)
checked against the shard files themselves: rows from each file's Parquet metadata, documents per
row from the ``doc_starts`` column."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipelines.report.context import RunContext
from pipelines.report.render import figure, note, table
from pipelines.report.section import Section
from pipelines.report.svg import NEUTRAL, esc, fmt_num, histogram

KEY, TITLE = "shards", "Tokens and shards"
MAX_STARTS = 16  # documents-per-row histogram: 0 … 15, and 16 or more


def _split_files(ctx: RunContext, split: dict[str, Any]) -> dict[str, Any]:
    rows = size = 0
    starts = np.zeros(MAX_STARTS + 1, np.int64)
    paths = [ctx.run.path(f) for f in split.get("files") or []]
    present = [p for p in paths if ctx.run.fs.get_file_info(p).size is not None]
    for path in present:
        rows += pq.ParquetFile(path, filesystem=ctx.run.fs).metadata.num_rows
        size += ctx.run.fs.get_file_info(path).size or 0
    if present and "doc_starts" in pq.read_schema(present[0], filesystem=ctx.run.fs).names:
        ds = pads.dataset(present, format="parquet", filesystem=ctx.run.fs)
        for batch in ds.to_batches(columns=["doc_starts"], batch_size=65_536, batch_readahead=1):
            n = pc.fill_null(pc.list_value_length(batch.column("doc_starts")), 0).to_numpy(zero_copy_only=False)
            starts += np.bincount(np.minimum(n, MAX_STARTS), minlength=MAX_STARTS + 1)
    return {"files_found": len(present), "files_listed": len(paths), "rows_in_files": rows, "bytes": size,
            "documents_starting_per_row": starts.tolist()}


def build(ctx: RunContext) -> Section | None:
    if not ctx.run.exists("shards/manifest.json"):
        return None
    m = ctx.run.read_json("shards/manifest.json")
    seq_len = m.get("seq_len")
    tok = m.get("tokenizer") or {}
    stats: dict[str, Any] = {"format": m.get("format"), "seq_len": seq_len, "dtype": m.get("dtype"),
                             "vocab_size": tok.get("vocab_size"), "tokenizer_sha256": tok.get("sha256"),
                             "dropped_tokens": m.get("dropped_tokens"), "val_fraction": m.get("val_fraction"),
                             "seed": m.get("seed"), "splits": {}}
    rows, figures, warnings = [], [], []
    for name, split in (m.get("splits") or {}).items():
        checked = _split_files(ctx, split)
        entry = {k: split.get(k) for k in ("rows", "tokens", "documents")} | checked
        entry["tokens_per_document"] = split["tokens"] / split["documents"] if split.get("documents") else None
        stats["splits"][name] = entry
        rows.append((name, checked["files_listed"], split.get("rows"), split.get("tokens"), split.get("documents"),
                     fmt_num(entry["tokens_per_document"]), checked["bytes"]))
        if checked["files_found"] != checked["files_listed"] or checked["rows_in_files"] != split.get("rows"):
            warnings.append(f"{name}: manifest lists {checked['files_listed']} files and {split.get('rows')} rows; "
                            f"found {checked['files_found']} files with {checked['rows_in_files']} rows")
        counts = checked["documents_starting_per_row"]
        if sum(counts):
            used = max(i for i, c in enumerate(counts) if c) + 1
            edges = [i - 0.5 for i in range(max(used, 4) + 1)]
            figures.append(figure(histogram(edges, [("rows", counts[:len(edges) - 1], NEUTRAL)], integer=True, y_label="rows",
                                            title=f"documents starting per row, {name}"),
                                  caption_html=f"<b>{esc(name)}</b>: documents starting in each packed row "
                                               f"(0 = a row inside one long document"
                                               + (f"; last bar = {MAX_STARTS}+)" if used > MAX_STARTS else ")")))
    head = table([], [("sequence length", seq_len), ("dtype", m.get("dtype")), ("vocabulary", tok.get("vocab_size")),
                                 ("tokens dropped by packing", m.get("dropped_tokens")),
                                 ("validation fraction", m.get("val_fraction")), ("seed", m.get("seed")),
                                 ("tokenizer sha256", (tok.get("sha256") or "")[:16])], numeric=(1,), cls="kv")
    body = head + table(["split", "files", "rows", "tokens", "documents", "tokens / doc", "bytes"], rows,
                        numeric=(1, 2, 3, 4, 5, 6))
    body += "".join(note(w, warn=True) for w in warnings)
    body += '<div class="grid">' + "".join(figures) + "</div>"
    return Section(KEY, TITLE, stats, body)
