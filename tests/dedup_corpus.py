"""Controlled near-duplicates of shipped real text, shared by the dedup tests and benchmarks:
word insertions, deletions and substitutions at known rates, and the exact 5-gram Jaccard."""

from __future__ import annotations

import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
_WORD = re.compile(r"[^\W_]+")


def sotu_passages(count: int, words: int = 250, seed: int = 0) -> list[str]:
    """``count`` non-overlapping passages of ``words`` words, from distinct places of the State of
    the Union addresses (so originals are not near-duplicates of each other)."""
    files = sorted((DATA / "text" / "sotu").glob("*.txt"))
    rng = random.Random(seed)
    out = []
    per_file = max(1, -(-count // len(files)))
    for path in files:
        text = path.read_text(encoding="utf-8").split()
        for k in range(per_file):
            start = k * words * 2
            if start + words <= len(text):
                out.append(" ".join(text[start:start + words]))
    rng.shuffle(out)
    return out[:count]


def edit(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """Each word is, with probability ``rate``, deleted, replaced, or followed by an inserted word."""
    out = []
    for word in text.split():
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0:
                continue
            if op == 1:
                out.append(rng.choice(vocab))
                continue
            out += [word, rng.choice(vocab)]
        else:
            out.append(word)
    return " ".join(out)


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0
