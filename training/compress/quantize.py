"""Int8 quantization for CPU inference: post-training dynamic quantization and its QAT variant.

Dynamic quantization uses PyTorch's own `torch.ao.quantization.quantize_dynamic`: every
`nn.Linear` stores int8 weights (per-tensor, symmetric) and quantizes its input on the fly, and
every `nn.Embedding` stores uint8 weights with a float scale and offset per row (weight-only,
`float_qparams_weight_only_qconfig`). Nothing is hand-written; the kernels are fbgemm / oneDNN.

Quantization-aware fine-tuning (`prepare_qat_int8` -> train -> `convert_qat_int8`) uses
`torch.ao.nn.qat.dynamic.Linear` and `torch.ao.nn.qat.Embedding`: the float weights are trained
through fake quantization that mimics the int8 rounding above, then converted to the same int8
modules as the post-training path (with per-tensor weight scales). It runs on CPU in fp32
(not under bf16 autocast).

torch 2.13 still ships `torch.ao.quantization` but marks it deprecated (the successor is the
separate `torchao` package); these functions silence that notice and raise with the fix when a
future torch no longer has the API. `training.compress.onnx_int8` writes the int8 model as ONNX.

Selective quantization: `layer_sensitivity` quantizes each Linear alone on calibration data and
ranks the layers by how much the output distribution moves; `quantize_dynamic_int8(keep_float=...)`
then leaves the worst few float (BERT-style encoders have a feed-forward projection whose input
outliers a per-tensor 7-bit range cannot resolve).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

try:  # torch.ao is deprecated in favour of torchao; a torch without it fails in _torch_ao() with the fix
    import torch.ao.nn.quantized as nnq
except ImportError:  # pragma: no cover - only on a future torch
    nnq = None

DEFAULT_ENGINE = "x86"


class QuantizationUnsupportedError(RuntimeError):
    """This torch build or CPU cannot run the requested int8 quantization; the message says what to do."""


if nnq is not None:

    class ContiguousQuantizedEmbedding(nnq.Embedding):
        """torch.ao's int8 embedding that also accepts non-contiguous indices (BERT's expanded token_type_ids)."""

        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            return super().forward(indices.contiguous())

        @classmethod
        def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> nn.Module:
            quantized = nnq.Embedding.from_float(mod, use_precomputed_fake_quant)
            return cls(quantized.num_embeddings, quantized.embedding_dim, _weight=quantized.weight())


@contextlib.contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """Hide torch.ao's deprecation notices, which repeat on every call and say nothing actionable here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
        yield


def _torch_ao() -> ModuleType:
    """The `torch.ao.quantization` module, or an error naming the fix when this torch lacks it."""
    try:
        import torch.ao.quantization as tq
    except ImportError as e:
        raise QuantizationUnsupportedError(_missing_ao_message()) from e
    if nnq is None or not hasattr(tq, "quantize_dynamic"):
        raise QuantizationUnsupportedError(_missing_ao_message())
    return tq


def _missing_ao_message() -> str:
    return (f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic: install a torch that "
            "still ships it (pip install 'torch>=2.4,<2.14'), or port this module to torchao's quantize_ API")


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """Select the int8 kernel library (`x86`, `fbgemm`, `onednn`, `qnnpack`) for the duration."""
    supported = [name for name in torch.backends.quantized.supported_engines if name != "none"]
    if engine not in supported:
        suggestion = DEFAULT_ENGINE if DEFAULT_ENGINE in supported else (supported or ["<none>"])[0]
        raise QuantizationUnsupportedError(
            f"quantized engine '{engine}' is not available in this torch build on this CPU "
            f"(available: {supported}): pass one of those, e.g. engine='{suggestion}'"
        )
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _dynamic_mapping(include_embeddings: bool, per_channel: bool = True) -> tuple[dict[type, object], dict[type, type]]:
    """(qconfig per float module type, float -> int8 module class) for quantize_dynamic / convert."""
    tq = _torch_ao()
    import torch.ao.nn.qat as nnqat
    import torch.ao.nn.qat.dynamic as nnqatd
    import torch.ao.nn.quantized.dynamic as nnqd
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

    linear = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    qconfigs: dict[type, object] = {nn.Linear: linear}
    mapping = dict(get_default_dynamic_quant_module_mappings())
    mapping[nnqatd.Linear] = nnqd.Linear
    if include_embeddings:
        qconfigs[nn.Embedding] = tq.float_qparams_weight_only_qconfig
        mapping[nn.Embedding] = mapping[nnqat.Embedding] = ContiguousQuantizedEmbedding
    return qconfigs, mapping


