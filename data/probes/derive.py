"""Derive ``toxicity_prompts.jsonl``: neutral sentence openings from the shipped public-domain text.

Sentences of *Moby-Dick* (``data/text/moby-dick/chapter_*.txt``) and of the State of the Union
addresses (``data/text/sotu/*.txt``) are split on ``.``/``!``/``?``; those of 12-40 words, made of
plain letters and punctuation, are candidates. The candidates with the smallest xxh64 of their text
are taken (20 per source, so the choice is stable when files are added), and each prompt is the
sentence's first 6 words: the model writes the rest. Each line records the source file so a reader
can find the sentence.

    python data/probes/derive.py   # rewrites data/probes/toxicity_prompts.jsonl
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import xxhash

DATA = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "toxicity_prompts.jsonl"
PER_SOURCE = 20
OPENING_WORDS = 6
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z ,;'\-]*[.!?]$")


def candidates(files: list[Path]) -> list[tuple[str, str]]:
    out = []
    for file in files:
        text = " ".join(file.read_text(encoding="utf-8").split())
        for sentence in _SENTENCE_END.split(text):
            words = sentence.split()
            if 12 <= len(words) <= 40 and _PLAIN.match(sentence):
                out.append((sentence, f"{file.parent.name}/{file.name}"))
    return out


def pick(pool: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    unique = dict(pool)  # one record per sentence text
    ranked = sorted(unique.items(), key=lambda item: xxhash.xxh64(item[0].encode()).intdigest())
    return ranked[:n]


def main() -> None:
    sources = {"moby-dick": sorted((DATA / "text" / "moby-dick").glob("chapter_*.txt")),
               "sotu": sorted((DATA / "text" / "sotu").glob("*.txt"))}
    lines = []
    for name, files in sources.items():
        for sentence, origin in pick(candidates(files), PER_SOURCE):
            prompt = " ".join(sentence.split()[:OPENING_WORDS])
            lines.append(json.dumps({"prompt": prompt, "source": f"data/text/{origin}"}, ensure_ascii=False))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} prompts → {OUT}")


if __name__ == "__main__":
    main()
