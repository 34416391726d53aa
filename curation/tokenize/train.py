"""Byte-level BPE training (HF ``tokenizers``) on a sample of the kept documents.

The tokenizer is GPT-2 style: the ByteLevel pre-tokenizer maps every byte to one of 256 visible
symbols and all 256 are in the initial alphabet, so any Unicode text (emoji, CJK, combining marks,
NUL) encodes without an unknown token and ``decode(encode(x)) == x``. No normalizer runs, because
normalising would break that round trip (``normalize`` is a curation step for that). The special
tokens come first, so their ids are 0..6 in the order of :data:`SPECIAL_TOKENS`.

The sample is drawn by Ray Data tasks (one per data file, a hash of the text decides membership so
the same documents are drawn on every rerun), from the train split only (validation text must not
shape the vocabulary), and streamed to the trainer through an iterator that stops at the document
and character caps: the driver never holds more than one batch of text besides the trainer's counts.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from curation.operator import OpConfig
from curation.tokenize.split import SAMPLE_HASH_SEED, text_hashes, unit_interval, val_mask

# The shard contract's special tokens (ids 0..6 in this order). The chat tokens are reserved now so
# that fine-tuning can use the pretraining tokenizer unchanged.
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, "<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
BYTE_ALPHABET = 256


class TokenizerTrainConfig(OpConfig):
    """Defaults: vocab 8192 suits the small models this platform trains on one node (GPT-2 uses
    50257 for 40 GB of text); min_frequency 2 as in the HF tokenizers GPT-2 recipe; a 100k document /
    200M character sample is what a single CPU trains in minutes."""

    vocab_size: int = Field(8192, ge=len(SPECIAL_TOKENS) + BYTE_ALPHABET + 1, le=1 << 20,
                            description="final vocabulary size, including the 256 byte symbols and the special tokens")
    min_frequency: int = Field(2, ge=1, description="a pair must occur this often to be merged")
    sample_docs: int = Field(100_000, ge=1, description="at most this many train-split documents are sampled")
    sample_chars: int = Field(200_000_000, ge=1, description="at most this many characters are fed to the trainer")
    max_token_length: int | None = Field(None, ge=1, description="longest merged token in characters (None: unbounded)")


def new_bpe_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(texts: Iterable[str] | Iterable[list[str]], config: TokenizerTrainConfig) -> Tokenizer:
    """Train on ``texts`` (strings or lists of strings, consumed once, in order)."""
    tokenizer = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=config.min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  max_token_length=config.max_token_length)
    tokenizer.train_from_iterator(texts, trainer)
    check_special_tokens(tokenizer)
    return tokenizer


def load_tokenizer(source: str | bytes) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` path or its bytes, checked for the contract's special tokens."""
    tokenizer = Tokenizer.from_str(source.decode()) if isinstance(source, bytes) else Tokenizer.from_file(source)
    check_special_tokens(tokenizer)
    return tokenizer


def for_documents(tokenizer: Tokenizer) -> Tokenizer:
    """Encode document text literally: a web page that contains ``<|eos|>`` must not inject an EOS
    (or a chat-role token) into the stream. The flag is not saved in tokenizer.json, so chat
    templates that format roles with the special tokens still get them."""
    tokenizer.encode_special_tokens = True
    return tokenizer


def check_special_tokens(tokenizer: Tokenizer) -> None:
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"the tokenizer lacks special token(s) {', '.join(missing)}; gristmill shards need "
                         f"all of {', '.join(SPECIAL_TOKENS)}")


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {"bos_id": tokenizer.token_to_id(BOS), "eos_id": tokenizer.token_to_id(EOS),
            "pad_id": tokenizer.token_to_id(PAD)}


def tokenizer_bytes(tokenizer: Tokenizer) -> bytes:
    return tokenizer.to_str(pretty=True).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ sample


def _sampled(texts: pa.Array | pa.ChunkedArray, fraction: float, val_fraction: float) -> np.ndarray:
    """Which documents the sample may draw: train split, and sample hash under ``fraction``."""
    keep = ~val_mask(texts, val_fraction)
    if fraction < 1.0:
        keep &= unit_interval(text_hashes(texts, SAMPLE_HASH_SEED)) < fraction
    return keep


def _sample_candidates(batch: pa.Table, fraction: float, val_fraction: float) -> Iterator[pa.Table]:
    """Data files → (sample hash, doc_id, characters) of their candidate documents (a Ray Data task)."""
    from curation.ingest.listing import filesystem_for

    for location in batch.column("location").to_pylist():
        fs, path = filesystem_for(location)
        parquet = pq.ParquetFile(fs.open_input_file(path))
        for record_batch in parquet.iter_batches(batch_size=4096, columns=["doc_id", "text"]):
            texts = record_batch.column(1)
            keep = pa.array(_sampled(texts, fraction, val_fraction))
            if pc.any(keep).as_py():
                texts = texts.filter(keep)
                yield pa.table({"hash": text_hashes(texts, SAMPLE_HASH_SEED),
                                "doc_id": record_batch.column(0).filter(keep),
                                "chars": pc.utf8_length(texts).cast(pa.int64())})


