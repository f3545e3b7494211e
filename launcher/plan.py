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

import inspect
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from launcher.errors import PlanError
from launcher.gpus import GiB, device_memory_bytes, device_name
from launcher.quantity import format_bytes, parse_quantity
from launcher.spec import JobSpec
from training.config import BatchLayout, ModelConfig, TrainingConfig
from training.models.presets import PRESETS

# Without a memory limit, prefer micro-batches no larger than this when the spec leaves it open;
# with one, the planner first looks for a stage where a micro-batch this large fits.
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


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


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
    """The vocabulary a preset is built with: the size of the BPE tokenizer the worker trains.

    It is an upper bound (BPE on a small corpus may stop short of it). Pretrained models and
    factories bring their own vocabulary, so None.
    """
    return training.data.tokenizer_vocab_size if training.model.preset else None


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

    def build_config() -> Any:
        from training.models.build import preset_config

        return preset_config(model.preset, vocab_size, model.overrides)

    return _transformers_shape(build_config, model, source)


def _transformers_shape(build_config: Callable[[], Any], model: ModelConfig, source: str) -> ModelShape:
    """Count a `transformers` model on the meta device: exact, and no memory is allocated."""
    import transformers

    config = build_config()
    num_labels = _num_labels(model)
    if num_labels:
        config.num_labels = num_labels
        auto = transformers.AutoModelForSequenceClassification
    else:
        auto = transformers.AutoModelForCausalLM
    parameters, largest = meta_counts(lambda: auto.from_config(config))
    return shape_from_config(config.to_dict(), parameters, largest, source, classifier=bool(num_labels))


def meta_counts(build: Callable[[], Any]) -> tuple[int, int]:
    """(parameters, largest layer) of the module `build()` returns, built on the meta device.

    Shared (tied) parameters are counted once, as `nn.Module.parameters()` yields them once.
    """
    import torch

    with torch.device("meta"):
        built = build()
    module = _as_module(built)
    parameters = sum(p.numel() for p in module.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()), default=0)
    return parameters, largest


def _as_module(built: Any) -> Any:
    """A factory may return the module or `(module, loss, ...)`; find the module."""
    import torch

    if isinstance(built, torch.nn.Module):
        return built
    if isinstance(built, (tuple, list)):
        for item in built:
            if isinstance(item, torch.nn.Module):
                return item
    raise TypeError(f"expected a torch.nn.Module (or a tuple holding one), got {type(built).__name__}")


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
    except (CheckpointError, OSError) as e:
        raise PlanError(f"training.model.pretrained: cannot read {where} to count the model's parameters "
                        f"({e}); point it at a directory holding a transformers config.json") from e
    except json.JSONDecodeError as e:
        raise PlanError(f"training.model.pretrained: {where} is not valid JSON ({e})") from e


def _pretrained_shape(model: ModelConfig) -> ModelShape:
    assert model.pretrained is not None
    config_dict = read_pretrained_config(model.pretrained)

    def build_config() -> Any:
        import transformers

        values = dict(config_dict)
        model_type = values.pop("model_type", None)
        if not model_type:
            raise PlanError(f"training.model.pretrained: {model.pretrained}/config.json has no model_type; "
                            "save the model with transformers' save_pretrained")
        try:
            return transformers.AutoConfig.for_model(model_type, **values)
        except ValueError as e:
            raise PlanError(f"training.model.pretrained: model_type '{model_type}' is unknown to the installed "
                            f"transformers ({e})") from e

    return _transformers_shape(build_config, model, f"pretrained {model.pretrained}")


def _call_factory(function: Callable[..., Any], model: ModelConfig) -> Any:
    """Factories take the `training.model` section if they accept an argument, else nothing."""
    takes_argument = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                         for p in inspect.signature(function).parameters.values())
    return function(model) if takes_argument else function()


def _factory_shape(model: ModelConfig) -> ModelShape:
    import importlib

    assert model.factory is not None
    module_name, _, attribute = model.factory.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
        parameters, largest = meta_counts(lambda: _call_factory(function, model))
    except (ImportError, AttributeError, TypeError, RuntimeError, NotImplementedError) as e:
        raise PlanError(f"training.model.factory: could not build '{model.factory}' on the meta device to count its "
                        f"parameters: {type(e).__name__}: {e}") from e
    config = getattr(_safe_module(function, model), "config", None)
    source = f"factory {model.factory}"
    if config is not None and hasattr(config, "to_dict"):
        return shape_from_config(config.to_dict(), parameters, largest, source, bool(_num_labels(model)))
    return ModelShape(parameters=parameters, largest_layer=largest, source=source)


def _safe_module(function: Callable[..., Any], model: ModelConfig) -> Any:
    import torch

    with torch.device("meta"):
        return _as_module(_call_factory(function, model))


