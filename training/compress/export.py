"""Export a classifier or LM to ONNX and TorchScript, and check the export against PyTorch.

Both formats wrap the model so that it takes its input tensors positionally, in the order of
`example_inputs` (e.g. input_ids, attention_mask), and returns only the logits.

ONNX uses the legacy TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`): with
transformers 5 and torch 2.13 it exports BERT-style models with dynamic batch and sequence axes
and matches PyTorch to ~1e-7, and it needs only `onnx`, while the dynamo exporter also needs
`onnxscript`. torch.onnx cannot export torch.ao's int8 modules (quantized::linear_dynamic has
no ONNX symbolic), so an int8 model (or `export_onnx(float_model, ..., int8=True)`) is written
by `onnx_int8.export_int8_onnx`: the float graph with each int8 layer replaced by standard ONNX
ops (`MatMulInteger` etc.) that reproduce PyTorch's int8 kernels with the same int8 weights.

TorchScript uses `torch.jit.trace`, which records torch.ao's int8 kernels as they are, so the
int8 TorchScript file reproduces the PyTorch int8 model exactly (load it under the same
quantized engine it was made with).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

MIN_OPSET = 17


class ExportError(RuntimeError):
    """The model could not be exported in the requested format; the message says what to do."""


class ExportVerificationError(ExportError):
    """An exported model's outputs differ from PyTorch's by more than the tolerance."""


class LogitsOnly(nn.Module):
    """Calls `model(**{name: tensor})` with positional tensors and returns only the logits."""

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(**dict(zip(self.input_names, tensors))))


def logits_of(output: object) -> torch.Tensor:
    """The logits in a model's output: a tensor itself, a `ModelOutput`/dict's "logits", or a tuple's first."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}: "
                    "the model must return a tensor, a dict/ModelOutput with 'logits', or a tuple starting with them")


@contextlib.contextmanager
def _eval_wrapper(model: nn.Module, input_names: list[str]) -> Iterator[LogitsOnly]:
    """A `LogitsOnly` in eval mode; the model's own train/eval mode is restored afterwards."""
    was_training = model.training
    wrapper = LogitsOnly(model, input_names).eval()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*is deprecated.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"Exporting aten::index operator.*")
            yield wrapper
    finally:
        model.train(was_training)


def _is_torch_ao_quantized(model: nn.Module) -> bool:
    return any(cls.__module__.startswith("torch.ao.nn.quantized") for m in model.modules() for cls in type(m).__mro__)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'dlaunch[compress]'") from e


def export_onnx(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    path: str | Path,
    opset: int = MIN_OPSET,
    int8: bool = False,
) -> Path:
    """Write `model` as ONNX with dynamic batch and sequence axes; `int8` quantizes a float model first.

    `model` may be float or a torch.ao dynamic-int8 model (`quantize_dynamic_int8`); an int8
    model's ONNX copy computes what PyTorch's int8 kernels compute (see `onnx_int8`). The graph's
    inputs are named after `example_inputs`' keys and its output is `logits`.
    """
    _require_onnx()
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the supported minimum (LayerNormalization is one op from "
                         f"opset 17 on): use opset >= {MIN_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if int8 and not _is_torch_ao_quantized(model):
        from training.compress.quantize import quantize_dynamic_int8

        model = quantize_dynamic_int8(model)
    if _is_torch_ao_quantized(model):
        from training.compress.onnx_int8 import export_int8_onnx

        try:
            return export_int8_onnx(model, path, lambda twin, target: _export_float_onnx(twin, example_inputs, target, opset))
        except ValueError as e:
            raise ExportError(f"cannot write this int8 model as ONNX: {e}") from e
    _export_float_onnx(model, example_inputs, path, opset)
    return path


def _export_float_onnx(model: nn.Module, example_inputs: Mapping[str, torch.Tensor], path: Path, opset: int) -> None:
    names = list(example_inputs)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in names if example_inputs[name].dim() >= 2}
    with _eval_wrapper(model, names) as wrapper, torch.no_grad():
        logits = wrapper(*example_inputs.values())
        dynamic_axes["logits"] = {0: "batch", 1: "sequence"} if logits.dim() == 3 else {0: "batch"}
        torch.onnx.export(wrapper, tuple(example_inputs.values()), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)


def onnx_session(path: str | Path, threads: int | None = None) -> "InferenceSession":
    """An onnxruntime CPU session for `path`, optionally pinned to `threads` intra-op threads."""
    _require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: "InferenceSession", inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Logits from an onnxruntime session, fed the inputs the graph declares."""
    wanted = {i.name for i in session.get_inputs()}
    missing = wanted - set(inputs)
    if missing:
        raise ValueError(f"the ONNX model needs inputs {sorted(missing)}, got {sorted(inputs)}")
    feed = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items() if name in wanted}
    return session.run(["logits"], feed)[0]


def verify_onnx(path: str | Path, model: nn.Module, inputs: Mapping[str, torch.Tensor],
                atol: float | None = 1e-4) -> float:
    """Max |ONNX Runtime logits - PyTorch logits| on `inputs`; raises when above `atol`."""
    exported = torch.from_numpy(run_onnx(onnx_session(path), inputs))
    return _compare(exported, _torch_logits(model, inputs), atol, f"ONNX model {path}")


def export_torchscript(model: nn.Module, example_inputs: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Trace `model` (float or torch.ao int8) to a TorchScript file that takes tensors positionally.

    Shapes are not frozen by the trace: the result accepts any batch size and sequence length.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eval_wrapper(model, list(example_inputs)) as wrapper, torch.no_grad():
        try:
            traced = torch.jit.trace(wrapper, tuple(example_inputs.values()), check_trace=False)
        except RuntimeError as e:
            raise ExportError(f"torch.jit.trace failed for {type(model).__name__}: {e}. TorchScript export needs a "
                              "model without data-dependent Python control flow on tensor values") from e
        torch.jit.save(traced, str(path))
    return path


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """A TorchScript file written by `export_torchscript`, in eval mode."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated.*", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def verify_torchscript(path: str | Path, model: nn.Module, inputs: Mapping[str, torch.Tensor],
                       atol: float | None = 1e-4) -> float:
    """Max |reloaded TorchScript logits - PyTorch logits| on `inputs`; raises when above `atol`."""
    with torch.no_grad():
        exported = load_torchscript(path)(*inputs.values())
    return _compare(exported, _torch_logits(model, inputs), atol, f"TorchScript model {path}")


def _torch_logits(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    with _eval_wrapper(model, list(inputs)) as wrapper, torch.no_grad():
        return wrapper(*inputs.values())


def _compare(exported: torch.Tensor, reference: torch.Tensor, atol: float | None, what: str) -> float:
    if exported.shape != reference.shape:
        raise ExportVerificationError(f"{what} returned shape {tuple(exported.shape)}, PyTorch {tuple(reference.shape)}")
    diff = float((exported.float() - reference.float()).abs().max())
    if atol is not None and not diff <= atol:
        raise ExportVerificationError(f"{what} differs from PyTorch by up to {diff:.3g} (> atol {atol:g}): "
                                      "check that it was exported from this model; tracing may also have frozen "
                                      "a data-dependent branch of forward, so export with example inputs that "
                                      "take the general path (a padded batch)")
    return diff
