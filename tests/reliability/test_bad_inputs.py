"""A generated corpus of broken inputs through one real curate run, and a spec with each kind of
mistake: every bad record ends quarantined or rejected with its reason, every bad spec is refused
with a message that names the file, the line and the field, and input = kept + rejected + quarantined."""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from curation.ingest.base import DEFAULT_MAX_RECORD_BYTES
from pipelines.errors import SpecError
from pipelines.specs import load_spec
from tests.helpers import all_ids, kept_ids, manifest, read_dir, rejected_tables
from tests.reliability.bad_corpus import BIG_DOC_MB, OVER_CAP_MB, symlink_loop, write_corpus

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

SPEC = """\
kind: curate
name: bad-inputs
input:
  - {format: warc, paths: ["corpus/warc/*"], max_body_bytes: 1000000}
  - {format: jsonl, paths: ["corpus/jsonl/*"]}
  - {format: parquet, paths: ["corpus/parquet/*"]}
  - {format: text, paths: ["corpus/text/*"]}
steps:
  - extract: {timeout_s: 10}
  - normalize: {}
  - length_filter: {max_chars: 10000000}
"""


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, ray_address):
    from tests.conftest import run_gristmill

    folder = tmp_path_factory.mktemp("bad-inputs")
    cases = write_corpus(folder / "corpus")
    (folder / "spec.yaml").write_text(SPEC)
    run = folder / "run"
    proc = run_gristmill("run", str(folder / "spec.yaml"), "--out", str(run), address=ray_address, timeout=600)
    return cases, run, proc


def test_at_least_thirty_kinds(bad_run):
    cases, _, _ = bad_run
    assert len({c.kind for c in cases}) >= 30


def test_every_input_document_is_kept_rejected_or_quarantined_once(bad_run):
    _, run, _ = bad_run
    totals = manifest(run)["totals"]
    assert totals["balanced"], totals
    ids = all_ids(run)
    assert len(ids) == len(set(ids)) == totals["read"], "each input row exactly once in data/ or rejected/"
    assert totals["read"] == totals["kept"] + sum(totals["rejected"].values()) + totals["quarantined"]
    assert totals["kept"] > 0 and totals["quarantined"] > 0


def _rows_by_file(run: Path) -> dict[str, list[tuple[str | None, str | None]]]:
    """source file name → [(reason, reason_detail)], reason None for kept rows."""
    out: dict[str, list] = defaultdict(list)
    kept = read_dir(run / "data")
    for source in kept.column("source").to_pylist():
        out[Path(source).name].append((None, None))
    for step, table in rejected_tables(run).items():
        for row in table.select(["source", "reason", "reason_detail"]).to_pylist():
            # quarantine (_ingest) and extract rows say what was wrong; a filter's reason is its rule
            detail = row["reason_detail"] if step in ("_ingest", "extract") else "(filter rule)"
            out[Path(row["source"]).name].append((row["reason"] or f"<no reason: {step}>", detail))
    return out


def test_each_bad_kind_ends_with_its_reason(bad_run):
    cases, run, _ = bad_run
    rows = _rows_by_file(run)
    listed = {Path(i["location"]).name: i for i in manifest(run)["inputs"]}
    problems = []
    for case in cases:
        assert case.name in listed, f"{case.kind}: {case.name} missing from the manifest's input listing"
        got = rows.get(case.name, [])
        reasons = {r for r, _ in got}
        if not case.reasons:  # a file with no records: listed, no row, nothing to lose
            if got:
                problems.append(f"{case.kind} ({case.name}): expected no rows, got {reasons}")
            continue
        if not got:
            problems.append(f"{case.kind} ({case.name}): no row at all (silently dropped)")
        elif not reasons <= case.reasons or not (reasons - {None}) and None not in case.reasons:
            problems.append(f"{case.kind} ({case.name}): reasons {reasons}, expected within {case.reasons}")
        for reason, detail in got:
            if reason is not None and not detail:
                problems.append(f"{case.kind} ({case.name}): reason {reason} without a detail")
    assert not problems, "\n".join(problems)


def test_specific_cases(bad_run):
    _, run, _ = bad_run
    rows = _rows_by_file(run)
    # binary bodies behind a text/html label never reach the kept documents
    for name in ("png-as-html.warc", "pdf-as-html.warc"):
        assert [r for r, _ in rows[name]] == ["extract_error"], rows[name]
    # the 12 MB document is read whole, normalised, and rejected by the length rule (not lost, not cut)
    (big,) = [r for r in rejected_tables(run)["length_filter"].to_pylist() if r["source"].endswith("big.jsonl")]
    assert big["reason"] == "too_many_chars" and big["length.chars"] >= (BIG_DOC_MB << 20) * 0.99
    # the 20 MB line is quarantined with its size, the lines around it read
    over = rows["over-cap.jsonl.gz"]
    too_large = ("too_large", f"line of {(OVER_CAP_MB << 20) + 12:,} bytes is over max_bytes={DEFAULT_MAX_RECORD_BYTES:,}")
    assert sorted(over, key=lambda r: (r[0] or "", r[1] or "")) == [(None, None), (None, None), too_large], over
    # text that held NUL bytes or bad UTF-8 survives as text
    assert rows["nul.jsonl"] == [(None, None)] * 2 and rows["bad-utf8.warc"] == [(None, None)]
    # the good records after damage are still read
    assert (None, None) in rows["flipped.warc.gz"] and (None, None) in rows["short-length.warc"]
    assert len(kept_ids(run)) == manifest(run)["totals"]["kept"]


