"""Plan a job before anything runs: model size, memory per device for each ZeRO stage, and the layout.

The layout is micro-batch x gradient accumulation x data-parallel size = global batch, plus the
ZeRO stage and offload flags. Workers receive it in the resolved job, so every rank agrees.

Memory per device = model states + activations of one micro-batch + a stated overhead.
- Model states follow DeepSpeed's accounting (the ZeRO paper): with bf16/fp16, 2Ψ bytes of
  parameters, 2Ψ of gradients and 12Ψ of Adam state (fp32 master copy, momentum, variance);
  stage 1 divides the optimizer part by the data-parallel size N, stage 2 also the gradients,
  stage 3 also the parameters. With fp32 the parameters and gradients take 4Ψ each and Adam 8Ψ
  (12Ψ from stage 1 on, where DeepSpeed keeps a separate fp32 master partition).
- Activations are what autograd saves in the HF implementations (llama-like and GPT-2-like
  blocks, fused attention as on GPUs), plus the fp32 logits and their gradient; with activation
  checkpointing only each layer's input is kept and one layer is recomputed at a time.
- Overhead is stated, not guessed: `RUNTIME_OVERHEAD` for the CUDA context, NCCL and allocator
  fragmentation, DeepSpeed's gradient-reduction bucket, ZeRO-3's gathered-parameter working
  set, and the fp32 gradient partition DeepSpeed builds during the optimizer step.
A configuration fits when that total stays below device memory minus `HEADROOM`.

Nothing here allocates the model: presets are counted from their configuration (exactly; the
tests compare against instantiated models), other models on the meta device.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.errors import PlanError
from launcher.gpus import GiB, device_memory_bytes, device_name
from launcher.quantity import format_bytes, parse_quantity
from launcher.spec import JobSpec, batch_problems, divisors
from training.config import BatchLayout, ModelConfig, TrainingConfig
from training.models.presets import PRESETS

# Without a memory limit, prefer micro-batches no larger than this when the spec leaves it open
# (with one, the largest micro-batch that fits is chosen).
DEFAULT_MAX_MICRO = 8
HEADROOM = 0.10
RUNTIME_OVERHEAD = 1 * GiB
# DeepSpeed's defaults (elements) unless `training.deepspeed.zero_optimization` overrides them.
DS_REDUCE_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# Shorter sequences are suggested in multiples of this.
SEQ_STEP = 64
GATED_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3",
                               "olmo", "olmo2", "granite", "cohere"})


# --------------------------------------------------------------------------------------------
# Model size, without allocating the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a network, read without allocating its weights."""

    parameters: int
    largest_layer: int  # parameters of the biggest single module: ZeRO-3 gathers one at a time
    source: str
    family: str = "unknown"  # "gated" (llama-like MLP), "gpt" (GPT-2/BERT-like), "unknown"
    hidden: int = 0
    layers: int = 0
    intermediate: int = 0
    q_dim: int = 0
    kv_dim: int = 0
    vocab: int = 0  # 0 for classifiers, whose logits are negligible
    mlp_saved: int = 4  # (tokens x intermediate) tensors one MLP keeps for backward

    @property
    def knows_activations(self) -> bool:
        return self.family != "unknown" and self.hidden > 0 and self.layers > 0


_LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None, "attention_bias": False,
    "mlp_bias": False, "tie_word_embeddings": False,
}
_GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_inner": None,
    "tie_word_embeddings": True, "activation_function": "gelu_new",
}
# Keys that change no parameter shape; any other key sends a preset to the meta-device count.
_LLAMA_SHAPELESS = frozenset({
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "initializer_range",
    "attention_dropout", "hidden_act", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "pretraining_tp",
})
_GPT2_SHAPELESS = frozenset({
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "scale_attn_weights",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
})


def planned_vocab_size(training: TrainingConfig) -> int | None:
    """The vocabulary a causal LM without a pretrained directory is built with (preset or factory).

    The worker trains its own BPE tokenizer of `data.tokenizer_vocab_size` tokens and builds the
    model with that vocabulary; it is an upper bound, since BPE on a small corpus may stop short.
    Pretrained models and classifiers bring their own vocabulary, so None.
    """
    model = training.model
    if model.type == "causal-lm" and model.pretrained is None:
        return training.data.tokenizer_vocab_size
    return None


