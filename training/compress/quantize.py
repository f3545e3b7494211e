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
future torch no longer has the API. ONNX models are quantized with onnxruntime's own dynamic
quantizer (`quantize_onnx_dynamic_int8`), since torch.onnx cannot export torch.ao int8 modules.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

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
                          per_channel: bool = True) -> nn.Module:
    """An int8 copy of a float model for CPU inference (the input model is left unchanged).

    Linear layers get int8 weights (one scale per output channel, or per tensor) and dynamically
    quantized activations (7-bit on the x86/fbgemm and oneDNN engines, PyTorch's default); with
    `include_embeddings` the embedding tables become weight-only uint8 (per-row scales). The
    `engine` packs the weights; load a saved copy under the same engine to get identical outputs.
    """
    qconfigs, mapping = _dynamic_mapping(include_embeddings, per_channel)
    tq = _torch_ao()
    float_model = copy.deepcopy(model).float().eval()
    with quantized_engine(engine), _quiet_torch_ao():
        return tq.quantize_dynamic(float_model, qconfigs, dtype=torch.qint8, mapping=mapping)


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


def quantize_onnx_dynamic_int8(source: str | Path, target: str | Path, include_embeddings: bool = True,
                               per_channel: bool = True) -> Path:
    """Write an int8 copy of a float ONNX model with onnxruntime's dynamic quantizer.

    MatMul weights become int8 (activations quantized to 8 bits at run time); with
    `include_embeddings` the Gather tables (embeddings) are quantized too. Its rounding differs
    from torch.ao's (8-bit vs 7-bit activations, other weight scales), so the two int8 models
    agree on most but not all predictions of a model with small decision margins.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise ImportError("onnxruntime is needed to quantize ONNX models: pip install 'dlaunch[compress]'") from e
    ops = ["MatMul"] + (["Gather"] if include_embeddings else [])
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=ops)
    return target
