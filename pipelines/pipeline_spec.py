"""``kind: pipeline``: checking the stages and resolving ``${stages.NAME}`` references.

Each stage is validated as a spec of its own kind by :func:`pipelines.specs.validate_spec`, through a
:class:`StageSource` that prefixes every field path with ``stages.<name>``, so a stage's errors carry
the same file:line and field path (``stages.pretrain.max_steps``) as the pipeline file shows them.

A reference is replaced by the stage's run directory, ``<run>/stages/<name>``, before validation. The
run directory is only known when the pipeline runs (``--out``), and the upstream outputs only exist
once their stages have run, so :func:`validate_pipeline` checks every stage against
:data:`UNRUN_ROOT`, a location that never exists; the runner validates each stage again against the
real directory just before running it. Paths into upstream stages are therefore checked in two steps:

- when the spec is validated, a reference's sub-path (``${stages.tox}/model``) must start with
  something that the referenced stage's kind writes (:data:`STAGE_OUTPUTS`), and the kinds' own
  existence checks pass over paths for which :func:`not_run_yet` is true (a shards folder, a model
  file, a prompts file … that an earlier stage will write);
- when the stage is about to run (its upstream stages done), :meth:`PipelinePlan.missing_upstream_outputs`
  names every referenced path that is still missing: file:line:col, field, stage and path.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pipelines.errors import SpecError, SpecIssue
from pipelines.yaml_source import Path, SourceMap

STAGE_REF = re.compile(r"\$\{stages\.([^}]*)\}")
GLOB_CHARS = re.compile(r"[*?\[]")
STAGE_NAME = re.compile(r"^[a-z0-9_-]+$")
STAGE_KINDS = ("curate", "classifier", "pretrain", "finetune", "eval")
STAGES_DIR = "stages"
# Where references point while the pipeline is only being checked (see the module docstring).
UNRUN_ROOT = "/gristmill-pipeline-not-run"

# What each stage kind writes at the top of its run directory: the first part of a reference's
# sub-path must be one of these (or one of EVERY_STAGE_WRITES). From the runners: curate —
# pipelines/planner.py DATA_DIR, pipelines/runner.py (rejected/<step>, inputs/ for crawled WARCs,
# stages/<id> for intermediate stage outputs), curation/dedup (dedup/<step>), curation/tokenize/op.py
# (tokenizer/, shards/); classifier — pipelines/classifier_run.py MODEL_DIR; pretrain / finetune —
# training/launcher.py CHECKPOINTS_DIR and metrics/train.csv, plus for finetune the prepared shards/,
# tokenizer/, rejected/prepare and a merged LoRA model/ (pipelines/finetune_run.py, finetune_prepare.py);
# eval — eval/results.json and eval/samples (pipelines/eval_run.py). tests/test_pipeline_refs.py
# checks the table against those constants.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "curate": ("data", "rejected", "dedup", "inputs", "stages", "tokenizer", "shards"),
    "classifier": ("model",),
    "pretrain": ("checkpoints", "metrics"),
    "finetune": ("checkpoints", "metrics", "shards", "tokenizer", "rejected", "model"),
    "eval": ("eval",),
}
EVERY_STAGE_WRITES = ("manifest.json", "spec.yaml")


def not_run_yet(location: str) -> bool:
    """True for a path into an upstream stage while the pipeline is only being checked: the stage that
    writes it has not run, so a kind's spec check must not call it missing (the runner checks it once
    the stage is done, :meth:`PipelinePlan.missing_upstream_outputs`)."""
    return location == UNRUN_ROOT or location.startswith(UNRUN_ROOT + "/")


@dataclass(frozen=True)
class StageRef:
    """One ``${stages.NAME}[/sub-path]`` in a stage: where it is written (field path) and what it names."""

    where: Path
    stage: str
    sub: str  # "" or "/…" as written, globs included

    @property
    def text(self) -> str:
        return f"${{stages.{self.stage}}}{self.sub}"

    def first_part(self) -> str:
        return next((part for part in self.sub.split("/") if part), "")


@dataclass
class StageSource(SourceMap):
    """The pipeline file's source map, seen from inside one stage: paths get the stage's prefix."""

    prefix: Path = ()

    def locate(self, path: Path, prefer_key: bool = False):
        return SourceMap.locate(self._whole(), self.prefix + tuple(path), prefer_key)

    def issue(self, path: Path, message: str, prefer_key: bool = False) -> SpecIssue:
        return self._whole().issue(self.prefix + tuple(path), message, prefer_key)

    def _whole(self) -> SourceMap:
        return SourceMap(self.file, self.values, self.keys, self.overridden)


@dataclass
class PipelineStage:
    name: str
    kind: str
    data: dict[str, Any]  # the stage's mapping as written (references not yet replaced)
    refs: list[str] = field(default_factory=list)  # the earlier stages it names, in first-use order


@dataclass
class PipelinePlan:
    """The stages of a pipeline spec, in order, and how to turn each into a spec of its own kind."""

    name: str
    file: str
    base_dir: str
    source: SourceMap
    stages: list[PipelineStage]

    def stage(self, name: str) -> PipelineStage:
        return next(s for s in self.stages if s.name == name)

    def load_stage(self, name: str, root: str):
        """The stage as a :class:`LoadedSpec` of its kind, references pointing into ``root`` (the
        pipeline's run directory, a path or URI). Raises :class:`SpecError`."""
        from pipelines.specs import validate_spec

        stage = self.stage(name)
        data = _replace_refs(stage.data, lambda ref, rest: stage_location(root, ref) + rest)
        data["name"] = f"{self.name}.{name}"
        source = StageSource(self.source.file, self.source.values, self.source.keys, self.source.overridden,
                             prefix=(STAGES_DIR, name))
        return validate_spec(data, source, base_dir=self.base_dir)

    def missing_upstream_outputs(self, name: str, root: str) -> list[SpecIssue]:
        """Every ``${stages.X}/sub-path`` of stage ``name`` whose path is not in X's run directory under
        ``root``: called just before the stage runs, when every stage before it is done. A glob names
        its folder (``data/*.parquet`` → ``data``); what it matches is the reader's business."""
        from pipelines.rundir import RunDir

        issues = []
        for ref in stage_refs(self.stage(name).data, (STAGES_DIR, name)):
            parts = [p for p in ref.sub.split("/") if p]
            fixed = list(itertools.takewhile(lambda p: not GLOB_CHARS.search(p), parts))
            if not fixed:
                continue
            upstream = RunDir.open(stage_location(root, ref.stage))
            if upstream.exists(*fixed):
                continue
            kind = self.stage(ref.stage).kind
            issues.append(self.source.issue(ref.where, (
                f"{ref.text}: stage {ref.stage!r} ({kind}) has run but did not write {'/'.join(fixed)} "
                f"({upstream.uri(*fixed)} does not exist)")))
        return issues

    def resolved_stages(self) -> dict[str, Any]:
        """Every stage as it runs (defaults filled, paths absolute), references kept as ``${stages.X}``:
        what the pipeline's ``spec.yaml`` records."""
        out = {}
        for stage in self.stages:
            resolved = self.load_stage(stage.name, UNRUN_ROOT).resolved()
            resolved.pop("name", None)
            resolved.pop("ray", None)
            out[stage.name] = tokenize_locations(resolved, UNRUN_ROOT, {s.name: f"${{stages.{s.name}}}" for s in self.stages})
        return out


def stage_location(root: str, name: str) -> str:
    return posixpath.join(root.rstrip("/"), STAGES_DIR, name)


def tokenize_locations(value: Any, root: str, tokens: dict[str, str]) -> Any:
    """Replace each stage's run directory (and paths inside it) in every string by ``tokens[stage]``:
    the stage hash uses the upstream stages' hashes here, ``spec.yaml`` the ``${stages.X}`` text."""
    prefixes = sorted(((stage_location(root, n), t) for n, t in tokens.items()), key=lambda p: -len(p[0]))

    def swap(text: str) -> str:
        for prefix, token in prefixes:
            if text == prefix or text.startswith(prefix + "/"):
                return token + text[len(prefix):]
        return text

    return _walk(value, swap)


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    return value


def _replace_refs(data: dict[str, Any], target: Callable[[str, str], str]) -> dict[str, Any]:
    """``${stages.X}`` (+ the sub-path after it) → ``target(X, sub-path)`` in every string."""

    def swap(text: str) -> str:
        out, end = [], 0
        for match in STAGE_REF.finditer(text):
            rest_end = _subpath_end(text, match.end())
            out.append(text[end:match.start()])
            out.append(target(match.group(1), text[match.end():rest_end]))
            end = rest_end
        return "".join(out) + text[end:] if out else text

    return _walk(copy.deepcopy(data), swap)


def _subpath_end(text: str, start: int) -> int:
    """A reference's sub-path is the ``/…`` run of characters after it, up to a space or the next reference."""
    if not text.startswith("/", start):
        return start
    nxt = STAGE_REF.search(text, start)
    stop = nxt.start() if nxt else len(text)
    space = re.search(r"\s", text[start:stop])
    return start + space.start() if space else stop


def stage_refs(value: Any, path: Path) -> list[StageRef]:
    """Every ``${stages.NAME}[/sub-path]`` in ``value``, with the field path of its string."""
    if isinstance(value, str):
        return [StageRef(path, m.group(1), value[m.end():_subpath_end(value, m.end())])
                for m in STAGE_REF.finditer(value)]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in stage_refs(v, path + (k,))]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in stage_refs(v, path + (i,))]
    return []


