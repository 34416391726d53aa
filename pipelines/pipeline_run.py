"""Running a ``kind: pipeline`` spec: its stages in order, each in ``<run>/stages/<name>/`` through the
runner of its kind (:func:`pipelines.dispatch.execute_spec`), as if that stage's spec were run alone.

The pipeline's own ``<run>/manifest.json`` (kind ``pipeline``) holds one record per stage: its hash,
status, start and end, wall seconds and a few headline numbers from the stage's own manifest.

A stage's hash is the canonical hash of its resolved spec (defaults filled, paths absolute) with
every upstream stage's run directory replaced by that stage's hash, so a change anywhere upstream
changes every hash downstream. On a rerun:

- finished, same hash: skipped;
- unfinished, same hash: the stage's runner resumes it (curate per input file, pretrain / finetune
  from the newest checkpoint, eval per checkpoint);
- hash changed: a curate stage whose upstream stages are unchanged keeps its own finer invalidation
  (its runner re-runs only the stages whose step hashes changed, and those after them); every other
  changed stage starts over in a cleared folder (see :func:`decide`).

Fields a kind ignores when it resumes (``log_every``, ``keep`` … see its ``NOT_HASHED``) are left out
of the stage hash as well, so changing them never retrains a finished stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import yaml

from curation.faults import fault_point
from pipelines.errors import RunError, SpecError, storage_problem
from pipelines.manifest import Manifest
from pipelines.pipeline_spec import STAGES_DIR, PipelinePlan, stage_location, tokenize_locations
from pipelines.rundir import RunDir, now
from pipelines.runner import Reporter
from pipelines.specs import LoadedSpec, canonical_hash

ALWAYS_UNHASHED = ("name", "description", "ray")
HEADLINE_TRAINING = ("step", "tokens", "loss", "val_loss", "val_ppl", "val_accuracy", "val_margin", "val_kl")


def resume_only_fields(kind: str) -> tuple[str, ...]:
    """Fields the kind's own runner leaves out of its hash (they may change between a run and its resume)."""
    if kind == "pretrain":
        from pipelines.pretrain_run import NOT_HASHED
    elif kind == "finetune":
        from pipelines.finetune_run import NOT_HASHED
    else:
        NOT_HASHED = ()  # noqa: N806
    return ALWAYS_UNHASHED + tuple(NOT_HASHED)


def stage_hash(kind: str, resolved: dict[str, Any], root: str, upstream_hashes: dict[str, str]) -> str:
    hashed = {k: v for k, v in resolved.items() if k not in resume_only_fields(kind)}
    tokens = {name: f"stage:{h}" for name, h in upstream_hashes.items()}
    return canonical_hash({"kind": kind, "spec": tokenize_locations(hashed, root, tokens)})


def decide(kind: str, record: dict[str, Any] | None, new_hash: str, upstream: dict[str, str]) -> str:
    """What to do with a stage that is not finished-and-unchanged: ``resume`` (same hash, unfinished:
    the kind's own resume), ``refine`` (a curate stage whose own spec changed while its upstream
    stages did not: its runner re-runs only the changed steps onward) or ``fresh`` (clear the folder
    and start over: a new stage, another kind there before, or changed upstream stages, which a
    curate runner could not see when they only enter through an op's path, e.g. a classifier model)."""
    if record is None:
        return "fresh"  # its folder, if any, was not written by this pipeline's record of it
    if record.get("kind") != kind:
        return "fresh"
    if record["hash"] == new_hash:
        return "resume"
    if kind == "curate" and record.get("upstream", {}) == upstream:
        return "refine"
    return "fresh"


