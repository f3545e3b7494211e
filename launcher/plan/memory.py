"""The memory model: what one device (and its node's host) needs for a ZeRO option and a micro-batch.

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

Host memory per node (`host_bytes_per_rank` x processes per node) is checked against
`resources.memory` the same way. Per rank: the process's runtime (`HOST_RUNTIME`), plus the larger
of what model construction holds and the offloaded states, since the model leaves the host for
the device before DeepSpeed allocates offloaded states. Construction holds the model once in
fp32 at stages 0-2; under ZeRO-3 the worker builds it partitioned
(`training.models.sharded`), holding its 1/N partition in training precision and one module
gathered in fp32 while it is initialised or loaded. On CPU workers the host is the device: the
device total plus the runtime. The data takes no separate host share: raw text is read into each
rank (at most `training.data` `RAW_TEXT_LIMIT_MB`, counted in `HOST_RUNTIME`'s measurement), and
prepared shards are memory-mapped from the node's disk cache, page cache the kernel reclaims.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.errors import PlanError
from launcher.gpus import GiB, device_memory_bytes, device_name
from launcher.plan.shape import ModelShape
from launcher.quantity import parse_quantity
from launcher.spec import JobSpec
from training.contract import TrainingConfig

HEADROOM = 0.10
RUNTIME_OVERHEAD = 1 * GiB
# Host memory of a worker process before its model exists: Python, torch, DeepSpeed, transformers,
# the tokenizer and the packed training text (measured: about 0.8 GiB per CPU rank, bench/init_memory.py).
HOST_RUNTIME = 1 * GiB
# DeepSpeed's defaults (elements) unless `training.deepspeed.zero_optimization` overrides them.
DS_REDUCE_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


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
        """'ZeRO-2 + offload optimizer', as the plan's reasons and suggestions name it."""
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
        """Bytes of model states on the device (what is offloaded is in `host`)."""
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


def construction_bytes(parameters: int, largest_layer: int, option: Option, data_parallel: int,
                       precision: str) -> int:
    """Host bytes one rank holds while its model is built (see the module docstring)."""
    if option.stage == 3:
        return ELEMENT_BYTES[precision] * parameters // data_parallel + 4 * largest_layer
    return 4 * parameters


def host_bytes_per_rank(construction: int, states: ModelStates, device_total: int, host_is_device: bool) -> int:
    """Peak host bytes of one rank: runtime plus construction or offloaded states (or, on CPU, the device total)."""
    if host_is_device:
        return HOST_RUNTIME + max(construction, device_total + states.host)
    return HOST_RUNTIME + max(construction, states.host)


@dataclass(frozen=True)
class Memory:
    """What one device (and its node's host, for offload) needs for one option and micro-batch."""

    states: ModelStates
    activations: int
    activations_checkpointed: int
    overhead: int
    step_transient: int
    host_per_node: int
    host_per_rank: int
    construction: int

    def device_total(self, checkpointing: bool = False) -> int:
        """Peak bytes on the device: states, overhead, and the larger of activations and the step's transient."""
        active = self.activations_checkpointed if checkpointing else self.activations
        return self.states.device + self.overhead + max(active, self.step_transient)


@dataclass(frozen=True)
class Limits:
    """Device memory per GPU and host memory per node; None where the spec does not say."""

    device_bytes: int | None
    host_bytes: int | None
    device: str

    @property
    def usable_device(self) -> int | None:
        """Device memory the plan may fill: all of it minus `HEADROOM`."""
        return None if self.device_bytes is None else int(self.device_bytes * (1 - HEADROOM))

    @property
    def usable_host(self) -> int | None:
        """Host memory per node that offloaded states may fill, minus `HEADROOM`."""
        return None if self.host_bytes is None else int(self.host_bytes * (1 - HEADROOM))

    @classmethod
    def from_spec(cls, spec: JobSpec) -> "Limits":
        """The device the spec names (`resources.gpu_type` / `gpu_memory_gb`) and its `resources.memory`."""
        r = spec.resources
        host = int(parse_quantity(r.memory)) if r.memory is not None else None
        return cls(device_memory_bytes(r.gpu_type, r.gpu_memory_gb), host, device_name(r.gpu_type, r.gpu_memory_gb))