# --------------------------------------------------------------------------------------------------
# validation (called from pipelines.specs.validate_spec)


def validate_pipeline(data: dict[str, Any], source: SourceMap, base_dir: str):
    from pipelines.specs import LoadedSpec, PipelineSpec, _validate_model

    issues: list[SpecIssue] = []
    model = _validate_model(PipelineSpec, data, (), source, issues)
    if model is None:
        raise SpecError(issues)
    names = list(model.stages)  # type: ignore[attr-defined]
    stages = []
    for position, (name, body) in enumerate(model.stages.items()):  # type: ignore[attr-defined]
        earlier = {s.name: s.kind for s in stages}
        issues += _check_stage(name, body, earlier, names, source)
        stages.append(PipelineStage(name, str(body.get("kind")), body,
                                    list(dict.fromkeys(r.stage for r in stage_refs(body, ()) if r.stage in earlier))))
    plan = PipelinePlan(model.name, source.file, base_dir, source, stages)  # type: ignore[attr-defined]
    if not issues:
        for stage in stages:
            try:
                plan.load_stage(stage.name, UNRUN_ROOT)
            except SpecError as exc:
                issues += exc.issues
    if issues:
        raise SpecError(issues)
    return LoadedSpec(source.file, base_dir, model, source, pipeline=plan)


