"""Turn a curate spec's ordered steps into stages.

Consecutive row-wise ops become one *stream* stage (one streaming Ray Data pass); each global op is a
stage of its own that reads and writes Parquet. Every stage carries a chained hash of everything that
decides its output (the input listing for the first stage, its own steps, the hash of the stage
before), so changing a step invalidates exactly that stage and the ones after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.ingest.listing import InputFile
from curation.operator import RowOp
from pipelines.specs import LoadedSpec, Step, canonical_hash

DATA_DIR = "data"
INGEST_LABEL = "_ingest"


@dataclass
class Stage:
    number: int
    kind: str  # "stream" | "global"
    steps: list[Step]
    hash: str = ""
    output_dir: str = ""
    reads_inputs: bool = False  # the first stage reads the spec's input files
    rejected_labels: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        what = "stream" if self.kind == "stream" else self.steps[0].label
        return f"{self.number:02d}-{what}"

    def describe(self) -> str:
        names = ", ".join(s.label for s in self.steps) or "read + write"
        return f"{self.kind} [{names}]"


def plan_stages(spec: LoadedSpec, listing: list[InputFile]) -> list[Stage]:
    stages: list[Stage] = []
    for step in spec.steps:
        is_row = issubclass(step.op_class, RowOp)
        if is_row and stages and stages[-1].kind == "stream":
            stages[-1].steps.append(step)
        else:
            stages.append(Stage(len(stages) + 1, "stream" if is_row else "global", [step]))
    if not stages or stages[0].kind != "stream":
        # Inputs are always read by a stream stage: ingest alone, or ingest fused with row ops.
        stages.insert(0, Stage(0, "stream", []))
        for i, stage in enumerate(stages):
            stage.number = i + 1
    stages[0].reads_inputs = True

    resolved = spec.resolved()
    previous = canonical_hash({
        "inputs": [f.as_dict() for f in listing],
        "input_config": resolved.get("input"),
        "output": resolved.get("output"),
    })
    for i, stage in enumerate(stages):
        stage.hash = canonical_hash({"previous": previous, "kind": stage.kind,
                                     "steps": [s.as_yaml() for s in stage.steps]})
        previous = stage.hash
        stage.output_dir = DATA_DIR if i == len(stages) - 1 else f"stages/{stage.id}"
        stage.rejected_labels = ([INGEST_LABEL] if stage.reads_inputs else []) + [s.label for s in stage.steps]
    return stages
