"""``kind: pipeline``: checking the stages and resolving ``${stages.NAME}`` references.

Each stage is validated as a spec of its own kind by :func:`pipelines.specs.validate_spec`, through a
:class:`StageSource` that prefixes every field path with ``stages.<name>``, so a stage's errors carry
the same file:line and field path (``stages.pretrain.max_steps``) as the pipeline file shows them.

A reference is replaced by the stage's run directory, ``<run>/stages/<name>``, before validation. The
run directory is only known when the pipeline runs (``--out``), and the upstream outputs only exist
once their stages have run, so :func:`validate_pipeline` checks every stage against
:data:`UNRUN_ROOT`, a location that never exists (the kinds' own checks of upstream files, e.g. the
shards' batch geometry, treat a missing folder as "written by an earlier run" and pass); the runner
validates each stage again against the real directory just before running it.
"""

from __future__ import annotations

import copy
import difflib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pipelines.errors import SpecError, SpecIssue
from pipelines.yaml_source import Path, SourceMap

STAGE_REF = re.compile(r"\$\{stages\.([^}]*)\}")
STAGE_NAME = re.compile(r"^[a-z0-9_-]+$")
STAGE_KINDS = ("curate", "classifier", "pretrain", "finetune", "eval")
STAGES_DIR = "stages"
# Where references point while the pipeline is only being checked (see the module docstring).
UNRUN_ROOT = "/gristmill-pipeline-not-run"


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


def _find_refs(value: Any, path: Path) -> list[tuple[Path, str]]:
    if isinstance(value, str):
        return [(path, m.group(1)) for m in STAGE_REF.finditer(value)]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _find_refs(v, path + (k,))]
    if isinstance(value, list):
        return [r for i, v in enumerate(value) for r in _find_refs(v, path + (i,))]
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
        stage_issues = _check_stage(name, body, names[:position], names, source)
        issues += stage_issues
        stages.append(PipelineStage(name, str(body.get("kind")), body,
                                    list(dict.fromkeys(ref for _, ref in _find_refs(body, ()) if ref in names[:position]))))
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


def _check_stage(name: str, body: dict[str, Any], earlier: list[str], names: list[str],
                 source: SourceMap) -> list[SpecIssue]:
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
    for where, ref in _find_refs(body, path):
        if ref in earlier:
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