def _check_stage(name: str, body: dict[str, Any], earlier: dict[str, str], names: list[str],
                 source: SourceMap) -> list[SpecIssue]:
    """The stage's shape and its references; ``earlier`` maps each stage before it to its kind."""
    path: Path = (STAGES_DIR, name)
    issues = []
    if not STAGE_NAME.match(name):
        issues.append(source.issue(path, f"stage name {name!r} must match [a-z0-9_-]+ (it names the folder "
                                         f"stages/{name})", prefer_key=True))
    kind = body.get("kind")
    if kind is None:
        issues.append(source.issue(path, f"missing `kind`; a stage is one of: {', '.join(STAGE_KINDS)}"))
    elif kind == "pipeline":
        issues.append(source.issue(path + ("kind",), "a pipeline's stages cannot be pipelines; list their stages here"))
    elif kind not in STAGE_KINDS:
        close = difflib.get_close_matches(str(kind), list(STAGE_KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        issues.append(source.issue(path + ("kind",), f"unknown kind {kind!r}{hint}; a stage is one of: "
                                                     f"{', '.join(STAGE_KINDS)}"))
    if "name" in body:
        issues.append(source.issue(path + ("name",), f"a stage is named by its key ({name!r}); remove `name`",
                                   prefer_key=True))
    if "ray" in body:
        issues.append(source.issue(path + ("ray",), "one Ray session runs every stage: set `ray` on the pipeline, "
                                                    "not on a stage", prefer_key=True))
    for use in stage_refs(body, path):
        where, ref = use.where, use.stage
        if ref in earlier:
            issues += _check_sub_path(use, earlier[ref], source)
            continue
        if ref == name:
            why = "is this stage itself; a stage can only use the stages before it"
        elif ref in names:
            why = f"comes after stage {name!r}; stages run in the order written, so move it before {name!r}"
        else:
            close = difflib.get_close_matches(ref, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            why = f"is not a stage of this pipeline{hint}; stages: {', '.join(names)}"
        issues.append(source.issue(where, f"${{stages.{ref}}}: {ref!r} {why}"))
    return issues


def _check_sub_path(ref: StageRef, kind: str, source: SourceMap) -> list[SpecIssue]:
    """A sub-path must lead into something the referenced stage's kind writes (a typo such as
    ``${stages.tox}/modle`` is found now, not after the stages before it have run)."""
    first = ref.first_part()
    outputs = STAGE_OUTPUTS.get(kind)
    if not first or outputs is None or first in outputs or first in EVERY_STAGE_WRITES:
        return []
    close = difflib.get_close_matches(first, list(outputs), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return [source.issue(ref.where, f"{ref.text}: stage {ref.stage!r} is a {kind} stage, which writes no "
                                    f"{first!r}{hint}; it writes {', '.join(outputs + EVERY_STAGE_WRITES)}")]
