"""Tokenize-and-pack throughput of the `tokenize` step vs raw HF tokenizers `encode_batch`.

Same text, same tokenizer, one run each. The corpus is real words (State of the Union + Shakespeare,
`benchmarks.common.shipped_words`) written as kept-document Parquet files, as a curate run leaves
them in `data/`. A byte-level BPE (vocab 8192) is trained once on a sample and both sides use it.

* peer: ``Tokenizer.encode_batch`` over the texts, already in memory as Python strings, in batches of
  512 (what a hand-written script does; ids are left inside the Encoding objects). It runs before
  and after the pipeline and the faster pass counts (the dev box is shared; noise favours no side).
  Also reported: ``encode_batch_fast`` (no offsets), what the pipeline calls, a stricter reference.
* gristmill: the whole `tokenize` stage from `data/` to `shards/` (read Parquet, split, encode in the
  actor pool, pack, global shuffle, write shards and manifest) on a local Ray of all cores.

Goal (issue 6): gristmill ≥ 0.8× the peer's tokens/s.

    .venv/bin/python -m benchmarks.tokenize_throughput [--docs 10000] [--files 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import BENCH_DATA, machine, shipped_words


def write_corpus(folder, docs: int, files: int, seed: int = 0) -> list[str]:
    """Kept-document Parquet files (doc_id, text), 20–2000 words per document."""
    folder.mkdir(parents=True, exist_ok=True)
    words = shipped_words()
    rng = random.Random(seed)
    texts = []
    for d in range(docs):
        n = rng.choice((20, 60, 150, 300, 600, 1200, 2000))
        start = rng.randrange(0, len(words) - n)
        texts.append(" ".join(words[start:start + n]))
    per = -(-docs // files)
    for f in range(files):
        chunk = texts[f * per:(f + 1) * per]
        pq.write_table(pa.table({"doc_id": pa.array(range(f * per, f * per + len(chunk)), pa.int64()),
                                 "text": chunk}), folder / f"part-{f:03d}.parquet", compression="zstd")
    return texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=None, help="encoding actors (default: the step's default)")
    args = parser.parse_args()

    import ray

    from curation.operator import SinkContext
    from curation.tokenize.op import TokenizeConfig, TokenizeOp
    from curation.tokenize.train import TokenizerTrainConfig, tokenizer_bytes, train_bpe

    root = BENCH_DATA / "tokenize-throughput"
    shutil.rmtree(root, ignore_errors=True)
    run_dir = root / "run"
    texts = write_corpus(run_dir / "data", args.docs, args.files)
    chars = sum(len(t) for t in texts)
    tokenizer = train_bpe(iter(texts[:2000]), TokenizerTrainConfig(vocab_size=8192))
    tok_path = root / "tokenizer.json"
    tok_path.write_bytes(tokenizer_bytes(tokenizer))

    results: dict = {"machine": machine(), "documents": args.docs, "chars": chars, "seq_len": args.seq_len,
                     "workers": args.workers}

    def peer(method) -> tuple[float, int]:
        """Seconds and tokens of one pass of ``method`` over the texts, 512 at a time."""
        started = time.perf_counter()
        tokens = 0
        for lo in range(0, len(texts), 512):
            tokens += sum(len(e.ids) for e in method(texts[lo:lo + 512], add_special_tokens=False))
        return time.perf_counter() - started, tokens

    # peer before the pipeline (and again after it: on a shared machine the faster of the two counts)
    raw_before, raw_tokens = peer(tokenizer.encode_batch)

    # gristmill: the tokenize stage, data/ → shards/
    cpus = os.cpu_count() or 2
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    from pipelines.ray_session import connect

    connect()
    op = TokenizeOp(TokenizeConfig(tokenizer=str(tok_path), seq_len=args.seq_len, val_fraction=0.01,
                                   workers=args.workers))
    ctx = SinkContext(run_location=str(run_dir), run_root=str(run_dir), filesystem=pa.fs.LocalFileSystem(),
                      input_dir="data", work_dir="work/tokenize", documents=args.docs, num_cpus=cpus, local=True,
                      compression="zstd", upstream=[], note=lambda m: None)
    started = time.perf_counter()
    counts = op.run(ctx)
    pipe_s = time.perf_counter() - started
    ray.shutdown()  # the peer's second pass runs with Ray gone
    raw_after, _ = peer(tokenizer.encode_batch)
    fast_s, _ = peer(tokenizer.encode_batch_fast)  # what the pipeline calls (no offsets): a stricter reference
    raw_s = min(raw_before, raw_after)
    results["raw_encode_batch"] = {"seconds": round(raw_s, 3), "seconds_before_after": [round(raw_before, 3),
                                   round(raw_after, 3)], "tokens": raw_tokens, "tokens_per_s": round(raw_tokens / raw_s)}
    results["raw_encode_batch_fast"] = {"seconds": round(fast_s, 3), "tokens_per_s": round(raw_tokens / fast_s)}
    # the stream's tokens include one EOS per document; compare the text's tokens like for like
    text_tokens = counts["tokens"]["in"] - args.docs
    assert text_tokens == raw_tokens, (text_tokens, raw_tokens)
    results["gristmill_tokenize"] = {"seconds": round(pipe_s, 3), "tokens": text_tokens,
                                     "tokens_per_s": round(text_tokens / pipe_s), "stage_seconds": counts["seconds"],
                                     "rows": counts["rows"], "dropped_tokens": counts["tokens"]["dropped"]}
    results["ratio"] = round((text_tokens / pipe_s) / (raw_tokens / raw_s), 3)
    results["ratio_vs_encode_batch_fast"] = round((text_tokens / pipe_s) / (raw_tokens / fast_s), 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
