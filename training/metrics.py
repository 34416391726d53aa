"""Training metrics: throughput, MFU, and the ``metrics/train.csv`` the report reads.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOPs / peak FLOPs of the devices.
Achieved FLOPs come from :meth:`ModelConfig.flops_per_token` (6N + attention) × tokens/s. Peaks are
the vendors' dense (no sparsity) tensor-core figures for the training precision; a CPU has no honest
single peak, so MFU is left empty there rather than set against a made-up number.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from typing import Any

# Dense peak FLOP/s per device by (device name fragment, precision). Sources: NVIDIA H100 / H200 /
# A100 / L4 / A10G datasheets (bf16 and TF32 tensor-core figures without sparsity). H100 = SXM5.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp32": 494.5e12},
    "H100 PCIe": {"bf16": 756e12, "fp32": 378e12},
    "H100": {"bf16": 989e12, "fp32": 494.5e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362e12, "fp32": 183e12},
    "A10G": {"bf16": 70e12, "fp32": 35e12},
    "L4": {"bf16": 121e12, "fp32": 60e12},
}

CSV_COLUMNS = ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "val_loss", "val_ppl", "wall_time"]


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Peak FLOP/s of one device for ``precision`` ("bf16-mixed" → bf16; "32" → TF32 tensor cores,
    which PyTorch uses for fp32 matmuls when allowed), or None when the device is not in the table
    (CPUs included)."""
    if not device_name:
        return None
    kind = "bf16" if precision.startswith("bf16") else "fp32"
    for fragment, peaks in PEAK_FLOPS.items():  # ordered: "H100 PCIe" before "H100"
        if fragment.lower() in device_name.lower():
            return peaks[kind]
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak_per_device: float | None, devices: int) -> float | None:
    if not peak_per_device or tokens_per_s <= 0:
        return None
    return flops_per_token * tokens_per_s / (peak_per_device * devices)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))  # beyond e^50 the number says nothing more


class MetricsCsv:
    """Rows of ``train.csv``, kept in memory on rank 0 and rewritten atomically on every flush, so
    the file is valid at every moment and works on object stores (no appends there). On resume the
    rows after the checkpoint's step are dropped: the resumed run writes those steps again."""

    def __init__(self, fs: Any, path: str, resume_step: int) -> None:
        self.fs, self.path = fs, path
        self.rows: list[dict[str, Any]] = []
        if resume_step > 0 and _exists(fs, path):
            with fs.open_input_stream(path) as f:
                for row in csv.DictReader(io.StringIO(f.read().decode())):
                    if int(row["step"]) <= resume_step:
                        self.rows.append(row)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        out = io.StringIO()
        # The contract's columns first, then any a module adds (fine-tuning: accuracy, margin …).
        columns = CSV_COLUMNS + [k for k in dict.fromkeys(k for row in self.rows for k in row) if k not in CSV_COLUMNS]
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
        parent = posixpath.dirname(self.path)
        self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, ".tmp-train.csv")
        with self.fs.open_output_stream(tmp) as f:
            f.write(out.getvalue().encode())
        self.fs.move(tmp, self.path)


def _exists(fs: Any, path: str) -> bool:
    import pyarrow.fs as pafs

    return fs.get_file_info(path).type == pafs.FileType.File


def _fmt(value: Any) -> Any:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: resume tests compare curves
    return value
