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


# Words per window of consecutive shipped text in ``distinct_documents``.
WINDOW = 25


def shipped_word_pool() -> list[str]:
    """Every word of the shipped English text, in order: State of the Union addresses, Shakespeare,
    Moby-Dick (~2.2 M words)."""
    text = DATA / "text"
    paths = (sorted((text / "sotu").glob("*.txt")) + [text / "tinyshakespeare" / "input.txt"]
             + sorted((text / "moby-dick").glob("chapter_*.txt")))
    words: list[str] = []
    for path in paths:
        words += path.read_text(encoding="utf-8").split()
    return words


def distinct_documents(count: int, words: int = 250, seed: int = 0, pool: list[str] | None = None) -> list[str]:
    """``count`` documents of ``words`` words of shipped text, none a near duplicate of another, for
    any ``count`` (the shipped text holds only ~8,800 disjoint 250-word passages; more passages
    would overlap, and overlapping passages are near duplicates that dedup rightly collapses, so a
    larger corpus would not be more distinct documents).

    The pool is cut into disjoint windows of ``WINDOW`` consecutive words (~88,000); a document is
    ``words // WINDOW`` windows drawn at random without replacement. Two documents share a window
    only by chance: one shared window gives a 5-gram Jaccard of ~0.05, two ~0.1 (a few thousand
    pairs in 128,000 documents), far below any dedup threshold (14 x 8 LSH catches J = 0.1 with
    probability ~1e-7). Each window is real running text; only the joins between windows are not."""
    pool = pool if pool is not None else shipped_word_pool()
    windows = len(pool) // WINDOW
    per_doc = max(1, words // WINDOW)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        picks = rng.sample(range(windows), per_doc)
        out.append(" ".join(w for k in picks for w in pool[k * WINDOW:(k + 1) * WINDOW]))
    return out


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