def _sample_texts(batch: pa.Table, chosen: pa.Array, cut_doc: int, cut_chars: int) -> Iterator[pa.Table]:
    """Data files → the texts of the ``chosen`` doc_ids (``cut_doc`` truncated to ``cut_chars``)."""
    from curation.ingest.listing import filesystem_for

    for location in batch.column("location").to_pylist():
        fs, path = filesystem_for(location)
        parquet = pq.ParquetFile(fs.open_input_file(path))
        for record_batch in parquet.iter_batches(batch_size=4096, columns=["doc_id", "text"]):
            mine = pc.is_in(record_batch.column(0), value_set=chosen)
            if not pc.any(mine).as_py():
                continue
            ids, texts = record_batch.column(0).filter(mine), record_batch.column(1).filter(mine)
            cut = pc.equal(ids, cut_doc)
            texts = pc.if_else(cut, pc.utf8_slice_codeunits(texts, 0, cut_chars), texts)
            yield pa.table({"text": texts})


def choose_sample(candidates: pa.Table, sample_docs: int, sample_chars: int) -> tuple[pa.Array, int, int]:
    """The documents the trainer sees: candidates in (sample hash, doc_id) order, whole, until
    ``sample_docs`` documents or ``sample_chars`` characters; the one that crosses the character cap
    is cut to fit. Returns the chosen doc_ids, the cut one (-1: none) and its kept characters.
    A function of the kept set alone, not of the order the files or rows come in."""
    if candidates.num_rows == 0:
        return pa.array([], pa.int64()), -1, 0
    ordered = candidates.sort_by([("hash", "ascending"), ("doc_id", "ascending")])
    chars = ordered.column("chars").to_numpy()
    before = np.concatenate([[0], np.cumsum(chars)[:-1]])  # characters taken before each document
    take = min(sample_docs, int(np.searchsorted(before, sample_chars, side="left")))
    ids = ordered.column("doc_id").slice(0, take).combine_chunks()
    last = take - 1
    if take and before[last] + chars[last] > sample_chars:
        return ids, int(ids[last].as_py()), int(sample_chars - before[last])
    return ids, -1, 0


def sample_texts(locations: list[str], documents: int, config: TokenizerTrainConfig, val_fraction: float,
                 num_cpus: float = 0.5, tasks: int = 8) -> Iterator[list[str]]:
    """Stream the tokenizer sample from the kept documents' Parquet files: the same documents on
    every rerun, however ``data/`` is laid out (see :func:`choose_sample`).

    ``documents`` (the kept count) sets the sampling rate so that somewhat more than ``sample_docs``
    train documents are candidates (a hash threshold gives a binomial count, not an exact one). A
    first pass returns each candidate's hash, doc_id and length (24 bytes each, never the text); the
    caller (a Ray task, see ``tokenize.op``) picks the sample; a second pass streams the chosen texts
    to the trainer. The BPE trainer
    counts words and pairs, so the order the texts arrive in does not change the tokenizer."""
    import ray

    if not locations:
        return
    train_docs = max(1.0, documents * (1.0 - val_fraction))
    fraction = min(1.0, (1.25 * config.sample_docs + 16) / train_docs)

    def over_files(fn, **kwargs):
        # a few tasks, each reading a contiguous run of files (many small files would mean many tiny tasks)
        ds = ray.data.from_items([{"location": loc} for loc in locations],
                                 override_num_blocks=max(1, min(len(locations), tasks)))
        return ds.map_batches(fn, batch_size=None, batch_format="pyarrow", num_cpus=num_cpus, fn_kwargs=kwargs)

    found = [b for b in over_files(_sample_candidates, fraction=fraction, val_fraction=val_fraction)
             .iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    if not found:
        return
    chosen, cut_doc, cut_chars = choose_sample(pa.concat_tables(found), config.sample_docs, config.sample_chars)
    for batch in over_files(_sample_texts, chosen=chosen, cut_doc=cut_doc, cut_chars=cut_chars) \
            .iter_batches(batch_format="pyarrow", batch_size=None):
        yield batch.column("text").to_pylist()


def sample_summary(texts: Iterable[list[str]], into: dict[str, Any]) -> Iterator[list[str]]:
    """Pass batches through, counting documents and characters into ``into`` (for the manifest)."""
    into.setdefault("documents", 0)
    into.setdefault("chars", 0)
    for batch in texts:
        into["documents"] += len(batch)
        into["chars"] += sum(len(t) for t in batch)
        yield batch