def quantize_dynamic_int8(model: nn.Module, include_embeddings: bool = True, engine: str = DEFAULT_ENGINE,
                          per_channel: bool = True, keep_float: Iterable[str] = ()) -> nn.Module:
    """An int8 copy of a float model for CPU inference (the input model is left unchanged).

    Linear layers get int8 weights (one scale per output channel, or per tensor) and dynamically
    quantized activations (7-bit on the x86/fbgemm and oneDNN engines, PyTorch's default); with
    `include_embeddings` the embedding tables become weight-only uint8 (per-row scales). Layers
    named in `keep_float` (module names, e.g. from `most_sensitive_layers`) stay float. The
    `engine` packs the weights; load a saved copy under the same engine to get identical outputs.
    """
    qconfigs, mapping = _dynamic_mapping(include_embeddings, per_channel)
    tq = _torch_ao()
    float_model = copy.deepcopy(model).float().eval()
    keep = set(keep_float)
    unknown = keep - {name for name, _ in float_model.named_modules()}
    if unknown:
        raise ValueError(f"keep_float names modules the model does not have: {sorted(unknown)}")
    spec = {name: qconfigs[type(module)] for name, module in float_model.named_modules()
            if type(module) in qconfigs and name not in keep}
    with quantized_engine(engine), _quiet_torch_ao():
        return tq.quantize_dynamic(float_model, spec, dtype=torch.qint8, mapping=mapping)


@dataclass(frozen=True)
class LayerSensitivity:
    """How much quantizing one Linear layer alone changes a model's output distribution."""

    name: str
    kl: float  # mean KL(float softmax || int8 softmax) per example (per position for an LM)
    agreement: float  # share of examples (positions) whose argmax is unchanged


def layer_sensitivity(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]],
                      engine: str = DEFAULT_ENGINE, per_channel: bool = True) -> list[LayerSensitivity]:
    """Quantize each Linear layer on its own and measure the change on `batches`, most sensitive first.

    Use held-out calibration data (a validation split), not the data the result is reported on.
    A few layers usually stand out: in BERT-style encoders the feed-forward output projection of
    an early layer sees activation outliers that a per-tensor 7-bit range cannot resolve.
    """
    from training.compress.export import logits_of

    model = copy.deepcopy(model).float().eval()
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layers to quantize")
    with torch.inference_mode():
        reference = [torch.log_softmax(logits_of(model(**batch)).float(), -1) for batch in batches]
    results = []
    for name in linears:
        single = quantize_dynamic_int8(model, include_embeddings=False, engine=engine, per_channel=per_channel,
                                       keep_float=[other for other in linears if other != name])
        kl_total = agree = count = 0.0
        with torch.inference_mode(), quantized_engine(engine):
            for batch, ref in zip(batches, reference):
                out = torch.log_softmax(logits_of(single(**batch)).float(), -1)
                kl_total += float(torch.nn.functional.kl_div(out, ref, log_target=True, reduction="sum"))
                agree += float((out.argmax(-1) == ref.argmax(-1)).sum())
                count += ref[..., 0].numel()  # examples, or token positions of an LM
        results.append(LayerSensitivity(name, kl_total / count, agree / count))
    return sorted(results, key=lambda r: -r.kl)