def preset_kwargs(name: str, vocab_size: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config keyword arguments a preset is built with, exactly as `training.models.build` applies them."""
    kwargs = dict(PRESETS[name]["kwargs"])
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides or {})
    return kwargs


def _llama_shape(kw: dict[str, Any], num_labels: int | None, source: str) -> ModelShape:
    """Exact parameter count of a `LlamaFor{CausalLM,SequenceClassification}` from its config."""
    c = {**_LLAMA_DEFAULTS, **kw}
    h, f, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    head_dim = c["head_dim"] or h // heads
    q_dim, kv_dim = heads * head_dim, (c["num_key_value_heads"] or heads) * head_dim
    attn = 2 * h * q_dim + 2 * h * kv_dim + (q_dim + 2 * kv_dim + h) * bool(c["attention_bias"])
    mlp = 3 * h * f + (2 * f + h) * bool(c["mlp_bias"])
    head = h * num_labels if num_labels else vocab * h * (not c["tie_word_embeddings"])
    total = vocab * h + c["num_hidden_layers"] * (attn + mlp + 2 * h) + h + head
    largest = max(vocab * h, h * f + f * bool(c["mlp_bias"]), h * q_dim + q_dim * bool(c["attention_bias"]))
    return ModelShape(parameters=total, largest_layer=largest, source=source, family="gated", hidden=h,
                      layers=c["num_hidden_layers"], intermediate=f, q_dim=q_dim, kv_dim=kv_dim,
                      vocab=0 if num_labels else vocab, mlp_saved=4)


def _gpt2_shape(kw: dict[str, Any], num_labels: int | None, source: str) -> ModelShape:
    """Exact parameter count of a `GPT2{LMHeadModel,ForSequenceClassification}` from its config."""
    c = {**_GPT2_DEFAULTS, **kw}
    h, vocab, layers = c["n_embd"], c["vocab_size"], c["n_layer"]
    f = c["n_inner"] or 4 * h
    block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h)
    head = h * num_labels if num_labels else vocab * h * (not c["tie_word_embeddings"])
    total = vocab * h + c["n_positions"] * h + layers * block + 2 * h + head
    largest = max(vocab * h, h * f + f, 3 * h * h + 3 * h)
    return ModelShape(parameters=total, largest_layer=largest, source=source, family="gpt", hidden=h,
                      layers=layers, intermediate=f, q_dim=h, kv_dim=h, vocab=0 if num_labels else vocab,
                      mlp_saved=_gpt_mlp_saved(c["activation_function"]))


def _gpt_mlp_saved(activation: str | None) -> int:
    """HF's `gelu_new` is written out in Python and keeps 5 intermediates; fused activations keep 2."""
    return 5 if activation == "gelu_new" else 2


_ANALYTIC: dict[str, tuple[Callable[..., ModelShape], frozenset[str], dict[str, Any]]] = {
    "LlamaConfig": (_llama_shape, _LLAMA_SHAPELESS, _LLAMA_DEFAULTS),
    "GPT2Config": (_gpt2_shape, _GPT2_SHAPELESS, _GPT2_DEFAULTS),
}


def _num_labels(model: ModelConfig) -> int | None:
    return model.num_labels if model.type == "sequence-classification" else None


def _preset_shape(model: ModelConfig, vocab_size: int | None) -> ModelShape:
    """Presets of known config classes are counted from their keys; anything unusual on the meta device."""
    assert model.preset is not None
    kwargs = preset_kwargs(model.preset, vocab_size, model.overrides)
    source = f"preset {model.preset}"
    config_class = PRESETS[model.preset]["config_class"]
    if config_class in _ANALYTIC:
        count, shapeless, defaults = _ANALYTIC[config_class]
        if set(kwargs) <= shapeless | set(defaults):
            return count(kwargs, _num_labels(model), source)
    return _meta_shape(lambda: _build_preset(model, vocab_size), model, source)


def _build_preset(model: ModelConfig, vocab_size: int | None) -> Any:
    """The preset as the worker builds it (a causal LM), or with a classification head."""
    from training.models.build import build_causal_lm, preset_config

    if not _num_labels(model):
        return build_causal_lm(model, vocab_size=vocab_size)
    from transformers import AutoModelForSequenceClassification

    assert model.preset is not None
    config = preset_config(model.preset, vocab_size, model.overrides)
    config.num_labels = model.num_labels
    return AutoModelForSequenceClassification.from_config(config)


def _meta_shape(build: Callable[[], Any], model: ModelConfig, source: str) -> ModelShape:
    """Count the module `build()` returns on the meta device; a transformers config yields its dimensions."""
    module = meta_module(build)
    parameters, largest = parameter_counts(module)
    config = getattr(module, "config", None)
    if config is None:
        config = getattr(getattr(module, "backbone", None), "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return ModelShape(parameters=parameters, largest_layer=largest, source=source)
    return shape_from_config(config.to_dict(), parameters, largest, source, classifier=bool(_num_labels(model)))


def meta_module(build: Callable[[], Any]) -> Any:
    """The module `build()` returns (or the module inside a returned tuple), built on the meta device."""
    import torch

    with torch.device("meta"):
        built = build()
    if isinstance(built, torch.nn.Module):
        return built
    for item in built if isinstance(built, (tuple, list)) else ():
        if isinstance(item, torch.nn.Module):
            return item
    raise TypeError(f"expected a torch.nn.Module (or a tuple holding one), got {type(built).__name__}")


def parameter_counts(module: Any) -> tuple[int, int]:
    """(parameters, largest layer) of a module; shared (tied) parameters count once, as in `parameters()`."""
    parameters = sum(p.numel() for p in module.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()), default=0)
    return parameters, largest


def _first(config: dict[str, Any], *keys: str) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def shape_from_config(config: dict[str, Any], parameters: int, largest: int, source: str,
                      classifier: bool) -> ModelShape:
    """Read the dimensions the activation model needs from a `transformers` config dict."""
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    if not (hidden and layers and heads):
        return ModelShape(parameters=parameters, largest_layer=largest, source=source)
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    gated = config.get("model_type") in GATED_MODEL_TYPES
    activation = _first(config, "hidden_act", "activation_function")
    return ModelShape(
        parameters=parameters, largest_layer=largest, source=source, family="gated" if gated else "gpt",
        hidden=hidden, layers=layers, intermediate=_first(config, "intermediate_size", "n_inner", "ffn_dim")
        or 4 * hidden, q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
        vocab=0 if classifier else config.get("vocab_size", 0), mlp_saved=4 if gated else _gpt_mlp_saved(activation),
    )


def read_pretrained_config(uri: str) -> dict[str, Any]:
    """`config.json` of a pretrained model directory, local or `s3://` (only that file is read)."""
    from training.checkpoint.errors import CheckpointError
    from training.checkpoint.storage import join_uri, storage_for

    where = join_uri(uri, "config.json")
    try:
        return json.loads(storage_for(uri).read_bytes(where))
    except (CheckpointError, OSError, *_s3_client_errors(uri)) as e:
        missing = _missing_credentials(e)
        if missing is not None:
            raise PlanError(f"training.model.pretrained: counting the model's parameters means reading {where}, "
                            f"which needs S3 credentials: {missing}. {CREDENTIALS_HINT}") from e
        raise PlanError(f"training.model.pretrained: cannot read {where} to count the model's parameters "
                        f"({e}); point it at a directory holding a transformers config.json") from e
    except json.JSONDecodeError as e:
        raise PlanError(f"training.model.pretrained: {where} is not valid JSON ({e})") from e


CREDENTIALS_HINT = (
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible store), or "
    "AWS_PROFILE. Without credentials, fix the layout (set training.batch.micro and a training.zero.stage "
    "other than auto): `render` and `submit --dry-run` then lay the batch out without reading the model"
)


