"""Small helpers shared by tests: re-deriving counts from the Parquet a run wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads


def read_dir(path: Path) -> pa.Table | None:
    files = sorted(str(p) for p in Path(path).glob("*.parquet"))
    if not files:
        return None
    return pads.dataset(files, format="parquet").to_table()


def rejected_tables(run: Path) -> dict[str, pa.Table]:
    out = {}
    for folder in sorted((run / "rejected").glob("*")):
        table = read_dir(folder)
        if table is not None:
            out[folder.name] = table
    return out


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def kept_ids(run: Path) -> list[int]:
    table = read_dir(run / "data")
    return [] if table is None else table.column("doc_id").to_pylist()


def all_ids(run: Path) -> list[int]:
    ids = kept_ids(run)
    for table in rejected_tables(run).values():
        ids += table.column("doc_id").to_pylist()
    return ids


def write_jsonl_corpus(folder: Path, files: int, docs_per_file: int, words: list[str]) -> list[Path]:
    """Deterministic JSONL files of real words (cycled from shipped text) with varied lengths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    pos = 0
    for f in range(files):
        path = folder / f"part-{f:03d}.jsonl"
        with path.open("w") as out:
            for d in range(docs_per_file):
                n = 5 + (f * 7919 + d * 104729) % 120
                chunk = words[pos % len(words): pos % len(words) + n] or words[:n]
                pos += n
                out.write(json.dumps({"text": " ".join(chunk), "url": f"https://example.org/{f}/{d}"}) + "\n")
        paths.append(path)
    return paths
