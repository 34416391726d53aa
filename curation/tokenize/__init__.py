"""Tokenization: train a byte-level BPE tokenizer on a sample of the kept documents, encode them in
Ray tasks, pack them into fixed-length rows, and write shuffled train / val Parquet shards with a
manifest (the ``gristmill-shards/1`` contract that ``training`` reads).

Modules: ``train`` (tokenizer training and loading), ``split`` (train / val by document hash),
``encode`` (the task that encodes and packs one packing group), ``pack`` (``pack_documents``), ``shards``
(shuffle, shard files, manifest), ``op`` (the ``tokenize`` and ``train_tokenizer`` steps).
"""

from curation.tokenize.train import SPECIAL_TOKENS, load_tokenizer, special_token_ids

__all__ = ["SPECIAL_TOKENS", "load_tokenizer", "special_token_ids"]
