"""The operator contract every curation step follows, and the registry that names ops in YAML.

Two kinds of op exist:

* **Row-wise** ops (:class:`RowOp`) see one ``pyarrow.Table`` batch at a time. They *annotate* (add
  score columns, or rewrite ``text``) and *decide* (a keep mask plus a reason for each dropped row).
  The runner fuses consecutive row-wise ops into one streaming Ray Data pass and writes the dropped
  rows itself, so an op never does I/O of its own.
* **Global** ops (:class:`GlobalOp`) see the whole ``ray.data.Dataset`` (dedup, tokenizer training,
  shuffles) and own their shuffles. They are stage boundaries: the runner materialises their input
  and output as Parquet.

Score columns are namespaced by the op (``length.chars``, ``langid.score``) so that a threshold can be
changed later and the report rebuilt from the columns alone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

# Columns the runner owns. Ops may read them but must not drop them.
DOC_ID = "doc_id"
TEXT = "text"
SOURCE = "source"
RECORD = "record"
REASON = "reason"
REASON_DETAIL = "reason_detail"
# Internal: name of the step that rejected the row (null while the row is alive). Never written.
REJECTED_BY = "_rejected_by"
# Internal: the unit of work (input file) a row came from, for per-file resume. Never written.
UNIT = "_unit"
INTERNAL_COLUMNS = (REJECTED_BY, UNIT)


class OpConfig(BaseModel):
    """Base of every op's config: unknown keys are spec errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Resources(BaseModel):
    """How an op runs. A ``loads_model`` op is set up once per worker process and kept for every block
    after (the stream pass caches set-up ops per process), so its model loads once per process. Every
    row op of a stream stage runs in the same 1-CPU task (``pipelines/stream_pass.py``).

    ``block_bytes``: a heavy op (one whose work per byte dwarfs reading it) names how many bytes of
    input (its rows' string and binary values) a block should hold, about a second of its work or
    less. Where a stage reads too few files to give every core one, its reader cuts blocks to the
    smallest such budget of the stage's ops, so the blocks of one file spread over every core."""

    model_config = ConfigDict(extra="forbid")

    loads_model: bool = False
    block_bytes: int | None = Field(None, ge=1)


# Block budget of the fastText ops (langid, toxicity, quality_classifier): 4 MiB of text is well
# under a second of prediction, and a 10 MB input file still spreads over a few cores.
MODEL_BLOCK_BYTES = 4 * 2**20


@dataclass
class Decision:
    """What a row-wise op returns for one batch.

    ``table`` has the same rows in the same order as the input batch, with the op's score columns
    added (or ``text`` rewritten). ``keep`` is a boolean mask (None keeps every row); ``reason`` is a
    string per row, null where the row is kept. ``detail`` optionally explains a reason further.
    """

    table: pa.Table
    keep: pa.Array | None = None
    reason: pa.Array | None = None
    detail: pa.Array | None = None


class Op:
    """Shared by row-wise and global ops."""

    name: ClassVar[str]
    Config: ClassVar[type[OpConfig]] = OpConfig
    resources: ClassVar[Resources] = Resources()
    # Where the defaults come from (a paper, a published pipeline); shown by `gristmill schema`.
    defaults_from: ClassVar[str] = ""
    # What the op holds per document and per block (the spec reference's "Memory" lines). Row ops'
    # multipliers are measured by benchmarks/op_memory.py: peak growth over the text's bytes.
    memory: ClassVar[str] = ""

    def __init__(self, config: OpConfig, step_label: str | None = None):
        self.config = config
        self.step_label = step_label or self.name

    def setup(self) -> None:
        """Load models or compile patterns; called once per worker before the first batch."""

    def teardown(self) -> None:
        """Release what setup() acquired (child processes, files). Ops must also survive never being
        torn down: a Ray worker can die without notice."""


class RowOp(Op):
    kind: ClassVar[str] = "row"

    def process(self, batch: pa.Table) -> Decision:
        raise NotImplementedError


class GlobalOp(Op):
    kind: ClassVar[str] = "global"

    def apply(self, ds: Any, context: "GlobalContext") -> Any:
        """Take the alive documents as a ``ray.data.Dataset`` and return a Dataset of every input row:
        kept rows with a null ``reason``, dropped rows with a ``reason`` (and optionally
        ``reason_detail``). Rows must never be lost: the runner checks the count."""
        raise NotImplementedError


class SinkOp(Op):
    """Consumes the kept documents at the end of a curate run and writes artifacts of its own
    (a tokenizer, token shards) beside ``data/``. A sink is not a filter: it never changes
    ``data/`` or ``rejected/``, so sink steps may only close a spec's ``steps``."""

    kind: ClassVar[str] = "sink"

    def outputs(self, upstream: list[str]) -> list[str]:
        """Run-directory folders this step owns (cleared when its config changes). ``upstream`` names
        the ops of the sink steps before it in the same spec."""
        raise NotImplementedError

    def run(self, context: "SinkContext") -> dict[str, Any]:
        """Read ``context.input_dir``, write the outputs atomically, return counts for the manifest
        (at least ``in``: the documents consumed)."""
        raise NotImplementedError


@dataclass
class SinkContext:
    """What a sink may use: the run directory (location as the user gave it, and its filesystem
    path), the kept documents' folder, a scratch folder, the cluster size, and a way to talk."""

    run_location: str
    run_root: str
    filesystem: Any
    input_dir: str  # relative to the run directory ("data")
    work_dir: str  # relative to the run directory
    documents: int  # rows in input_dir, from the stage before
    num_cpus: float
    local: bool
    compression: str
    upstream: list[str]
    note: Any = print


@dataclass
class GlobalContext:
    """What a global op may use besides its input: a scratch folder in the run directory (for
    intermediate rounds that are resume points) and the filesystem to reach it."""

    work_dir: str
    filesystem: Any
    num_cpus: float
    # The run directory (path or URI), for ops that publish data of their own beside data/ and
    # rejected/ (dedup writes dedup/<step>/ for the report). None when run outside a run directory.
    run_root: str | None = None


def set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """Replace column ``name`` or append it: an op used twice in one spec must not add a column twice."""
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(name, values)
    return table.set_column(index, name, values)


_OPS: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op available in specs under ``cls.name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a `name`")
    existing = _OPS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"op name {cls.name!r} is registered twice ({existing.__qualname__}, {cls.__qualname__})")
    _OPS[cls.name] = cls
    return cls


def registered_ops() -> dict[str, type[Op]]:
    load_builtin_ops()
    return dict(sorted(_OPS.items()))


class UnknownName(LookupError):
    def __init__(self, what: str, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {what} {name!r}.{hint} Registered: {', '.join(known)}")
        self.closest = close[0] if close else None


def get_op(name: str) -> type[Op]:
    ops = registered_ops()
    if name not in ops:
        raise UnknownName("op", name, list(ops))
    return ops[name]


def load_builtin_ops() -> None:
    """Import the modules whose classes register themselves. Kept explicit (no entry-point scanning)
    so a spec can never cause an arbitrary import."""
    from curation import chat, decontaminate, extract, langid, length_filter, normalize, pii, shuffle  # noqa: F401
    from curation.classifiers import apply  # noqa: F401
    from curation.dedup import exact, minhash  # noqa: F401
    from curation.crawl import reader  # noqa: F401
    from curation.ingest import files, warc  # noqa: F401
    from curation.quality import c4, fineweb, gopher  # noqa: F401
    from curation.tokenize import op as tokenize_op  # noqa: F401
