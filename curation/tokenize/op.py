"""The ``tokenize`` and ``train_tokenizer`` steps: sinks that close a curate spec.

``tokenize`` reads the kept documents (``data/``), trains or loads a tokenizer, encodes and packs in
Ray tasks, shuffles globally and writes ``shards/`` (the ``gristmill-shards/1`` contract) plus
``tokenizer/tokenizer.json``. ``train_tokenizer`` does only the first part, for specs that want the
tokenizer as a step of its own (a following ``tokenize`` without a ``tokenizer`` field uses it).

Both are sinks: they never touch ``data/`` or ``rejected/``; the runner skips them when their
config and everything before them are unchanged, and re-runs only them when their config changes.
"""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from typing import Any, ClassVar

import pyarrow.fs as pafs
from pydantic import Field, ValidationError, field_validator

from curation.faults import fault_point
from curation.operator import OpConfig, SinkContext, SinkOp, register_op
from curation.tokenize.encode import SPLITS, encode_pack_groups
from curation.tokenize.order import plan_groups, profile_files
from curation.tokenize.shards import commit_shards, rows_per_shard, shard_manifest, shuffle_into_shards
from curation.tokenize.train import (TokenizerTrainConfig, load_tokenizer, sample_summary, sample_texts, sha256,
                                     special_token_ids, tokenizer_bytes, train_bpe)

TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer/tokenizer.json"
TRAINING_FILE = "tokenizer/training.json"
SHARDS_DIR = "shards"
SHARDS_MANIFEST = "shards/manifest.json"


class TrainTokenizer(OpConfig):
    """``tokenizer: {train: {...}}``: train a new tokenizer on this run's kept documents."""

    train: TokenizerTrainConfig = TokenizerTrainConfig()


class TokenizeConfig(OpConfig):
    """Defaults: seq_len 1024 is GPT-2's context; val_fraction 0.01 keeps the validation split
    meaningful on small corpora (nanoGPT's OpenWebText uses 0.0005 of 8M documents); 100 MB shards
    are a few seconds of reading each and stay under Ray Data's 128 MiB block size, so one sorted
    block is one shard."""

    path_fields: ClassVar[tuple[str, ...]] = ("tokenizer",)

    tokenizer: TrainTokenizer | str | None = Field(
        None, description="`{train: {vocab_size, sample_docs, ...}}` to train one, a path to a tokenizer.json to "
                          "reuse, or omitted: the run's tokenizer from a `train_tokenizer` step before this one, "
                          "else one trained with the defaults")
    seq_len: int = Field(1024, ge=1, le=1 << 20, description="tokens per training sequence; rows hold seq_len + 1")
    val_fraction: float = Field(0.01, ge=0, lt=1, description="fraction of documents (by text hash) in the val split")
    seed: int = Field(0, ge=0, description="seed of the global row shuffle")
    shard_target_mb: float = Field(100, gt=0, description="target shard size in MB of int32 tokens (before compression)")
    batch_docs: int = Field(512, ge=1, description="documents per encode_batch call")
    group_mb: float = Field(64, gt=0, description="documents are packed in contiguous doc_id ranges of about this "
                            "many MB of text (one range is encoded in memory by one task); each range drops at "
                            "most one unfinished row per split")
    workers: int | None = Field(None, ge=1, description="encoding tasks at once (default: one per CPU, one CPU left for I/O "
                                "on a local Ray)")


    @field_validator("tokenizer", mode="before")
    @classmethod
    def _one_of_two_forms(cls, value: Any) -> Any:
        """Validate the mapping form here, so a typo gets one error naming the key (a plain union
        would also report "not a string" for the path form)."""
        if value is None or isinstance(value, (str, TrainTokenizer)):
            return value
        if not isinstance(value, dict):
            raise ValueError("expected `{train: {vocab_size: …}}` or a path to a tokenizer.json")
        try:
            return TrainTokenizer.model_validate(value)
        except ValidationError as exc:
            problems = []
            for err in exc.errors(include_url=False):
                where = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    allowed = ", ".join(TokenizerTrainConfig.model_fields) if len(err["loc"]) > 1 else "train"
                    problems.append(f"unknown key {where!r} (allowed: {allowed})")
                else:
                    problems.append(f"{where}: {err['msg']}")
            raise ValueError("; ".join(problems)) from None


class TrainTokenizerStepConfig(TokenizerTrainConfig):
    val_fraction: float = Field(0.01, ge=0, lt=1, description="documents of this validation fraction (the same "
                                "text hash as `tokenize`) are kept out of the sample; use tokenize's value")


# ------------------------------------------------------------------------------------ run directory


def _path(ctx: SinkContext, rel: str) -> str:
    return posixpath.join(ctx.run_root, rel)


