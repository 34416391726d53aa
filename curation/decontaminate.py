"""`decontaminate`: drop documents that share a word n-gram with an evaluation task.

Every document is normalised (lower-cased; Unicode punctuation and symbols deleted, not replaced by
a space, so "don't" and "dont", "Sun?" and "sun" match while "well-known" becomes the one word
"wellknown", as in the janitor; then split on whitespace) and each of its word n-grams (n = 13 by
default) is looked up in the n-grams of the eval items, normalised the same way. A document with
at least one match is dropped with reason ``eval_contamination``. This is the GPT-3 / lm-eval-harness
("janitor") recipe: 13-grams, lower-cased, punctuation removed, whitespace-split (Llama 2's
contamination analysis also measured n-gram overlap, on tokens).

Adds ``decontaminate.matches`` (int32: how many of the document's n-gram positions occur in an eval
item; 0 for a clean or null document) and ``decontaminate.task`` (string: the task with most
matching positions, ties going to the task listed first; null when clean).

Which text of an item can contaminate (``fields: null``, the default, picks it by the item's shape):

* multiple choice ``{query, choices, gold}`` (ARC, PIQA): the query and the gold choice, joined by a
  space. Wrong choices are left out: a page holding the question and its answer is what leaks a
  benchmark, and wrong answers alone are common phrases. The shipped files wrap each query in
  llm-foundry's prompt (``Question: ...``, sometimes ``... Answer:``); those template words are
  removed first, as they are not part of the item.
* cloze ``{context, continuation}`` (LAMBADA): context, a space, continuation.
* ``{text}``: the text.

``fields: [a, b]`` instead joins the named fields of every item (a list-valued field contributes
every element), e.g. ``[query, choices]`` for the query and all choices.

Items shorter than n words give no n-gram and cannot flag anything: they are skipped, as in the
lm-eval-harness janitor (GPT-3 instead lowered n per task to its 5th-percentile item length, at
least 8, which multiplies the work and the false positives). With the shipped files and n = 13 that skips 400 of 2,376 ARC-Easy items,
406 of 1,838 PIQA items and no LAMBADA item; ``skipped_items`` on a set-up op says how many per task.

Tasks: each name in ``tasks`` is a JSONL file shipped under ``data/eval/`` of this repository
(found next to the ``curation`` package, so the workers that run this step need that folder too);
``files`` adds any other JSONL file of the same shapes, named by its file stem. N-grams are hashed
to 64-bit integers (xxh3 of the UTF-8 bytes of the space-joined words) and kept as one sorted numpy
array, with a bit mask per hash saying which tasks hold it, built once per worker in ``setup()``
(0.7 s for the three shipped tasks, 2.4 MB), so the op runs as a plain task, fused with its
neighbours, rather than in an actor pool; membership for a whole batch is one
``numpy.searchsorted``. At 64 bits, hash collisions are negligible: 10¹¹ document n-grams checked
against 10⁶ eval n-grams expect about 0.005 false matches in all.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, field_validator, model_validator

import curation
from curation.operator import TEXT, Decision, OpConfig, RowOp, register_op, set_column

TASK = "decontaminate.task"
MATCHES = "decontaminate.matches"
REASON = "eval_contamination"

EVAL_DIR = Path(curation.__file__).resolve().parent.parent / "data" / "eval"
SHIPPED_TASKS = ("arc_easy", "piqa", "lambada_openai")
MAX_TASKS = 64  # one bit per task in the membership mask

# llm-foundry's prompt template around multiple-choice queries in the shipped files.
_QUERY_TEMPLATE = re.compile(r"^\s*question:\s*|\s*answer:\s*$", re.IGNORECASE)
# RE2 (Arrow): every Unicode punctuation or symbol character is deleted before splitting.
_PUNCT = r"[\p{P}\p{S}]+"


class DecontaminateConfig(OpConfig):
    tasks: list[str] = Field(list(SHIPPED_TASKS), description="eval tasks shipped under data/eval/")
    files: list[str] = Field(default_factory=list, description="further eval JSONL files (task = file stem)")
    ngram: int = Field(13, ge=1, le=64, description="words per n-gram")
    fields: list[str] | None = Field(None, description="item fields forming the contaminating text; "
                                                       "null picks them by the item's shape")

    @field_validator("tasks")
    @classmethod
    def _shipped(cls, tasks: list[str]) -> list[str]:
        # A cluster worker that received only the Python packages (Ray py_modules) has no data/
        # folder; the names were checked where the spec was validated, and setup() says what is missing.
        if not EVAL_DIR.is_dir():
            return list(dict.fromkeys(tasks))
        for task in tasks:
            if not (EVAL_DIR / f"{task}.jsonl").is_file():
                known = sorted(p.stem for p in EVAL_DIR.glob("*.jsonl"))
                close = difflib.get_close_matches(task, known, n=1)
                raise ValueError(f"no eval task {task!r} in {EVAL_DIR}"
                                 + (f"; did you mean {close[0]!r}?" if close else "")
                                 + f" (shipped: {', '.join(known)}); use `files` for other paths")
        return list(dict.fromkeys(tasks))

    @field_validator("files")
    @classmethod
    def _exist(cls, files: list[str]) -> list[str]:
        for file in files:
            if not Path(file).is_file():
                raise ValueError(f"eval file {file!r} does not exist")
        return files

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, fields: list[str] | None) -> list[str] | None:
        if fields is not None and not fields:
            raise ValueError("fields is empty; use null to pick fields by the item's shape")
        return fields

    @model_validator(mode="after")
    def _sources(self):
        names = self.tasks + [Path(f).stem for f in self.files]
        if not names:
            raise ValueError("no eval data: give `tasks` or `files`")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; {', '.join(dupes)} given twice "
                             "(a file's task name is its stem)")
        if len(names) > MAX_TASKS:
            raise ValueError(f"at most {MAX_TASKS} eval tasks, got {len(names)}")
        return self

    def sources(self) -> list[tuple[str, Path]]:
        return ([(task, EVAL_DIR / f"{task}.jsonl") for task in self.tasks]
                + [(Path(f).stem, Path(f)) for f in self.files])


def normalize(texts: pa.Array) -> pa.Array:
    """Lower-case and delete punctuation and symbols (Arrow kernels); null stays null."""
    return pc.replace_substring_regex(pc.utf8_lower(texts), _PUNCT, "")


def ngram_hashes(words: list[str], n: int) -> list[int]:
    """xxh3-64 of each window of ``n`` words joined by single spaces."""
    hash64 = xxhash.xxh3_64_intdigest
    return [hash64(" ".join(words[i:i + n]).encode("utf-8")) for i in range(len(words) - n + 1)]


def item_text(item: dict, fields: list[str] | None, where: str) -> str:
    """The contaminating text of one eval item (see the module docstring)."""
    if fields is not None:
        parts = []
        for name in fields:
            if name not in item:
                raise ValueError(f"{where}: no field {name!r} (fields: {', '.join(item)})")
            value = item[name]
            parts += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        return " ".join(parts)
    if {"query", "choices", "gold"} <= item.keys():
        golds = item["gold"] if isinstance(item["gold"], list) else [item["gold"]]
        return " ".join([_QUERY_TEMPLATE.sub("", item["query"])] + [item["choices"][g] for g in golds])
    if {"context", "continuation"} <= item.keys():
        continuation = item["continuation"]
        continuation = continuation[0] if isinstance(continuation, list) else continuation
        return f"{item['context']} {continuation}"
    if "text" in item:
        return item["text"]
    raise ValueError(f"{where}: cannot tell the item's shape from fields {', '.join(item)}; "
                     "expected {query, choices, gold}, {context, continuation} or {text}, or set `fields`")


class EvalNgrams:
    """The n-grams of a set of eval tasks: sorted unique hashes and, per hash, a task bit mask."""

    def __init__(self, sources: list[tuple[str, Path]], n: int, fields: list[str] | None = None):
        self.tasks = [name for name, _ in sources]
        self.n = n
        self.items: dict[str, int] = {}
        self.skipped_items: dict[str, int] = {}
        hashes, masks = [], []
        for bit, (task, path) in enumerate(sources):
            if not path.is_file():
                raise FileNotFoundError(f"eval task {task!r}: {path} is not on this machine (the eval "
                                        "files must be present wherever the decontaminate step runs)")
            texts = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        texts.append(item_text(json.loads(line), fields, f"{path}:{lineno}"))
            words = [t.split() for t in normalize(pa.array(texts, pa.string())).to_pylist()]
            grams = np.array([h for w in words for h in ngram_hashes(w, n)], np.uint64)
            self.items[task] = len(texts)
            self.skipped_items[task] = sum(len(w) < n for w in words)
            hashes.append(np.unique(grams))
            masks.append(np.full(len(hashes[-1]), 1 << bit, np.uint64))
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        all_masks = np.concatenate(masks) if masks else np.empty(0, np.uint64)
        order = np.argsort(all_hashes, kind="stable")
        all_hashes, all_masks = all_hashes[order], all_masks[order]
        # Merge a hash held by several tasks into one entry whose mask has all their bits.
        self.keys, starts = np.unique(all_hashes, return_index=True)
        self.masks = np.bitwise_or.reduceat(all_masks, starts) if len(starts) else all_masks

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Task mask per hash (0 where the hash is in no task)."""
        if not len(self.keys) or not len(hashes):
            return np.zeros(len(hashes), np.uint64)
        idx = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        return np.where(self.keys[idx] == hashes, self.masks[idx], np.uint64(0))


