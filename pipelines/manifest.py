"""``manifest.json``: the run's memory. Which spec (hash), which inputs (with their stable file
indices), each stage's state, outputs and counts. Only the driver writes it, atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.rundir import RunDir, now

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run: RunDir) -> "Manifest | None":
        if not run.exists(MANIFEST):
            return None
        return cls(run.read_json(MANIFEST))

    @classmethod
    def new(cls, name: str, kind: str) -> "Manifest":
        return cls({"format": FORMAT_VERSION, "name": name, "kind": kind, "created": now(), "updated": now(),
                    "status": "running", "spec_hash": "", "inputs": [], "stages": [], "totals": {}})

    def save(self, run: RunDir) -> None:
        self.data["updated"] = now()
        run.write_json(MANIFEST, self.data)

    def stage(self, stage_id: str) -> dict[str, Any] | None:
        for record in self.data["stages"]:
            if record["id"] == stage_id:
                return record
        return None

    def put_stage(self, record: dict[str, Any]) -> None:
        stages = self.data["stages"]
        for i, existing in enumerate(stages):
            if existing["id"] == record["id"]:
                stages[i] = record
                return
        stages.append(record)
