"""The `training:` section of a job spec, and the resolved job every worker receives.

This module is imported by the CLI at start-up, so it imports nothing heavier than pydantic.
`launcher/spec.py` embeds `TrainingConfig`; workers read `ResolvedJob` from JSON.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from training.models.presets import PRESETS

S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/(?P<key>.*))?$")
IPV4_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Keys the planner owns; a raw `deepspeed:` block may not contradict them (as training/engine/deepspeed.py).
PLANNED_DEEPSPEED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
IMPORT_REF = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


class StrictModel(BaseModel):
    """Base for every spec section: unknown keys are errors, values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


def check_uri_form(value: str, what: str) -> str:
    """Accept a local path, an absolute `file:///path` or a well-formed `s3://bucket/prefix`; never
    touches the network. What the storage layer (training/checkpoint/storage.py) would refuse at
    run time is refused here, and so is a mistyped scheme that would silently become a local path."""
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    scheme = _mistyped_scheme(value)
    if scheme:
        form = "s3://<bucket>/<prefix>" if scheme == "s3" else "file:///absolute/path"
        raise ValueError(f"{what} '{value}' is a malformed {scheme} URI: write {form} (a lowercase scheme, then '//')")
    if "://" not in value:
        return value
    scheme = value.split("://", 1)[0]
    if scheme == "file":
        if not value.removeprefix("file://").removeprefix("localhost").startswith("/"):
            raise ValueError(f"{what} '{value}' is not absolute: a file:// URI is file:///absolute/path")
        return value
    if scheme != "s3":
        raise ValueError(f"{what} must be a local path, file:// or s3:// URI, got scheme '{scheme}://'")
    return _check_s3_uri(value, what)


def _mistyped_scheme(value: str) -> str | None:
    """'s3' or 'file' for `s3:bucket/x`, `s3:/bucket`, `S3://...`: meant as a URI, read as a local path."""
    head = value.partition(":")[0]
    if ":" not in value or head.lower() not in ("s3", "file"):
        return None
    return None if value.startswith(f"{head.lower()}://") else head.lower()


def _check_s3_uri(value: str, what: str) -> str:
    """S3's bucket naming rules (3-63 characters, no '..', not an IP address) and a prefix without '..'."""
    match = S3_URI.match(value)
    if not match or ".." in match["bucket"] or IPV4_LIKE.match(match["bucket"]):
        raise ValueError(
            f"{what} is not a valid S3 URI: expected s3://<bucket>/<prefix> with a 3-63 character "
            f"lowercase bucket name (letters, digits, '-', single '.'), got '{value}'"
        )
    if ".." in (match["key"] or "").split("/"):
        raise ValueError(f"{what} '{value}' has a '..' segment; S3 keys are not paths: name the prefix directly")
    return value


def check_import_ref(value: str | None, what: str) -> str | None:
    if value is not None and not IMPORT_REF.match(value):
        raise ValueError(f"{what} must look like 'package.module:function', got '{value}'")
    return value