def _s3_client_errors(uri: str) -> tuple[type[Exception], ...]:
    """botocore's own errors, for an s3:// URI: building the client can raise them unwrapped
    (partial credentials in the environment)."""
    if not uri.startswith("s3://"):
        return ()
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError,)


def _missing_credentials(error: BaseException) -> str | None:
    """botocore's message when `error` was caused by absent or partial S3 credentials, else None."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, NoCredentialsError):
            return "none were found"
        if isinstance(cause, PartialCredentialsError):
            return f"only some were found ({cause})"
        cause = cause.__cause__
    return None


def _build_pretrained(directory: Path, model: ModelConfig) -> Any:
    """The network the worker builds from a pretrained directory, from its config alone (no weights).

    Causal LMs are `AutoModelForCausalLM`; classifiers are dlaunch's own backbone + head.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if model.type == "sequence-classification":
        from training.models.classifier import build_classifier

        assert model.num_labels is not None
        return build_classifier(directory, model.num_labels, model.overrides, pretrained=False)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory, **model.overrides))


def _pretrained_shape(model: ModelConfig) -> ModelShape:
    """Read only `config.json` (local or s3://) and count the model it describes on the meta device."""
    import tempfile

    assert model.pretrained is not None
    config = read_pretrained_config(model.pretrained)
    with tempfile.TemporaryDirectory(prefix="dlaunch-plan-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            return _meta_shape(lambda: _build_pretrained(Path(tmp), model), model, f"pretrained {model.pretrained}")
        except (ValueError, KeyError, OSError) as e:
            raise PlanError(f"training.model.pretrained: cannot build the model described by {model.pretrained}"
                            f"/config.json ({type(e).__name__}: {e}); is it a transformers model directory?") from e


def _factory_shape(model: ModelConfig, vocab_size: int | None) -> ModelShape:
    """Call the user's factory as the worker does, `factory(model, vocab_size=...)`, on the meta device."""
    from training.imports import load_object

    assert model.factory is not None
    try:
        function = load_object(model.factory, "training.model.factory")
        return _meta_shape(lambda: function(model, vocab_size=vocab_size), model, f"factory {model.factory}")
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise PlanError(f"training.model.factory: could not build '{model.factory}' on the meta device to count its "
                        f"parameters ({type(e).__name__}: {e}); it must be importable here and take "
                        "(model_config, vocab_size=...)") from e


def model_shape(model: ModelConfig, vocab_size: int | None = None) -> ModelShape:
    """Parameter count and dimensions of the network `model` describes, without allocating it.

    `vocab_size` is what the worker passes: its tokenizer's size for presets and factories
    (see `planned_vocab_size`); None keeps a preset's own vocabulary.
    """
    if model.preset is not None:
        return _preset_shape(model, vocab_size)
    if model.pretrained is not None:
        return _pretrained_shape(model)
    return _factory_shape(model, vocab_size)


def count_parameters(model: ModelConfig, vocab_size: int | None = None) -> int:
    """Exactly `sum(p.numel() for p in built_model.parameters())`, computed without building it."""
    return model_shape(model, vocab_size).parameters


# --------------------------------------------------------------------------------------------
# Memory per device
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One ZeRO configuration: stage and what is offloaded to host memory."""

    stage: int
    offload_optimizer: bool = False
    offload_params: bool = False

    @property
    def offload(self) -> str:
        """'none', 'optimizer', 'params' or 'optimizer+params'."""
        parts = [name for name, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params)) if on]
        return "+".join(parts) or "none"

    @property
    def label(self) -> str:
        return f"ZeRO-{self.stage}" + ("" if self.offload == "none" else f" + offload {self.offload}")


# Every valid combination, in the table's order.
OPTIONS: tuple[Option, ...] = (
    Option(0), Option(1), Option(1, offload_optimizer=True), Option(2), Option(2, offload_optimizer=True),
    Option(3), Option(3, offload_optimizer=True), Option(3, offload_params=True),
    Option(3, offload_optimizer=True, offload_params=True),
)
# Cheapest (fastest) first: the order `stage: auto` tries them in. Partitioning costs less than
# offloading, which moves the optimizer step to the CPU (DeepSpeed's own guidance: 0 > 1 > 2 >
# 2 + offload > 3 > 3 + offload); stage 1 + offload is never leaner than stage 2 + offload.
PREFERENCE: tuple[Option, ...] = (
    Option(0), Option(1), Option(2), Option(2, offload_optimizer=True), Option(1, offload_optimizer=True),
    Option(3), Option(3, offload_optimizer=True), Option(3, offload_params=True),
    Option(3, offload_optimizer=True, offload_params=True),
)


@dataclass(frozen=True)
class ModelStates:
    """Bytes of parameters, gradients and optimizer state one rank holds, on device and on host."""

    parameters: int
    gradients: int
    optimizer: int
    host: int

    @property
    def device(self) -> int:
        return self.parameters + self.gradients + self.optimizer


def model_state_bytes(parameters: int, option: Option, data_parallel: int, precision: str) -> ModelStates:
    """Per-rank model states by DeepSpeed's accounting (the ZeRO paper's 2Ψ + 2Ψ + 12Ψ).

    Offloaded optimizer state lives on the host with an fp32 copy of the gradient partition;
    offloaded parameters keep their 16-bit partition on the host.
    """
    e = ELEMENT_BYTES[precision]
    optimizer_per_param = 12 if e < 4 or option.stage > 0 else 8
    n = data_parallel
    params = e * parameters // (n if option.stage == 3 else 1)
    grads = e * parameters // (n if option.stage >= 2 else 1)
    optimizer = optimizer_per_param * parameters // (n if option.stage >= 1 else 1)
    host = 0
    if option.offload_optimizer:
        host += optimizer + 4 * parameters // n
        optimizer = 0
        grads = grads if option.stage == 1 else 0
    if option.offload_params:
        host += params
        params = 0
    return ModelStates(parameters=params, gradients=grads, optimizer=optimizer, host=host)


def _layer_bytes_per_token(shape: ModelShape, e: int) -> int:
    """Bytes autograd keeps per token for one transformer block (measured on HF llama and GPT-2).

    llama-like: two RMSNorms keep their fp32 input and normalised value, the projections'
    inputs, q/k/v and the attention output, four (tokens x intermediate) MLP tensors.
    GPT-2-like: LayerNorm inputs, projection inputs, six hidden-sized attention tensors, and
    the MLP's intermediates. Fused attention keeps no (seq x seq) matrix.
    """
    h, f = shape.hidden, shape.intermediate
    if shape.family == "gated":
        return 2 * (4 + e) * h + 2 * e * h + 2 * e * (shape.q_dim + shape.kv_dim) + shape.mlp_saved * e * f
    return 2 * e * h + 2 * e * h + 6 * e * h + shape.mlp_saved * e * f


def _head_bytes_per_token(shape: ModelShape, e: int) -> int:
    """Final norm, the output projection's input, and the fp32 log-probabilities the loss keeps."""
    norm = (4 + e) * shape.hidden if shape.family == "gated" else e * shape.hidden
    return norm + e * shape.hidden + 4 * shape.vocab


