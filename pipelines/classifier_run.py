"""Running a ``kind: classifier`` spec: train a fastText classifier from labelled data.

Training runs as one Ray task (so on a cluster it lands on a worker with the CPUs it asks for) and
writes the model, its held-out metrics and its config into ``<run>/model/``. The stage is skipped
on a rerun when the training config and the data files are unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import ray

from curation.ingest.listing import expand
from pipelines.manifest import Manifest
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import LoadedSpec, canonical_hash

STAGE_ID = "01-train"
MODEL_DIR = "model"


def _data_files(train: dict[str, Any]) -> list[dict[str, Any]]:
    from curation.classifiers.train import ClassifierTrainConfig

    files = []
    for pattern in ClassifierTrainConfig.model_validate(train).data_paths():
        files += [{"path": p, "size": s} for p, s in expand(pattern)]
    return files


@ray.remote
def _train_task(config: dict[str, Any], out_dir: str) -> dict[str, Any]:
    from curation.classifiers.train import ClassifierTrainConfig, train_classifier

    return train_classifier(ClassifierTrainConfig.model_validate(config), out_dir)


@dataclass
class ClassifierRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter

    def execute(self) -> Manifest:
        resolved = self.spec.resolved()
        train = resolved["train"]
        files = _data_files(train)
        stage_hash = canonical_hash({"train": train, "files": files})
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(resolved), status="running",
                             inputs=[{"index": i, "location": f["path"], "size": f["size"]} for i, f in enumerate(files)])
        record = manifest.stage(STAGE_ID)
        if record and record["hash"] == stage_hash and record["status"] == "done" and self.run.exists(MODEL_DIR, "metrics.json"):
            self.reporter.note(f"stage {STAGE_ID}: skipped, the model is trained with the same config and data")
        else:
            if record and record["hash"] != stage_hash:
                self.reporter.note(f"stage {STAGE_ID}: the training config or data changed; training again")
            self.run.delete_dir(MODEL_DIR)
            record = {"id": STAGE_ID, "kind": "train", "steps": ["train_classifier"], "hash": stage_hash,
                      "status": "running", "output_dir": MODEL_DIR, "rejected": [], "started": now()}
            manifest.data["stages"] = [record]
            manifest.save(self.run)
            started = time.time()
            # fastText trains with `thread` threads; never ask for more CPUs than the cluster has.
            cpus = max(1, min(int(train.get("thread") or 1), int(ray.cluster_resources().get("CPU", 1))))
            metrics = ray.get(_train_task.options(num_cpus=cpus).remote(train, self.run.uri(MODEL_DIR)))
            record.update(status="done", finished=now(), seconds=round(time.time() - started, 3), metrics=metrics)
        manifest.put_stage(record)
        manifest.data["totals"] = {}
        manifest.data["status"] = "done"
        manifest.save(self.run)
        return manifest