def _location(ctx: SinkContext, rel: str) -> str:
    """What a Ray task can open with ``filesystem_for`` (a URI remotely, a path locally)."""
    if "://" in ctx.run_location:
        return ctx.run_location.rstrip("/") + "/" + rel
    return _path(ctx, rel)


def _write_atomic(ctx: SinkContext, rel: str, data: bytes) -> None:
    path = _path(ctx, rel)
    folder = posixpath.dirname(path)
    ctx.filesystem.create_dir(folder, recursive=True)
    tmp = posixpath.join(folder, f".tmp-{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}")
    with ctx.filesystem.open_output_stream(tmp) as out:
        out.write(data)
    ctx.filesystem.move(tmp, path)


def _read(ctx: SinkContext, rel: str) -> bytes:
    with ctx.filesystem.open_input_stream(_path(ctx, rel)) as f:
        return f.read()


def _input_files(ctx: SinkContext) -> list[str]:
    """The kept documents' Parquet files (Hive folders such as ``data/lang=en/`` included), sorted."""
    selector = pafs.FileSelector(_path(ctx, ctx.input_dir), recursive=True, allow_not_found=True)
    files = sorted(i.path for i in ctx.filesystem.get_file_info(selector)
                   if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and ".tmp-" not in posixpath.basename(i.path))
    if "://" in ctx.run_location:
        base = _path(ctx, "")
        return [_location(ctx, f[len(base):].lstrip("/")) for f in files]
    return files


def _profiles(ctx: SinkContext, files: list[str]) -> list[dict[str, Any]]:
    """Each data file's doc_id histogram (:func:`~curation.tokenize.order.profile_files`), a few
    files per Ray task: small per-bin counts reach the driver, never documents."""
    import ray

    ds = ray.data.from_items([{"location": f} for f in files],
                             override_num_blocks=max(1, min(len(files), int(ctx.num_cpus) * 4)))
    ds = ds.map_batches(profile_files, batch_size=None, batch_format="pyarrow", num_cpus=0.5 if ctx.local else 1.0)
    return [row for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None) for row in batch.to_pylist()]


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def train_and_save(ctx: SinkContext, files: list[str], config: TokenizerTrainConfig,
                   val_fraction: float) -> tuple[bytes, dict[str, Any]]:
    """Train on a sample of ``files`` and write tokenizer/tokenizer.json (+ training.json)."""
    started = time.time()
    ctx.note(f"training a {config.vocab_size}-token byte-level BPE on up to {config.sample_docs:,} documents "
             f"/ {config.sample_chars:,} characters")
    import ray

    # The trainer holds its sample's word and pair counts (up to sample_chars characters): that is a
    # worker's job, not the driver's, whose memory must not follow the data (on a cluster the driver
    # is the head node).
    num_cpus = 0.5 if ctx.local else 1.0
    train = ray.remote(num_cpus=num_cpus, max_retries=1)(_train_on_sample)
    from ray.data import DataContext

    data, sample, vocab_size = ray.get(train.remote(files, ctx.documents, config.model_dump(mode="json"),
                                                    val_fraction, num_cpus, max(1, int(ctx.num_cpus)) * 4,
                                                    DataContext.get_current()))
    if not sample.get("documents"):
        raise ValueError("no train-split documents to train the tokenizer on")
    fault_point("tokenize.tokenizer_trained")  # trained, not yet saved
    _write_atomic(ctx, TOKENIZER_FILE, data)
    training = {"config": config.model_dump(mode="json"), "val_fraction": val_fraction, "sample": sample,
                "vocab_size": vocab_size, "seconds": round(time.time() - started, 3)}
    _write_atomic(ctx, TRAINING_FILE, _json(training))
    return data, training


def _train_on_sample(files: list[str], documents: int, config: dict[str, Any], val_fraction: float,
                     num_cpus: float, tasks: int, data_context: Any) -> tuple[bytes, dict[str, Any], int]:
    """In a Ray task: choose the sample, stream it to the BPE trainer; the tokenizer's JSON, the
    sample's counts and the vocabulary size come back. The driver's Ray Data settings come along
    (no progress bars in the run's console), as Ray Data passes them to its own tasks."""
    import logging

    from ray.data import DataContext

    from ray.util.debug import log_once

    DataContext._set_current(data_context)
    log_once("ray_data_progress_manager_disabled")  # bars are off on purpose: no note about it
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    cfg = TokenizerTrainConfig.model_validate(config)
    sample: dict[str, Any] = {}
    texts = sample_texts(files, documents, cfg, val_fraction, num_cpus=num_cpus, tasks=tasks)
    tokenizer = train_bpe(sample_summary(texts, sample), cfg)
    return tokenizer_bytes(tokenizer), sample, tokenizer.get_vocab_size()