def saved_activation_bytes(shape: ModelShape, micro: int, seq_len: int, precision: str,
                           checkpointing: bool = False) -> int:
    """What autograd holds when the forward pass of one micro-batch ends (0 for unknown architectures).

    With activation checkpointing only each block's input is kept.
    """
    if not shape.knows_activations:
        return 0
    e = ELEMENT_BYTES[precision]
    per_layer = e * shape.hidden if checkpointing else _layer_bytes_per_token(shape, e)
    return micro * seq_len * (shape.layers * per_layer + _head_bytes_per_token(shape, e))


def activation_bytes(shape: ModelShape, micro: int, seq_len: int, precision: str, checkpointing: bool) -> int:
    """Peak activation memory of one micro-batch: what the forward pass saved, plus, when backward
    starts, the fp32 logits gradient and its cast, and with checkpointing one block recomputed."""
    if not shape.knows_activations:
        return 0
    e, tokens = ELEMENT_BYTES[precision], micro * seq_len
    recomputed = _layer_bytes_per_token(shape, e) if checkpointing else 0
    return saved_activation_bytes(shape, micro, seq_len, precision, checkpointing) + tokens * (
        recomputed + shape.vocab * (4 + e))


@dataclass(frozen=True)
class DeepSpeedBuffers:
    """Buffer sizes (elements) DeepSpeed allocates whatever the model size."""

    reduce_bucket: int = DS_REDUCE_BUCKET
    prefetch_bucket: int = DS_PREFETCH_BUCKET
    overlap_comm: bool = False

    @classmethod
    def from_training(cls, training: TrainingConfig) -> "DeepSpeedBuffers":
        """DeepSpeed's defaults, or what the spec's raw `deepspeed.zero_optimization` block sets."""
        zero = training.deepspeed.get("zero_optimization")
        zero = zero if isinstance(zero, dict) else {}
        try:
            return cls(
                reduce_bucket=int(zero.get("reduce_bucket_size", DS_REDUCE_BUCKET)),
                prefetch_bucket=int(zero.get("stage3_prefetch_bucket_size", DS_PREFETCH_BUCKET)),
                overlap_comm=bool(zero.get("overlap_comm", False)),
            )
        except (TypeError, ValueError) as e:
            raise PlanError("training.deepspeed.zero_optimization: bucket sizes must be numbers of elements "
                            f"({e})") from e


def overhead_bytes(shape: ModelShape, option: Option, precision: str, buffers: DeepSpeedBuffers) -> int:
    """The stated overhead: runtime, gradient-reduction bucket(s), ZeRO-3's gathered working set."""
    e = ELEMENT_BYTES[precision]
    total = RUNTIME_OVERHEAD
    if option.stage >= 1:
        copies = 2 if buffers.overlap_comm and option.stage < 3 else 1
        total += copies * e * buffers.reduce_bucket
    if option.stage == 3:
        total += 2 * e * shape.largest_layer + e * min(buffers.prefetch_bucket, shape.parameters)
    return total


def step_transient_bytes(parameters: int, option: Option, data_parallel: int, precision: str) -> int:
    """fp32 gradients DeepSpeed materialises on the device for the optimizer step (activations are gone then)."""
    if option.offload_optimizer or (ELEMENT_BYTES[precision] == 4 and option.stage == 0):
        return 0
    return 4 * parameters // (data_parallel if option.stage >= 1 else 1)


