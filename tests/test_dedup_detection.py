"""Detection curve of the default MinHash LSH (word 5-grams, 14 bands x 8 rows) on controlled edits
of shipped real text: word insertions, deletions and substitutions at known rates, scored against
the exact 5-gram Jaccard of each pair.

Requirement (issue 5): recall >= 0.98 for pairs with Jaccard >= 0.85; false positives <= 1% for
pairs below 0.5. The candidate test is the one the op applies (same band key in some band)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from curation.dedup.lsh import band_keys
from curation.dedup.signatures import MinHashSignatures
from tests.dedup_corpus import edit, jaccard, sotu_passages

RATES = [0.0, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35]


def test_detection_curve_on_edited_real_text():
    rng = random.Random(17)
    originals = sotu_passages(80, words=300, seed=9)
    vocab = " ".join(originals).split()
    pairs = [(doc, edit(doc, rate, rng, vocab)) for doc in originals for rate in RATES]
    # unrelated passages too: the bulk of any real corpus
    pairs += [(originals[i], originals[(i + 1) % len(originals)]) for i in range(len(originals))]
    left = pa.array([a for a, _ in pairs])
    right = pa.array([b for _, b in pairs])
    hasher = MinHashSignatures(num_perm=112)
    keys_a = band_keys(hasher.of_texts(left), 14, 8)
    keys_b = band_keys(hasher.of_texts(right), 14, 8)
    candidate = (keys_a == keys_b).any(axis=1)
    truth = np.array([jaccard(a, b) for a, b in pairs])

    high, low = truth >= 0.85, truth < 0.5
    recall = candidate[high].mean()
    false_positive = candidate[low].mean()
    assert high.sum() >= 200 and low.sum() >= 300  # both ends of the curve are well populated
    assert recall >= 0.98, recall
    assert false_positive <= 0.01, false_positive
    # and the curve is monotone in between: more edits, fewer detections
    mid = (truth >= 0.5) & (truth < 0.85)
    assert candidate[high].mean() >= candidate[mid].mean() >= candidate[low].mean()
