"""Shared by benchmarks: corpus synthesis from shipped real text, timing, machine description."""

from __future__ import annotations

import json
import os
import platform
import random
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"
BENCH_DATA = REPO / "bench-data"


def shipped_words() -> list[str]:
    words: list[str] = []
    for path in sorted((DATA / "text" / "sotu").glob("*.txt")):
        words += path.read_text(encoding="utf-8").split()
    words += (DATA / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split()
    return words


def jsonl_corpus(name: str, docs: int, files: int, seed: int = 0) -> list[Path]:
    """``docs`` documents of real words (State of the Union + Shakespeare), 20–600 words each, spread
    over ``files`` JSONL files; written once under bench-data/ and reused."""
    folder = BENCH_DATA / name
    paths = [folder / f"part-{i:03d}.jsonl" for i in range(files)]
    stamp = folder / "_complete.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"docs": docs, "files": files, "seed": seed}:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    words = shipped_words()
    rng = random.Random(seed)
    per_file = docs // files
    for i, path in enumerate(paths):
        n_docs = per_file + (1 if i < docs % files else 0)
        with path.open("w", encoding="utf-8") as out:
            for d in range(n_docs):
                n = rng.choice((3, 8, 20, 60, 150, 300, 600))
                start = rng.randrange(0, len(words) - n)
                text = " ".join(words[start:start + n])
                if d % 10 == 0:  # some real-world noise for normalize: mojibake, odd spacing, controls
                    text = text.replace("e", "Ã©", 1) + "  \t \u200b\x07 end"
                out.write(json.dumps({"text": text, "url": f"https://bench.example/{i}/{d}"}) + "\n")
    stamp.write_text(json.dumps({"docs": docs, "files": files, "seed": seed}))
    return paths


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = round(time.perf_counter() - start, 3)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