@dataclass(frozen=True)
class Memory:
    """What one device (and its node's host, for offload) needs for one option and micro-batch."""

    states: ModelStates
    activations: int
    activations_checkpointed: int
    overhead: int
    step_transient: int
    host_per_node: int

    def device_total(self, checkpointing: bool = False) -> int:
        active = self.activations_checkpointed if checkpointing else self.activations
        return self.states.device + self.overhead + max(active, self.step_transient)


# --------------------------------------------------------------------------------------------
# Choosing a layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Device memory per GPU and host memory per node; None where the spec does not say."""

    device_bytes: int | None
    host_bytes: int | None
    device: str

    @property
    def usable_device(self) -> int | None:
        return None if self.device_bytes is None else int(self.device_bytes * (1 - HEADROOM))

    @property
    def usable_host(self) -> int | None:
        return None if self.host_bytes is None else int(self.host_bytes * (1 - HEADROOM))

    @classmethod
    def from_spec(cls, spec: JobSpec) -> "Limits":
        r = spec.resources
        host = int(parse_quantity(r.memory)) if r.memory is not None else None
        return cls(device_memory_bytes(r.gpu_type, r.gpu_memory_gb), host, device_name(r.gpu_type, r.gpu_memory_gb))


@dataclass(frozen=True)
class Scenario:
    """The settings a plan is made for; the search for the smallest change varies them."""

    nodes: int
    seq_len: int
    micro: int | None  # fixed by the spec, or None to choose
    options: tuple[Option, ...]
    checkpointing: bool = False
    check_host: bool = True


@dataclass(frozen=True)
class Inputs:
    """Everything about the job that the search does not vary."""

    shape: ModelShape
    precision: str
    global_batch: int
    procs_per_node: int
    limits: Limits
    buffers: DeepSpeedBuffers

    def data_parallel(self, scenario: Scenario) -> int:
        return scenario.nodes * self.procs_per_node

    def memory(self, scenario: Scenario, option: Option, micro: int) -> Memory:
        """Per-device memory of `option` at `micro` sequences of `scenario.seq_len` tokens."""
        n, p = self.data_parallel(scenario), self.shape.parameters
        states = model_state_bytes(p, option, n, self.precision)
        act = activation_bytes(self.shape, micro, scenario.seq_len, self.precision, checkpointing=False)
        ckpt = activation_bytes(self.shape, micro, scenario.seq_len, self.precision, checkpointing=True)
        return Memory(states, act, ckpt, overhead_bytes(self.shape, option, self.precision, self.buffers),
                      step_transient_bytes(p, option, n, self.precision), states.host * self.procs_per_node)

    def fits(self, scenario: Scenario, memory: Memory) -> bool | None:
        """True/False against device (and, when known and checked, host) memory; None without a limit."""
        usable = self.limits.usable_device
        if usable is None:
            return None
        host = self.limits.usable_host
        host_ok = not scenario.check_host or host is None or memory.host_per_node <= host
        return memory.device_total(scenario.checkpointing) <= usable and host_ok


@dataclass(frozen=True)
class Choice:
    """A layout that fits: the option, the micro-batch and what it needs per device."""

    option: Option
    micro: int
    grad_accum: int
    data_parallel: int
    memory: Memory


def _micro_fits(inputs: Inputs, scenario: Scenario, option: Option, micro: int) -> bool:
    return bool(inputs.fits(scenario, inputs.memory(scenario, option, micro)))


def largest_fitting_micro(inputs: Inputs, scenario: Scenario, option: Option) -> int | None:
    """The largest micro-batch (a divisor of the per-rank batch) that fits with `option`, if any."""
    per_rank = inputs.global_batch // inputs.data_parallel(scenario)
    candidates = [scenario.micro] if scenario.micro else reversed(divisors(per_rank))
    return next((m for m in candidates if per_rank % m == 0 and _micro_fits(inputs, scenario, option, m)), None)


def _target_micro(per_rank: int) -> int:
    return max(d for d in divisors(per_rank) if d <= DEFAULT_MAX_MICRO)


