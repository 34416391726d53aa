"""Deduplication: ``exact_dedup`` (hash of normalised text) and ``minhash_dedup`` (MinHash LSH with
distributed connected components), both global ops on Ray Data.

Modules: ``text_key`` (normalisation + 128-bit keys), ``signatures`` (vectorised MinHash),
``lsh`` (banding and buckets), ``components`` (connected components), ``clusters`` (keepers,
removal lists, the final filter), ``rounds`` (verified resume points under ``work/``), ``stats``.
"""
