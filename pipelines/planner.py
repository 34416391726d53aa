"""Turn a curate spec's ordered steps into stages.

Consecutive row-wise ops become one *stream* stage (one streaming Ray Data pass); each global op is a
stage of its own that reads and writes Parquet. *Sink* steps (``tokenize``) may only close the spec:
each is a stage that reads ``data/`` and writes folders of its own (``shards/``), never ``data/``.
Every stage carries a chained hash of everything that
decides its output (the input listing for the first stage, its own steps, the hash of the stage
before), so changing a step invalidates exactly that stage and the ones after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.ingest.listing import InputFile
from curation.operator import RowOp, SinkOp
from pipelines.specs import LoadedSpec, Step, canonical_hash

DATA_DIR = "data"
INGEST_LABEL = "_ingest"


@dataclass
class Stage:
    number: int
    kind: str  # "stream" | "global" | "sink"
    steps: list[Step]
    hash: str = ""
    output_dir: str = ""
    reads_inputs: bool = False  # the first stage reads the spec's input files
    rejected_labels: list[str] = field(default_factory=list)
    # Sinks only: the run-directory folders the step owns, and the ops of the sink steps before it.
    outputs: list[str] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)

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
        elif issubclass(step.op_class, SinkOp):
            stages.append(Stage(len(stages) + 1, "sink", [step]))
        else:
            if stages and stages[-1].kind == "sink":
                raise ValueError(f"step {step.label!r} follows the sink {stages[-1].steps[0].label!r}; "
                                 "sinks (tokenize …) only close a spec's steps")
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
    # Sinks read data/ and write folders of their own; the last stage before them writes data/.
    last_data = max(i for i, s in enumerate(stages) if s.kind != "sink")
    upstream: list[str] = []
    for i, stage in enumerate(stages):
        stage.hash = canonical_hash({"previous": previous, "kind": stage.kind,
                                     "steps": [s.as_yaml() for s in stage.steps]})
        previous = stage.hash
        if stage.kind == "sink":
            step = stage.steps[0]
            stage.outputs = step.op_class(step.config, step.label).outputs(list(upstream))
            stage.output_dir = stage.outputs[-1]
            stage.upstream = list(upstream)
            upstream.append(step.op)
            continue
        stage.output_dir = DATA_DIR if i == last_data else f"stages/{stage.id}"
        stage.rejected_labels = ([INGEST_LABEL] if stage.reads_inputs else []) + [s.label for s in stage.steps]
    return stages