@dataclass
class PipelineRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter
    session: Any  # pipelines.ray_session.RaySession

    def execute(self) -> Manifest:
        from pipelines.dispatch import execute_spec

        plan: PipelinePlan = self.spec.pipeline
        root = self.run.uri()
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, "pipeline")
        previous = {r["id"]: r for r in manifest.data["stages"]}
        manifest.data.update(spec_hash=canonical_hash(self.spec.resolved()), status="running",
                             stages=[previous[s.name] for s in plan.stages if s.name in previous])
        manifest.save(self.run)
        hashes: dict[str, str] = {}
        total = len(plan.stages)
        for number, stage in enumerate(plan.stages, start=1):
            label = f"stage {number}/{total} {stage.name} ({stage.kind})"
            try:
                # the paths it takes from earlier stages (done now), then the stage against them
                missing = plan.missing_upstream_outputs(stage.name, root)
                if missing:
                    raise SpecError(missing)
                loaded = plan.load_stage(stage.name, root)
            except SpecError as exc:
                self._fail(manifest, stage.name, stage.kind, "spec error: " + "; ".join(map(str, exc.issues)))
                raise RunError(f"{label}: spec error(s):\n  " + "\n  ".join(map(str, exc.issues))) from None
            resolved = loaded.resolved()
            upstream = {name: hashes[name] for name in stage.refs}
            h = stage_hash(stage.kind, resolved, root, upstream)
            hashes[stage.name] = h
            record = manifest.stage(stage.name)
            stage_run = RunDir.open(stage_location(root, stage.name))
            if record and record["hash"] == h and record["status"] == "done" and stage_run.exists("manifest.json"):
                self.reporter.note(f"{label}: skipped, finished with the same spec and upstream stages "
                                   f"({record.get('seconds', 0):.1f}s when it ran)")
                continue
            action = decide(stage.kind, record, h, upstream)
            if action == "refine":
                self.reporter.note(f"{label}: changed; its runner re-runs the steps that changed and those after them")
            elif action == "resume":
                self.reporter.note(f"{label}: unfinished; resuming")
            else:
                self.reporter.note(f"{label}: changed (its spec or an upstream stage); starting it over" if record
                                   else f"{label}: running")
                stage_run.clear()
            record = {"id": stage.name, "kind": stage.kind, "hash": h, "status": "running",
                      "run_dir": f"{STAGES_DIR}/{stage.name}", "upstream": upstream, "started": now()}
            manifest.put_stage(record)
            manifest.save(self.run)
            stage_run.makedirs()
            stage_run.write_bytes("spec.yaml", yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).encode())
            started = time.time()
            try:
                stage_manifest = execute_spec(loaded, stage_run, self.reporter, self.session)
            except Exception as exc:  # noqa: BLE001 - a full or read-only disk too; anything else goes on as it is
                known = isinstance(exc, (RunError, FileNotFoundError))
                problem = None if known else storage_problem(exc, stage_run.root)
                if not known and problem is None:
                    raise
                message = str(exc) if problem is None else problem.message(stage_run.location)
                record.update(status="failed", finished=now(), seconds=round(time.time() - started, 3),
                              error=message[-2000:])
                manifest.data["status"] = "failed"
                try:
                    manifest.save(self.run)
                except OSError:  # the disk that failed the stage may not take the record either
                    if problem is None:
                        raise
                raise RunError(f"{label}: {message}") from None
            record.update(status="done", finished=now(), seconds=round(time.time() - started, 3),
                          headline=headline(stage.kind, stage_manifest.data, stage_run))
            manifest.save(self.run)
            fault_point("pipeline.stage_done")  # between stages: this one recorded done, the next not started
            self.reporter.note(f"{label}: done in {record['seconds']:.1f}s — {format_headline(record['headline'])}")
        manifest.data["status"] = "done"
        manifest.save(self.run)
        return manifest

    def _fail(self, manifest: Manifest, name: str, kind: str, error: str) -> None:
        record = manifest.stage(name) or {"id": name, "kind": kind, "hash": "", "run_dir": f"{STAGES_DIR}/{name}"}
        record.update(status="failed", finished=now(), error=error[-2000:])
        manifest.put_stage(record)
        manifest.data["status"] = "failed"
        manifest.save(self.run)


# --------------------------------------------------------------------------------------------------
# headline numbers: read from the stage's own manifest (and shards manifest), never recomputed


def headline(kind: str, stage_manifest: dict[str, Any], stage_run: RunDir) -> dict[str, Any]:
    if kind == "curate":
        return _curate_headline(stage_manifest, stage_run)
    out: dict[str, Any] = {}
    for record in stage_manifest.get("stages") or []:
        metrics = record.get("metrics") or {}
        if kind == "eval":
            out.update({f"{record.get('label', record['id'])}: {k}": v for k, v in metrics.items()})
        elif kind == "classifier":
            out.update({k: metrics[k] for k in ("accuracy", "macro_f1", "roc_auc", "f1") if k in metrics})
        elif record.get("kind") in ("pretrain", "finetune"):
            # the training loss, and the method's own figures (reward / DPO accuracy and margin, distillation KL)
            out.update({k: v for k, v in metrics.items() if k in HEADLINE_TRAINING})
    return out


def _curate_headline(stage_manifest: dict[str, Any], stage_run: RunDir) -> dict[str, Any]:
    t = stage_manifest.get("totals") or {}
    out: dict[str, Any] = {}
    if t:
        out.update(read=t.get("read"), kept=t.get("kept"), rejected=sum((t.get("rejected") or {}).values()),
                   quarantined=t.get("quarantined", 0))
    if stage_run.exists("shards", "manifest.json"):
        shards = stage_run.read_json("shards/manifest.json")
        splits = shards.get("splits") or {}
        out.update(train_tokens=(splits.get("train") or {}).get("tokens"), val_tokens=(splits.get("val") or {}).get("tokens"),
                   vocab_size=(shards.get("tokenizer") or {}).get("vocab_size"))
    return out


def format_headline(values: dict[str, Any] | None) -> str:
    parts = []
    for key, value in (values or {}).items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{key} {value:,}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return ", ".join(parts) or "–"


def status_rows(manifest: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(stage, kind, status, wall time, headline) per stage, for ``gristmill status``."""
    rows = []
    for record in manifest.get("stages") or []:
        seconds = record.get("seconds")
        wall = f"{seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
        text = format_headline(record.get("headline")) if record["status"] == "done" else (record.get("error") or "")[:120]
        rows.append((record["id"], record.get("kind", ""), record["status"], wall, text))
    return rows
