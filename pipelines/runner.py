"""Running a curate spec: plan stages, skip what is done, resume what was cut, count everything.

The driver never holds documents: Ray Data tasks read, transform and write, and the driver consumes
only the writers' per-file summaries, from which it commits units and builds the counts in
``manifest.json``. Counts satisfy, for every run: read = kept + rejected (all steps) + quarantined.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from curation.faults import fault_point
from curation.ingest.base import get_reader
from curation.ingest.listing import InputFile, list_inputs
from curation.operator import REASON, REJECTED_BY, UNIT, GlobalContext, SinkContext
from pipelines.errors import RunError
from pipelines.manifest import Manifest
from pipelines.planner import DATA_DIR, INGEST_LABEL, Stage, plan_stages
from pipelines.ray_session import cluster_size
from pipelines.rundir import RunDir, now
from pipelines.specs import LoadedSpec, canonical_hash
from pipelines.stream_pass import (PassContext, Unit, group_units, parse_part_name, process_and_write, progress_dir,
                                   read_units, step_specs, unit_prefix, write_outputs)


class Reporter:
    """What the runner tells its user. The CLI draws it with rich; tests and embedders may ignore it."""

    def note(self, message: str) -> None: ...
    def stage_skipped(self, stage: Stage, why: str) -> None: ...
    def stage_started(self, stage: Stage, total_units: int, pending_units: int, pending_bytes: int) -> None: ...
    def progress(self, units_done: int, rows: int, bytes_done: int) -> None: ...
    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None: ...


@dataclass
class CurateRun:
    spec: LoadedSpec
    run: RunDir
    reporter: Reporter
    num_cpus: float = 2.0
    local: bool = True

    # ----------------------------------------------------------------------------------- top level

    def execute(self) -> Manifest:
        resolved = self.spec.resolved()
        listing = list_inputs(self._input_patterns(resolved))
        stages = plan_stages(self.spec, listing)
        manifest = Manifest.load(self.run) or Manifest.new(self.spec.name, self.spec.kind)
        manifest.data.update(spec_hash=canonical_hash(resolved), status="running",
                             inputs=[f.as_dict() for f in listing], ray=cluster_size(self.local))
        swept = self.run.sweep_temporaries()
        if swept:
            self.reporter.note(f"removed {swept} half-written file(s) left by an interrupted run")
        self._drop_stale_stages(manifest, stages)
        manifest.save(self.run)

        for i, stage in enumerate(stages):
            record = manifest.stage(stage.id)
            if record and record["hash"] == stage.hash and record["status"] == "done":
                if record["output_dir"] != stage.output_dir:  # a step was appended after this stage
                    self._move_output(record["output_dir"], stage.output_dir)
                    record["output_dir"] = stage.output_dir
                    manifest.save(self.run)
                self.reporter.stage_skipped(stage, "finished earlier with the same spec")
                continue
            previous = stages[i - 1] if i else None
            if stage.kind == "stream":
                record = self._run_stream(stage, previous, listing, resolved, manifest)
            elif stage.kind == "sink":
                record = self._run_sink(stage, [s for s in stages[:i] if s.kind != "sink"][-1], manifest)
            else:
                record = self._run_global(stage, previous, manifest)
            self.reporter.stage_finished(stage, record)
            fault_point("curate.stage_done")  # between stages: this one recorded done, the next not started

        manifest.data["totals"] = totals(manifest.data["stages"])
        manifest.data["status"] = "done"
        manifest.save(self.run)
        return manifest

    def _input_patterns(self, resolved: dict[str, Any]) -> list[list[str]]:
        """Each input's file patterns; inputs that make their files first (a crawl) do so now."""
        patterns = []
        for i, (cfg, entry) in enumerate(zip(self.spec.inputs, resolved["input"])):
            reader = get_reader(cfg.format)(cfg)
            prepare = getattr(reader, "prepare", None)
            if prepare is None:
                patterns.append(entry["paths"])
                continue
            self.reporter.note(f"input[{i}] ({cfg.format}): preparing input files")
            started = time.time()
            files = prepare(self.run.path("inputs", f"{i:02d}-{cfg.format}"))
            self.reporter.note(f"input[{i}] ({cfg.format}): {len(files)} file(s) ready in {time.time() - started:.1f}s")
            if not files:
                raise RunError(f"input[{i}] ({cfg.format}) produced no files to read")
            patterns.append(files)
        return patterns

    def _drop_stale_stages(self, manifest: Manifest, stages: list[Stage]) -> None:
        """A stage whose hash changed is re-run from scratch, and so is every stage after it."""
        planned = {s.id: s for s in stages}
        stale_from = None
        for record in list(manifest.data["stages"]):
            stage = planned.get(record["id"])
            if stale_from is None and (stage is None or stage.hash != record["hash"]):
                stale_from = record["id"]
                changed = _changed_steps(record, stage)
                self.reporter.note(f"stage {record['id']} changed ({changed}): re-running it and every stage after it")
            if stale_from is not None:
                self._clear_stage_outputs(record)
        if stale_from is not None:
            keep = []
            for record in manifest.data["stages"]:
                if record["id"] == stale_from:
                    break
                keep.append(record)
            manifest.data["stages"] = keep

    def _clear_stage_outputs(self, record: dict[str, Any]) -> None:
        self.run.delete_dir(record["output_dir"])
        for folder in record.get("outputs", []):  # a sink's folders (tokenizer/, shards/)
            self.run.delete_dir(folder)
        for label in record.get("rejected", []):
            self.run.delete_dir(f"rejected/{label}")
        self.run.delete_dir(progress_dir(record["id"]))
        self.run.delete_dir(f"work/{record['id']}")

    def _move_output(self, old: str, new: str) -> None:
        self.run.delete_dir(new)
        if self.run.exists(old):
            self.run.fs.move(self.run.path(old), self.run.path(new))

    # ------------------------------------------------------------------------------ stream stages

    def _units(self, stage: Stage, previous: Stage | None, listing: list[InputFile],
               resolved: dict[str, Any]) -> list[tuple[Unit, int]]:
        if stage.reads_inputs:
            return [(Unit(f.index, f.location, resolved["input"][f.input], f.index), f.size) for f in listing]
        assert previous is not None
        files = self.run.list_files(previous.output_dir, ".parquet", recursive=True)
        infos = self.run.fs.get_file_info(files)
        base = self.run.path(previous.output_dir) + "/"
        return [(Unit(i, self.run.uri(previous.output_dir, path[len(base):]), None, -1), info.size)
                for i, (path, info) in enumerate(zip(files, infos))]

    def _run_stream(self, stage: Stage, previous: Stage | None, listing: list[InputFile],
                    resolved: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
        record = manifest.stage(stage.id)
        if record is None or record["hash"] != stage.hash:
            record = self._new_record(stage)
            manifest.put_stage(record)
            manifest.save(self.run)
        units = self._units(stage, previous, listing, resolved)
        done = self._committed_units(stage)
        pending = [(u, size) for u, size in units if u.unit not in done]
        self._discard_partial(stage, [u for u, _ in pending])
        if done:
            self.reporter.note(f"stage {stage.id}: resuming, {len(done)} of {len(units)} input file(s) already done")
        self.reporter.stage_started(stage, len(units), len(pending), sum(s for _, s in pending))
        started = time.time()
        if pending:
            self._execute_stream(stage, pending)
        record.update(status="done", finished=now(), counts=self._stage_counts(stage, len(units)))
        record["seconds"] = round(record.get("seconds", 0.0) + time.time() - started, 3)
        manifest.put_stage(record)
        manifest.save(self.run)
        return record

    def _new_record(self, stage: Stage) -> dict[str, Any]:
        return {"id": stage.id, "kind": stage.kind, "steps": [s.label for s in stage.steps],
                "step_hashes": {s.label: canonical_hash(s.as_yaml()) for s in stage.steps},
                "hash": stage.hash, "status": "running", "output_dir": stage.output_dir,
                "rejected": stage.rejected_labels, "started": now(), "seconds": 0.0}

    def _committed_units(self, stage: Stage) -> set[int]:
        names = self.run.list_files(progress_dir(stage.id), ".json")
        return {int(n.rsplit("/u", 1)[1][:6]) for n in names if "/u" in n and "/read-" not in n}

    def _discard_partial(self, stage: Stage, pending: list[Unit]) -> None:
        if not pending:
            return
        prefixes = tuple(unit_prefix(u.unit) for u in pending)
        for folder in [stage.output_dir] + [f"rejected/{label}" for label in stage.rejected_labels]:
            self.run.delete_matching(folder, prefixes)
        self.run.delete_matching(progress_dir(stage.id), tuple(f"read-u{u.unit:06d}" for u in pending))

    def _execute_stream(self, stage: Stage, pending: list[tuple[Unit, int]]) -> None:
        attempt = uuid.uuid4().hex[:8]
        ctx = PassContext(self.run.location, stage.id, stage.output_dir, self.spec.model.output.compression, attempt,
                          partition_column=self._partition_column(stage))
        items = [({"unit": u.unit, "location": u.location, "reader": u.reader, "file_index": u.file_index}, size)
                 for u, size in pending]
        # One row per group of units, as JSON: inputs of different formats have reader configs of
        # different shapes, which one Arrow column could not hold.
        groups = [{"units": json.dumps(group)} for group in group_units(items, self.num_cpus)]
        ds = ray.data.from_items(groups, override_num_blocks=len(groups))
        read_args: dict[str, Any] = {"num_cpus": 1}
        if len(groups) < 2 * self.num_cpus:
            read_args = _spread_few_files(ds, ctx, stage)
        ds = ds.map_batches(read_units, batch_size=1, batch_format="pyarrow", fn_kwargs={"ctx": ctx}, **read_args)
        # One task op for the whole chain and the write (see process_and_write): with many files it
        # fuses with the read, so each task takes a file from its first byte to its committed parts.
        ds = ds.map_batches(process_and_write, batch_format="pyarrow", batch_size=None, num_cpus=1,
                            fn_kwargs={"ctx": ctx, "steps": step_specs(stage.steps)})

        sizes = {u.unit: size for u, size in pending}
        tracker = UnitTracker(self.run, stage.id, attempt)
        for summary in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            fault_point("curate.stream_batch")  # mid-pass: rows written, this batch's units not yet committed
            finished = tracker.add(summary)
            for unit in finished:
                tracker.bytes_done += sizes.get(unit, 0)
            self.reporter.progress(tracker.units_done, tracker.rows_written, tracker.bytes_done)
        tracker.finish(list(sizes))
        self.reporter.progress(tracker.units_done, tracker.rows_written, tracker.bytes_done)
        self._sweep_foreign_parts(stage, {u: attempt for u in sizes})

    def _partition_column(self, stage: Stage) -> str | None:
        """Only the final output (data/) is split into Hive-style folders."""
        if stage.output_dir != DATA_DIR:
            return None
        for step in stage.steps:
            if getattr(step.config, "split_by_language", False):
                return getattr(step.op_class, "partition_column", None)
        return None

    def _sweep_foreign_parts(self, stage: Stage, attempts: dict[int, str]) -> None:
        """Delete part files of these units written by any other attempt: a task of a killed run can
        outlive its driver for a moment and write after the rerun discarded that unit's partials."""
        for folder in [stage.output_dir] + [f"rejected/{label}" for label in stage.rejected_labels]:
            for path in self.run.list_files(folder, ".parquet", recursive=True):
                parsed = parse_part_name(path.rsplit("/", 1)[-1])
                if parsed and parsed[0] in attempts and parsed[1] != attempts[parsed[0]]:
                    self.run.fs.delete_file(path)

    def _stage_counts(self, stage: Stage, total_units: int) -> dict[str, Any]:
        markers = [m for m in self.run.list_files(progress_dir(stage.id), ".json") if "/read-" not in m]
        if len(markers) != total_units:
            raise RunError(f"stage {stage.id}: {len(markers)} of {total_units} units committed")
        outputs: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "chars": 0})
        rows_in = 0
        for marker in markers:
            committed = self.run.read_json(marker.rsplit(self.run.root + "/", 1)[-1])
            rows_in += committed["rows_in"]
            for target, counts in committed["outputs"].items():
                outputs[target]["rows"] += counts["rows"]
                outputs[target]["chars"] += counts["chars"]
        return stage_counts(stage, rows_in, dict(outputs))

    # ------------------------------------------------------------------------------ global stages

    def _run_global(self, stage: Stage, previous: Stage | None, manifest: Manifest) -> dict[str, Any]:
        assert previous is not None
        record = manifest.stage(stage.id)
        if record is None or record["hash"] != stage.hash:
            record = self._new_record(stage)
            manifest.put_stage(record)
            manifest.save(self.run)
        # A global stage resumes at the granularity its op offers (its own rounds under work/);
        # the stage's final outputs are always rewritten whole.
        for folder in [stage.output_dir] + [f"rejected/{label}" for label in stage.rejected_labels]:
            self.run.delete_dir(folder)
        self.run.delete_dir(progress_dir(stage.id))
        step = stage.steps[0]
        op = step.op_class(step.config, step_label=step.label)
        self.reporter.stage_started(stage, 1, 1, 0)
        started = time.time()
        # With a file per CPU or more, one read task per file: Ray Data then fuses the op's first map
        # into the read. Left to itself it splits each file's read into ~1 MB blocks for separate map
        # tasks, and a read task that holds a CPU while it trickles blocks out left the other core
        # mostly idle (the MinHash signature round at 128 k documents: 10.4 s, fused 4.9 s).
        files = len(self.run.list_files(previous.output_dir, ".parquet", recursive=True))
        per_file = {"override_num_blocks": files} if files >= self.num_cpus else {}
        source = ray.data.read_parquet(self.run.uri(previous.output_dir), filesystem=self._fs_for_ray(),
                                       schema=self.run.parquet_schema(previous.output_dir), **per_file)
        result = op.apply(source, GlobalContext(self.run.uri("work", stage.id), self.run.fs, self.num_cpus,
                                                run_root=self.run.uri()))
        ctx = PassContext(self.run.location, stage.id, stage.output_dir, self.spec.model.output.compression)
        result = result.map_batches(_tag_global, batch_format="pyarrow", batch_size=None,
                                    fn_kwargs={"label": step.label})
        result = result.map_batches(write_outputs, batch_format="pyarrow", batch_size=None, fn_kwargs={"ctx": ctx})
        outputs: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "chars": 0})
        for summary in result.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in summary.to_pylist():
                outputs[row["target"]]["rows"] += row["rows"]
                outputs[row["target"]]["chars"] += row["chars"]
            self.reporter.progress(0, sum(o["rows"] for o in outputs.values()), 0)
        prev_record = manifest.stage(previous.id)
        rows_in = prev_record["counts"]["kept"] if prev_record else 0
        counts = stage_counts(stage, rows_in, dict(outputs))
        if counts["kept"] + sum(counts["rejected"].values()) != rows_in:
            raise RunError(f"stage {stage.id} ({step.label}) returned {counts['kept'] + sum(counts['rejected'].values())} "
                           f"rows for {rows_in} input rows: a global op must keep or reject every row")
        record.update(status="done", finished=now(), counts=counts, seconds=round(time.time() - started, 3))
        manifest.put_stage(record)
        manifest.save(self.run)
        return record

    # -------------------------------------------------------------------------------- sink stages

    def _run_sink(self, stage: Stage, data_stage: Stage, manifest: Manifest) -> dict[str, Any]:
        """A sink reads the kept documents (data/) and writes its own folders; it is re-run whole."""
        record = manifest.stage(stage.id)
        if record is None or record["hash"] != stage.hash:
            record = {**self._new_record(stage), "outputs": stage.outputs}
            manifest.put_stage(record)
            manifest.save(self.run)
        for folder in stage.outputs + [f"work/{stage.id}"]:
            self.run.delete_dir(folder)
        step = stage.steps[0]
        op = step.op_class(step.config, step_label=step.label)
        self.reporter.stage_started(stage, 1, 1, 0)
        started = time.time()
        data_record = manifest.stage(data_stage.id)
        ctx = SinkContext(run_location=self.run.location, run_root=self.run.root, filesystem=self.run.fs,
                          input_dir=data_stage.output_dir, work_dir=f"work/{stage.id}",
                          documents=data_record["counts"]["kept"] if data_record else 0, num_cpus=self.num_cpus,
                          local=self.local, compression=self.spec.model.output.compression,
                          upstream=stage.upstream, note=self.reporter.note)
        try:
            counts = op.run(ctx)
        except ValueError as exc:
            raise RunError(f"stage {stage.id}: {exc}") from None
        record.update(status="done", finished=now(), counts=counts, seconds=round(time.time() - started, 3))
        manifest.put_stage(record)
        manifest.save(self.run)
        return record

    def _fs_for_ray(self):
        return None if "://" in self.run.location else self.run.fs