# ------------------------------------------------------------------------------ listing problems


def test_pattern_matching_no_files_is_refused(gristmill, tmp_path):
    (tmp_path / "empty").mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: curate\nname: nothing\ninput:\n  - {format: jsonl, paths: [empty/*.jsonl]}\nsteps: [normalize]\n")
    proc = gristmill("run", str(spec), "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode in (1, 2), proc.stderr
    assert "empty/*.jsonl" in proc.stderr and "no file" in proc.stderr.lower(), proc.stderr


def test_symlink_loop_in_an_input_folder(gristmill, tmp_path):
    symlink_loop(tmp_path / "loop")
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: curate\nname: loop\ninput:\n  - {format: jsonl, paths: [loop/*.jsonl]}\nsteps: [normalize]\n")
    proc = gristmill("run", str(spec), "--out", str(tmp_path / "run"), check=False, timeout=120)
    if proc.returncode == 0:  # the loop is read as an unreadable file, the real file as a document
        totals = manifest(tmp_path / "run")["totals"]
        assert totals["balanced"] and totals["kept"] == 1 and totals["quarantined"] == 1, totals
        (row,) = rejected_tables(tmp_path / "run")["_ingest"].to_pylist()
        assert row["reason"] == "unreadable_file" and "self.jsonl" in row["source"]
    else:
        assert "self.jsonl" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ spec mistakes

GOOD = """\
kind: curate
name: tiny
input:
  - format: jsonl
    paths: [docs/*.jsonl]
steps:
  - normalize: {}
  - length_filter: {min_words: 3}
"""

# (kind of mistake, spec text, --set overrides, env, what the message must say, line, field)
MISTAKES = [
    ("unknown kind", GOOD.replace("kind: curate", "kind: curat"), [], {}, "did you mean 'curate'", 1, "kind"),
    ("unknown op with a close match", GOOD.replace("normalize: {}", "normalise: {}"), [], {},
     "normalize", 7, "steps[0]"),
    ("wrong type", GOOD.replace("min_words: 3", "min_words: three"), [], {}, "integer", 8, "min_words"),
    ("missing field", GOOD.replace("name: tiny\n", ""), [], {}, "name", None, "name"),
    ("extra field", GOOD + "colour: blue\n", [], {}, "colour", 9, "colour"),
    ("extra field inside an op", GOOD.replace("min_words: 3", "min_word: 3"), [], {}, "min_words", 8, "min_word"),
    ("bad env reference", GOOD.replace("name: tiny", "name: ${env:GRISTMILL_NO_SUCH_VAR}"), [], {},
     "GRISTMILL_NO_SUCH_VAR", 2, "name"),
    ("bad --set (no =)", GOOD, ["steps[1].length_filter.min_words"], {}, "KEY=VALUE", None, "--set"),
    ("bad --set (value)", GOOD, ["steps[1].length_filter.min_words=-4"], {}, "greater than", None, "--set"),
    ("bad --set (unknown field)", GOOD, ["steps[1].length_filter.nope=1"], {}, "unknown key 'nope'", None, "--set"),
    ("YAML syntax error", GOOD.replace("paths: [docs/*.jsonl]", "paths: [docs/*.jsonl"), [], {}, "invalid YAML",
     None, ""),
    ("tab indentation", GOOD.replace("  - format: jsonl", "\t- format: jsonl"), [], {}, "a tab: YAML indents with spaces only", 4, ""),
    ("duplicate key", GOOD + "name: again\n", [], {}, "duplicate key", 9, "name"),
    ("unknown input format", GOOD.replace("format: jsonl", "format: jsonll"), [], {}, "jsonl", 4, "format"),
    ("filter after a sink", GOOD.replace("  - normalize: {}\n", "  - tokenize: {tokenizer: {train: {vocab_size: 300}}}\n"
                                         "  - normalize: {}\n"), [], {}, "", 8, "steps"),
]


@pytest.mark.parametrize("what, text, overrides, env, says, line, field", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_spec_mistake_is_refused_with_file_line_and_field(tmp_path, what, text, overrides, env, says, line, field):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(str(path), overrides, env=env)
    message = str(caught.value)
    assert says.lower() in message.lower(), message
    if line is not None:
        assert f"{path}:{line}" in message, f"{what}: no file:line in {message!r}"
    elif "--set" not in field:
        assert str(path) in message, f"{what}: no file in {message!r}"
    assert field in message, f"{what}: field {field!r} not named in {message!r}"


def test_unknown_stage_reference_in_a_pipeline(tmp_path):
    pytest.importorskip("pipelines.pipeline_spec", reason="kind: pipeline not in this tree")
    path = tmp_path / "pipe.yaml"
    path.write_text(textwrap.dedent("""\
        kind: pipeline
        name: p
        stages:
          corpus:
            kind: curate
            input: [{format: jsonl, paths: [docs/*.jsonl]}]
            steps: [normalize]
          train:
            kind: pretrain
            data: ${stages.corpsu}
        """))
    with pytest.raises(SpecError) as caught:
        load_spec(str(path))
    message = str(caught.value)
    assert f"{path}:10" in message and "corpsu" in message, message


def test_cli_refuses_a_bad_spec_before_starting_ray(gristmill, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD.replace("min_words: 3", "min_words: three"))
    proc = gristmill("validate", str(path), check=False)
    assert proc.returncode == 2 and f"{path}:8" in proc.stderr and "min_words" in proc.stderr, proc.stderr
    assert json.dumps  # noqa: B018 - keeps the import honest for the spec tests above