def choose(inputs: Inputs, scenario: Scenario) -> Choice | None:
    """The first option (cheapest, in `scenario.options` order) that fits, with its largest micro-batch."""
    dp = inputs.data_parallel(scenario)
    if inputs.global_batch % dp:
        return None
    per_rank = inputs.global_batch // dp
    if scenario.micro and per_rank % scenario.micro:
        return None
    for option in scenario.options:
        micro = largest_fitting_micro(inputs, scenario, option)
        if micro is not None:
            return Choice(option, micro, per_rank // micro, dp, inputs.memory(scenario, option, micro))
    return None


# --------------------------------------------------------------------------------------------
# When nothing fits: the smallest change that would
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A change to the spec that makes the job fit, and the layout it then gets."""

    text: str
    choice: Choice
    scenario: Scenario


def _zero_text(option: Option, stage_was_fixed: bool) -> str:
    parts = [f"stage: {option.stage}"]
    parts += [f"{k}: true" for k, on in (("offload_optimizer", option.offload_optimizer),
                                         ("offload_params", option.offload_params)) if on]
    return "set training.zero to {" + ", ".join(parts) + "}" + (" (or stage: auto)" if stage_was_fixed else "")


def _lever_texts(base: Scenario, scenario: Scenario, choice: Choice) -> list[str]:
    """Describe, field by field, how `scenario` differs from the spec."""
    texts = []
    if base.micro and not scenario.micro:
        texts.append(f"set training.batch.micro to {choice.micro} (or leave it out)")
    if scenario.options != base.options:
        texts.append(_zero_text(choice.option, stage_was_fixed=len(base.options) == 1))
    if base.check_host and not scenario.check_host:
        need = choice.memory.host_per_node / (1 - HEADROOM)
        texts.append(f"raise resources.memory to at least {need / GiB:.0f}Gi per node (offloaded model states)")
    if scenario.nodes != base.nodes:
        texts.append(f"use resources.nodes: {scenario.nodes} (data-parallel size {choice.data_parallel})")
    if scenario.seq_len != base.seq_len:
        texts.append(f"shorten training.data.seq_len to {scenario.seq_len} or less")
    if scenario.checkpointing and not base.checkpointing:
        texts.append("set training.activation_checkpointing: true")
    return texts


@dataclass(frozen=True)
class Lever:
    """One kind of change the planner may suggest; `numeric` ones are searched over values."""

    name: str
    numeric: bool = False


def _levers(inputs: Inputs, base: Scenario) -> list[Lever]:
    """The changes worth trying, least disruptive first; activation checkpointing (extra compute) last."""
    levers = []
    if base.micro:
        levers.append(Lever("micro"))
    if base.options != PREFERENCE:
        levers.append(Lever("zero"))
    if inputs.limits.host_bytes is not None:
        levers.append(Lever("host"))
    levers += [Lever("nodes", numeric=True), Lever("seq", numeric=True)]
    return levers if base.checkpointing else levers + [Lever("checkpointing")]


def _switch(scenario: Scenario, lever: Lever) -> Scenario:
    changes: dict[str, dict[str, Any]] = {
        "micro": {"micro": None}, "zero": {"options": PREFERENCE}, "host": {"check_host": False},
        "checkpointing": {"checkpointing": True},
    }
    return replace(scenario, **changes[lever.name])


def _more_nodes(inputs: Inputs, scenario: Scenario) -> Iterator[Scenario]:
    """Larger node counts that keep the global batch divisible by the data-parallel size."""
    if inputs.global_batch % inputs.procs_per_node:
        return
    for nodes in divisors(inputs.global_batch // inputs.procs_per_node):
        if nodes > scenario.nodes:
            yield replace(scenario, nodes=nodes)


def _shorter_sequence(inputs: Inputs, scenario: Scenario) -> Iterator[Scenario]:
    """The longest sequence below the current one that fits (binary search in steps of SEQ_STEP)."""
    step = SEQ_STEP if scenario.seq_len > SEQ_STEP else 8
    low, high, best = 1, (scenario.seq_len - 1) // step, None
    while low <= high:
        mid = (low + high) // 2
        if choose(inputs, replace(scenario, seq_len=mid * step)) is not None:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    if best is not None:
        yield replace(scenario, seq_len=best * step)


def _try_change(inputs: Inputs, base: Scenario, combo: tuple[Lever, ...]) -> Change | None:
    """Apply the switches in `combo`, search its numeric lever if any, and describe the result."""
    scenario = base
    for lever in combo:
        if not lever.numeric:
            scenario = _switch(scenario, lever)
    numeric = next((lever.name for lever in combo if lever.numeric), None)
    candidates: Iterator[Scenario] = iter([scenario])
    if numeric == "nodes":
        candidates = _more_nodes(inputs, scenario)
    elif numeric == "seq":
        candidates = _shorter_sequence(inputs, scenario)
    for candidate in candidates:
        choice = choose(inputs, candidate)
        if choice is not None:
            return Change(" and ".join(_lever_texts(base, candidate, choice)), choice, candidate)
    return None


def smallest_changes(inputs: Inputs, base: Scenario, limit: int = 3) -> list[Change]:
    """Changes that make the job fit: only those touching the fewest settings, in preference order."""
    levers = _levers(inputs, base)
    found: list[Change] = []
    for size in range(1, len(levers) + 1):
        for combo in itertools.combinations(levers, size):
            if sum(lever.numeric for lever in combo) > 1:
                continue
            change = _try_change(inputs, base, combo)
            if change is not None:
                found.append(change)
            if len(found) == limit:
                return found
        if found:
            return found
    return found


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionRow:
    """One line of the plan's table: an option's memory per device at the table's micro-batch."""

    option: Option
    memory: Memory
    fits: bool | None
    max_micro: int | None

    def to_json(self) -> dict[str, Any]:
        m = self.memory
        return {
            "model_states_bytes": m.states.device,
            "parameters_bytes": m.states.parameters,
            "gradients_bytes": m.states.gradients,
            "optimizer_bytes": m.states.optimizer,
            "activation_bytes": m.activations,
            "activation_checkpointed_bytes": m.activations_checkpointed,
            "overhead_bytes": m.overhead,
            "step_transient_bytes": m.step_transient,
            "total_bytes": m.device_total(),
            "host_bytes_per_node": m.host_per_node,
            "fits": self.fits,
            "max_micro": self.max_micro,
        }


@dataclass
class Plan:
    """The planner's answer: model size, memory per device for every option, and the chosen layout.

    `layout` is None only from `estimate_job` when nothing fits; `problem` then says why and
    `changes` lists the smallest changes that would fit.
    """

    parameters: int
    model: str
    precision: str
    seq_len: int
    micro: int  # the micro-batch the table is computed at
    limits: Limits
    rows: list[OptionRow]
    layout: BatchLayout | None
    reason: str
    chosen_memory: Memory | None = None
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def memory_checked(self) -> bool:
        return self.limits.device_bytes is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: parameters, `stages` "0".."3" (bytes per device), `chosen`, notes."""
        stages: dict[str, dict[str, Any]] = {str(s): {} for s in range(4)}
        for row in self.rows:
            entry = stages[str(row.option.stage)]
            if row.option.offload == "none":
                entry.update(row.to_json())
            else:
                entry.setdefault("offload", {})[row.option.offload] = row.to_json()
        return {
            "parameters": self.parameters, "model": self.model, "precision": self.precision,
            "seq_len": self.seq_len, "micro": self.micro, "device": self.limits.device,
            "device_memory_bytes": self.limits.device_bytes, "usable_device_bytes": self.limits.usable_device,
            "host_memory_bytes": self.limits.host_bytes, "headroom": HEADROOM,
            "stages": stages, "chosen": self._chosen_json(), "reason": self.reason, "notes": self.notes,
            "problem": self.problem, "suggestions": [c.text for c in self.changes],
        }

    def _chosen_json(self) -> dict[str, Any] | None:
        if self.layout is None:
            return None
        chosen: dict[str, Any] = {**self.layout.model_dump(), "global_batch": self.layout.global_batch}
        if self.chosen_memory is not None:
            chosen["total_bytes"] = self.chosen_memory.device_total()
            chosen["host_bytes_per_node"] = self.chosen_memory.host_per_node
        return chosen


def _per_rank_batch(spec: JobSpec) -> int:
    """Sequences per rank per step; errors name the field and the values that would work.

    `validate` refuses these specs already (`launcher.spec.batch_problems`); this guards specs
    built in code.
    """
    for problem in batch_problems(spec):
        raise PlanError(f"{problem.path} ({problem.value}) {problem.message}; {problem.hint}")
    return spec.training.batch.global_ // spec.world_size


def allowed_options(spec: JobSpec) -> tuple[Option, ...]:
    """The spec's own option, or with `stage: auto` every option that keeps the offloads it asks for."""
    zero = spec.training.zero
    if zero.stage != "auto":
        return (Option(int(zero.stage), zero.offload_optimizer, zero.offload_params),)
    return tuple(o for o in PREFERENCE if (o.offload_optimizer or not zero.offload_optimizer)
                 and (o.offload_params or not zero.offload_params))


def job_inputs(spec: JobSpec) -> tuple[Inputs, Scenario]:
    """What the planner knows about `spec`: fixed inputs and the scenario the spec asks for."""
    training = spec.training
    inputs = Inputs(
        shape=model_shape(training.model, planned_vocab_size(training)), precision=training.precision,
        global_batch=training.batch.global_, procs_per_node=spec.resources.procs_per_node,
        limits=Limits.from_spec(spec), buffers=DeepSpeedBuffers.from_training(training),
    )
    base = Scenario(nodes=spec.resources.nodes, seq_len=training.data.seq_len, micro=training.batch.micro,
                    options=allowed_options(spec), checkpointing=training.activation_checkpointing)
    return inputs, base


def _rows(inputs: Inputs, scenario: Scenario, micro: int) -> list[OptionRow]:
    rows = []
    for option in OPTIONS:
        memory = inputs.memory(scenario, option, micro)
        fits = inputs.fits(scenario, memory)
        best = largest_fitting_micro(inputs, replace(scenario, micro=None), option) if fits is not None else None
        rows.append(OptionRow(option, memory, fits, best))
    return rows


def _layout(option: Option, micro: int, per_rank: int, dp: int) -> BatchLayout:
    layout = BatchLayout(micro=micro, grad_accum=per_rank // micro, data_parallel=dp, zero_stage=option.stage,
                         offload_optimizer=option.offload_optimizer, offload_params=option.offload_params)
    assert layout.global_batch == per_rank * dp
    return layout


def _common_notes(inputs: Inputs, spec: JobSpec) -> list[str]:
    notes = []
    if spec.training.model.preset:
        notes.append(f"vocabulary {planned_vocab_size(spec.training)} from training.data.tokenizer_vocab_size "
                     "(the worker's own BPE tokenizer; at most this many tokens)")
    if not inputs.shape.knows_activations:
        notes.append("activation memory is unknown for this model (no transformers config); only model states "
                     "and overhead are counted")
    return notes


def _unchecked_plan(spec: JobSpec, inputs: Inputs, base: Scenario, per_rank: int) -> Plan:
    """No device memory known: lay out the batch only, with the spec's stage (auto becomes the first allowed)."""
    option = base.options[0]
    micro = base.micro or _target_micro(per_rank)
    what = "CPU workers" if spec.resources.gpus_per_node == 0 else "no resources.gpu_type or gpu_memory_gb"
    reason = f"{option.label} as set in training.zero.stage"
    if spec.training.zero.stage == "auto":
        reason = (f"stage auto chose {option.label}: device memory is unknown ({what}), so nothing needs "
                  "partitioning; set resources.gpu_type or gpu_memory_gb to have the stage chosen by memory")
    notes = [f"device memory not checked ({what}): batch layout only"] + _common_notes(inputs, spec)
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=micro, limits=inputs.limits, rows=_rows(inputs, base, micro),
                layout=_layout(option, micro, per_rank, inputs.data_parallel(base)), reason=reason,
                chosen_memory=inputs.memory(base, option, micro), notes=notes)


