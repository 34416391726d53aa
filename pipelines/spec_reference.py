"""Render `docs/spec-reference.md` from the pydantic models themselves, so the reference can never
drift from what `gristmill validate` accepts (a test checks the file is current).

    python -m pipelines.spec_reference            # print
    python -m pipelines.spec_reference --write    # rewrite docs/spec-reference.md

Every spec kind, every input format and every op is listed with its fields: type, default and the
field's own description. Nested settings models get a table of their own.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "docs" / "spec-reference.md"

HEADER = """# Spec reference

Generated from the spec models by `python -m pipelines.spec_reference --write`; do not edit by hand
(`tests/test_spec_reference.py` fails when this file is out of date). `gristmill schema` prints the
same information as JSON Schema, for editor completion. A field without a default is required.
"""


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(see table)"
    if isinstance(value, enum.Enum):
        value = value.value
    text = "null" if value is None else repr(value) if not isinstance(value, bool) else str(value).lower()
    return f"`{text}`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _nested_models(arg)]


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("``", "`").replace("|", "\\|")


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> tuple[list[str], list[type[BaseModel]]]:
    """Markdown table rows for one model, and the nested models it refers to."""
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    nested: list[type[BaseModel]] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = field.alias or name
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | "
                     f"{_escape(field.description or '')} |")
        nested += _nested_models(field.annotation)
    return lines, nested


def _first_paragraph(doc: str | None) -> str:
    return _escape((doc or "").strip().split("\n\n")[0])


def _section(title: str, model: type[BaseModel], intro: str = "", skip: tuple[str, ...] = (),
             seen: set[type[BaseModel]] | None = None, level: int = 3) -> list[str]:
    seen = set() if seen is None else seen
    out = [f"{'#' * level} {title}", ""]
    if intro:
        out += [intro, ""]
    rows, nested = model_table(model, skip)
    out += rows + [""]
    for sub in nested:
        if sub in seen:
            continue
        seen.add(sub)
        out += _section(sub.__name__, sub, _first_paragraph(sub.__doc__), seen=seen, level=level + 1)
    return out


def _phase_two_configs() -> dict[str, dict[str, type[BaseModel]]]:
    """Fields a kind keeps as a plain mapping and validates against another model in the second
    validation phase (see pipelines.specs.validate_spec)."""
    from curation.classifiers.train import ClassifierTrainConfig

    return {"classifier": {"train": ClassifierTrainConfig}}


def render() -> str:
    from curation.ingest.base import registered_readers
    from curation.operator import registered_ops
    from pipelines.specs import KINDS

    out = [HEADER, "## Kinds", ""]
    seen: set[type[BaseModel]] = set()
    for kind, model in KINDS.items():
        out += _section(f"`kind: {kind}`", model, _first_paragraph(model.__doc__), seen=seen)
        for field_name, config in _phase_two_configs().get(kind, {}).items():
            out += _section(f"`{kind}` → `{field_name}`", config, _first_paragraph(config.__doc__),
                            seen=seen, level=4)
    out += ["## Input formats", "", "Each entry of a curate spec's `input:` list; `format` picks the reader.", ""]
    for fmt, reader in registered_readers().items():
        out += _section(f"`format: {fmt}`", reader.Config, _first_paragraph(reader.__doc__),
                        skip=("format",), seen=seen)
    out += ["## Steps (ops)", "",
            "Each entry of `steps:` is `op_name: {config}` (or the bare op name for its defaults). "
            "*row* ops run fused in one streaming pass; *global* ops own a stage; *sink* ops consume the "
            "kept documents at the end.", ""]
    for name, op in registered_ops().items():
        kind = getattr(op, "kind", "row")
        resources = "tasks (model loaded once per worker process)" if op.resources.loads_model else "tasks"
        if op.resources.block_bytes:
            resources += (f"; heavy: a stage reading fewer files than twice its CPUs cuts its blocks to "
                          f"~{op.resources.block_bytes / 2**20:g} MiB so one file spreads over every core")
        intro = f"*{kind}* op, runs as {resources}. {_first_paragraph(op.__doc__)}"
        if op.defaults_from:
            intro += f" Defaults from: {_escape(op.defaults_from)}."
        intro += f" Memory: {_escape(op.memory)}."
        out += _section(f"`{name}`", op.Config, intro, seen=seen)
    out += _memory()
    out += _limits()
    return "\n".join(out).rstrip() + "\n"


def _memory() -> list[str]:
    from curation.ingest.base import BATCH_BYTES, BATCH_ROWS, DEFAULT_MAX_RECORD_BYTES
    from curation.ingest.files import ParquetConfig
    from curation.ingest.warc import ArchiveConfig

    body = ArchiveConfig.model_fields["max_body_bytes"].default
    page = ParquetConfig.model_fields["max_page_bytes"].default
    return ["## Memory", "",
            "What a curate run holds is set by configuration, never by what the input contains. Readers "
            "quarantine a record over its cap as `too_large` (with its size): "
            f"`max_bytes` ({DEFAULT_MAX_RECORD_BYTES >> 20} MiB) for a JSONL line, a text line or file (streamed "
            f"past, never held) and a Parquet value; `max_body_bytes` ({body >> 20} MiB) for a WARC/WET/ARC body "
            f"(skipped unread); a Parquet row group with a page over `max_page_bytes` ({page >> 20} MiB) is not "
            f"decoded, so no Parquet value costs more than that. Readers cut blocks of at most {BATCH_ROWS:,} "
            f"rows or about {BATCH_BYTES >> 20} MiB of text (plus the record that crossed it); row ops keep or "
            "shrink them. Each op's *Memory* line above says what it holds on top of its input: row ops as a "
            "multiple of the document's text (one document of 16 MiB) and of a block (16 MiB of 2-40 KB "
            "documents), measured by `python -m benchmarks.op_memory`; global and sink ops by their settings. "
            "A worker's peak is about its interpreter and libraries (~200 MiB), the models its ops load, the "
            "blocks it holds, and the largest per-document multiple times the record cap.", ""]


def _limits() -> list[str]:
    from pipelines.yaml_source import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES

    return ["## Limits", "",
            "A spec over one of these is refused as it is read, before validation, with the `file:line:column` "
            "where the limit was crossed (exit 2); `--set` values and `${env:…}` values read as YAML have the "
            "same limits. Real specs are far inside them (the demo spec: 8 KB, 293 values, 9 levels); they keep "
            "an alias bomb (a kilobyte of nested anchors that would expand to billions of values) or a "
            "runaway spec generator from taking the machine's time and memory.", "",
            "| limit | value |", "|---|---|",
            f"| file size | {MAX_SPEC_BYTES >> 20} MiB ({MAX_SPEC_BYTES:,} bytes) |",
            f"| nesting depth (collections inside collections) | {MAX_DEPTH} levels |",
            f"| values, keys included, with every alias expanded | {MAX_NODES:,} |",
            "| an alias inside the value it names (`&a [*a]`) | refused |", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE_FILE}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE_FILE}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