@register_op
class Decontaminate(RowOp):
    """Drop documents sharing a word n-gram (13 by default) with ARC-Easy, PIQA or LAMBADA items."""

    name = "decontaminate"
    memory = ("the eval items' n-gram hashes once per worker (8 bytes each plus a task mask: 2.4 MB for the "
              "shipped tasks); per document its n-gram hashes (8 bytes per word) and normalised words; not measured")
    Config = DecontaminateConfig
    defaults_from = ("13-gram overlap, lower-cased, punctuation removed, whitespace-split "
                     "(GPT-3; lm-eval-harness janitor); items shorter than n skipped as in the janitor")

    def __init__(self, config: OpConfig, step_label: str | None = None):
        super().__init__(config, step_label)
        self.ngrams: EvalNgrams | None = None

    def setup(self) -> None:
        if self.ngrams is None:
            cfg: DecontaminateConfig = self.config  # type: ignore[assignment]
            self.ngrams = EvalNgrams(cfg.sources(), cfg.ngram, cfg.fields)

    @property
    def skipped_items(self) -> dict[str, int]:
        self.setup()
        return self.ngrams.skipped_items  # type: ignore[union-attr]

    def teardown(self) -> None:
        self.ngrams = None

    def process(self, batch: pa.Table) -> Decision:
        self.setup()
        ngrams: EvalNgrams = self.ngrams  # type: ignore[assignment]
        n = ngrams.n
        texts = normalize(batch.column(TEXT).combine_chunks()).to_pylist()
        rows = len(texts)
        doc_of, hashes = [], []
        for i, text in enumerate(texts):
            if text is None:
                continue
            grams = ngram_hashes(text.split(), n)
            hashes += grams
            doc_of += [i] * len(grams)
        masks = ngrams.lookup(np.array(hashes, np.uint64))
        hit = masks != 0
        doc_index = np.array(doc_of, np.int64)[hit]
        matches = np.bincount(doc_index, minlength=rows).astype(np.int32)
        task: list[str | None] = [None] * rows
        if hit.any():
            hit_masks = masks[hit]
            per_task = np.stack([np.bincount(doc_index, weights=(hit_masks >> np.uint64(b)) & np.uint64(1),
                                             minlength=rows) for b in range(len(ngrams.tasks))])
            best = per_task.argmax(axis=0)  # first maximum: ties go to the task listed first
            for i in np.flatnonzero(matches):
                task[i] = ngrams.tasks[best[i]]
        task_array = pa.array(task, pa.string())
        matches_array = pa.array(matches, pa.int32())
        table = set_column(set_column(batch, TASK, task_array), MATCHES, matches_array)
        contaminated = pc.greater(matches_array, 0)
        if not pc.any(contaminated).as_py():
            return Decision(table)
        reason = pc.if_else(contaminated, pa.scalar(REASON), pa.scalar(None, pa.string()))
        detail = pa.array([None if t is None else f"{m} {n}-gram(s) shared with {t}"
                           for t, m in zip(task, matches.tolist())], pa.string())
        return Decision(table, keep=pc.invert(contaminated), reason=reason, detail=detail)