def _fitted_plan(spec: JobSpec, inputs: Inputs, base: Scenario, choice: Choice) -> Plan:
    usable = inputs.limits.usable_device or 0
    need = format_bytes(choice.memory.device_total())
    if spec.training.zero.stage == "auto":
        reason = (f"stage auto: {choice.option.label} is the cheapest option that fits "
                  f"(micro-batch {choice.micro}: {need} of {format_bytes(usable)} usable per device)")
    else:
        reason = f"{choice.option.label} as set in training.zero (micro-batch {choice.micro}: {need} of " \
                 f"{format_bytes(usable)} usable per device)"
    notes = _common_notes(inputs, spec)
    if choice.memory.host_per_node and inputs.limits.host_bytes is None:
        notes.append(f"host memory not checked: offload needs {format_bytes(choice.memory.host_per_node)} per node; "
                     "set resources.memory to check it")
    per_rank = inputs.global_batch // choice.data_parallel
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=choice.micro, limits=inputs.limits,
                rows=_rows(inputs, base, choice.micro), layout=_layout(choice.option, choice.micro, per_rank,
                                                                        choice.data_parallel),
                reason=reason, chosen_memory=choice.memory, notes=notes)


def _problem_text(spec: JobSpec, inputs: Inputs, base: Scenario, rows: list[OptionRow], micro: int,
                  changes: list[Change]) -> str:
    """What does not fit, by how much, and the smallest changes that would."""
    allowed = [r for r in rows if r.option in base.options]
    lean = min(allowed, key=lambda r: r.memory.device_total())
    r, shape = spec.resources, inputs.shape
    text = (f"{shape.source} ({shape.parameters:,} parameters, {inputs.precision}) does not fit on "
            f"{r.nodes} node(s) x {r.procs_per_node} GPU(s) of {inputs.limits.device} "
            f"({format_bytes(inputs.limits.usable_device or 0)} usable per device after {HEADROOM:.0%} headroom) "
            f"at micro-batch {micro} and training.data.seq_len {base.seq_len}: the leanest allowed option, "
            f"{lean.option.label}, needs {format_bytes(lean.memory.device_total())} per device")
    host = inputs.limits.usable_host
    if host is not None and lean.memory.host_per_node > host:
        text += f" and {format_bytes(lean.memory.host_per_node)} of host memory per node ({format_bytes(host)} usable)"
    if not changes:
        return text + ("\n  no change of ZeRO stage, offload, nodes, sequence length or activation checkpointing "
                       "fits; use devices with more memory (resources.gpu_type / gpu_memory_gb) or a smaller model")
    lines = [f"{c.text} -> {c.choice.option.label}, micro-batch {c.choice.micro}: "
             f"{format_bytes(c.choice.memory.device_total(c.scenario.checkpointing))} per device" for c in changes]
    return text + "\n  smallest change: " + lines[0] + "".join(f"\n  or: {line}" for line in lines[1:])


