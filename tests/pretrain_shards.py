"""Token shards for pretraining tests, written to the shards contract (``gristmill-shards/1``) from
shipped text with a small real BPE (HF tokenizers). Tests use this until (and independently of) the
tokenize stage, so a pretraining test never depends on a curate run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def shakespeare_documents(max_chars: int) -> list[str]:
    text = (REPO / "data" / "text" / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:max_chars]
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def write_shards(run_dir: Path, seq_len: int = 32, vocab_size: int = 320, max_chars: int = 60_000,
                 train_files: int = 3, val_rows: int = 16) -> dict:
    """Train a BPE on the documents, pack them into rows of ``seq_len + 1`` tokens with EOS after
    every document, and write ``tokenizer/``, ``shards/{train,val}-NNNNN.parquet`` and
    ``shards/manifest.json`` under ``run_dir``. Returns the manifest."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    docs = shakespeare_documents(max_chars)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (run_dir / "tokenizer").mkdir(parents=True, exist_ok=True)
    tok_path = run_dir / "tokenizer" / "tokenizer.json"
    tok.save(str(tok_path))
    eos = tok.token_to_id("<|eos|>")

    stream: list[int] = []
    starts: list[int] = []
    for enc in tok.encode_batch(docs):
        starts.append(len(stream))
        stream += enc.ids + [eos]
    width = seq_len + 1
    n_rows = len(stream) // width
    ids = np.asarray(stream[: n_rows * width], dtype=np.int32).reshape(n_rows, width)
    start_arr = np.asarray(starts)
    row_of = start_arr // width
    doc_starts = [(start_arr[row_of == r] - r * width).astype(np.int32).tolist() for r in range(n_rows)]
    dropped = len(stream) - n_rows * width

    shards = run_dir / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    train_rows = n_rows - val_rows
    splits: dict = {}
    bounds = {"train": np.array_split(np.arange(train_rows), train_files),
              "val": [np.arange(train_rows, n_rows)]}
    for split, parts in bounds.items():
        files, tokens, documents = [], 0, 0
        for i, idx in enumerate(parts):
            table = pa.table({
                "input_ids": pa.array([ids[j].tolist() for j in idx], type=pa.list_(pa.int32())),
                "doc_starts": pa.array([doc_starts[j] for j in idx], type=pa.list_(pa.int32())),
            })
            rel = f"shards/{split}-{i:05d}.parquet"
            pq.write_table(table, run_dir / rel)
            files.append(rel)
            tokens += len(idx) * width
            documents += sum(len(doc_starts[j]) for j in idx)
        splits[split] = {"files": files, "rows": int(sum(len(p) for p in parts)), "tokens": tokens,
                         "documents": documents}
    manifest = {
        "format": "gristmill-shards/1", "seq_len": seq_len, "dtype": "int32",
        "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": hashlib.sha256(tok_path.read_bytes()).hexdigest(),
                      "vocab_size": tok.get_vocab_size(), "bos_id": tok.token_to_id("<|bos|>"), "eos_id": eos,
                      "pad_id": tok.token_to_id("<|pad|>")},
        "splits": splits, "dropped_tokens": dropped, "seed": 0, "val_fraction": val_rows / n_rows,
    }
    (shards / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
