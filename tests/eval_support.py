"""Tiny real checkpoints for the eval tests: a byte-level BPE trained on shipped Shakespeare and a
2-layer model trained for a few dozen steps on the same text (so its predictions are not uniform)."""

from __future__ import annotations

from pathlib import Path

import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation.tokenize.train import EOS, TokenizerTrainConfig, for_documents, train_bpe
from training.checkpoint import save_model
from training.model import ModelConfig, Transformer

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO / "data" / "text" / "tinyshakespeare" / "input.txt"
TEXT_CHARS = 120_000


def shakespeare(chars: int = TEXT_CHARS) -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")[:chars]


def tiny_tokenizer(vocab_size: int = 384):
    text = shakespeare()
    return train_bpe([text[i:i + 2000] for i in range(0, len(text), 2000)], TokenizerTrainConfig(vocab_size=vocab_size))


def tiny_model(vocab_size: int, arch: str = "llama", max_seq_len: int = 128, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(arch=arch, vocab_size=vocab_size, max_seq_len=max_seq_len, n_layer=2,
                                   n_head=2, d_model=32))


def train_briefly(model: Transformer, tokenizer, steps: int = 40, seed: int = 0) -> Transformer:
    """A few dozen AdamW steps on Shakespeare rows (EOS-led, like packed shards)."""
    ids = [tokenizer.token_to_id(EOS)] + for_documents(tokenizer).encode(shakespeare(), add_special_tokens=False).ids
    width = model.config.max_seq_len + 1
    data = torch.tensor(ids[: len(ids) // width * width]).view(-1, width)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = data[torch.randint(len(data), (16,), generator=generator)]
        logits = model(rows[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def make_checkpoint(directory: Path, arch: str = "llama", steps: int = 40, tokenizer=None) -> Path:
    """``directory/checkpoints/step-000040/`` with the model, ``directory/tokenizer/tokenizer.json``
    (the run-directory layout). Returns the checkpoint directory."""
    tokenizer = tokenizer or tiny_tokenizer()
    model = train_briefly(tiny_model(tokenizer.get_vocab_size(), arch), tokenizer, steps)
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer" / "tokenizer.json"))
    return save_model(directory / "checkpoints" / f"step-{steps:06d}", model, extra={"step": steps})


_CACHE: dict[str, Path] = {}


def cached_checkpoint(arch: str = "llama") -> Path:
    """One briefly trained checkpoint per architecture per test process (building one costs seconds)."""
    if arch not in _CACHE:
        import tempfile

        with single_thread():
            _CACHE[arch] = make_checkpoint(Path(tempfile.mkdtemp(prefix=f"gristmill-eval-{arch}-")), arch, steps=30)
    return _CACHE[arch]


class single_thread:
    """Torch on one thread: on a loaded 2-core box, intra-op threads spin against each other and a
    tiny model runs 20x slower with two threads than with one."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def controlled_model(vocab_size: int, logits: torch.Tensor | None = None, max_seq_len: int = 128) -> Transformer:
    """A GPT-2 block model whose next-token logits are ``logits`` at every position, whatever the
    input (zeros → uniform): the final LayerNorm has weight 0 and bias e₀, so its output is the
    constant vector e₀, and column 0 of the (untied) output projection holds the logits."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(arch="gpt2", vocab_size=vocab_size, max_seq_len=max_seq_len, n_layer=1,
                                    n_head=2, d_model=16, tie_embeddings=False, bias=True))
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.zero_()
        model.final_norm.bias[0] = 1.0
        model.lm_head.weight.zero_()
        if logits is not None:
            model.lm_head.weight[:, 0] = logits
    return model.eval()


def write_shards(run, em, seq_len: int = 32, rows: int = 10) -> pa.Table:
    """Val shards by the contract: packed EOS-terminated documents, rows of seq_len + 1 tokens."""
    eos = em.boundary_id
    text = shakespeare(20_000)
    docs = [d for d in text.split("\n\n") if d.strip()][:200]
    stream, starts = [], []
    for doc in docs:
        starts.append(len(stream))
        stream += em.tokenizer.encode(doc, add_special_tokens=False).ids + [eos]
    width = seq_len + 1
    ids, doc_starts = [], []
    for r in range(rows):
        lo = r * width
        ids.append(stream[lo:lo + width])
        doc_starts.append([s - lo for s in starts if lo <= s < lo + width])
    table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "doc_starts": pa.array(doc_starts, pa.list_(pa.int32()))})
    (run / "shards").mkdir(parents=True)
    pq.write_table(table.slice(0, 6), run / "shards" / "val-00000.parquet")
    pq.write_table(table.slice(6), run / "shards" / "val-00001.parquet")
    pq.write_table(table.slice(0, 2), run / "shards" / "train-00000.parquet")
    manifest = {"format": "gristmill-shards/1", "seq_len": seq_len, "dtype": "int32",
                "tokenizer": {"path": "tokenizer/tokenizer.json", "sha256": "", "vocab_size": em.tokenizer.get_vocab_size(),
                              "bos_id": 0, "eos_id": eos, "pad_id": 2},
                "splits": {"train": {"files": ["shards/train-00000.parquet"], "rows": 2, "tokens": 0, "documents": 0},
                           "val": {"files": ["shards/val-00000.parquet", "shards/val-00001.parquet"], "rows": rows,
                                   "tokens": 0, "documents": 0}},
                "dropped_tokens": 0, "seed": 0, "val_fraction": 0.1}
    (run / "shards" / "manifest.json").write_text(json.dumps(manifest))
    return table
