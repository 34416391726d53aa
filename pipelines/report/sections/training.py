"""Training (``kind: pretrain`` and ``kind: finetune``): the run in one table (model preset and config,
parameters, steps, tokens seen, checkpoints on disk) and curves from ``metrics/train.csv`` (the
contract's columns step, tokens, loss, lr, grad_norm, tokens_per_s, mfu; val_loss and val_ppl on eval
steps; then any column a fine-tuning method adds: DPO ``chosen_reward`` / ``rejected_reward`` /
``margin`` / ``accuracy``, reward-model ``chosen_score`` / ``rejected_score`` / ``margin`` /
``accuracy``, their ``val_`` twins, SFT ``assistant_tokens``).

Every number comes from the run directory: the CSV, the manifest's training stage (its ``plan``),
``spec.yaml`` and the checkpoint folders (``model_config.json``, ``trainer_state.json``, the LoRA
adapter's safetensors header for the trainable-parameter count).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import struct
from typing import Any

import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.report.context import RunContext
from pipelines.report.render import figure, table
from pipelines.report.section import Section
from pipelines.report.svg import KEPT, NEUTRAL, REMOVED, RUN_A, RUN_B, fmt_num, line_chart

KEY, TITLE = "training", "Training"
MAX_POINTS = 2_000  # a long run's curve is thinned to this many points (every k-th step)
CONTRACT = ("step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "mfu")
STEP_DIR = re.compile(r"^step-(\d{6,})$")  # training.resume.STEP_DIR
# (chart title, y label, [(column, legend, colour)]) for the methods' own columns.
METHOD_CHARTS = {
    "dpo": [("DPO rewards β·(log π − log π_ref)", "reward",
             [("chosen_reward", "chosen", KEPT), ("rejected_reward", "rejected", REMOVED),
              ("val_chosen_reward", "val chosen", RUN_A), ("val_rejected_reward", "val rejected", RUN_B)]),
            ("DPO reward margin", "margin", [("margin", "train", NEUTRAL), ("val_margin", "validation", RUN_B)]),
            ("DPO preference accuracy", "accuracy", [("accuracy", "train", NEUTRAL), ("val_accuracy", "validation", RUN_B)])],
    "reward": [("Reward-model scores", "score",
                [("chosen_score", "chosen", KEPT), ("rejected_score", "rejected", REMOVED),
                 ("val_chosen_score", "val chosen", RUN_A), ("val_rejected_score", "val rejected", RUN_B)]),
               ("Reward-model margin", "margin", [("margin", "train", NEUTRAL), ("val_margin", "validation", RUN_B)]),
               ("Reward-model accuracy", "accuracy", [("accuracy", "train", NEUTRAL), ("val_accuracy", "validation", RUN_B)])],
}
COMMON_CHARTS = [("Learning rate", "lr", [("lr", "lr", NEUTRAL)]),
                 ("Gradient norm (before clipping)", "grad norm", [("grad_norm", "grad norm", NEUTRAL)]),
                 ("Throughput", "tokens/s", [("tokens_per_s", "tokens/s", NEUTRAL)]),
                 ("Model FLOPs utilisation", "MFU", [("mfu", "MFU", NEUTRAL)])]


def _column(t, name: str) -> list[float | None]:
    if name not in t.column_names:
        return []
    return pc.cast(t.column(name), "float64", safe=False).to_pylist()


def _points(steps: list[float | None], values: list[float | None], stride: int = 1) -> list[tuple[float, float]]:
    return [(s, v) for s, v in zip(steps[::stride], values[::stride])
            if s is not None and v is not None and math.isfinite(v)]


def _training_stage(ctx: RunContext) -> dict[str, Any]:
    """The manifest's training stage (pretrain ``01-pretrain``, finetune its train stage)."""
    for stage in ctx.manifest.get("stages") or []:
        if stage.get("kind") in ("pretrain", "finetune") and stage.get("plan"):
            return stage
    return {}


def _safetensors_numel(ctx: RunContext, rel: str) -> int | None:
    """Parameters in a safetensors file, from its JSON header alone (8-byte length, then the header)."""
    try:
        with ctx.run.fs.open_input_file(ctx.run.path(rel)) as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return None
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def checkpoints(ctx: RunContext) -> list[dict[str, Any]]:
    """Every ``checkpoints/step-NNNNNN`` folder, oldest first, with what its files say."""
    out = []
    for name in sorted(ctx.run.list_dirs("checkpoints")):
        m = STEP_DIR.match(posixpath.basename(name))
        if not m:
            continue
        rel = f"checkpoints/{posixpath.basename(name)}"
        state = ctx.run.read_json(f"{rel}/trainer_state.json") if ctx.run.exists(rel, "trainer_state.json") else None
        weights = (state or {}).get("weights_file", "model.safetensors")
        entry: dict[str, Any] = {"name": posixpath.basename(name), "step": int(m.group(1)),
                                 "complete": state is not None and ctx.run.exists(rel, weights), "weights": weights}
        if ctx.run.exists(rel, "adapter.safetensors"):
            entry["lora_trainable_params"] = _safetensors_numel(ctx, f"{rel}/adapter.safetensors")
        out.append(entry)
    return out


def _model_config(ctx: RunContext, ckpts: list[dict[str, Any]]) -> dict[str, Any] | None:
    for entry in reversed(ckpts):
        rel = f"checkpoints/{entry['name']}/model_config.json"
        if ctx.run.exists(rel):
            return (ctx.run.read_json(rel) or {}).get("config")
    return None


