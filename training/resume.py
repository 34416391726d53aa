"""What a training checkpoint holds beyond the weights, and finding the one to resume from.

``checkpoints/step-NNNNNN/``:

* ``model.safetensors`` + ``model_config.json`` (:mod:`training.checkpoint`);
* ``optimizer.pt``: the optimizer's state dict (tensors, numbers and lists only, so it loads with
  ``torch.load(weights_only=True)``);
* ``rng-rank{r}.pt``: each worker's torch RNG state (dropout), ``weights_only`` too;
* ``trainer_state.json``: step, tokens, rows consumed, the LR scheduler's state, world size and the
  batch geometry, written last by rank 0, so its presence with every rank's RNG file marks a
  complete checkpoint.

The data position is ``rows_consumed`` of the seeded row stream (:mod:`training.shards`).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

import pyarrow.fs as pafs
import torch

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
STEP_DIR = re.compile(r"^step-(\d{6,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def capture_rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write_state(directory: str, state: dict[str, Any]) -> None:
    with open(posixpath.join(directory, STATE_FILE), "w") as f:
        json.dump(state, f, indent=2)


def read_state(fs: pafs.FileSystem, directory: str) -> dict[str, Any]:
    with fs.open_input_stream(posixpath.join(directory, STATE_FILE)) as f:
        return json.loads(f.read())


def is_complete(fs: pafs.FileSystem, directory: str) -> bool:
    try:
        state = read_state(fs, directory)
    except (FileNotFoundError, OSError, json.JSONDecodeError):
        return False
    weights = state.get("weights_file", "model.safetensors")  # fine-tuning: adapter.safetensors …
    needed = [OPTIMIZER_FILE, weights] + [rng_file(r) for r in range(int(state.get("world_size", 1)))]
    return all(fs.get_file_info(posixpath.join(directory, n)).type == pafs.FileType.File for n in needed)


def latest_complete(fs: pafs.FileSystem, checkpoints_dir: str) -> tuple[int, str] | None:
    """(step, path) of the newest complete ``step-NNNNNN`` checkpoint, or None."""
    infos = fs.get_file_info(pafs.FileSelector(checkpoints_dir, allow_not_found=True))
    found = []
    for info in infos:
        m = STEP_DIR.match(posixpath.basename(info.path))
        if info.type == pafs.FileType.Directory and m:
            found.append((int(m.group(1)), info.path))
    for step, path in sorted(found, reverse=True):
        if is_complete(fs, path):
            return step, path
    return None


def prune(fs: pafs.FileSystem, checkpoints_dir: str, keep: int | None) -> list[str]:
    """Delete all but the newest ``keep`` step directories. Ray Train prunes what one ``fit`` reported;
    checkpoints of an earlier, killed driver are not in its books, so the run prunes once at the end."""
    if not keep:
        return []
    infos = fs.get_file_info(pafs.FileSelector(checkpoints_dir, allow_not_found=True))
    steps = sorted((int(m.group(1)), i.path) for i in infos
                   if i.type == pafs.FileType.Directory and (m := STEP_DIR.match(posixpath.basename(i.path))))
    removed = [path for _, path in steps[:-keep]]
    for path in removed:
        fs.delete_dir(path)
    return removed


def load_tensors(path: str) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)
