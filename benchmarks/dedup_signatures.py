"""MinHash signature throughput, docs/s on one core: Gristmill's vectorised batches against
datasketch's fastest batch API (``MinHash.bulk``, which hashes every shingle and applies all
permutations per document with NumPy), same documents, same shingles (word 5-grams), same number
of permutations (112 = 14 x 8).

    python -m benchmarks.dedup_signatures [--docs 4000] [--words 300] [--json out.json]

Both sides start from the text: Gristmill tokenises and shingles with Arrow kernels and NumPy;
datasketch gets its shingles from the usual Python word split and join, which is part of using it.
datasketch is timed with its default hash (SHA-1, 32 bits) and with xxh32 as ``hashfunc`` (its
fastest), and the ratio is taken against the faster of the two. Single process, so per core.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import pyarrow as pa
import xxhash
from datasketch import MinHash

from benchmarks.common import machine, shipped_words
from curation.dedup.signatures import MinHashSignatures

_WORD = re.compile(r"[^\W_]+")


def corpus(docs: int, words: int, seed: int = 0) -> list[str]:
    pool = shipped_words()
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(pool) - words, docs)
    return [" ".join(pool[s:s + words]) for s in starts]


def datasketch_shingles(text: str, n: int = 5) -> list[bytes]:
    words = _WORD.findall(text.lower())
    return [" ".join(words[i:i + n]).encode() for i in range(max(1, len(words) - n + 1))]


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--json")
    args = parser.parse_args()
    texts = corpus(args.docs, args.words)
    hasher = MinHashSignatures(num_perm=112)

    def ours():
        for i in range(0, len(texts), args.batch):
            hasher.of_texts(pa.array(texts[i:i + args.batch]))

    def theirs(hashfunc=None):
        kwargs = {"num_perm": 112, **({"hashfunc": hashfunc} if hashfunc else {})}
        MinHash.bulk([datasketch_shingles(t) for t in texts], **kwargs)

    t_ours = best_of(ours)
    t_sha1 = best_of(theirs, 1)
    t_xxh = best_of(lambda: theirs(xxhash.xxh32_intdigest), 1)
    result = {
        "docs": len(texts), "words_per_doc": args.words, "num_perm": 112, "ngram": 5,
        "gristmill_docs_per_s": round(len(texts) / t_ours, 1),
        "datasketch_sha1_docs_per_s": round(len(texts) / t_sha1, 1),
        "datasketch_xxh32_docs_per_s": round(len(texts) / t_xxh, 1),
        "ratio_vs_fastest_datasketch": round(min(t_sha1, t_xxh) / t_ours, 2),
        "machine": machine(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