def model_shape(model: ModelConfig, vocab_size: int | None = None) -> ModelShape:
    """Parameter count and dimensions of the network `model` describes, without allocating it.

    `vocab_size` replaces a preset's vocabulary (as the worker does with its tokenizer's size).
    """
    if model.preset is not None:
        return _preset_shape(model, vocab_size)
    if model.pretrained is not None:
        return _pretrained_shape(model)
    return _factory_shape(model)


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


# Every valid combination, cheapest (fastest) first: the order `stage: auto` tries them in.
# Offloading the optimizer costs less than partitioning parameters (stage 3), and parameter
# offload costs most; stage 1 + offload is never leaner than stage 2 + offload, so it comes after.
OPTIONS: tuple[Option, ...] = (
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
    """Final norm and output-projection input, then fp32 logits, their gradient and its cast."""
    norm = (4 + e) * shape.hidden if shape.family == "gated" else e * shape.hidden
    return norm + e * shape.hidden + shape.vocab * (4 + 4 + e)


def activation_bytes(shape: ModelShape, micro: int, seq_len: int, precision: str, checkpointing: bool) -> int:
    """Peak activation memory of one micro-batch on one device (0 when the architecture is unknown)."""
    if not shape.knows_activations:
        return 0
    e = ELEMENT_BYTES[precision]
    tokens = micro * seq_len
    layer = _layer_bytes_per_token(shape, e)
    kept = shape.layers * (e * shape.hidden + layer) - layer * (shape.layers - 1) if checkpointing \
        else shape.layers * layer
    return tokens * (kept + _head_bytes_per_token(shape, e))


def saved_activation_bytes(shape: ModelShape, micro: int, seq_len: int, precision: str) -> int:
    """What autograd holds after the forward pass, without the logits' gradient (for measurement)."""
    e = ELEMENT_BYTES[precision]
    peak = activation_bytes(shape, micro, seq_len, precision, checkpointing=False)
    return peak - micro * seq_len * shape.vocab * (4 + e)


@dataclass(frozen=True)
class DeepSpeedBuffers:
    """Buffer sizes (elements) DeepSpeed allocates whatever the model size."""

    reduce_bucket: int = DS_REDUCE_BUCKET
    prefetch_bucket: int = DS_PREFETCH_BUCKET
    overlap_comm: bool = False

    @classmethod
    def from_training(cls, training: TrainingConfig) -> "DeepSpeedBuffers":
        zero = training.deepspeed.get("zero_optimization") or {}
        return cls(
            reduce_bucket=int(zero.get("reduce_bucket_size", DS_REDUCE_BUCKET)),
            prefetch_bucket=int(zero.get("stage3_prefetch_bucket_size", DS_PREFETCH_BUCKET)),
            overlap_comm=bool(zero.get("overlap_comm", False)),
        )


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
    """The cheapest option that fits, with the largest micro-batch that fits it; None if nothing does.

    When the spec leaves micro open, an option that fits a micro-batch of up to DEFAULT_MAX_MICRO
    beats a cheaper option that only fits a smaller one (accumulating tiny batches is slow).
    """
    dp = inputs.data_parallel(scenario)
    if inputs.global_batch % dp:
        return None
    per_rank = inputs.global_batch // dp
    if scenario.micro and per_rank % scenario.micro:
        return None
    passes = [scenario.micro or _target_micro(per_rank)] if not scenario.micro else [scenario.micro]
    passes.append(1)
    for minimum in passes:
        for option in scenario.options:
            micro = largest_fitting_micro(inputs, scenario, option)
            if micro is not None and micro >= minimum:
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


def _zero_text(option: Option) -> str:
    parts = [f"stage: {option.stage}"]
    parts += [f"{k}: true" for k, on in (("offload_optimizer", option.offload_optimizer),
                                         ("offload_params", option.offload_params)) if on]
    return "set training.zero to {" + ", ".join(parts) + "} (or stage: auto)"


def _lever_texts(inputs: Inputs, base: Scenario, scenario: Scenario, choice: Choice) -> list[str]:
    """Describe, field by field, how `scenario` differs from the spec."""
    texts = []
    if base.micro and not scenario.micro:
        texts.append(f"set training.batch.micro to {choice.micro} (or leave it out)")
    if scenario.options != base.options:
        texts.append(_zero_text(choice.option))
    if base.check_host and not scenario.check_host:
        need = choice.memory.host_per_node / (1 - HEADROOM)
        texts.append(f"raise resources.memory to at least {need / GiB:.0f}Gi per node (offloaded optimizer state)")
    if scenario.nodes != base.nodes:
        texts.append(f"use resources.nodes: {scenario.nodes} (data-parallel size {choice.data_parallel})")
    if scenario.seq_len != base.seq_len:
        texts.append(f"shorten training.data.seq_len to {scenario.seq_len} or less")
    if scenario.checkpointing:
        texts.append("turn on activation checkpointing (gradient checkpointing in the model; "
                     "dlaunch's built-in workers do not enable it yet)")
    return texts