def _failed_plan(spec: JobSpec, inputs: Inputs, base: Scenario) -> Plan:
    micro = base.micro or 1
    rows = _rows(inputs, base, micro)
    changes = smallest_changes(inputs, base)
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=micro, limits=inputs.limits, rows=rows, layout=None,
                reason="nothing fits", notes=_common_notes(inputs, spec),
                problem=_problem_text(spec, inputs, base, rows, micro, changes), changes=changes)


def estimate_job(spec: JobSpec) -> Plan:
    """Plan `spec` without raising when nothing fits: `.layout` is then None and `.problem` says why.

    Raises `PlanError` only for batches that cannot be split at all, or a model that cannot be read.
    """
    per_rank = _per_rank_batch(spec)
    inputs, base = job_inputs(spec)
    if inputs.limits.device_bytes is None:
        return _unchecked_plan(spec, inputs, base, per_rank)
    choice = choose(inputs, base)
    if choice is None:
        return _failed_plan(spec, inputs, base)
    return _fitted_plan(spec, inputs, base, choice)


def plan_job(spec: JobSpec) -> Plan:
    """The plan `render` and `submit` use; raises `PlanError` (what does not fit + the smallest change)."""
    plan = estimate_job(spec)
    if plan.layout is None:
        raise PlanError(plan.problem or "the job does not fit")
    return plan


def _fixed_because(spec: JobSpec) -> str | None:
    """Why the layout does not depend on the model's size, or None when the planner chooses by memory."""
    r, training = spec.resources, spec.training
    if training.batch.micro is not None and training.zero.stage != "auto":
        return "training.batch.micro and training.zero.stage fix the layout"
    if device_memory_bytes(r.gpu_type, r.gpu_memory_gb) is None:
        return "no device memory is known (resources.gpu_type / gpu_memory_gb), so nothing is chosen by memory"
    return None


def fixed_layout(spec: JobSpec) -> BatchLayout | None:
    """The layout `plan_job` would choose, when it does not depend on the model's size; else None.

    The same choice as `_unchecked_plan` and `choose` make, minus the memory check.
    """
    if _fixed_because(spec) is None:
        return None
    per_rank = _per_rank_batch(spec)
    micro = spec.training.batch.micro or _target_micro(per_rank)
    return _layout(allowed_options(spec)[0], micro, per_rank, spec.world_size)


def skipped_memory_check(spec: JobSpec) -> str | None:
    """The note `render` (and `submit --dry-run`) print when they lay the batch out without the model.

    Counting a pretrained model on S3 needs credentials and the network; a GitOps pipeline that
    renders manifests has neither. When the layout does not depend on the count, render stays
    offline and says so; None when the model is read as usual.
    """
    pretrained = spec.training.model.pretrained
    because = _fixed_because(spec)
    if pretrained is None or not pretrained.startswith("s3://") or because is None:
        return None
    return (f"memory check skipped: {because}, so {pretrained}/config.json was not read; "
            "`dlaunch plan` checks memory (with S3 credentials)")


def plan_batch(spec: JobSpec) -> BatchLayout:
    """The layout `render` uses (micro, grad_accum, data-parallel size, ZeRO stage, offload).

    Offline when `skipped_memory_check` says so; otherwise the plan's chosen layout.
    """
    if skipped_memory_check(spec) is not None:
        layout = fixed_layout(spec)
    else:
        layout = plan_job(spec).layout
    assert layout is not None
    return layout