def _run_summary(ctx: RunContext, t, stage: dict[str, Any], ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    plan = stage.get("plan") or {}
    spec_model = ctx.spec.get("model") if isinstance(ctx.spec.get("model"), dict) else {}
    steps, tokens = [v for v in _column(t, "step") if v is not None], [v for v in _column(t, "tokens") if v is not None]
    lora = next((c["lora_trainable_params"] for c in reversed(ckpts) if c.get("lora_trainable_params")), None)
    params = plan.get("params")
    return {"kind": ctx.manifest.get("kind") or ctx.spec.get("kind"), "method": plan.get("method") or ctx.spec.get("method"),
            "preset": spec_model.get("preset"), "base": stage.get("base") or ctx.spec.get("from"),
            "model_config": _model_config(ctx, ckpts), "params": params,
            "lora_trainable_params": lora, "lora_trainable_fraction": lora / params if lora and params else None,
            "max_steps": plan.get("max_steps"), "steps_done": int(max(steps)) if steps else None,
            "tokens_seen": int(max(tokens)) if tokens else None, "num_workers": plan.get("num_workers"),
            "seq_len": plan.get("seq_len"), "global_batch_tokens": plan.get("global_batch_tokens"),
            "global_batch_rows": plan.get("global_batch_rows"), "seconds": stage.get("seconds"),
            "first_step_s": stage.get("first_step_s"),
            "status": stage.get("status"), "checkpoints": ckpts}


def _summary_html(run: dict[str, Any]) -> str:
    config = run["model_config"] or {}
    arch = ", ".join(f"{k} {config[k]}" for k in ("arch", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff",
                                                   "vocab_size", "max_seq_len") if config.get(k) is not None)
    lora = (f"{fmt_num(run['lora_trainable_params'])} ({run['lora_trainable_fraction']:.2%} of the model)"
            if run["lora_trainable_params"] and run["lora_trainable_fraction"] else fmt_num(run["lora_trainable_params"]))
    ckpts = ", ".join(c["name"] + ("" if c["complete"] else " (incomplete)") for c in run["checkpoints"])
    kv = [("method", run["method"]), ("preset", run["preset"]), ("from", run["base"]), ("model", arch),
          ("parameters", fmt_num(run["params"]) if run["params"] else None),
          ("LoRA trainable parameters", lora if run["lora_trainable_params"] else None),
          ("steps", f"{fmt_num(run['steps_done'])} of {fmt_num(run['max_steps'])}" if run["max_steps"] else fmt_num(run["steps_done"])),
          ("tokens seen", fmt_num(run["tokens_seen"]) if run["tokens_seen"] is not None else None),
          ("workers", run["num_workers"]), ("sequence length", run["seq_len"]),
          ("tokens per step", run["global_batch_tokens"]), ("rows per step", run["global_batch_rows"]),
          ("seconds", run["seconds"]), ("seconds to the first step", run["first_step_s"]),
          ("checkpoints", ckpts or "none")]
    return table([], [(k, v) for k, v in kv if v not in (None, "")], cls="kv")


def build(ctx: RunContext) -> Section | None:
    if not ctx.run.exists("metrics/train.csv"):
        return None
    with ctx.run.fs.open_input_stream(ctx.run.path("metrics/train.csv")) as f:
        t = pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    if "step" not in t.column_names or not t.num_rows:
        return None
    steps = _column(t, "step")
    stride = max(1, len(steps) // MAX_POINTS)
    train_pts, val_pts = _points(steps, _column(t, "loss"), stride), _points(steps, _column(t, "val_loss"))
    last: dict[str, Any] = {}
    extra = [c for c in t.column_names if c not in CONTRACT and c not in ("val_loss", "val_ppl", "wall_time")]
    for name in list(CONTRACT) + extra:
        values = [v for v in _column(t, name) if v is not None and math.isfinite(v)]
        if values:
            last[name] = values[-1]
    if val_pts:
        last["val_loss"] = val_pts[-1][1]
        ppl = [v for v in _column(t, "val_ppl") if v is not None]
        if ppl:
            last["val_ppl"] = ppl[-1]
    stage, ckpts = _training_stage(ctx), checkpoints(ctx)
    run = _run_summary(ctx, t, stage, ckpts)
    stats = {"rows": t.num_rows, "final": last, "best_val_loss": min(v for _, v in val_pts) if val_pts else None,
             "train_points": len(train_pts), "val_points": len(val_pts), "columns": t.column_names, "run": run}

    body = _summary_html(run)
    series = [("train loss", [p[0] for p in train_pts], [p[1] for p in train_pts], RUN_A)]
    if val_pts:
        series.append(("validation loss", [p[0] for p in val_pts], [p[1] for p in val_pts], RUN_B))
    charts = [figure(line_chart(series, y_label="loss", title="loss"), "Loss by optimizer step")]
    method_stats: dict[str, Any] = {}
    for title, y_label, columns in METHOD_CHARTS.get(run["method"] or "", []) + COMMON_CHARTS:
        lines = []
        for column, legend, colour in columns:
            pts = _points(steps, _column(t, column), stride)
            if pts:
                lines.append((legend, [p[0] for p in pts], [p[1] for p in pts], colour))
                if column in last and title not in [c[0] for c in COMMON_CHARTS]:
                    method_stats[column] = last[column]
        if lines:
            charts.append(figure(line_chart(lines, y_label=y_label, title=title), f"{title} by optimizer step"))
    stats["method_final"] = method_stats
    body += '<div class="grid">' + "".join(charts) + "</div>"
    body += "<h3>Last logged values</h3>" + table([], [(k, fmt_num(v)) for k, v in last.items()], numeric=(1,), cls="kv")
    return Section(KEY, TITLE, stats, body)
