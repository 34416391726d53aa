"""Benchmark tasks from local JSONL files: formats, prompts, k-shot examples, and the registry of the
files shipped in ``data/eval/``.

Formats (one JSON object per line):

* ``multiple_choice``: ``{"query": str, "choices": [str, ...], "gold": int}`` (ARC, PIQA as packaged
  by llm-foundry's ``scripts/eval/local_data``);
* ``cloze``: ``{"context": str, "continuation": str}`` (LAMBADA);
* ``hellaswag``: ``{"ctx": str, "endings": [str, ...], "label": int | "int"}``, optionally with
  ``activity_label``; turned into multiple choice with lm-eval's HellaSwag preprocessing
  (``"[title]"`` → ``". "``, bracketed annotations removed, double spaces collapsed).

Prompts follow lm-eval's task YAMLs so numbers are comparable: ARC and PIQA render
``"{query}\\nAnswer:"`` and score ``" " + choice`` (lm-eval's ``arc_easy`` / ``piqa``:
``"Question: ...\\nAnswer:"``, ``target_delimiter: " "``; the llm-foundry files already carry the
``"Question: "`` prefix); LAMBADA scores ``" " + last word`` after the passage; few-shot examples are
joined with ``"\\n\\n"`` (lm-eval's ``fewshot_delimiter``).

Files are read line by line with :mod:`json` rather than through Arrow: a bad line must be reported
by file and line number, and a task file is a few thousand short items.

k-shot examples are drawn from the same file, never the item itself, by a ``random.Random`` seeded
with ``(seed, item index)``: the same examples for an item on every run, whatever ``limit`` is.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

Format = Literal["multiple_choice", "cloze", "hellaswag"]
FORMATS: tuple[str, ...] = ("multiple_choice", "cloze", "hellaswag")

# lm-eval's defaults (lm_eval/config/task.py: target_delimiter " ", fewshot_delimiter "\n\n").
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
DEFAULT_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


class TaskFileError(ValueError):
    """A task file is missing or a line does not follow its format (the message names file and line)."""


@dataclass(frozen=True)
class MultipleChoiceItem:
    query: str
    choices: tuple[str, ...]
    gold: int
    line: int


@dataclass(frozen=True)
class ClozeItem:
    context: str
    continuation: str
    line: int


Item = Union[MultipleChoiceItem, ClozeItem]


@dataclass(frozen=True)
class TaskDefinition:
    """How a task file is read and rendered. ``prompt`` formats a multiple-choice ``query``."""

    name: str
    format: str
    path: str
    prompt: str = "{query}"
    target_delimiter: str = TARGET_DELIMITER
    fewshot_delimiter: str = FEWSHOT_DELIMITER

    def render_query(self, item: Item) -> str:
        if isinstance(item, ClozeItem):
            return item.context
        return self.prompt.format(query=item.query)

    def target(self, text: str, context: str) -> str:
        """The scored continuation: ``target_delimiter + text``, except where the junction already
        has whitespace (a context ending in a newline, a continuation starting with one)."""
        if not context or context[-1:].isspace() or text[:1].isspace():
            return text
        return self.target_delimiter + text


def default_data_dir() -> Path:
    """``$GRISTMILL_EVAL_DATA`` or the repository's ``data/eval`` (the shipped files)."""
    env = os.environ.get("GRISTMILL_EVAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "eval"


# The shipped files (data/eval, attribution in data/SOURCES.md).
REGISTRY: dict[str, TaskDefinition] = {
    "arc_easy": TaskDefinition("arc_easy", "multiple_choice", "arc_easy.jsonl", prompt="{query}\nAnswer:"),
    "piqa": TaskDefinition("piqa", "multiple_choice", "piqa.jsonl", prompt="{query}\nAnswer:"),
    "lambada_openai": TaskDefinition("lambada_openai", "cloze", "lambada_openai.jsonl"),
}


def task_definition(name: str, file: str | None = None, format: str | None = None, prompt: str | None = None,
                    target_delimiter: str | None = None, data_dir: str | os.PathLike | None = None) -> TaskDefinition:
    """A registered task (optionally with its file or prompt overridden) or a custom one (``file`` and
    ``format`` given)."""
    if name in REGISTRY:
        base = REGISTRY[name]
        path = file or str(Path(data_dir or default_data_dir()) / base.path)
        definition = replace(base, path=path)
        if format is not None and format != base.format:
            definition = replace(definition, format=format)
    else:
        if file is None or format is None:
            known = ", ".join(sorted(REGISTRY))
            raise ValueError(f"unknown task {name!r}: registered tasks are {known}; a custom task needs `file` and `format`")
        definition = TaskDefinition(name, format, file)
    if definition.format not in FORMATS:
        raise ValueError(f"task {name!r}: format must be one of {', '.join(FORMATS)}, got {definition.format!r}")
    if prompt is not None:
        definition = replace(definition, prompt=prompt)
    if target_delimiter is not None:
        definition = replace(definition, target_delimiter=target_delimiter)
    return definition


# ----------------------------------------------------------------------------------------------
# reading


def _hellaswag_text(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow's " [title]" markers become sentence breaks,
    other bracketed annotations go, double spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _parse(record: dict, fmt: str, where: str, line: int) -> Item:
    def need(key: str, kind: type | tuple[type, ...]) -> object:
        if key not in record:
            raise TaskFileError(f"{where}: missing field {key!r} (format {fmt})")
        value = record[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TaskFileError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
        return value

    if fmt == "cloze":
        context, continuation = need("context", str), need("continuation", str)
        if not continuation.strip():
            raise TaskFileError(f"{where}: empty continuation")
        return ClozeItem(context, continuation, line)  # type: ignore[arg-type]
    if fmt == "hellaswag":
        ctx, endings = need("ctx", str), need("endings", list)
        label = need("label", (int, str))
        try:
            gold = int(label)  # type: ignore[arg-type]
        except ValueError:
            raise TaskFileError(f"{where}: label {label!r} is not an integer") from None
        activity = record.get("activity_label")
        query = _hellaswag_text(f"{activity}: {ctx}" if activity else ctx)  # type: ignore[str-format]
        choices = [_hellaswag_text(e) if isinstance(e, str) else e for e in endings]  # type: ignore[union-attr]
    else:
        query, choices, gold = need("query", str), need("choices", list), need("gold", int)
    if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):  # type: ignore[arg-type]
        raise TaskFileError(f"{where}: needs at least two non-empty string choices")
    if not 0 <= gold < len(choices):  # type: ignore[operator, arg-type]
        raise TaskFileError(f"{where}: gold index {gold} outside 0..{len(choices) - 1}")  # type: ignore[arg-type]
    return MultipleChoiceItem(query, tuple(choices), gold, line)  # type: ignore[arg-type]


def read_items(path: str | os.PathLike, fmt: str) -> list[Item]:
    """Every item of a JSONL task file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {path} not found")
    items: list[Item] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskFileError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise TaskFileError(f"{where}: each line must be a JSON object")
            items.append(_parse(record, fmt, where, number))
    if not items:
        raise TaskFileError(f"task file {path} holds no items")
    return items


@dataclass
class Task:
    """A task with its items loaded. ``pool`` is every item of the file (k-shot examples come from
    it); ``items`` the ones evaluated (the first ``limit``, as lm-eval's ``--limit``)."""

    definition: TaskDefinition
    pool: list[Item]
    items: list[Item] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def format(self) -> str:
        return self.definition.format


def load_task(definition: TaskDefinition, limit: int | None = None) -> Task:
    pool = read_items(definition.path, "hellaswag" if definition.format == "hellaswag" else definition.format)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return Task(definition, pool, pool[:limit] if limit else list(pool))


# ----------------------------------------------------------------------------------------------
# prompts


def fewshot_indices(pool_size: int, index: int, k: int, seed: int = DEFAULT_FEWSHOT_SEED) -> list[int]:
    """``k`` distinct indices of ``range(pool_size)`` other than ``index``, the same on every call."""
    if k == 0:
        return []
    if k > pool_size - 1:
        raise ValueError(f"{k}-shot needs at least {k + 1} items in the file, it has {pool_size}")
    rng = random.Random(f"{seed}:{index}")
    picked = rng.sample(range(pool_size - 1), k)
    return [i + 1 if i >= index else i for i in picked]  # skip the item itself


def _answer(item: Item) -> str:
    return item.continuation if isinstance(item, ClozeItem) else item.choices[item.gold]


def context_for(task: Task, index: int, num_fewshot: int = 0, seed: int = DEFAULT_FEWSHOT_SEED) -> str:
    """The prompt for ``task.items[index]``: ``num_fewshot`` solved examples, then the item's query."""
    d = task.definition
    parts = []
    for j in fewshot_indices(len(task.pool), index, num_fewshot, seed):
        example = task.pool[j]
        query = d.render_query(example)
        parts.append(query + d.target(_answer(example), query))
    parts.append(d.render_query(task.items[index]))
    return d.fewshot_delimiter.join(parts)


def item_requests(task: Task, num_fewshot: int = 0, seed: int = DEFAULT_FEWSHOT_SEED) -> list[list[tuple[str, str]]]:
    """Per item, the (context, continuation) pairs to score: one per choice, or the one cloze target."""
    out = []
    for i, item in enumerate(task.items):
        context = context_for(task, i, num_fewshot, seed)
        texts: Sequence[str] = (item.continuation,) if isinstance(item, ClozeItem) else item.choices
        out.append([(context, task.definition.target(t, context)) for t in texts])
    return out