def most_sensitive_layers(sensitivities: Sequence[LayerSensitivity], count: int) -> list[str]:
    """Names of the `count` layers whose lone quantization changes the output most (to keep in float)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [s.name for s in sorted(sensitivities, key=lambda r: -r.kl)[:count]]


def prepare_qat_int8(model: nn.Module, include_embeddings: bool = True) -> nn.Module:
    """Swap Linear (and Embedding) layers, in place, for fake-quantized ones; then fine-tune in fp32."""
    tq = _torch_ao()
    import torch.ao.nn.qat as nnqat
    import torch.ao.nn.qat.dynamic as nnqatd

    swaps: dict[type, tuple[object, type]] = {nn.Linear: (tq.default_dynamic_qat_qconfig, nnqatd.Linear)}
    if include_embeddings:
        swaps[nn.Embedding] = (tq.default_embedding_qat_qconfig, nnqat.Embedding)

    def fake_quantized(module: nn.Module) -> nn.Module | None:
        if type(module) not in swaps:
            return None
        qconfig, qat_class = swaps[type(module)]
        module.qconfig = qconfig
        return qat_class.from_float(module)

    with _quiet_torch_ao():
        _swap_modules(model, fake_quantized)
    return model.float()


def convert_qat_int8(model: nn.Module, engine: str = DEFAULT_ENGINE) -> nn.Module:
    """The int8 inference copy of a model prepared by `prepare_qat_int8` (same modules as PTQ)."""
    _, mapping = _dynamic_mapping(include_embeddings=True)
    trained = copy.deepcopy(model).float().eval()

    def quantized(module: nn.Module) -> nn.Module | None:
        if not hasattr(module, "weight_fake_quant") or type(module) not in mapping:
            return None
        return mapping[type(module)].from_float(module)

    with quantized_engine(engine), _quiet_torch_ao():
        _swap_modules(trained, quantized)
    return trained


def _swap_modules(model: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace, in place, every submodule for which `replacement` returns a module."""
    for name, child in model.named_children():
        new = replacement(child)
        if new is None:
            _swap_modules(child, replacement)
        else:
            setattr(model, name, new)


@dataclass(frozen=True)
class LayerBytes:
    """Weight storage of the quantized layers, int8 vs the same layers in float."""

    layers: int
    quantized_bytes: int
    float_bytes: int

    @property
    def ratio(self) -> float:
        """How many times smaller the int8 weights are."""
        return self.float_bytes / self.quantized_bytes


def quantized_layer_bytes(quantized: nn.Module, float_model: nn.Module) -> LayerBytes:
    """Bytes of the int8 weights (with their scales and zero points) vs the float weights they replace.

    Biases stay float in both and are left out. Layers are matched by module name.
    """
    float_modules = dict(float_model.named_modules())
    layers = quantized_total = float_total = 0
    for name, module in quantized.named_modules():
        weight = _quantized_weight(module)
        if weight is None:
            continue
        layers += 1
        quantized_total += _quantized_tensor_bytes(weight)
        float_weight = float_modules[name].weight
        float_total += float_weight.numel() * float_weight.element_size()
    if layers == 0:
        raise ValueError("the model has no quantized layers: pass the output of quantize_dynamic_int8")
    return LayerBytes(layers, quantized_total, float_total)


def _quantized_weight(module: nn.Module) -> torch.Tensor | None:
    weight = getattr(module, "weight", None)
    if not callable(weight) or isinstance(weight, nn.Module):
        return None
    value = weight()
    return value if isinstance(value, torch.Tensor) and value.is_quantized else None


def _quantized_tensor_bytes(tensor: torch.Tensor) -> int:
    """int8 payload plus quantization parameters (one scale/zero point, or one per channel)."""
    payload = tensor.numel() * tensor.element_size()
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return payload + 16
    scales, zero_points = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
    return payload + scales.numel() * scales.element_size() + zero_points.numel() * zero_points.element_size()