def _require_documents(ctx: SinkContext, step: str) -> list[str]:
    files = _input_files(ctx)
    if not files or ctx.documents == 0:
        raise ValueError(f"{step}: no kept documents in {ctx.input_dir}/ to read (every document was rejected?)")
    return files


@register_op
class TrainTokenizerOp(SinkOp):
    """Train a byte-level BPE tokenizer on a sample of the kept documents (tokenizer/tokenizer.json)."""

    name = "train_tokenizer"
    memory = ("at most sample_chars characters (200 M) of sampled text fed to the trainer, which holds word "
              "counts of that sample (a few times its size)")
    Config = TrainTokenizerStepConfig
    defaults_from = "GPT-2 byte-level BPE (Radford et al. 2019); HF tokenizers BpeTrainer"

    def outputs(self, upstream: list[str]) -> list[str]:
        return [TOKENIZER_DIR]

    def run(self, ctx: SinkContext) -> dict[str, Any]:
        files = _require_documents(ctx, self.step_label)
        cfg = self.config
        data, training = train_and_save(ctx, files, TokenizerTrainConfig(**cfg.model_dump(exclude={"val_fraction"})),
                                        cfg.val_fraction)
        return {"in": ctx.documents, "kept": ctx.documents, "rejected": {}, "steps": [],
                "tokenizer": {"path": TOKENIZER_FILE, "sha256": sha256(data), "vocab_size": training["vocab_size"],
                              "sample_documents": training["sample"]["documents"],
                              "sample_chars": training["sample"]["chars"]}}


