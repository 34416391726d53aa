"""Model checkpoints in an object store (``s3://``, ``gs://``, … any pyarrow filesystem URI).

Training writes its run directory through pyarrow, so on a cluster the checkpoints live wherever
``--out`` points. Loading (safetensors, ``model_config.json``, the tokenizer) needs local files, so a
checkpoint given as a URI is copied once into a local cache and loaded from there, the way Ray
Train's ``Checkpoint.as_directory()`` and HF's ``snapshot_download`` do it.

What is copied is what the local rules would pick (:func:`training.checkpoint` layout): the folder
itself when it is a checkpoint (``model_config.json`` + ``model.safetensors``) or a ``transformers``
export (``config.json`` + weights); else a fine-tuning run's merged ``model/``; else the newest
complete ``checkpoints/step-NNNNNN/``. The copy keeps the run layout (``<run>/checkpoints/step-N/``
beside ``<run>/tokenizer/tokenizer.json``) so :func:`training.checkpoint.find_tokenizer` finds the
run's tokenizer as it does locally. Nothing else of the run (shards, data) is fetched.

The cache is ``$GRISTMILL_CACHE/remote`` (default ``~/.cache/gristmill/remote``), one folder per
run URI. A copy is reused while every file has the size the store lists; it is written under a
temporary name and renamed, so processes loading the same checkpoint at once (the workers of one
fine-tuning run) never see half a copy.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import uuid
from pathlib import Path

import pyarrow.fs as pafs

CACHE_ENV = "GRISTMILL_CACHE"
CHECKPOINT_FILES = ("model_config.json", "model.safetensors")
HF_FILES = ("config.json", "model.safetensors")
HF_SHARDED_FILES = ("config.json", "model.safetensors.index.json")
MERGED_DIR = "model"
TOKENIZER = "tokenizer/tokenizer.json"
TRAINING_STATE = re.compile(r"^(optimizer\.pt|rng-rank\d+\.pt)$")


def is_remote(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gristmill")
    return Path(base) / "remote"


def localize(location: str | os.PathLike) -> str:
    """``location`` unchanged when it is local; for a URI, the local copy of the checkpoint it means."""
    if not is_remote(location):
        return str(location)
    fs, chosen, scheme = _resolve(str(location))
    # Keep the run layout: <run>/checkpoints/step-N/ (tokenizer at <run>/tokenizer/) or <run>/<folder>/.
    parent = posixpath.dirname(chosen)
    if posixpath.basename(parent) == "checkpoints":
        run, inside = posixpath.dirname(parent), posixpath.relpath(chosen, posixpath.dirname(parent))
    else:
        run, inside = parent, posixpath.basename(chosen)
    local_run = cache_root() / hashlib.sha256(f"{scheme}://{run}".encode()).hexdigest()[:20]
    _mirror(fs, chosen, local_run / inside)
    tokenizer = posixpath.join(run, TOKENIZER)
    if fs.get_file_info(tokenizer).type == pafs.FileType.File:
        _mirror_file(fs, tokenizer, local_run / TOKENIZER)
    return str(local_run / inside)


def resolve_remote(location: str) -> str:
    """The URI of the checkpoint folder a URI means (nothing is copied): what a driver hands to workers
    on other nodes, each of which then loads it through :func:`localize`."""
    fs, chosen, scheme = _resolve(location)
    return f"{scheme}://{chosen}"


def tokenizer_uri(checkpoint: str) -> str | None:
    """The URI of a remote checkpoint's ``tokenizer.json``: in the folder, else the run's."""
    fs, chosen, scheme = _resolve(checkpoint)
    parent = posixpath.dirname(chosen)
    for candidate in (posixpath.join(chosen, "tokenizer.json"), posixpath.join(posixpath.dirname(parent), TOKENIZER)):
        if fs.get_file_info(candidate).type == pafs.FileType.File:
            return f"{scheme}://{candidate}"
    return None


def remote_file_identity(location: str, names: tuple[str, ...]) -> dict:
    """Size and modification time of the first of ``names`` in the checkpoint a URI means: what
    tells a resumed evaluation whether the weights changed since (the local copy's times would not)."""
    fs, chosen, scheme = _resolve(location)
    for name in names:
        info = fs.get_file_info(posixpath.join(chosen, name))
        if info.type == pafs.FileType.File:
            return {"checkpoint": f"{scheme}://{chosen}", "size": info.size, "mtime_ns": info.mtime_ns}
    raise FileNotFoundError(f"no {' or '.join(names)} in {scheme}://{chosen}")


def read_bytes(location: str) -> bytes:
    """A file's bytes from a local path or a pyarrow filesystem URI."""
    if not is_remote(location):
        return Path(location).read_bytes()
    fs, path = pafs.FileSystem.from_uri(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def _resolve(location: str) -> tuple[pafs.FileSystem, str, str]:
    uri = location.rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    chosen = _checkpoint_in(fs, path)
    if chosen is None:
        raise FileNotFoundError(f"{uri} holds no model checkpoint (model.safetensors + model_config.json), no "
                                "transformers export (config.json + model.safetensors), no model/ and no "
                                "complete checkpoints/step-* with model weights")
    return fs, chosen, uri.split("://", 1)[0]


def _has(fs: pafs.FileSystem, folder: str, names: tuple[str, ...]) -> bool:
    infos = fs.get_file_info([posixpath.join(folder, n) for n in names])
    return all(i.type == pafs.FileType.File for i in infos)


def _checkpoint_in(fs: pafs.FileSystem, path: str) -> str | None:
    """The store path of the checkpoint folder ``path`` means (the local resolution rules)."""
    from training.resume import latest_complete

    if _has(fs, path, CHECKPOINT_FILES) or _has(fs, path, HF_FILES) or _has(fs, path, HF_SHARDED_FILES):
        return path
    merged = posixpath.join(path, MERGED_DIR)
    if _has(fs, merged, ("model.safetensors",)):
        return merged
    latest = latest_complete(fs, posixpath.join(path, "checkpoints"))
    if latest and _has(fs, latest[1], ("model.safetensors",)):
        return latest[1]
    return None


def _listing(fs: pafs.FileSystem, folder: str) -> dict[str, int]:
    """The files a model load needs: the optimizer state and RNG states of a training checkpoint
    (twice the weights, for resuming only) stay in the store."""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    return {posixpath.relpath(i.path, folder): i.size for i in infos
            if i.type == pafs.FileType.File and not TRAINING_STATE.match(posixpath.basename(i.path))}


def _local_listing(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _mirror(fs: pafs.FileSystem, remote: str, local: Path) -> None:
    """Copy the folder ``remote`` to ``local`` unless an identical copy (names and sizes) is there."""
    wanted = _listing(fs, remote)
    if local.is_dir() and _local_listing(local) == wanted:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.parent / f".tmp-{uuid.uuid4().hex[:8]}-{local.name}"
    local_fs = pafs.LocalFileSystem()
    for rel in sorted(wanted):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(posixpath.join(remote, rel), str(tmp / rel), source_filesystem=fs,
                        destination_filesystem=local_fs)
    if local.exists():  # a stale copy (the checkpoint was rewritten): replace it
        shutil.rmtree(local, ignore_errors=True)
    try:
        os.rename(tmp, local)
    except OSError:  # another process renamed its identical copy first
        shutil.rmtree(tmp, ignore_errors=True)


def _mirror_file(fs: pafs.FileSystem, remote: str, local: Path) -> None:
    size = fs.get_file_info(remote).size
    if local.is_file() and local.stat().st_size == size:
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.parent / f".tmp-{uuid.uuid4().hex[:8]}-{local.name}"
    pafs.copy_files(remote, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    os.replace(tmp, local)