def _spread_few_files(ds: Any, ctx: PassContext, stage: Stage) -> dict[str, Any]:
    """Set up a pass over fewer files than twice the CPUs so that one file's blocks spread over every
    core; returns the reader's Ray arguments. The reader stays out of the fused op chain (SPREAD) and
    reserves no CPU: reading is a small share of the work behind a heavy op, and a reserved core sat
    mostly idle while the ops queued for the other (one file on 2 CPUs was extracted on one core).
    Settings go on the pass's own Dataset context (a copy), never the process-wide one."""
    # Ray Data reserves a share of the CPUs for each operator, and the reader's (it uses none) was
    # lost to the ops: one block at a time ran on 2 CPUs. Without the reservation the ops take every
    # CPU the reader leaves (one WARC file of 1,500 pages, 2 CPUs: 24.5 → 17.6 s).
    ds.context.op_resource_reservation_enabled = False
    budgets = [s.op_class.resources.block_bytes for s in stage.steps if s.op_class.resources.block_bytes]
    ctx.block_bytes = min(budgets) if budgets else None
    if ctx.block_bytes:
        # Ray Data merges what a task yields into blocks of target_max_block_size (128 MiB) before
        # they move on: without this, the cut blocks would be glued back together.
        ds.context.target_max_block_size = ctx.block_bytes
    return {"num_cpus": 0, "scheduling_strategy": "SPREAD"}