@register_op
class TokenizeOp(SinkOp):
    """Encode, pack and shuffle the kept documents into train / val token shards (shards/)."""

    name = "tokenize"
    memory = ("per encoding task one packing group: about group_mb (64 MB) of text, its token ids (4 bytes "
              "per token) and the packed rows; encode_batch sees batch_docs documents at a time")
    Config = TokenizeConfig
    defaults_from = "GPT-2 / nanoGPT packing: EOS-separated documents cut into seq_len + 1 token rows"

    def _trains(self, upstream: list[str]) -> bool:
        tok = self.config.tokenizer
        return isinstance(tok, TrainTokenizer) or (tok is None and "train_tokenizer" not in upstream)

    def outputs(self, upstream: list[str]) -> list[str]:
        owns_tokenizer = not (self.config.tokenizer is None and "train_tokenizer" in upstream)
        return ([TOKENIZER_DIR] if owns_tokenizer else []) + [SHARDS_DIR]

    def _tokenizer(self, ctx: SinkContext, files: list[str]) -> bytes:
        tok = self.config.tokenizer
        if self._trains(ctx.upstream):
            train = tok.train if isinstance(tok, TrainTokenizer) else TokenizerTrainConfig()
            return train_and_save(ctx, files, train, self.config.val_fraction)[0]
        if isinstance(tok, str):
            from curation.ingest.listing import filesystem_for

            fs, path = filesystem_for(tok)
            try:
                with fs.open_input_stream(path) as f:
                    data = f.read()
            except (FileNotFoundError, OSError) as exc:
                raise ValueError(f"{self.step_label}.tokenizer: cannot read {tok}: {exc}") from None
            try:
                load_tokenizer(data)
            except Exception as exc:  # tokenizers raises plain Exception on malformed JSON
                raise ValueError(f"{self.step_label}.tokenizer: {tok} is not a usable tokenizer.json: {exc}") from None
            _write_atomic(ctx, TOKENIZER_FILE, data)  # the shards name their tokenizer inside the run
            return data
        ctx.note(f"{self.step_label}: using {TOKENIZER_FILE} from the train_tokenizer step")
        trained_with = json.loads(_read(ctx, TRAINING_FILE)).get("val_fraction")
        if trained_with != self.config.val_fraction:
            ctx.note(f"{self.step_label}: train_tokenizer left val_fraction={trained_with} out of its sample but "
                     f"tokenize uses {self.config.val_fraction}: some validation text may have shaped the vocabulary")
        return _read(ctx, TOKENIZER_FILE)

    def run(self, ctx: SinkContext) -> dict[str, Any]:
        import ray

        cfg = self.config
        files = _require_documents(ctx, self.step_label)
        started = time.time()
        tokenizer_json = self._tokenizer(ctx, files)
        tokenizer = load_tokenizer(tokenizer_json)
        tokenizer_info = {"path": TOKENIZER_FILE, "sha256": sha256(tokenizer_json),
                          "vocab_size": tokenizer.get_vocab_size(), **special_token_ids(tokenizer)}
        trained_s = time.time() - started

        # 1. encode and pack, one doc_id range (packing group) per task
        packed_rel = posixpath.join(ctx.work_dir, "packed")
        workers = cfg.workers or max(1, int(ctx.num_cpus) - (1 if ctx.local else 0))
        groups = plan_groups(_profiles(ctx, files), workers, int(cfg.group_mb * (1 << 20)))
        ds = ray.data.from_items([{"unit": g.unit, "lo": g.lo, "hi": g.hi, "locations": g.locations} for g in groups],
                                 override_num_blocks=len(groups))
        ds = ds.map_batches(encode_pack_groups, batch_size=1, batch_format="pyarrow",
                            compute=ray.data.TaskPoolStrategy(size=workers),
                            num_cpus=0.5 if ctx.local else 1.0,
                            fn_kwargs={"tokenizer_json": tokenizer_json, "seq_len": cfg.seq_len,
                                       "val_fraction": cfg.val_fraction, "seed": cfg.seed,
                                       "batch_docs": cfg.batch_docs,
                                       "packed_location": _location(ctx, packed_rel),
                                       "compression": ctx.compression})
        summaries: list[dict[str, Any]] = []
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            summaries += batch.to_pylist()
            fault_point("tokenize.packed_batch")  # encoding: some groups packed, others not
        encoded_s = time.time() - started - trained_s

        # 2. shuffle globally and write shards, per split
        attempt = uuid.uuid4().hex[:8]
        per_file = rows_per_shard(cfg.shard_target_mb, cfg.seq_len)
        splits: dict[str, dict[str, Any]] = {}
        accounting: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            mine = [s for s in summaries if s["split"] == split]
            packed = sorted(s["file"] for s in mine if s["file"])
            written = shuffle_into_shards(packed, ctx.filesystem, split, _location(ctx, SHARDS_DIR),
                                          sum(s["rows"] for s in mine), per_file, attempt, ctx.compression,
                                          0.5 if ctx.local else 1.0)
            rows = sum(w["rows"] for w in written)
            documents = sum(w["documents"] for w in written)
            if rows != sum(s["rows"] for s in mine) or documents != sum(s["documents"] for s in mine):
                raise ValueError(f"{self.step_label}: the {split} shards hold {rows} rows / {documents} documents "
                                 f"but packing produced {sum(s['rows'] for s in mine)} / "
                                 f"{sum(s['documents'] for s in mine)}")
            names = commit_shards(ctx.filesystem, _path(ctx, SHARDS_DIR), split, written)
            splits[split] = {"files": [f"{SHARDS_DIR}/{n}" for n in names], "rows": rows,
                             "tokens": rows * (cfg.seq_len + 1), "documents": documents}
            accounting[split] = {k: sum(s[k] for s in mine) for k in
                                 ("documents_in", "tokens_in", "dropped_tokens", "dropped_documents")}

        documents_in = sum(a["documents_in"] for a in accounting.values())
        if documents_in != ctx.documents:
            raise ValueError(f"{self.step_label}: encoded {documents_in} documents but {ctx.input_dir}/ holds "
                             f"{ctx.documents}")
        dropped_tokens = sum(a["dropped_tokens"] for a in accounting.values())
        dropped_documents = sum(a["dropped_documents"] for a in accounting.values())
        tokens_in = sum(a["tokens_in"] for a in accounting.values())
        # Nothing is lost silently: every token and document is in a shard or counted as dropped.
        shard_tokens = sum(s["tokens"] for s in splits.values())
        shard_documents = sum(s["documents"] for s in splits.values())
        if tokens_in != shard_tokens + dropped_tokens or documents_in != shard_documents + dropped_documents:
            raise ValueError(f"{self.step_label}: {tokens_in} tokens / {documents_in} documents in, but "
                             f"{shard_tokens} + {dropped_tokens} dropped tokens / {shard_documents} + "
                             f"{dropped_documents} dropped documents out")
        manifest = shard_manifest(cfg.seq_len, tokenizer_info, splits, dropped_tokens, cfg.seed, cfg.val_fraction)
        _write_atomic(ctx, SHARDS_MANIFEST, _json(manifest))  # last: the shards are complete
        ctx.filesystem.delete_dir(_path(ctx, ctx.work_dir))  # packed rows: scratch, now in the shards
        return {"in": documents_in, "kept": documents_in, "rejected": {}, "steps": [],
                "tokens": {"in": tokens_in, "train": splits["train"]["tokens"], "val": splits["val"]["tokens"],
                           "dropped": dropped_tokens},
                "rows": {s: splits[s]["rows"] for s in SPLITS},
                "documents": {"train": splits["train"]["documents"], "val": splits["val"]["documents"],
                              "dropped": dropped_documents,
                              "split_in": {s: accounting[s]["documents_in"] for s in SPLITS}},
                "seconds": {"tokenizer": round(trained_s, 3), "encode_pack": round(encoded_s, 3),
                            "shuffle_write": round(time.time() - started - trained_s - encoded_s, 3)}}
