"""What every report section reads: one run directory, its manifest and spec, and the one-pass scan
of its Parquet (computed on first use and shared, so ``text`` is decompressed once per report).

Stats come from data (DESIGN.md, "Stats come from data"): the manifest and spec give names, order,
timings and thresholds; every count comes from the Parquet files themselves.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from pipelines.report.scan import FolderStats, ScoreRange, folder_schema, scan_folder, score_ranges
from pipelines.report.thresholds import Threshold, thresholds
from pipelines.rundir import RunDir

KEPT = "data"
INGEST = "_ingest"


@dataclass
class StepInfo:
    """One spec step as the report sees it: its label (the name of its rejected folder), op and config."""

    label: str
    op: str
    config: dict[str, Any]


@dataclass
class RunContext:
    run: RunDir
    # Histogram ranges to use instead of this run's own (``--compare`` bins both runs alike).
    shared_ranges: dict[str, ScoreRange] | None = None
    _scans: dict[str, FolderStats] = field(default_factory=dict)

    @classmethod
    def open(cls, location: str, shared_ranges: dict[str, ScoreRange] | None = None) -> "RunContext":
        return cls(RunDir.open(location), shared_ranges)

    # ------------------------------------------------------------------ metadata

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return self.run.read_json("manifest.json") if self.run.exists("manifest.json") else {}

    @cached_property
    def spec(self) -> dict[str, Any]:
        if not self.run.exists("spec.yaml"):
            return {}
        return yaml.safe_load(self.run.read_bytes("spec.yaml")) or {}

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.spec.get("name") or posixpath.basename(self.run.root))

    @cached_property
    def steps(self) -> list[StepInfo]:
        """Spec steps with the labels the planner gives them (op name, or ``op_2`` when it repeats)."""
        seen: dict[str, int] = {}
        out = []
        for entry in self.spec.get("steps") or []:
            op, config = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            seen[op] = seen.get(op, 0) + 1
            out.append(StepInfo(op if seen[op] == 1 else f"{op}_{seen[op]}", op, config or {}))
        return out

    @cached_property
    def step_order(self) -> list[str]:
        """Rejected-folder labels in pipeline order: the manifest's stages, then the spec, then any
        folder on disk neither names (so nothing written is left out of the funnel)."""
        order: list[str] = []
        for stage in self.manifest.get("stages") or []:
            for label in stage.get("rejected") or []:
                if label not in order:
                    order.append(label)
        if not order:
            order = [INGEST] + [s.label for s in self.steps]
        for label in self.run.list_dirs("rejected"):
            if label not in order:
                order.append(label)
        return order

    # ------------------------------------------------------------------ data

    def files(self, rel: str) -> list[str]:
        return self.run.list_files(rel, ".parquet", recursive=True)

    @cached_property
    def columns(self) -> set[str]:
        """Every column of every Parquet folder (from file footers)."""
        names: set[str] = set()
        for files in self.folder_files():
            schema = folder_schema(self.run.fs, files)
            names |= set(schema.names) if schema is not None else set()
        return names

    @cached_property
    def thresholds(self) -> dict[str, list[Threshold]]:
        """Score column → the thresholds this run's spec sets on it (columns the run has)."""
        return thresholds(self.steps, self.columns)

    @cached_property
    def ranges(self) -> dict[str, ScoreRange]:
        """Histogram bins per score column: this run's min..max widened to its thresholds."""
        if self.shared_ranges is not None:
            return self.shared_ranges
        include = {col: [t.value for t in ts] for col, ts in self.thresholds.items()}
        return score_ranges(self.run.fs, self.folder_files(), include)

    def folder_files(self) -> list[list[str]]:
        return [self.files(KEPT)] + [self.files(f"rejected/{s}") for s in self.step_order]

    def kept(self) -> FolderStats:
        return self._scan(KEPT)

    def rejected(self, label: str) -> FolderStats:
        return self._scan(f"rejected/{label}")

    def all_folders(self) -> list[tuple[str | None, FolderStats]]:
        """(step label or None for kept, stats) for kept and every rejected folder, in order."""
        return [(None, self.kept())] + [(label, self.rejected(label)) for label in self.step_order]

    def _scan(self, rel: str) -> FolderStats:
        if rel not in self._scans:
            self._scans[rel] = scan_folder(self.run.fs, self.files(rel), self.ranges)
        return self._scans[rel]
