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


def reference_curve(run_dir: Path, steps: int, global_rows: int, seed: int, model_fields: dict, lr: float,
                    warmup_steps: int, eval_every: int, eval_rows: int, grad_clip: float = 1.0,
                    weight_decay: float = 0.1, min_lr_ratio: float = 0.1) -> list[dict]:
    """The training `kind: pretrain` does, as a plain single-process PyTorch loop (no Ray, no
    Lightning): same initial weights (seeded), same rows per step from the seeded stream, AdamW with
    the same groups, clipping and cosine schedule. Data-parallel workers average their micro-batch
    gradients, which equals this loop's mean over all the step's rows (equal row lengths), so the
    curves agree to floating-point tolerance. Returns one dict per step: loss, lr, grad_norm and,
    on eval steps, val_loss."""
    from functools import partial

    import torch

    from training.lightning_module import next_token_loss
    from training.model import ModelConfig, Transformer
    from training.schedule import lr_multiplier
    from training.shards import open_shards, stream_from, to_model_inputs

    shards = open_shards(str(run_dir))
    stream = stream_from(shards, seed, 0, steps * global_rows)
    table = pa.concat_tables([pq.read_table(f, columns=["input_ids", "doc_starts"]) for f in stream.files])
    rows = to_model_inputs(table.slice(stream.skip_rows, steps * global_rows), True)
    val_table = pa.concat_tables([pq.read_table(f.path, columns=["input_ids", "doc_starts"]) for f in shards.val])
    val = to_model_inputs(val_table.slice(0, eval_rows), True)

    preset = model_fields.get("preset", "tiny")
    fields = {k: v for k, v in model_fields.items() if k != "preset"}
    config = ModelConfig.preset(preset, **fields, vocab_size=shards.vocab_size, max_seq_len=shards.seq_len)
    torch.manual_seed(seed)
    model = Transformer(config)
    params = [p for _, p in model.named_parameters()]
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_multiplier, total_steps=steps, kind="cosine", warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio))

    def batch(arrays: dict, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(arrays["input_ids"][lo:hi]), torch.from_numpy(arrays["segment_ids"][lo:hi])

    curve = []
    for step in range(1, steps + 1):
        ids, seg = batch(rows, (step - 1) * global_rows, step * global_rows)
        loss = next_token_loss(model(ids[:, :-1], seg[:, :-1]), ids)
        loss.backward()
        lr_now = optimizer.param_groups[0]["lr"]
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        point = {"step": step, "loss": float(loss.detach()), "lr": lr_now, "grad_norm": float(norm)}
        if eval_every and (step % eval_every == 0 or step == steps):
            with torch.no_grad():
                vids, vseg = batch(val, 0, len(val["input_ids"]))
                point["val_loss"] = float(next_token_loss(model(vids[:, :-1], vseg[:, :-1]), vids))
        curve.append(point)
    return curve
