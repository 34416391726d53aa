"""The `gristmill` command.

Exit codes: 0 success; 1 the run failed (the message says why, a full disk included; rerun to resume);
2 the spec or the command line is wrong, or the run directory cannot be used (another run holds it,
it is read-only or not writable; nothing was started); 130 interrupted by Ctrl-C (SIGINT), 143 stopped
by SIGTERM (committed work is kept; rerun to resume). See pipelines/interrupt.py.
"""

from __future__ import annotations

import faulthandler
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines import interrupt
from pipelines.console import CommandConsole
from pipelines.dispatch import execute_spec
from pipelines.errors import RunError, SpecError, storage_problem
from pipelines.manifest import Manifest
from pipelines.planner import Stage
from pipelines.rundir import RunDir, RunDirBusy
from pipelines.runner import Reporter
from pipelines.specs import LoadedSpec, json_schemas, load_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Gristmill: declarative web data → trained language models, on Ray.")
out = CommandConsole()
err = CommandConsole(stderr=True)

EXIT_RUN_FAILED = 1
EXIT_SPEC_ERROR = 2


def _print_spec_error(exc: SpecError) -> None:
    n = len(exc.issues)
    err.print(f"[bold red]spec error{'s' if n > 1 else ''}[/]:")
    for issue in exc.issues:
        err.print(f"  {issue}", markup=False, highlight=False)


def _load(spec: Path, overrides: list[str]):
    try:
        return load_spec(str(spec), overrides)
    except SpecError as exc:
        _print_spec_error(exc)
        raise typer.Exit(EXIT_SPEC_ERROR) from None


@app.command()
def validate(spec: Path = typer.Argument(..., help="spec file (YAML)"),
             set_: list[str] = typer.Option([], "--set", help="override a field: path.to.field=value")) -> None:
    """Check a spec without running it (exit 0 when valid, 2 with the errors)."""
    loaded = _load(spec, set_)
    if loaded.kind == "curate":
        steps = ", ".join(s.label for s in loaded.steps) or "no steps"
        what = f"{len(loaded.inputs)} input(s), {steps}"
    elif loaded.kind == "eval":
        what = f"{len(loaded.model.checkpoints)} checkpoint(s), {len(loaded.model.tasks)} task(s)"  # type: ignore[attr-defined]
    elif loaded.kind == "finetune":
        what = f"method {loaded.model.method} from {loaded.model.from_ or 'a fresh student'}"  # type: ignore[attr-defined]
    elif loaded.kind == "pretrain":
        what = f"data {loaded.model.data}, model {loaded.model.model.preset or loaded.model.model.arch}"  # type: ignore[attr-defined]
    elif loaded.kind == "pipeline":
        what = "stages " + " → ".join(f"{st.name} ({st.kind})" for st in loaded.pipeline.stages)
    else:
        what = "training data: " + ", ".join(loaded.train.data_paths()) if loaded.train else ""
    out.print(f"[green]ok[/] {spec}: kind {loaded.kind}, name {loaded.name}, {what}", highlight=False)


@app.command()
def schema(kind: Optional[str] = typer.Option(None, help="only this kind")) -> None:
    """Print the JSON Schema of every spec kind (for editor completion)."""
    schemas = json_schemas()
    if kind:
        if kind not in schemas:
            err.print(f"unknown kind {kind!r}; expected one of: {', '.join(schemas)}")
            raise typer.Exit(EXIT_SPEC_ERROR)
        schemas = schemas[kind]
    sys.stdout.write(json.dumps(schemas, indent=2) + "\n")


@app.command()
def run(spec: Path = typer.Argument(..., help="spec file (YAML)"),
        out_dir: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/<name>); a path or a URI such as s3://bucket/runs/x"),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: spec ray.address, then RAY_ADDRESS, else an embedded local Ray)"),
        set_: list[str] = typer.Option([], "--set", help="override a field: path.to.field=value (repeatable)"),
        fresh: bool = typer.Option(False, "--fresh", help="discard an existing run directory and start over")) -> None:
    """Run a spec. Rerunning into the same run directory resumes it."""
    interrupt.install()  # Ctrl-C and SIGTERM both end the run through _interrupted
    if not faulthandler.is_enabled():  # a crash of the driver itself (ray_session._init: Ray's handler is off)
        try:
            faulthandler.enable()
        except (AttributeError, OSError, ValueError):  # stderr without a file descriptor (an embedding program)
            pass
    try:
        loaded = _load(spec, set_)  # every spec error is reported before Ray starts
        location = out_dir or str(Path("runs") / loaded.name)
        run_dir = RunDir.open(location)
        with _held(run_dir, location):  # before --fresh can delete anything
            _run(loaded, run_dir, location, address, fresh)
    except KeyboardInterrupt:  # outside the Ray session: loading the spec, starting Ray, the report
        _interrupted()