class ModelConfig(StrictModel):
    """Which network to train: a built-in preset, a pretrained directory, or your own factory."""

    type: Literal["causal-lm", "sequence-classification"] = Field(default="causal-lm", description=(
        "`causal-lm` (next-token prediction) or `sequence-classification` (one class per text: a "
        "pretrained backbone with a new head)."))
    preset: str | None = Field(default=None, description=(
        "Built-in architecture trained from scratch (`llama-tiny` ... `llama-7b`, `gpt2-tiny` ... "
        "`gpt2-large`; an unknown name lists them); its vocabulary follows the tokenizer."))
    pretrained: str | None = Field(default=None, description=(
        "Directory with a transformers config, weights and tokenizer: a local path or `s3://`."))
    factory: str | None = Field(default=None, description=(
        "Your own model, `pkg.mod:fn`, called with this section and `vocab_size`; it returns a module, or "
        "a module and its loss function."))
    num_labels: int | None = Field(default=None, ge=2, le=100_000, description=(
        "Number of classes; required for `sequence-classification` without a `factory`."))
    overrides: dict[str, Any] = Field(default_factory=dict, description=(
        "Keys overriding the model's transformers config, e.g. `{hidden_dropout_prob: 0.1}`."))
    freeze_backbone_steps: int = Field(default=0, ge=0, le=10_000_000, description=(
        "Train only the new head for this many first steps (the backbone at learning rate 0)."))

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset '{value}'; choose one of: {', '.join(sorted(PRESETS))}")
        return value

    @field_validator("pretrained")
    @classmethod
    def _pretrained_form(cls, value: str | None) -> str | None:
        return None if value is None else check_uri_form(value, "pretrained")

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        return check_import_ref(value, "factory")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelConfig":
        given = [k for k in ("preset", "pretrained", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of preset, pretrained or factory"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.type == "sequence-classification" and self.factory is None and self.num_labels is None:
            raise ValueError("sequence-classification needs num_labels (the number of classes)")
        return self


class AugmentConfig(StrictModel):
    """Classification only: randomly mask or delete tokens of training examples."""

    mask_prob: float = Field(default=0.0, ge=0.0, le=0.5, description=(
        "Probability that a token of a training example is replaced by the mask token."))
    delete_prob: float = Field(default=0.0, ge=0.0, le=0.5, description=(
        "Probability that a token of a training example is deleted."))


# Raw text above this many megabytes must be prepared first (`dlaunch prepare`): the raw-text path
# reads and tokenizes the whole corpus on every rank, which costs about 47 bytes of RAM per byte
# of text and 0.75 s per MB before the first step (issue 13).
RAW_TEXT_LIMIT_MB = 64


class DataConfig(StrictModel):
    """Where the text comes from and how it is cut into sequences."""

    prepared: str | None = Field(default=None, description=(
        "A dataset written by `dlaunch prepare` (local path or `s3://`): token shards read by global sample "
        "index through a node-local cache, the tokenizer taken from it. Replaces `train`; a `train` that "
        "holds a prepared dataset's `manifest.json` is read the same way."))
    train: str | None = Field(default=None, description=(
        "Training text: a file, directory, glob or `s3://` prefix of `.txt` (one document per paragraph) "
        f"or `.jsonl` (one record per line) files, at most {RAW_TEXT_LIMIT_MB} MB (larger corpora: "
        "`dlaunch prepare`, then `prepared`)."))
    validation: str | None = Field(default=None, description=(
        "Validation text in the same forms (a prepared dataset when the training data is prepared); unset: "
        "`validation_fraction` of the training documents (prepared data: of its samples, by global index)."))
    text_field: str = Field(default="text", description="Field of a `.jsonl` record that holds the text.")
    label_field: str = Field(default="label", description=(
        "Field of a `.jsonl` record that holds the class (sequence classification)."))
    seq_len: int = Field(default=512, ge=8, le=1_048_576, description=(
        "Tokens per sequence: causal-LM text is packed into blocks this long; longer classification "
        "texts are cut."))
    validation_fraction: float = Field(default=0.05, gt=0.0, lt=0.5, description=(
        "Share of the training documents held out for validation when `validation` is unset."))
    tokenizer_vocab_size: int = Field(default=4096, ge=300, le=1_000_000, description=(
        "Vocabulary of the byte-level BPE tokenizer trained on the training split, for a model without "
        "a tokenizer of its own (a `preset`); prepared data brings its own tokenizer."))
    cache_dir: str | None = Field(default=None, description=(
        "Node-local directory where shards of an `s3://` prepared dataset are cached, shared by the ranks "
        "of a node; unset: `$DLAUNCH_CACHE/prepared/` (else `~/.cache/dlaunch/prepared/`)."))
    cache_gb: float = Field(default=20.0, gt=0.0, le=100_000.0, description=(
        "Bound of that cache in GB: least recently used shards no rank reads are evicted beyond it."))
    augment: AugmentConfig | None = Field(default=None, description=(
        "Sequence classification only: randomly mask or delete tokens of training examples."))

    @field_validator("prepared", "validation")
    @classmethod
    def _uri_form(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_uri_form(value, info.field_name or "path")

    @field_validator("train")
    @classmethod
    def _train_or_prepared(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Exactly one source of training data (checked here so the error names `train`)."""
        prepared = info.data.get("prepared")
        if value is None and prepared is None:
            raise ValueError("required: set training.data.train (raw text) or training.data.prepared "
                             "(a dataset written by `dlaunch prepare`)")
        if value is not None and prepared is not None:
            raise ValueError("set training.data.train or training.data.prepared, not both")
        return None if value is None else check_uri_form(value, "train")


class BatchConfig(StrictModel):
    """Sequences per optimizer step; grad_accum is derived by the planner."""

    global_: int = Field(alias="global", ge=1, le=100_000_000, description=(
        "Sequences per optimizer step, over all workers: `global = micro × grad_accum × nodes × "
        "gpus_per_node`, with `grad_accum` derived."))
    micro: int | None = Field(default=None, ge=1, le=65_536, description=(
        "Sequences per device in one forward and backward pass; unset: the planner chooses it."))

    @model_validator(mode="after")
    def _micro_not_above_global(self) -> "BatchConfig":
        if self.micro is not None and self.micro > self.global_:
            raise ValueError(f"micro ({self.micro}) cannot exceed global ({self.global_})")
        return self


class OptimizerConfig(StrictModel):
    name: Literal["adamw"] = Field(default="adamw", description="The optimizer: `adamw` (decoupled weight decay).")
    lr: float = Field(default=3e-4, gt=0.0, le=10.0, description=(
        "Peak learning rate, reached at the end of `schedule.warmup_steps`."))
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0, description=(
        "Decoupled weight decay; biases and norm weights are not decayed."))
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description=(
        "AdamW's decay rates of the first and second moment estimates, each in [0, 1)."))
    eps: float = Field(default=1e-8, gt=0.0, le=1.0, description="AdamW's epsilon, added to the denominator.")
    grad_clip: float = Field(default=1.0, ge=0.0, le=1e6, description=(
        "Clip the global gradient norm to this; `0` turns clipping off."))

    @field_validator("betas")
    @classmethod
    def _betas_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must each be in [0, 1), got {list(value)}")
        return value


class ScheduleConfig(StrictModel):
    warmup_steps: int = Field(default=0, ge=0, le=100_000_000, description=(
        "Steps of linear warmup to `optimizer.lr`; at most `max_steps`."))
    decay: Literal["cosine", "linear", "constant"] = Field(default="cosine", description=(
        "After warmup: `cosine` or `linear` decay to `min_lr_ratio` × lr at `max_steps`, or `constant`."))
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description=(
        "Final learning rate as a fraction of `optimizer.lr` (cosine and linear decay)."))


class ZeroConfig(StrictModel):
    stage: int | str = Field(default=0, description=(
        "ZeRO stage: `0` (plain data parallel), `1` (optimizer states partitioned), `2` (and gradients), "
        "`3` (and parameters), or `auto` (the planner picks the cheapest that fits device memory)."))
    offload_optimizer: bool = Field(default=False, description=(
        "Keep optimizer states in CPU memory and step there; stage 1, 2 or 3."))
    offload_params: bool = Field(default=False, description=(
        "Keep parameters in CPU memory between uses; stage 3 only."))

    @field_validator("stage", mode="before")
    @classmethod
    def _stage_range(cls, value: Any) -> int | str:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3):
            return value
        raise ValueError(f"stage must be 0, 1, 2, 3 or auto, got {value!r}")

    @model_validator(mode="after")
    def _offload_needs_stage(self) -> "ZeroConfig":
        if self.stage == "auto":
            return self
        if self.offload_params and self.stage != 3:
            raise ValueError("offload_params needs stage 3 (only ZeRO-3 partitions parameters)")
        if self.offload_optimizer and self.stage == 0:
            raise ValueError("offload_optimizer needs stage 1, 2 or 3")
        return self


class EarlyStoppingConfig(StrictModel):
    metric: str = Field(default="eval_loss", description=(
        "Evaluation metric to watch: `eval_loss`, `perplexity` (causal LM), `eval_accuracy` or "
        "`eval_macro_f1` (classification); it also picks the best checkpoint."))
    mode: Literal["min", "max"] = Field(default="min", description=(
        "`min` when smaller is better (loss), `max` when larger is (accuracy, F1)."))
    patience: int = Field(default=5, ge=1, le=1_000_000, description=(
        "Evaluations in a row without improvement before training stops."))
    min_delta: float = Field(default=0.0, ge=0.0, description="Smallest change that counts as an improvement.")


class EvalConfig(StrictModel):
    every_steps: int = Field(default=100, ge=1, le=100_000_000, description=(
        "Evaluate on the validation split every this many optimizer steps."))
    max_batches: int | None = Field(default=None, ge=1, le=1_000_000, description=(
        "Micro-batches each worker evaluates at most; unset: the whole validation split."))
    early_stopping: EarlyStoppingConfig | None = Field(default=None, description=(
        "Stop when `metric` has not improved by `min_delta` for `patience` evaluations; unset: train "
        "`max_steps`."))


class CheckpointConfig(StrictModel):
    uri: str = Field(default="runs", description=(
        "Where checkpoints go, under `<uri>/<name>/checkpoints/`: a local path or `s3://bucket/prefix` "
        "(a multi-node Kubernetes job needs `s3://`, which every pod shares)."))
    every_steps: int = Field(default=500, ge=1, le=100_000_000, description=(
        "Save a checkpoint every this many optimizer steps; also at the end and on SIGTERM."))
    keep_last: int = Field(default=3, ge=1, le=10_000, description=(
        "Newest committed checkpoints to keep; older ones are deleted after each commit."))
    keep_best: bool = Field(default=False, description=(
        "Also keep the checkpoint with the best `eval.early_stopping.metric` (else the lowest `eval_loss`)."))
    async_: bool = Field(default=True, alias="async", description=(
        "Upload in the background while training goes on (saving blocks only while the state is staged "
        "on local disk); `false` waits for each upload."))
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/.*)?$", description=(
        "Endpoint of an S3-compatible store (MinIO, SeaweedFS, R2, ...) for the job's `s3://` URIs; "
        "`AWS_ENDPOINT_URL` in the environment works too."))

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, value: str) -> str:
        return check_uri_form(value, "uri")


class WandbConfig(StrictModel):
    project: str = Field(default="dlaunch", description="W&B project of the run.")
    entity: str | None = Field(default=None, description="W&B team or user; unset: your default entity.")
    mode: Literal["auto", "online", "offline", "disabled"] = Field(default="auto", description=(
        "`auto`: `online` when a key is found (`WANDB_API_KEY`, or the netrc file `NETRC` names), else "
        "`offline`; or `disabled`."))


class TrackingConfig(StrictModel):
    wandb: WandbConfig | None = Field(default_factory=WandbConfig, description=(
        "Weights & Biases on rank 0, resumed with the job; `null` turns it off."))
    tensorboard: bool = Field(default=False, description="Also write scalars to `tensorboard/` in the run directory.")


class DistillConfig(StrictModel):
    """Train a smaller student of `teacher` (a dlaunch checkpoint URI or a transformers directory)."""

    teacher: str = Field(description=(
        "The teacher: a dlaunch checkpoint URI or a transformers directory (a local path or `s3://`)."))
    temperature: float = Field(default=2.0, gt=0.0, le=100.0, description=(
        "Softmax temperature T of the distillation loss `α·T²·KL + (1−α)·task loss`."))
    alpha: float = Field(default=0.5, ge=0.0, le=1.0, description=(
        "Weight α of the distillation term; `1 - α` weighs the task loss."))
    student_layers: int | None = Field(default=None, ge=1, le=1000, description=(
        "Layers of the student; unset: half the teacher's."))
    student_hidden: int | None = Field(default=None, ge=8, le=65536, description=(
        "Hidden size of the student; unset: the teacher's."))
    init_from_teacher: bool = Field(default=True, description=(
        "Student layer i starts from teacher layer i × stride; `false`: random initialisation."))

    @field_validator("teacher")
    @classmethod
    def _uri_form(cls, value: str) -> str:
        return check_uri_form(value, "teacher")


class QuantizeConfig(StrictModel):
    method: Literal["dynamic-int8"] = Field(default="dynamic-int8", description=(
        "`dynamic-int8`: PyTorch's dynamic quantization (Linear weights int8 per output channel, "
        "activations quantized per batch at run time)."))
    keep_float_layers: int = Field(default=0, ge=0, le=64, description=(
        "Leave in float the N Linear layers whose quantization alone moves the validation outputs most."))
    calibration_samples: int = Field(default=512, ge=8, le=100_000, description=(
        "Validation texts that rank the layers for `keep_float_layers`."))


class CompressionConfig(StrictModel):
    distill: DistillConfig | None = Field(default=None, description=(
        "Train a smaller student of a teacher instead of the model alone."))
    quantize: QuantizeConfig | None = Field(default=None, description=(
        "Quantize the trained model to int8 on rank 0 after training."))
    export: list[Literal["onnx", "torchscript", "hf"]] = Field(default_factory=list, description=(
        "Formats (`onnx`, `torchscript`, `hf`: a Hugging Face `save_pretrained` directory) the trained model is "
        "exported to on rank 0 after training, each checked against PyTorch."))


class TrainingConfig(StrictModel):
    """Everything a worker needs to know about the model, data and optimization."""

    seed: int = Field(default=0, ge=0, le=2**32 - 1, description=(
        "Seeds data order, initialisation and augmentation."))
    model: ModelConfig = Field(description=(
        "Which network to train: exactly one of `preset`, `pretrained` or `factory`."))
    entrypoint: str | None = Field(default=None, description=(
        "Your own training function, `pkg.mod:fn`, given a `TrainContext` (rank, DeepSpeed engine "
        "factory, data, checkpoints, tracker) instead of dlaunch's loop."))
    data: DataConfig = Field(description="Where the text comes from and how it is cut into sequences.")
    batch: BatchConfig = Field(description="The batch size and its split over devices.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="The AdamW optimizer.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="The learning-rate schedule.")
    max_steps: int = Field(ge=1, le=1_000_000_000, description="Optimizer steps to train.")
    precision: Literal["bf16", "fp16", "fp32"] = Field(default="bf16", description=(
        "`bf16`, `fp16` (with dynamic loss scaling) or `fp32`."))
    activation_checkpointing: bool = Field(default=False, description=(
        "Keep only each block's input and recompute the rest in backward: less memory, about 30% more "
        "compute (transformers models)."))
    zero: ZeroConfig = Field(default_factory=ZeroConfig, description="DeepSpeed ZeRO partitioning and CPU offload.")
    deepspeed: dict[str, Any] = Field(default_factory=dict, description=(
        "Raw DeepSpeed config keys, merged last; they may not contradict the planned batch, `zero`, "
        "`precision` or `optimizer.grad_clip` (`optimizer` and `scheduler` would have no effect and are "
        "refused)."))
    eval: EvalConfig = Field(default_factory=EvalConfig, description="When and how much to evaluate; early stopping.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description=(
        "Where and how often checkpoints are written, and which are kept."))
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Where metrics are logged.")
    compression: CompressionConfig | None = Field(default=None, description=(
        "Distillation, int8 quantization and export; quantization and export run on rank 0 after training."))

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str | None) -> str | None:
        return check_import_ref(value, "entrypoint")

    @model_validator(mode="after")
    def _warmup_within_run(self) -> "TrainingConfig":
        if self.schedule.warmup_steps > self.max_steps:
            raise ValueError(
                f"schedule.warmup_steps ({self.schedule.warmup_steps}) exceeds max_steps ({self.max_steps})"
            )
        return self


class BatchLayout(StrictModel):
    """How the global batch is split: global = micro * grad_accum * data_parallel."""

    micro: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    data_parallel: int = Field(ge=1)
    zero_stage: int = Field(ge=0, le=3)
    offload_optimizer: bool = False
    offload_params: bool = False

    @property
    def global_batch(self) -> int:
        return self.micro * self.grad_accum * self.data_parallel


class ResolvedJob(StrictModel):
    """What `python -m training.run job.json` reads: the spec after planning, paths resolved."""

    name: str
    backend: Literal["deepspeed", "ray"]
    nodes: int = Field(ge=1)
    procs_per_node: int = Field(ge=1)
    gpus_per_node: int = Field(default=0, ge=0)
    max_restarts: int = Field(default=0, ge=0)
    training: TrainingConfig
    layout: BatchLayout
    run_dir: str
    spec_hash: str

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


# --------------------------------------------------------------------------------------------
# Raw `deepspeed:` keys against what dlaunch plans and sets
# --------------------------------------------------------------------------------------------

# Keys DeepSpeed ignores because dlaunch passes its own optimizer and scheduler objects
# (deepspeed/runtime/engine.py, DeepSpeedEngine._configure_optimizer / _configure_lr_scheduler).
_IGNORED = {"optimizer": "training.optimizer", "scheduler": "training.schedule"}
_BUCKETS = ("reduce_bucket_size", "stage3_prefetch_bucket_size")

Conflict = tuple[str, str]  # (key path under training.deepspeed, message with the fix)


def _batch_conflicts(training: TrainingConfig, data_parallel: int) -> list[Conflict]:
    """train_batch_size / micro / accumulation: from training.batch (and the planner), never the raw block."""
    raw, batch = training.deepspeed, training.batch
    expected: dict[str, int] = {"train_batch_size": batch.global_}
    if batch.micro is not None:
        expected["train_micro_batch_size_per_gpu"] = batch.micro
        if batch.global_ % (batch.micro * data_parallel) == 0:
            expected["gradient_accumulation_steps"] = batch.global_ // (batch.micro * data_parallel)
    found = []
    for key in PLANNED_DEEPSPEED_KEYS:
        if key not in raw:
            continue
        if key in expected and raw[key] != expected[key]:
            found.append((key, f"= {raw[key]!r} contradicts the {expected[key]} dlaunch derives from "
                               "training.batch; remove it and set training.batch instead"))
        elif key not in expected and batch.micro is None:
            found.append((key, "is chosen by the planner since training.batch.micro is not set; remove it "
                               "and set training.batch.micro instead"))
    return found


def _offload_on(value: Any) -> bool:
    return isinstance(value, dict) and value.get("device", "none") not in (None, "none")


def _zero_conflicts(training: TrainingConfig) -> list[Conflict]:
    """The ZeRO stage and offloads come from training.zero; bucket sizes must be element counts."""
    section = training.deepspeed.get("zero_optimization")
    if section is None:
        return []
    if not isinstance(section, dict):
        return [("zero_optimization", "must be a mapping of DeepSpeed ZeRO settings")]
    zero, found = training.zero, []
    if "stage" in section and section["stage"] != zero.stage:
        found.append(("zero_optimization.stage", f"= {section['stage']!r} contradicts training.zero.stage "
                                                 f"({zero.stage}); set training.zero.stage instead"))
    for key, field in (("offload_optimizer", "offload_optimizer"), ("offload_param", "offload_params")):
        planned = getattr(zero, field)
        if key in section and (zero.stage == "auto" or _offload_on(section[key]) != planned):
            found.append((f"zero_optimization.{key}", f"contradicts training.zero.{field} ({planned}"
                                                      f"{', stage auto' if zero.stage == 'auto' else ''}); "
                                                      f"set training.zero.{field} instead"))
    for key in _BUCKETS:
        value = section.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            found.append((f"zero_optimization.{key}", f"= {value!r} must be a positive number of elements"))
    return found


def _other_conflicts(training: TrainingConfig) -> list[Conflict]:
    """Precision and gradient clipping set elsewhere in the spec; optimizer and scheduler DeepSpeed ignores."""
    raw, found = training.deepspeed, []
    for key in ("bf16", "fp16"):
        section = raw.get(key)
        enabled = section.get("enabled") if isinstance(section, dict) else None
        if enabled is not None and bool(enabled) != (training.precision == key):
            found.append((f"{key}.enabled", f"= {section['enabled']!r} contradicts training.precision "
                                            f"({training.precision}); set training.precision instead"))
    clip = training.optimizer.grad_clip
    if "gradient_clipping" in raw and raw["gradient_clipping"] != clip:
        found.append(("gradient_clipping", f"= {raw['gradient_clipping']!r} contradicts training.optimizer.grad_clip "
                                           f"({clip}); set training.optimizer.grad_clip instead"))
    found += [(key, f"has no effect: dlaunch gives DeepSpeed its own optimizer and schedule; set {where} instead")
              for key, where in _IGNORED.items() if key in raw]
    return found


def deepspeed_conflicts(training: TrainingConfig, data_parallel: int) -> list[Conflict]:
    """Raw `training.deepspeed` keys that contradict what dlaunch plans or sets, found before any worker starts.

    The raw block is merged last into the config dlaunch generates (training/engine/deepspeed.py),
    so a contradiction would silently change the batch, ZeRO layout or precision the planner
    checked, or fail only inside the workers.
    """
    return _batch_conflicts(training, data_parallel) + _zero_conflicts(training) + _other_conflicts(training)