def _tag_global(table: pa.Table, label: str) -> pa.Table:
    n = table.num_rows
    if REASON not in table.column_names:
        table = table.append_column(REASON, pa.nulls(n, pa.string()))
    tag = pc.if_else(pc.is_null(table.column(REASON)), pa.scalar(None, pa.string()), pa.scalar(label, pa.string()))
    return table.append_column(REJECTED_BY, tag).append_column(UNIT, pa.array([0] * n, pa.int64()))


class UnitTracker:
    """Commits a unit once every row its reader produced has been written."""

    def __init__(self, run: RunDir, stage_id: str, attempt: str):
        self.run, self.stage_id, self.attempt = run, stage_id, attempt
        self.written: dict[int, int] = defaultdict(int)
        self.outputs: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"rows": 0, "chars": 0}))
        self.expected: dict[int, int] = {}
        self.committed: set[int] = set()
        self.rows_written = 0
        self.bytes_done = 0

    @property
    def units_done(self) -> int:
        return len(self.committed)

    def add(self, summary: pa.Table) -> list[int]:
        touched = set()
        for row in summary.to_pylist():
            unit = row["unit"]
            self.written[unit] += row["rows"]
            self.rows_written += row["rows"]
            out = self.outputs[unit][row["target"]]
            out["rows"] += row["rows"]
            out["chars"] += row["chars"]
            touched.add(unit)
        return [u for u in sorted(touched) if self._try_commit(u)]

    def _expected(self, unit: int) -> int | None:
        if unit not in self.expected:
            marker = f"{progress_dir(self.stage_id)}/read-u{unit:06d}.json"
            if not self.run.exists(marker):
                return None
            self.expected[unit] = self.run.read_json(marker)["rows"]
        return self.expected[unit]

    def _try_commit(self, unit: int) -> bool:
        if unit in self.committed:
            return False
        expected = self._expected(unit)
        if expected is None or self.written[unit] < expected:
            return False
        if self.written[unit] > expected:
            raise RunError(f"unit {unit}: wrote {self.written[unit]} rows but read {expected}")
        outputs = {t: dict(c) for t, c in self.outputs[unit].items()}
        self.run.write_json(f"{progress_dir(self.stage_id)}/u{unit:06d}.json",
                            {"unit": unit, "attempt": self.attempt, "rows_in": expected,
                             "outputs": outputs})
        fault_point("curate.unit_committed")  # mid-pass, right after a unit's commit marker
        self.committed.add(unit)
        return True

    def finish(self, units: list[int]) -> None:
        """After the pass: commit units whose files held no records; anything else missing is a bug."""
        for unit in units:
            if unit in self.committed:
                continue
            if not self._try_commit(unit):
                expected = self._expected(unit)
                raise RunError(f"unit {unit}: read {expected} rows, wrote {self.written[unit]}; the pass ended early")