def _interrupted() -> NoReturn:
    """Ctrl-C or SIGTERM: say so and exit 130 / 143; further signals are ignored from here on."""
    interrupt.stopping()
    err.print(f"[yellow]{interrupt.describe()}[/]: rerun the same command to resume", highlight=False)
    raise typer.Exit(interrupt.exit_code()) from None


def _cannot_write(location: str, exc: OSError) -> NoReturn:
    """The run directory cannot be created, locked or written before anything started: exit 2."""
    problem = storage_problem(exc, RunDir.open(location).root)
    if problem is None:
        err.print(f"[red]cannot write the run directory {escape(location)}[/]: {escape(str(exc))}", highlight=False)
    else:
        err.print(f"[red]cannot write the run directory {escape(location)}[/]: "
                  f"{escape(problem.describe(location))}; {problem.advice()}", highlight=False)
    raise typer.Exit(EXIT_SPEC_ERROR) from None


@contextmanager
def _held(run_dir: RunDir, location: str):
    """Hold the run directory for the whole command, or exit 2 naming the run that holds it."""
    try:
        lock = run_dir.hold()
    except RunDirBusy as exc:
        err.print(f"[red]run directory in use[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None
    except OSError as exc:
        _cannot_write(location, exc)
    with lock:
        yield


def _run(loaded: LoadedSpec, run_dir: RunDir, location: str, address: Optional[str], fresh: bool) -> None:
    existing = Manifest.load(run_dir) if not fresh else None
    if existing and (existing.data.get("kind") != loaded.kind):
        err.print(f"[red]{location} holds a {existing.data.get('kind')} run; use --fresh or another --out[/]")
        raise typer.Exit(EXIT_SPEC_ERROR)
    try:
        if fresh:
            run_dir.clear()
        run_dir.makedirs()
        run_dir.write_bytes("spec.yaml", yaml.safe_dump(loaded.resolved(), sort_keys=False, allow_unicode=True).encode())
    except OSError as exc:  # a missing bucket, no credentials, a read-only path, a full disk: say so, no traceback
        _cannot_write(location, exc)

    from pipelines.ray_session import connect

    settings = loaded.model.ray  # type: ignore[attr-defined]
    try:
        session = connect(address, settings.address, settings.num_cpus, settings.object_store_mb, settings.ship_code)
    except ConnectionError as exc:
        err.print(f"[red]cannot reach Ray[/]: {escape(str(exc))}. Check the address; if the cluster uses token "
                  "authentication (the default for clusters started by `ray start` on Ray ≥ 2.59), set "
                  "RAY_AUTH_MODE=token and make its token available (RAY_AUTH_TOKEN or ~/.ray/auth_token).")
        raise typer.Exit(EXIT_RUN_FAILED) from None
    reporter = RichReporter()
    try:
        with reporter:
            manifest = execute_spec(loaded, run_dir, reporter, session)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # noqa: BLE001 - sorted below; anything else keeps its traceback
        if interrupt.received() is not None:  # e.g. Ray's processes got the group's SIGTERM as well
            _interrupted()
        problem = storage_problem(exc, run_dir.root) if not isinstance(exc, RunError) else None
        if problem is not None:  # a full / read-only disk, in the driver or in a Ray worker: one line
            err.print(f"[red]run failed[/]: {escape(problem.message(location))}", highlight=False)
            raise typer.Exit(EXIT_RUN_FAILED) from None
        if not isinstance(exc, (RunError, FileNotFoundError)):
            raise
        err.print(f"[red]run failed[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_RUN_FAILED) from None
    finally:
        session.close()
    _print_status(manifest, location)
    if loaded.kind in ("curate", "pretrain", "finetune", "eval", "pipeline"):
        _build_report(location, after_run=True)


@app.command()
def report(run_dir: str = typer.Argument(..., help="run directory"),
           compare: Optional[str] = typer.Option(None, "--compare", help="another run directory to show side by side "
                                                 "(funnel, score distributions, spec changes)"),
           out_path: Optional[str] = typer.Option(None, "--out", help="with --compare: the HTML file to write (default "
                                                  "RUN_DIR/report/compare-<name of the other run>.html)")) -> None:
    """Build the run's report (curate, pretrain, finetune, eval): RUN_DIR/report/index.html and stats.json, from the run's data."""
    if compare is None:
        if out_path is not None:
            err.print("[red]--out names the comparison page; use it with --compare[/]")
            raise typer.Exit(EXIT_SPEC_ERROR)
        _build_report(run_dir, after_run=False)
        return
    from pipelines.report import build_compare

    try:
        result = build_compare(run_dir, compare, out_path)
    except FileNotFoundError as exc:
        err.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None
    out.print(f"[bold]comparison[/]: {escape(result.html_path)}", highlight=False)


def _build_report(location: str, after_run: bool) -> None:
    """The report at the end of a run must not turn a finished run into a failed one: on error it says
    how to rebuild it. ``gristmill report`` itself fails loudly."""
    from pipelines.report import build_report
    from pipelines.report.terminal import print_summary

    if _is_pipeline(location):
        from pipelines.report.chain import build_chain_report, print_chain_summary

        build_report, print_summary = build_chain_report, print_chain_summary  # noqa: F811
    try:
        built = build_report(location)
    except FileNotFoundError as exc:
        if after_run:
            err.print(f"[yellow]report not built[/]: {escape(str(exc))}", highlight=False)
            return
        err.print(f"[red]{escape(str(exc))}[/]", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        if not after_run:
            raise
        err.print(f"[yellow]report not built[/]: {escape(repr(exc))}; rebuild it with `gristmill report {escape(location)}`",
                  highlight=False)
        return
    print_summary(out, built)


@app.command()
def status(run_dir: str = typer.Argument(..., help="run directory")) -> None:
    """Show a run's stages with in / kept / rejected counts and state."""
    manifest = Manifest.load(RunDir.open(run_dir))
    if manifest is None:
        err.print(f"[red]{escape(run_dir)} is not a run directory (no manifest.json)[/]", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR)
    _print_status(manifest, run_dir)


def _is_pipeline(location: str) -> bool:
    manifest = Manifest.load(RunDir.open(location))
    return manifest is not None and manifest.data.get("kind") == "pipeline"


def _print_pipeline_status(manifest: Manifest, location: str) -> None:
    from pipelines.pipeline_run import status_rows

    data = manifest.data
    table = Table(title=f"{data['name']} (pipeline) — {data['status']}", title_justify="left")
    for col in ("stage", "kind", "status", "wall", "headline"):
        table.add_column(col, justify="right" if col == "wall" else "left")
    for row in status_rows(data):
        table.add_row(*(escape(c) for c in row))
    out.print(table)
    total = sum(r.get("seconds") or 0 for r in data["stages"])
    out.print(f"{len(data['stages'])} stage(s), {total:.1f}s of stage wall time; each stage's run directory: "
              f"{location}/stages/<name>", highlight=False)


def _print_status(manifest: Manifest, location: str) -> None:
    data = manifest.data
    if data.get("kind") == "pipeline":
        _print_pipeline_status(manifest, location)
        return
    table = Table(title=f"{data['name']} ({data['kind']}) — {data['status']}", title_justify="left")
    for col in ("stage", "step", "in", "kept", "rejected", "state"):
        table.add_column(col, justify="right" if col in ("in", "kept", "rejected") else "left")
    for record in data["stages"]:
        counts = record.get("counts")
        if not counts:
            table.add_row(record["id"], ", ".join(record["steps"]) or "read", "", "", "", record["status"])
            continue
        for step in counts["steps"]:
            name = "ingest (quarantined)" if step["step"] == "_ingest" else step["step"]
            table.add_row(record["id"], name, f"{step['in']:,}", f"{step['out']:,}", f"{step['rejected']:,}",
                          record["status"])
        if not counts["steps"]:
            label = ", ".join(record["steps"]) if record.get("kind") == "sink" else "read + write"
            table.add_row(record["id"], label, f"{counts['in']:,}", f"{counts['kept']:,}", "0", record["status"])
    out.print(table)
    for record in data["stages"]:
        if record.get("metrics"):
            out.print(f"{record['id']} metrics: " + json.dumps(_headline(record["metrics"])))
        if record.get("kind") == "sink" and record.get("counts"):
            out.print(_sink_line(record), highlight=False)
    t = data.get("totals") or {}
    if t:
        rejected = sum(t["rejected"].values())
        mark = "[green]✓[/]" if t["balanced"] else "[red]✗ does not balance[/]"
        out.print(f"read {t['read']:,} = kept {t['kept']:,} + rejected {rejected:,} + quarantined "
                  f"{t['quarantined']:,} {mark}")
    out.print(f"run directory: {location}")


def _sink_line(record: dict[str, Any]) -> str:
    """What a sink stage (tokenize, train_tokenizer) wrote, in one line."""
    c = record["counts"]
    if "rows" in c:
        splits = "; ".join(f"{s} {c['rows'][s]:,} rows, {c['tokens'][s]:,} tokens, {c['documents'][s]:,} docs"
                           for s in ("train", "val"))
        return f"{record['id']}: {splits}; {c['tokens']['dropped']:,} tokens dropped by packing → shards/manifest.json"
    if "tokenizer" in c:
        t = c["tokenizer"]
        return f"{record['id']}: vocab {t['vocab_size']:,} from {t['sample_documents']:,} sampled documents → {t['path']}"
    return f"{record['id']}: {c['in']:,} documents consumed"


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth a terminal line; the full metrics are in the run directory."""
    keys = ("accuracy", "macro_f1", "roc_auc", "positive_f1", "f1", "train_examples", "held_out_examples")
    picked = {k: metrics[k] for k in keys if k in metrics}
    return picked or {k: v for k, v in list(metrics.items())[:6] if not isinstance(v, (dict, list))}


class RichReporter(Reporter):
    def __init__(self) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                                 TimeElapsedColumn(), console=err, transient=True)
        self.task: Any = None
        self.total_units = 0

    def __enter__(self) -> "RichReporter":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def note(self, message: str) -> None:
        err.print(f"[cyan]note[/]: {escape(message)}", highlight=False)

    def stage_skipped(self, stage: Stage, why: str) -> None:
        err.print(f"[dim]skip {stage.id} {escape(stage.describe())}: {why}[/]", highlight=False)

    def stage_started(self, stage: Stage, total_units: int, pending_units: int, pending_bytes: int) -> None:
        self.total_units = pending_units
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(escape(f"{stage.id} {stage.describe()}"), total=pending_units or None,
                                           detail="starting")

    def progress(self, units_done: int, rows: int, bytes_done: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=units_done,
                                 detail=f"{units_done}/{self.total_units} files, {rows:,} rows written")

    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None:
        c = record["counts"]
        err.print(f"[green]done[/] {stage.id} {escape(stage.describe())}: {c['in']:,} in → {c['kept']:,} kept "
                  f"({record['seconds']:.1f}s)", highlight=False)


def _checkpoint_dir(location: str) -> Path:
    """The local checkpoint folder ``generate`` / ``export`` load: a URI is copied from its store
    first (training.remote); a run directory means its newest checkpoint; a LoRA step checkpoint is
    taken as it is (its base is merged in)."""
    from eval.checkpoints import resolve_checkpoint
    from training.finetune.lora import is_adapter_checkpoint
    from training.remote import localize

    local = Path(localize(location))
    return local if is_adapter_checkpoint(local) else resolve_checkpoint(local)


@app.command()
def generate(checkpoint_location: str = typer.Argument(..., metavar="CHECKPOINT", help="checkpoint directory (model.safetensors + model_config.json), a run directory (its newest checkpoint), or a URI such as s3://bucket/runs/x"),
             prompt: list[str] = typer.Option(..., "--prompt", help="prompt text (repeatable; prompts decode as one batch)"),
             temperature: float = typer.Option(0.8, help="0 = greedy; default 0.8 as litgpt's generate"),
             top_k: Optional[int] = typer.Option(50, "--top-k", help="sample among the k likeliest tokens (litgpt's default 50); 0 = off"),
             top_p: Optional[float] = typer.Option(None, "--top-p", help="nucleus sampling: smallest set of tokens with this much probability"),
             max_tokens: int = typer.Option(64, "--max-tokens", help="new tokens per prompt at most"),
             stop: list[str] = typer.Option([], "--stop", help="stop string (repeatable); the text ends before it"),
             seed: Optional[int] = typer.Option(None, "--seed", help="seed for reproducible sampling"),
             tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer.json (default: the checkpoint's, then <run>/tokenizer/)"),
             device: str = typer.Option("cpu", "--device", help="torch device, e.g. cuda"),
             as_json: bool = typer.Option(False, "--json", help="one JSON object per prompt on stdout"),
             guard: bool = typer.Option(False, "--guard", help="filter generations with the toxicity classifier "
                                        "(the default model unless --guard-model) and the blocklist; a blocked one "
                                        "is replaced by a refusal marker and the reason reported"),
             guard_model: Optional[str] = typer.Option(None, "--guard-model", help="fastText toxicity model file or "
                                                       "folder for --guard (default: the project's model)"),
             guard_threshold: float = typer.Option(0.5, "--guard-threshold", help="block above this toxicity score"),
             guard_blocklist: Optional[Path] = typer.Option(None, "--guard-blocklist", help="file of blocked words "
                                                            "or phrases, one a line (implies --guard)"),
             guard_block: list[str] = typer.Option([], "--guard-block", help="a blocked word or phrase (repeatable; "
                                                   "implies --guard)"),
             guard_wordlist: bool = typer.Option(False, "--guard-wordlist", help="classify with the LDNOOBW word "
                                                 "lists instead of the fastText model")) -> None:
    """Continue prompts with a checkpoint's model (KV-cache decoding); --guard filters the output."""
    from tokenizers import Tokenizer

    from training.checkpoint import find_tokenizer, load_model
    from training.generate import SamplingParams, generate_text

    try:
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k or None,
                                top_p=top_p, seed=seed)
        from training.finetune.lora import is_adapter_checkpoint, load_merged

        checkpoint = _checkpoint_dir(checkpoint_location)
        if is_adapter_checkpoint(checkpoint):  # a LoRA step checkpoint: its base with the adapter merged
            model = load_merged(checkpoint, device=device).eval()
        else:
            model, _ = load_model(checkpoint, device=device)
        tok = Tokenizer.from_file(str(tokenizer or find_tokenizer(checkpoint)))
        output_guard = None
        if guard or guard_model or guard_blocklist or guard_block or guard_wordlist:
            from eval.guard import build_guard

            output_guard = build_guard(guard_model, guard_threshold, str(guard_blocklist) if guard_blocklist else None,
                                       guard_block, method="wordlist" if guard_wordlist else "fasttext")
        completions = generate_text(model, tok, prompt, params, stop=stop)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]generate failed[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None
    verdicts = output_guard.filter([c.text for c in completions]) if output_guard else [(c.text, None) for c in completions]
    for c, (text, verdict) in zip(completions, verdicts):
        if as_json:
            record = {"prompt": c.prompt, "text": text, "finish_reason": c.finish_reason, "tokens": c.tokens}
            if verdict is not None:  # a blocked text's token ids would spell it out again: withheld too
                record.update(tokens=[] if verdict.blocked else c.tokens, blocked=verdict.blocked,
                              reason=verdict.reason, toxicity=verdict.score)
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.print(f"[dim]{escape(c.prompt)}[/]{escape(text)}  [dim]({c.finish_reason})[/]", highlight=False)
            if verdict is not None and verdict.blocked:
                err.print(f"[yellow]blocked[/]: {escape(verdict.reason or '')}", highlight=False)


@app.command()
def export(checkpoint_location: str = typer.Argument(..., metavar="CHECKPOINT", help="checkpoint directory (model.safetensors + model_config.json), a run directory (its newest checkpoint), or a URI such as s3://bucket/runs/x"),
           format_: str = typer.Option("hf", "--format", help="hf: a transformers model directory"),
           out_dir: Path = typer.Option(..., "--out", help="output directory (must not exist or be empty)"),
           tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer.json (default: the checkpoint's, then <run>/tokenizer/)"),
           dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16")) -> None:
    """Export a checkpoint for another library (hf: GPT2LMHeadModel / LlamaForCausalLM + tokenizer)."""
    if format_ != "hf":
        err.print(f"[red]unknown export format {format_!r}[/]; supported: hf")
        raise typer.Exit(EXIT_SPEC_ERROR)
    import tempfile

    from training.checkpoint import find_tokenizer
    from training.export import export_hf
    from training.finetune.lora import is_adapter_checkpoint, write_merged

    checkpoint = checkpoint_location
    try:
        checkpoint = _checkpoint_dir(checkpoint_location)
        with tempfile.TemporaryDirectory(prefix="gristmill-merge-") as tmp:
            source = checkpoint
            if is_adapter_checkpoint(checkpoint):  # a LoRA step checkpoint: export base + adapter merged
                source = write_merged(checkpoint, Path(tmp) / "merged")
                tokenizer = tokenizer or find_tokenizer(checkpoint)
            written = export_hf(source, out_dir, tokenizer_path=tokenizer, dtype=dtype)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        err.print(f"[red]export failed[/]: {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_SPEC_ERROR) from None
    out.print(f"[green]exported[/] {checkpoint} → {written} (transformers: AutoModelForCausalLM.from_pretrained)",
              highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
