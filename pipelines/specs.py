"""Spec models (pydantic v2) and validation with errors that point into the YAML file.

Validation runs in two phases so every error keeps its full field path: first the spec's own model
(``kind``, ``name``, ``ray`` …, with ``input`` and ``steps`` as plain mappings), then each input
entry against its reader's config and each step against its op's config, looked up in the registries
by name. All problems are collected and reported together.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.ingest.base import InputConfig, registered_readers
from curation.operator import Op, OpConfig, registered_ops
from pipelines.errors import SpecError, SpecIssue
from pipelines.yaml_source import Path, SourceMap, apply_overrides, load_yaml, read_spec_text

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class RaySettings(BaseModel):
    """Where the run executes. No address: an embedded local Ray is started for the run."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="Ray cluster address (ray://host:10001 or host:6379); "
                                "overridden by --address, which is overridden by nothing; RAY_ADDRESS is used when neither is set")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local Ray (default: all cores)")
    object_store_mb: int | None = Field(None, ge=64, description="object store size of the embedded local Ray")
    ship_code: bool = Field(True, description="when connecting to a cluster, ship the gristmill packages "
                            "to workers in the job's runtime_env (py_modules)")


class OutputSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"


class CurateSpec(BaseModel):
    """``kind: curate``: read inputs, run curation steps, write kept and rejected documents."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["curate"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    input: list[dict[str, Any]] = Field(min_length=1, description="input sources, each with a `format`")
    # list[Any]: each entry is checked in the second phase (_validate_steps), which also takes the
    # bare-op-name shorthand; list[dict] here refused `- normalize` before that phase could see it.
    steps: list[Any] = Field(default_factory=list, description="ordered curation steps, "
                             "each a one-key mapping `op_name: {config}` or a bare op name")
    output: OutputSettings = OutputSettings()
    ray: RaySettings = RaySettings()


class ClassifierSpec(BaseModel):
    """``kind: classifier``: train a fastText classifier (quality, toxicity …) from labelled data;
    the model and its held-out metrics land in ``<run>/model/``, ready for a `model:` field."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["classifier"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    train: dict[str, Any] = Field(description="training data, split and fastText settings")
    ray: RaySettings = RaySettings()


# --------------------------------------------------------------------------------------------------
# kind: pretrain (defaults and their sources: training/lightning_module.py, training/schedule.py)


class PretrainModelSettings(BaseModel):
    """A preset (``training.model.PRESETS``) with field overrides, or every field given. The
    vocabulary size always comes from the shards' tokenizer; ``max_seq_len`` defaults to the
    shards' ``seq_len``."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "gpt2-124m", "llama-350m"] | None = "tiny"
    arch: Literal["gpt2", "llama"] | None = None
    max_seq_len: int | None = Field(None, ge=1)
    n_layer: int | None = Field(None, ge=1)
    n_head: int | None = Field(None, ge=1)
    n_kv_head: int | None = Field(None, ge=1)
    d_model: int | None = Field(None, ge=1)
    d_ff: int | None = Field(None, ge=1)
    tie_embeddings: bool | None = None
    dropout: float | None = Field(None, ge=0, lt=1)
    rope_theta: float | None = Field(None, gt=0)
    norm_eps: float | None = Field(None, gt=0)
    bias: bool | None = None

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"preset"}).items() if v is not None}


class PretrainOptimizer(BaseModel):
    """AdamW; defaults of GPT-3 / nanoGPT (betas 0.9/0.95, weight decay 0.1, clip 1.0)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(6e-4, gt=0, description="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="on matrices only; norms and biases are not decayed")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm; null = no clipping")


class PretrainSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int | None = Field(None, ge=0, description="linear warmup; default 2% of the steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final rate / peak rate (nanoGPT: 0.1)")
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of the steps spent decaying "
                                  "(Hägele et al. 2024: a 20% cooldown matches cosine)")


class PretrainBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    micro_batch: int = Field(8, ge=1, description="rows per worker per forward/backward")
    global_batch_tokens: int | None = Field(None, ge=1, description="tokens per optimizer step over all "
                                            "workers; a multiple of micro_batch × seq_len × num_workers "
                                            "(the factor is the gradient accumulation). Default: no accumulation")


class PretrainScaling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU with use_gpu)")
    use_gpu: bool = False
    cpus_per_worker: float | None = Field(None, gt=0, description="default 1, or a fraction of the node "
                                          "when the cluster has too few CPUs to leave one for reading data")
    strategy: Literal["ddp", "fsdp"] = "ddp"
    max_failures: int = Field(2, ge=-1, description="worker failures retried from the last checkpoint "
                              "(ray.train.FailureConfig; -1 = unlimited)")

    @model_validator(mode="after")
    def _fsdp_on_gpus(self) -> "PretrainScaling":
        if self.strategy == "fsdp" and not self.use_gpu:
            raise ValueError("strategy fsdp shards the model across GPUs: it needs use_gpu: true (use ddp on CPUs)")
        return self


class PretrainSpec(BaseModel):
    """``kind: pretrain``: train a decoder-only model on token shards with Ray Train + Lightning."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pretrain"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    data: str = Field(description="a shards folder (holding manifest.json) or a curate run directory "
                      "holding shards/; relative to the spec file")
    model: PretrainModelSettings = PretrainModelSettings()
    optimizer: PretrainOptimizer = PretrainOptimizer()
    schedule: PretrainSchedule = PretrainSchedule()
    batch: PretrainBatch = PretrainBatch()
    precision: Literal["32", "bf16-mixed"] = "32"
    compile: bool = Field(False, description="torch.compile the model")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (or give max_tokens)")
    max_tokens: int | None = Field(None, ge=1, description="training tokens; steps = max_tokens / global batch tokens")
    eval_every: int = Field(100, ge=0, description="steps between val-loss evaluations (0 = never)")
    eval_batches: int = Field(20, ge=1, description="val micro-batches per worker per evaluation")
    checkpoint_every: int = Field(100, ge=1)
    keep: int | None = Field(3, ge=1, description="checkpoints kept (newest); null = all")
    seed: int = 1337
    block_cross_document_attention: bool = Field(True, description="tokens attend only within their own "
                                                 "document of a packed row")
    log_every: int = Field(10, ge=1, description="steps between progress lines (every step is in the CSV)")
    scaling: PretrainScaling = PretrainScaling()
    ray: RaySettings = RaySettings()

    @field_validator("model", mode="before")
    @classmethod
    def _preset_shorthand(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_length(self) -> "PretrainSpec":
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ValueError("give exactly one of max_steps and max_tokens")
        return self


# --------------------------------------------------------------------------------------------------
# kind: eval (task entries: eval/config.py; checked and resolved in pipelines/eval_run.py)


class EvalSpec(BaseModel):
    """``kind: eval``: score checkpoints on benchmark tasks, perplexity and generation samples;
    results in ``<run>/eval/results.json``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["eval"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    checkpoints: list[str] = Field(min_length=1, description="checkpoint directories, or run directories "
                                   "(their newest checkpoints/step-*); relative to the spec file")
    tasks: list[dict[str, Any]] = Field(min_length=1, description="`{name: arc_easy, num_fewshot: 0, limit: 200}`, "
                                        "`{perplexity: {shards: DIR} | {files: [...]}}`, `{generate: {prompts_file: F}}`, "
                                        "`{toxicity_probe: {...}}`, `{bias_probe: {...}}` (eval/config.py)")
    batch_size: int = Field(16, ge=1, description="rows per forward pass (requests, windows or shard rows)")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cuda asks Ray for one GPU per checkpoint")
    cpus_per_checkpoint: float = Field(1.0, gt=0, description="CPUs of each checkpoint's Ray task (torch threads)")
    quantize: Literal["none", "int8"] = Field("none", description="int8: evaluate the checkpoint with its Linear "
                                              "layers dynamically quantised to int8 (CPU; eval/quantize.py)")
    ray: RaySettings = RaySettings()


# --------------------------------------------------------------------------------------------------
# kind: finetune (methods: training/finetune/modules.py; checked and run in pipelines/finetune_run.py)


class FinetuneData(BaseModel):
    """JSONL files of `{prompt, response}` or `{messages: [...]}` (sft, lora, distill) or
    `{prompt, chosen, rejected}` (reward, dpo), and how to split off validation rows; or, for
    distill, token shards (language-model distillation on pretraining data)."""

    model_config = ConfigDict(extra="forbid")

    train: list[str] = Field(default_factory=list, description="JSONL files (globs allowed); relative to the spec file")
    shards: str | None = Field(None, description="distill: a shards folder (holding manifest.json) or a run directory "
                               "holding shards/ (kind: curate with tokenize); trains on every token, attention "
                               "blocked across documents; instead of train/val")
    val: list[str] = Field(default_factory=list, description="JSONL files for validation; default: "
                           "val_fraction of the train records, chosen by a hash of the record")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of train records held out when `val` is empty")

    @field_validator("train", "val", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> "FinetuneData":
        if bool(self.train) == (self.shards is not None):
            raise ValueError("give train (JSONL files) or shards (token shards, method distill), not both or neither")
        if self.shards is not None and self.val:
            raise ValueError("shards bring their own val split; val is for JSONL data")
        return self


class LoraSettings(BaseModel):
    """LoRA (Hu et al. 2021); defaults r=8, α=16, dropout 0.05 (PEFT/QLoRA's common choice), all
    attention and MLP projections (QLoRA sec. 4: adapters on every linear layer match full fine-tuning)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: list[Literal["attn.qkv", "attn.proj", "mlp.fc", "mlp.gate", "mlp.up", "mlp.proj"]] = Field(
        default_factory=lambda: ["attn.qkv", "attn.proj", "mlp.fc", "mlp.gate", "mlp.up", "mlp.proj"],
        min_length=1, description="projections to adapt (mlp.fc exists in gpt2 models, mlp.gate/up in llama; "
        "names the model lacks are skipped when others match)")


class DpoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="strength of the KL penalty to the reference (DPO paper, TRL default 0.1)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: assumed share of flipped labels")


class DistillSettings(BaseModel):
    """Knowledge distillation (Hinton et al. 2015): ``loss = alpha · T² · KL(teacher_T ‖ student_T) +
    (1 - alpha) · CE``, both per target token. Defaults T = 2 (DistilBERT, Sanh et al. 2019) and
    alpha = 0.5 (Hinton's equal weighting of soft and hard targets)."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(description="the teacher: a checkpoint directory, a run directory (its newest checkpoint) "
                         "or a transformers export; relative to the spec file. Frozen, in eval mode (bf16 on GPU); "
                         "it must use the student's tokenizer")
    temperature: float = Field(2.0, gt=0, description="softens both distributions; the KL term is scaled by T² so "
                               "its gradients keep their size as T changes (Hinton et al. 2015)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term; 1 - alpha weighs the cross-entropy "
                         "on the data (0 = plain training, the teacher only logged)")


class FinetuneOptimizer(PretrainOptimizer):
    """AdamW as for pretraining, with fine-tuning defaults: the learning rate depends on the method
    (sft 2e-5, lora 2e-4, reward 1e-5, dpo 5e-7: Zephyr / TRL / QLoRA's published settings; distill
    5e-4: DistilBERT's, a student that is trained rather than nudged) and no weight decay (HF TrainingArguments' default)."""

    lr: float | None = Field(None, gt=0, description="peak learning rate; default by method")
    weight_decay: float = Field(0.0, ge=0, description="on matrices only; norms and biases are not decayed")


FINETUNE_DEFAULT_LR = {"sft": 2e-5, "lora": 2e-4, "reward": 1e-5, "dpo": 5e-7, "distill": 5e-4}


class FinetuneSpec(BaseModel):
    """``kind: finetune``: SFT, LoRA, a reward model, DPO or distillation from a teacher, on Ray Train +
    Lightning (the pretraining launcher: same scaling, checkpoints, resume and metrics)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    kind: Literal["finetune"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    method: Literal["sft", "lora", "reward", "dpo", "distill"]
    from_: str | None = Field(None, alias="from", description="the checkpoint to start from: a checkpoint directory "
                              "(model.safetensors + model_config.json), a run directory (its newest checkpoints/step-*) "
                              "or a transformers GPT-2 / Llama directory (config.json + model.safetensors, e.g. "
                              "gristmill export). Required, except for distill with `student`")
    student: PretrainModelSettings | None = Field(None, description="distill: a fresh (randomly initialised) student "
                                                  "instead of `from`: a preset with overrides as in kind: pretrain; "
                                                  "the vocabulary is the teacher's")
    data: FinetuneData
    max_seq_len: int = Field(512, ge=8, description="tokens per training row (at most the model's max_seq_len - 1); "
                             "JSONL data only: token shards keep their own seq_len")
    packing: bool = Field(True, description="sft/lora: pack several conversations per row, attention blocked "
                          "between them; false: one conversation per row, padded")
    chat_template: str | None = Field(None, description="Jinja chat template (sandboxed); default: the "
                                      "tokenizer's chat_template, else the built-in <|role|> … <|end|> template")
    chat_template_file: str | None = Field(None, description="file holding the chat template; relative to the spec file")
    epochs: float | None = Field(None, gt=0, description="passes over the train rows (or give max_steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps (or give epochs)")
    lora: LoraSettings | None = Field(None, description="method lora: adapter settings (defaults when absent)")
    dpo: DpoSettings | None = Field(None, description="method dpo: beta and label smoothing")
    distill: DistillSettings | None = Field(None, description="method distill: the teacher, temperature and alpha")
    optimizer: FinetuneOptimizer = FinetuneOptimizer()
    schedule: PretrainSchedule = PretrainSchedule()
    batch: PretrainBatch = PretrainBatch()
    precision: Literal["32", "bf16-mixed"] = "32"
    compile: bool = Field(False, description="torch.compile the model")
    eval_every: int = Field(50, ge=0, description="steps between validation passes (0 = never)")
    eval_batches: int = Field(20, ge=1, description="val micro-batches per worker per evaluation")
    checkpoint_every: int = Field(100, ge=1)
    keep: int | None = Field(3, ge=1, description="checkpoints kept (newest); null = all")
    seed: int = 1337
    log_every: int = Field(10, ge=1, description="steps between progress lines (every step is in the CSV)")
    scaling: PretrainScaling = PretrainScaling()
    ray: RaySettings = RaySettings()

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("student", mode="before")
    @classmethod
    def _student_preset_shorthand(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> "FinetuneSpec":
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("give exactly one of epochs and max_steps")
        if self.lora is not None and self.method != "lora":
            raise ValueError(f"a `lora` block needs method: lora (method is {self.method})")
        if self.dpo is not None and self.method != "dpo":
            raise ValueError(f"a `dpo` block needs method: dpo (method is {self.method})")
        if self.method == "distill":
            if self.distill is None:
                raise ValueError("method distill needs a `distill` block naming the teacher: "
                                 "distill: {teacher: ../runs/pretrain-big}")
            if (self.from_ is None) == (self.student is None):
                raise ValueError("method distill: give `from` (the student's start checkpoint) or `student` "
                                 "(a fresh model: {preset: tiny, n_layer: 2, ...}), not both or neither")
        else:
            if self.distill is not None:
                raise ValueError(f"a `distill` block needs method: distill (method is {self.method})")
            if self.student is not None:
                raise ValueError(f"`student` (a fresh model) is for method distill; method {self.method} "
                                 "starts from a checkpoint: give `from`")
            if self.from_ is None:
                raise ValueError("`from` is required: the checkpoint to fine-tune")
            if self.data.shards is not None:
                raise ValueError(f"data.shards (token shards) is for method distill; method {self.method} "
                                 "reads JSONL records: give data.train")
        if self.chat_template and self.chat_template_file:
            raise ValueError("give chat_template or chat_template_file, not both")
        if self.method == "lora" and self.scaling.strategy == "fsdp":
            raise ValueError("LoRA checkpoints are written from one worker's adapters; use strategy: ddp")
        return self

    @property
    def learning_rate(self) -> float:
        return self.optimizer.lr or FINETUNE_DEFAULT_LR[self.method]


# --------------------------------------------------------------------------------------------------
# kind: pipeline (stages checked and resolved in pipelines/pipeline_spec.py, run by pipelines/pipeline_run.py)


class PipelineSpec(BaseModel):
    """``kind: pipeline``: named stages of the other kinds, run in order, each in ``<run>/stages/<name>/``;
    ``${stages.NAME}`` in a stage is an earlier stage's run directory. A finished stage whose spec and
    upstream stages are unchanged is skipped; a changed stage re-runs with everything downstream."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["pipeline"]
    name: str = Field(pattern=NAME_PATTERN, description="run name; the default run directory is runs/<name>")
    description: str = ""
    stages: dict[str, dict[str, Any]] = Field(min_length=1, description="stage name ([a-z0-9_-]+) → that kind's "
                                              "spec without `name` and `ray` (curate, classifier, pretrain, "
                                              "finetune, eval); run in this order")
    ray: RaySettings = RaySettings()


KINDS: dict[str, type[BaseModel]] = {"curate": CurateSpec, "classifier": ClassifierSpec, "pretrain": PretrainSpec,
                                     "eval": EvalSpec, "finetune": FinetuneSpec, "pipeline": PipelineSpec}


@dataclass(frozen=True)
class Step:
    index: int
    op: str
    label: str  # unique in the spec: the op name, or op_2, op_3 … when an op repeats
    config: OpConfig

    @property
    def op_class(self) -> type[Op]:
        return registered_ops()[self.op]

    def as_yaml(self) -> dict[str, Any]:
        return {self.op: self.config.model_dump(mode="json")}


@dataclass
class LoadedSpec:
    file: str
    base_dir: str
    model: BaseModel
    source: SourceMap
    inputs: list[InputConfig] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    train: BaseModel | None = None  # kind: classifier
    pipeline: Any = None  # kind: pipeline: its stages (pipelines.pipeline_spec.PipelinePlan)

    @property
    def kind(self) -> str:
        return self.model.kind  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        return self.model.name  # type: ignore[attr-defined]

    def resolved(self) -> dict[str, Any]:
        """The spec as it runs: defaults filled, env and --set applied, input paths made absolute."""
        out = self.model.model_dump(mode="json")
        if self.inputs:
            out["input"] = [self._absolute(cfg, cfg.model_dump(mode="json")) for cfg in self.inputs]
        if "steps" in out:
            out["steps"] = [s.as_yaml() for s in self.steps]
        if self.train is not None:
            out["train"] = self.train.model_dump(mode="json")
        if self.pipeline is not None:
            out["stages"] = self.pipeline.resolved_stages()
        return out

    def _absolute(self, cfg: InputConfig, entry: dict[str, Any]) -> dict[str, Any]:
        for name in type(cfg).path_fields:
            value = entry.get(name)
            if isinstance(value, str):
                entry[name] = resolve_path(value, self.base_dir)
            elif isinstance(value, list):
                entry[name] = [resolve_path(p, self.base_dir) for p in value]
        return entry


def _resolve_path_fields(config: BaseModel, base_dir: str) -> BaseModel:
    """Fields an op names in ``path_fields`` (a model file …) are relative to the spec file."""
    updates = {}
    for name in getattr(type(config), "path_fields", ()):
        value = getattr(config, name, None)
        if isinstance(value, str):
            updates[name] = resolve_path(value, base_dir)
        elif isinstance(value, list):
            updates[name] = [resolve_path(v, base_dir) for v in value]
    return config.model_copy(update=updates) if updates else config


def resolve_path(path: str, base_dir: str) -> str:
    """Local relative paths are relative to the spec file; URIs and absolute paths are kept."""
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# loading


def load_spec(file: str, overrides: list[str] | None = None, env: dict[str, str] | None = None) -> LoadedSpec:
    """Read, substitute, override and validate a spec file. Raises :class:`SpecError`."""
    try:
        text = read_spec_text(file)
    except OSError as exc:
        raise SpecError([SpecIssue(file, None, None, "", f"cannot read the spec: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([SpecIssue(file, None, None, "", f"the spec is not UTF-8 text: {exc}")]) from None
    data, source = load_yaml(text, file, env)
    if overrides:
        data = apply_overrides(data, overrides, source)
    return validate_spec(data, source, base_dir=str(FsPath(file).resolve().parent))


def validate_spec(data: Any, source: SourceMap, base_dir: str = ".") -> LoadedSpec:
    if not isinstance(data, dict):
        raise SpecError([source.issue((), f"a spec must be a mapping with a `kind`, got {type(data).__name__}")])
    kind = data.get("kind")
    if kind is None:
        raise SpecError([source.issue((), f"missing `kind`; expected one of: {', '.join(KINDS)}")])
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError([source.issue(("kind",), f"unknown kind {kind!r}{hint}; expected one of: {', '.join(KINDS)}")])
    if kind == "pipeline":
        from pipelines.pipeline_spec import validate_pipeline

        return validate_pipeline(data, source, base_dir)
    model_cls = KINDS[kind]
    issues: list[SpecIssue] = []
    model = _validate_model(model_cls, data, (), source, issues)
    loaded = LoadedSpec(source.file, base_dir, model, source)  # type: ignore[arg-type]
    if isinstance(data.get("input"), list):
        loaded.inputs = _validate_inputs(data["input"], source, issues)
    if isinstance(data.get("steps"), list):
        loaded.steps = _validate_steps(data["steps"], source, issues, base_dir)
    if kind == "classifier" and isinstance(data.get("train"), dict):
        from curation.classifiers.train import ClassifierTrainConfig

        train = _validate_model(ClassifierTrainConfig, data["train"], ("train",), source, issues)
        loaded.train = train.with_base_dir(base_dir) if train is not None else None
    if kind == "eval" and model is not None:
        from pipelines.eval_run import check_eval_spec

        loaded.model = check_eval_spec(model, base_dir, source, issues)
    if kind == "finetune" and model is not None:
        from pipelines.finetune_run import check_finetune_spec

        loaded.model = check_finetune_spec(model, base_dir, source, issues)
    if kind == "pretrain" and model is not None:
        from pipelines.pretrain_run import check_against_shards

        loaded.model = model.model_copy(update={"data": resolve_path(model.data, base_dir)})
        issues += check_against_shards(loaded.model, source)
    if issues:
        raise SpecError(issues)
    return loaded


def _validate_inputs(entries: list[Any], source: SourceMap, issues: list[SpecIssue]) -> list[InputConfig]:
    readers = registered_readers()
    out = []
    for i, entry in enumerate(entries):
        path: Path = ("input", i)
        if not isinstance(entry, dict):
            issues.append(source.issue(path, f"expected a mapping with `format` and `paths`, got {_show(entry)}"))
            continue
        fmt = entry.get("format")
        if fmt is None:
            issues.append(source.issue(path, f"missing `format`; expected one of: {', '.join(readers)}"))
            continue
        if fmt not in readers:
            close = difflib.get_close_matches(str(fmt), list(readers), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            issues.append(source.issue(path + ("format",), f"unknown input format {fmt!r}{hint}; expected one of: {', '.join(readers)}"))
            continue
        cfg = _validate_model(readers[fmt].Config, entry, path, source, issues)
        if cfg is not None:
            out.append(cfg)
    return out


def _validate_steps(entries: list[Any], source: SourceMap, issues: list[SpecIssue], base_dir: str = ".") -> list[Step]:
    ops = registered_ops()
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        path: Path = ("steps", i)
        if isinstance(entry, str):  # `- normalize` is shorthand for `- normalize: {}`
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            issues.append(source.issue(path, "each step is a one-key mapping `op_name: {config}`, "
                                             f"got {_show(entry)}"))
            continue
        (name, config), = entry.items()
        if name not in ops:
            close = difflib.get_close_matches(name, list(ops), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            issues.append(source.issue(path + (name,), f"unknown op {name!r}.{hint} Registered ops: {', '.join(ops)}",
                                       prefer_key=True))
            continue
        if config is None:
            config = {}
        if not isinstance(config, dict):
            issues.append(source.issue(path + (name,), f"the config of {name!r} must be a mapping, got {_show(config)}"))
            continue
        model = _validate_model(ops[name].Config, config, path + (name,), source, issues)
        if model is None:
            continue
        model = _resolve_path_fields(model, base_dir)
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}_{seen[name]}"
        steps.append(Step(i, name, label, model))
    _check_sinks_last(steps, source, issues)
    return steps


def _check_sinks_last(steps: list[Step], source: SourceMap, issues: list[SpecIssue]) -> None:
    """Sinks (tokenize …) consume the kept documents; a filter after one would have nothing to filter."""
    sink = None
    for step in steps:
        if getattr(step.op_class, "kind", "") == "sink":
            sink = step
        elif sink is not None:
            issues.append(source.issue(("steps", step.index), f"{step.label!r} comes after {sink.label!r}; "
                                       f"{sink.label!r} writes outputs of its own from the kept documents, so it "
                                       "(and any other sink step) must close `steps`"))


def _validate_model(model_cls: type[BaseModel], data: dict[str, Any], prefix: Path, source: SourceMap,
                    issues: list[SpecIssue]) -> BaseModel | None:
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = prefix + tuple(err["loc"])
            issues.append(_describe(model_cls, err, prefix, loc, source))
        return None


def _describe(model_cls: type[BaseModel], err: dict[str, Any], prefix: Path, loc: Path, source: SourceMap) -> SpecIssue:
    kind = err["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model_cls, tuple(err["loc"])[:-1])
        allowed = ", ".join(owner.model_fields) if owner else "?"
        key = loc[-1]
        close = difflib.get_close_matches(str(key), list(owner.model_fields), n=1) if owner else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return source.issue(loc, f"unknown key {key!r}{hint}; allowed: {allowed}", prefer_key=True)
    if kind == "missing":
        return source.issue(loc, "required field is missing")
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "input" in err and kind not in ("model_type", "dict_type"):
        message += f", got {_show(err['input'])}"
    return source.issue(loc, message)


def _model_at(model_cls: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    current: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) in (list, Union, dict) or str(get_origin(annotation)) == "types.UnionType":
        args = [a for a in get_args(annotation) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        annotation = models[0] if models else (args[-1] if args else annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            break
    return annotation


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------------
# JSON Schema for editors


def json_schemas() -> dict[str, Any]:
    """One JSON Schema per kind, with every registered input format and op spelled out."""
    out = {}
    for kind, model_cls in KINDS.items():
        schema = model_cls.model_json_schema()
        props = schema.get("properties", {})
        if "input" in props:
            props["input"]["items"] = {"oneOf": [r.Config.model_json_schema() for r in registered_readers().values()]}
        if "steps" in props:
            props["steps"]["items"] = {"oneOf": [
                {"type": "object", "additionalProperties": False, "required": [name],
                 "properties": {name: {**op.Config.model_json_schema(), "description": (op.__doc__ or "").strip().split("\n")[0]}}}
                for name, op in registered_ops().items()
            ]}
        out[kind] = schema
    return out