def stage_counts(stage: Stage, rows_in: int, outputs: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per-stage and per-step counts from the committed outputs."""
    kept = outputs.get(stage.output_dir, {"rows": 0, "chars": 0})
    rejected = {label: outputs.get(f"rejected/{label}", {"rows": 0})["rows"] for label in stage.rejected_labels}
    steps = []
    alive = rows_in
    for label in stage.rejected_labels:
        steps.append({"step": label, "in": alive, "rejected": rejected[label], "out": alive - rejected[label]})
        alive -= rejected[label]
    counts = {"in": rows_in, "kept": kept["rows"], "kept_chars": kept["chars"], "rejected": rejected,
              "rejected_chars": {label: outputs.get(f"rejected/{label}", {"chars": 0})["chars"]
                                 for label in stage.rejected_labels},
              "steps": steps}
    if alive != kept["rows"]:
        raise RunError(f"stage {stage.id}: {rows_in} rows in, {kept['rows']} kept and "
                       f"{sum(rejected.values())} rejected do not add up")
    return counts


def totals(stage_records: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole run's identity: read = kept + rejected + quarantined."""
    stage_records = [r for r in stage_records if r.get("kind") != "sink"]  # sinks keep and reject nothing
    if not stage_records:
        return {}
    first, last = stage_records[0]["counts"], stage_records[-1]["counts"]
    rejected: dict[str, int] = {}
    steps = []
    for record in stage_records:
        for label, n in record["counts"]["rejected"].items():
            if label != INGEST_LABEL:
                rejected[label] = n
        steps.extend(record["counts"]["steps"])
    quarantined = first["rejected"].get(INGEST_LABEL, 0)
    return {"read": first["in"], "kept": last["kept"], "kept_chars": last["kept_chars"],
            "rejected": rejected, "quarantined": quarantined, "steps": steps,
            "balanced": first["in"] == last["kept"] + sum(rejected.values()) + quarantined}


def _changed_steps(record: dict[str, Any], stage: Stage | None) -> str:
    if stage is None:
        return "its steps were removed or regrouped"
    if record.get("steps") != [s.label for s in stage.steps]:
        return f"steps {record.get('steps')} → {[s.label for s in stage.steps]}"
    old = record.get("step_hashes", {})
    changed = [s.label for s in stage.steps if old.get(s.label) != canonical_hash(s.as_yaml())]
    if changed:
        return "config of " + ", ".join(f"'{label}'" for label in changed) + " changed"
    if stage.reads_inputs:
        return "the input files or input settings changed"
    return "an earlier stage changed"
