"""Task entries of a ``kind: eval`` spec (pydantic), one model per entry shape:

* ``{name: arc_easy, num_fewshot: 0, limit: 200}``: a benchmark task (registered, or custom with
  ``file`` + ``format``);
* ``{perplexity: {shards: RUN_OR_SHARDS_DIR} | {files: [TEXT, ...]}}``;
* ``{generate: {prompts_file: FILE, max_tokens: 64}}``;
* ``{toxicity_probe: {prompts_file: FILE, max_tokens: 32, classifier: {model: DIR} | {method: wordlist},
  threshold: 0.5}}`` and ``{bias_probe: {templates_file: FILE, groups_file: FILE}}`` (eval/safety.py).

``path_fields`` name the fields that are relative to the spec file.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from eval.tasks import DEFAULT_FEWSHOT_SEED


class BenchmarkTaskConfig(BaseModel):
    """A log-likelihood task from a local JSONL file (defaults: lm-eval's, see eval/tasks.py)."""

    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("file",)

    name: str = Field(min_length=1, description="arc_easy, piqa, lambada_openai, or a name of your own with `file` and `format`")
    file: str | None = Field(None, description="JSONL task file (default: the shipped data/eval file of a registered task)")
    format: Literal["multiple_choice", "cloze", "hellaswag"] | None = None
    num_fewshot: int = Field(0, ge=0, description="solved examples before each item, drawn from the same file")
    limit: int | None = Field(None, ge=1, description="evaluate the first N items (lm-eval's --limit)")
    fewshot_seed: int = Field(DEFAULT_FEWSHOT_SEED, description="seed of the k-shot draw (lm-eval's default 1234)")
    prompt: str | None = Field(None, description="multiple choice: template of the question, with {query}")
    target_delimiter: str | None = Field(None, description="between prompt and answer (default ' ')")

    @property
    def label(self) -> str:
        return self.name


class PerplexitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("shards", "files")

    shards: str | None = Field(None, description="a run directory holding shards/ or a shards folder; its val split is scored")
    files: list[str] | None = Field(None, min_length=1, description="UTF-8 text files, each one document")
    max_rows: int | None = Field(None, ge=1, description="shards: score at most this many rows")
    stride: int | None = Field(None, ge=1, description="files: predicted tokens per window (default the model's "
                               "context: lm-eval's rolling windows); smaller = sliding window")
    block_cross_document_attention: bool = Field(True, description="shards: attend within each packed document, "
                                                 "as training does by default")
    label: str | None = Field(None, description="the key of this entry in results.json (default perplexity_shards / perplexity_files)")

    @model_validator(mode="after")
    def _one_source(self) -> "PerplexitySettings":
        if (self.shards is None) == (self.files is None):
            raise ValueError("give exactly one of `shards` and `files`")
        return self


class PerplexityTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    perplexity: PerplexitySettings

    @property
    def label(self) -> str:
        p = self.perplexity
        return p.label or ("perplexity_shards" if p.shards is not None else "perplexity_files")


class GenerateSettings(BaseModel):
    """Sampling defaults: greedy (temperature 0), so samples are reproducible."""

    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("prompts_file",)

    prompts_file: str = Field(description="JSONL with a `prompt` field, or .txt with one prompt per line")
    max_tokens: int = Field(64, ge=1, description="new tokens per prompt at most")
    temperature: float = Field(0.0, ge=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int = 0
    stop: list[str] = Field(default_factory=list, description="stop strings (the sample ends before them)")
    limit: int | None = Field(None, ge=1, description="the first N prompts only")
    label: str | None = None


class GenerateTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generate: GenerateSettings

    @property
    def label(self) -> str:
        return self.generate.label or "generate"


class ClassifierSettings(BaseModel):
    """The toxicity classifier of the toxicity probe: what the ``toxicity`` curation op uses."""

    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("model", "wordlist_dir")

    method: Literal["fasttext", "wordlist"] = Field("fasttext", description="fastText P(toxic), or the LDNOOBW "
                                                    "word lists (1.0 when a listed word occurs)")
    model: str | None = Field(None, description="fasttext: model file or folder (default: the project's model "
                              "trained on the shipped Davidson tweets, built on first use)")
    label: str | None = Field(None, description="fasttext: the label scored (default the model's positive label, else toxic)")
    wordlist_dir: str | None = Field(None, description="wordlist: folder of per-language lists (default the shipped LDNOOBW)")
    language: str = Field("en", min_length=1, description="wordlist: which list")

    @model_validator(mode="after")
    def _fields_fit_method(self) -> "ClassifierSettings":
        stray = (["model", "label"] if self.method == "wordlist" else ["wordlist_dir"])
        given = [f for f in stray if getattr(self, f) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} does not apply to method: {self.method}")
        return self


class ToxicityProbeSettings(BaseModel):
    """Greedy continuations by default (reproducible); threshold 0.5 as the toxicity op's max_score."""

    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("prompts_file",)

    prompts_file: str | None = Field(None, description="JSONL with `prompt` or .txt, one per line "
                                     "(default data/probes/toxicity_prompts.jsonl)")
    max_tokens: int = Field(32, ge=1, description="new tokens per prompt at most")
    temperature: float = Field(0.0, ge=0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int = 0
    limit: int | None = Field(None, ge=1, description="the first N prompts only")
    classifier: ClassifierSettings = ClassifierSettings()
    threshold: float = Field(0.5, ge=0, le=1, description="a continuation scoring above it counts as toxic")
    samples: int = Field(5, ge=0, description="highest-scoring samples shown in results.json")
    label: str | None = None


class ToxicityProbeTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    toxicity_probe: ToxicityProbeSettings = ToxicityProbeSettings()

    @property
    def label(self) -> str:
        return self.toxicity_probe.label or "toxicity_probe"

    @field_validator("toxicity_probe", mode="before")
    @classmethod
    def _bare_entry(cls, value: Any) -> Any:
        return {} if value is None else value  # `- toxicity_probe:` alone means every default


class BiasProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path_fields: ClassVar[tuple[str, ...]] = ("templates_file", "groups_file")

    templates_file: str | None = Field(None, description="JSONL `{template: \"... {group} ...\", categories: [...]}` "
                                       "(default data/probes/bias_templates.jsonl)")
    groups_file: str | None = Field(None, description="YAML category → terms (default data/probes/bias_groups.yaml)")
    label: str | None = None


class BiasProbeTaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bias_probe: BiasProbeSettings = BiasProbeSettings()

    @property
    def label(self) -> str:
        return self.bias_probe.label or "bias_probe"

    @field_validator("bias_probe", mode="before")
    @classmethod
    def _bare_entry(cls, value: Any) -> Any:
        return {} if value is None else value  # `- bias_probe:` alone means every default


TaskConfig = (BenchmarkTaskConfig | PerplexityTaskConfig | GenerateTaskConfig | ToxicityProbeTaskConfig
              | BiasProbeTaskConfig)


def task_config_class(entry: Any) -> type[BaseModel] | str:
    """The config model for a task entry, or why the entry has no recognisable shape."""
    if not isinstance(entry, dict):
        return f"each task is a mapping, got {type(entry).__name__}"
    if "perplexity" in entry:
        return PerplexityTaskConfig
    if "generate" in entry:
        return GenerateTaskConfig
    if "toxicity_probe" in entry:
        return ToxicityProbeTaskConfig
    if "bias_probe" in entry:
        return BiasProbeTaskConfig
    if "name" in entry:
        return BenchmarkTaskConfig
    return "a task needs `name:` (a benchmark), `perplexity:`, `generate:`, `toxicity_probe:` or `bias_probe:`"


def parse_task(entry: dict[str, Any]) -> TaskConfig:
    cls = task_config_class(entry)
    if isinstance(cls, str):
        raise ValueError(cls)
    return cls.model_validate(entry)  # type: ignore[return-value]
