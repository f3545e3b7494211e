"""Write a torch.ao dynamic-int8 model as ONNX that computes what PyTorch's int8 kernels compute.

torch.onnx has no symbolic for `quantized::linear_dynamic` or `quantized::embedding_byte`, and
re-quantizing the float ONNX graph with onnxruntime gives a different int8 model (8-bit instead of
PyTorch's 7-bit activations, its own weight scales), whose predictions disagree with PyTorch
int8 on a few percent of inputs. So the int8 ONNX model is built from the int8 model itself:

1. `dequantized_twin` swaps every int8 layer for a float layer holding its dequantized weights,
   and records the layer's int8 payload (`Int8Linear`, `Int8Embedding`).
2. The float twin is exported as usual. Its weight initializers are matched back to the recorded
   layers by value (Linear weights appear transposed for MatMul, as-is for Gemm).
3. Each matched op is replaced by standard ONNX ops that reproduce the PyTorch kernel:
   - Linear (fbgemm `linear_dynamic`): per-tensor activation range over the whole input,
     `ChooseQuantizationParams` (PyTorch's QuantUtils.h, including `reduce_range`, the zero-scale
     and small-scale rules), fbgemm's `round(fma(x, 1 / scale, zero_point))` to uint8,
     `MatMulInteger` with the same int8 weights, then `acc * x_scale * w_scale (+ bias)` in float;
   - Embedding (`embedding_byte`): `Gather` of the uint8 table, then `q * scale + bias` per row.

Float ops elsewhere (attention, LayerNorm, GELU) differ from PyTorch by ~1e-6, so an activation
can occasionally land on the other side of a rounding step. Each single layer matches PyTorch to
float rounding; on the 3-layer WordNet MiniLM student the logits differ by up to ~0.7 after such
flips, and predictions agree on 99.75-100% of the held-out set (bench/compression.py). Layers left in float (e.g. by `keep_float`) stay
float MatMuls. Nothing here is a hand-written kernel: onnxruntime runs `MatMulInteger` and the rest.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn as nn

if TYPE_CHECKING:
    import onnx

FLOAT, DOUBLE, UINT8 = 1, 11, 2  # onnx.TensorProto data types used below
SMALL_SCALE_THRESHOLD = np.float32(6.1e-5)  # ATen/native/quantized/cpu/QuantUtils.h


@dataclass(frozen=True)
class Int8Linear:
    """The int8 payload of one `torch.ao.nn.quantized.dynamic.Linear`."""

    name: str
    weight: np.ndarray  # int8 [out, in]
    scale: np.ndarray  # float32 [out] (per channel) or [1] (per tensor)
    zero_point: np.ndarray  # int8, same shape as scale
    reduce_range: bool  # 7-bit activations (PyTorch's x86/fbgemm default)
    float_weight: np.ndarray  # the dequantized weight the float twin holds [out, in]


@dataclass(frozen=True)
class Int8Embedding:
    """The uint8 table of one weight-only quantized `Embedding` (one float scale and bias per row)."""

    name: str
    table: np.ndarray  # uint8 [rows, dim]
    scale: np.ndarray  # float32 [rows, 1]
    bias: np.ndarray  # float32 [rows, 1]; row value = q * scale + bias
    float_weight: np.ndarray  # the dequantized table the float twin holds


Int8Layer = Int8Linear | Int8Embedding


def dequantized_twin(int8_model: nn.Module) -> tuple[nn.Module, list[Int8Layer]]:
    """A float copy of `int8_model` whose int8 layers hold their dequantized weights, and those layers."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    twin = copy.deepcopy(int8_model)
    layers: list[Int8Layer] = []

    def swap(parent: nn.Module, prefix: str) -> None:
        for child_name, child in parent.named_children():
            name = f"{prefix}{child_name}"
            if isinstance(child, nnqd.Linear):
                linear, record = _float_linear(child, name)
                setattr(parent, child_name, linear)
                layers.append(record)
            elif isinstance(child, nnq.Embedding):
                embedding, record = _float_embedding(child, name)
                setattr(parent, child_name, embedding)
                layers.append(record)
            else:
                swap(child, f"{name}.")

    swap(twin, "")
    if not layers:
        raise ValueError("the model has no torch.ao int8 Linear or Embedding layers: quantize it first "
                         "(training.compress.quantize.quantize_dynamic_int8)")
    return twin.float().eval(), layers


def _float_linear(module: nn.Module, name: str) -> tuple[nn.Linear, Int8Linear]:
    weight = module.weight()
    if weight.dtype != torch.qint8:
        raise ValueError(f"layer {name} holds {weight.dtype} weights; only qint8 dynamic Linear layers export to ONNX")
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise ValueError(f"layer {name} is quantized along axis {weight.q_per_channel_axis()}; "
                             "ONNX export needs one scale per output channel (axis 0)")
        scale = weight.q_per_channel_scales().numpy().astype(np.float32)
        zero_point = weight.q_per_channel_zero_points().numpy().astype(np.int8)
    else:
        scale = np.array([weight.q_scale()], dtype=np.float32)
        zero_point = np.array([weight.q_zero_point()], dtype=np.int8)
    dequantized = weight.dequantize()
    bias = module.bias()
    linear = nn.Linear(module.in_features, module.out_features, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(dequantized)
        if bias is not None:
            linear.bias.copy_(bias)
    # nn.quantized.dynamic.Linear (version >= 4) always passes reduce_range=True for qint8 weights.
    reduce_range = module.version is None or module.version >= 4
    record = Int8Linear(name, weight.int_repr().numpy().copy(), scale, zero_point, reduce_range,
                        dequantized.numpy().astype(np.float32))
    return linear, record


def _float_embedding(module: nn.Module, name: str) -> tuple[nn.Embedding, Int8Embedding]:
    weight = module.weight()
    if weight.qscheme() != torch.per_channel_affine_float_qparams or weight.dtype != torch.quint8:
        raise ValueError(f"embedding {name} is {weight.dtype}/{weight.qscheme()}; ONNX export supports the "
                         "weight-only uint8 embeddings of float_qparams_weight_only_qconfig")
    scale = weight.q_per_channel_scales().numpy().astype(np.float32)[:, None]
    zero_point = weight.q_per_channel_zero_points().numpy().astype(np.float32)[:, None]
    bias = (zero_point * scale * np.float32(-1)).astype(np.float32)  # as embedding_byte's prepack stores it
    table = weight.int_repr().numpy().copy()
    dequantized = weight.dequantize()
    embedding = nn.Embedding(module.num_embeddings, module.embedding_dim)
    with torch.no_grad():
        embedding.weight.copy_(dequantized)
    return embedding, Int8Embedding(name, table, scale, bias, dequantized.numpy().astype(np.float32))


def _is_linear_gemm(node: "onnx.NodeProto") -> bool:
    """Gemm(x, W, b) computing x @ W^T + b, as torch.onnx writes nn.Linear on 2-D inputs."""
    attrs = {a.name: a for a in node.attribute}
    trans_a = attrs["transA"].i if "transA" in attrs else 0
    trans_b = attrs["transB"].i if "transB" in attrs else 0
    scales = [attrs[name].f if name in attrs else 1.0 for name in ("alpha", "beta")]
    return trans_a == 0 and trans_b == 1 and scales == [1.0, 1.0]


def _key(array: np.ndarray) -> tuple[tuple[int, ...], str]:
    data = np.ascontiguousarray(array, dtype=np.float32)
    return data.shape, hashlib.sha1(data.tobytes()).hexdigest()


def export_int8_onnx(
    int8_model: nn.Module,
    path: Path,
    export_float: Callable[[nn.Module, Path], None],
) -> Path:
    """Write `int8_model` to `path` as ONNX; `export_float(model, path)` exports a float model."""
    import onnx

    twin, layers = dequantized_twin(int8_model)
    export_float(twin, path)
    model = onnx.load(str(path))
    Int8GraphRewriter(model.graph, layers).rewrite()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Int8GraphRewriter:
    """Replaces the float ops of the recorded int8 layers in an exported graph (see the module docstring)."""

    def __init__(self, graph: "onnx.GraphProto", layers: list[Int8Layer]) -> None:
        from onnx import numpy_helper

        self.graph = graph
        by_value: dict[tuple[tuple[int, ...], str], tuple[Int8Layer, bool]] = {}
        for layer in layers:
            if isinstance(layer, Int8Linear):
                by_value[_key(layer.float_weight.T)] = (layer, True)  # MatMul(x, W^T)
            by_value[_key(layer.float_weight)] = (layer, False)  # Gemm(x, W, transB=1) / Gather(W, ids)
        self.matches: dict[str, tuple[Int8Layer, bool]] = {}
        for init in graph.initializer:
            if init.data_type == FLOAT and len(init.dims) == 2:
                match = by_value.get(_key(numpy_helper.to_array(init)))
                if match is not None:
                    self.matches[init.name] = match
        self.layers = layers
        self.new_nodes: list["onnx.NodeProto"] = []
        self.new_initializers: dict[str, np.ndarray] = {}
        self.quantized_inputs: dict[tuple[str, int], tuple[str, str, str]] = {}
        self.counter = 0

    # --- the rewrite -------------------------------------------------------------------------------

    def rewrite(self) -> None:
        from onnx import numpy_helper

        replaced: set[str] = set()
        nodes = []
        for node in self.graph.node:
            self.new_nodes = []
            done = self._replace(node)
            if done is None:
                nodes.append(node)
                continue
            replaced.add(done)
            nodes.extend(self.new_nodes)
        missing = {layer.name for layer in self.layers} - {self.matches[n][0].name for n in replaced}
        if missing:
            raise ValueError(f"could not find the int8 layers {sorted(missing)} in the exported graph (their weights "
                             "were folded into other constants or used by unsupported ops)")
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        still_used = {name for node in self.graph.node for name in node.input}
        kept = [init for init in self.graph.initializer if init.name in still_used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        self.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in self.new_initializers.items())

    def _replace(self, node: "onnx.NodeProto") -> str | None:
        """Emit the int8 ops for `node` into `self.new_nodes`; the replaced weight's name, or None."""
        if node.op_type == "MatMul" and node.input[1] in self.matches:
            layer, transposed = self.matches[node.input[1]]
            if isinstance(layer, Int8Linear) and transposed:
                self._linear(node.input[0], layer, node.output[0])
                return node.input[1]
        if node.op_type == "Gemm" and node.input[1] in self.matches:
            layer, transposed = self.matches[node.input[1]]
            if isinstance(layer, Int8Linear) and not transposed and _is_linear_gemm(node):
                has_bias = len(node.input) > 2 and node.input[2] != ""
                out = self._linear(node.input[0], layer, self._name("gemm") if has_bias else node.output[0])
                if has_bias:
                    self._node("Add", [out, node.input[2]], [node.output[0]])
                return node.input[1]
        if node.op_type == "Gather" and node.input[0] in self.matches:
            layer, _ = self.matches[node.input[0]]
            if isinstance(layer, Int8Embedding) and all(a.i == 0 for a in node.attribute if a.name == "axis"):
                self._embedding(node.input[1], layer, node.output[0])
                return node.input[0]
        return None

    def _linear(self, x: str, layer: Int8Linear, output: str) -> str:
        qmax = 127 if layer.reduce_range else 255
        x_q, x_zero_point, x_scale = self._quantized_input(x, qmax)
        inputs = [x_q, self._const(f"{layer.name}.weight_int8_t", np.ascontiguousarray(layer.weight.T)), x_zero_point]
        if np.any(layer.zero_point != 0):
            inputs.append(self._const(f"{layer.name}.weight_zero_point", layer.zero_point))
        acc = self._node("MatMulInteger", inputs)
        acc_f = self._node("Cast", [acc], to=FLOAT)
        # fbgemm's ReQuantizeForFloat: raw * Aq_scale * Bq_scale, left to right (the bias Add follows in the graph)
        scaled = self._node("Mul", [acc_f, x_scale])
        return self._node("Mul", [scaled, self._const(f"{layer.name}.weight_scale", layer.scale)], [output])

    def _embedding(self, indices: str, layer: Int8Embedding, output: str) -> None:
        rows = self._node("Gather", [self._const(f"{layer.name}.weight_uint8", layer.table), indices])
        scale = self._node("Gather", [self._const(f"{layer.name}.row_scale", layer.scale), indices])
        bias = self._node("Gather", [self._const(f"{layer.name}.row_bias", layer.bias), indices])
        product = self._node("Mul", [self._node("Cast", [rows], to=FLOAT), scale])
        self._node("Add", [product, bias], [output])

    def _quantized_input(self, x: str, qmax: int) -> tuple[str, str, str]:
        """(uint8 x, uint8 zero point, float scale) as fbgemm's dynamic Linear quantizes x; shared per input."""
        if (x, qmax) in self.quantized_inputs:
            return self.quantized_inputs[(x, qmax)]
        zero_f = self._const("zero_f", np.array(0.0, np.float32))
        lo = self._node("Min", [self._node("ReduceMin", [x], keepdims=0), zero_f])
        hi = self._node("Max", [self._node("ReduceMax", [x], keepdims=0), zero_f])
        lo, hi, scale_d = self._choose_scale(lo, hi, qmax)
        zero_point_d = self._choose_zero_point(lo, hi, scale_d, qmax)
        scale_f = self._node("Cast", [scale_d], to=FLOAT)
        # fbgemm's AVX2 quantizer: cvtps(fma(x, 1/scale, zero_point)). The fused multiply-add is
        # emulated in double (the product of two floats is exact there), then rounded once to float.
        inverse = self._node("Cast", [self._node("Reciprocal", [scale_f])], to=DOUBLE)
        fused = self._node("Add", [self._node("Mul", [self._node("Cast", [x], to=DOUBLE), inverse]), zero_point_d])
        shifted = self._node("Cast", [fused], to=FLOAT)
        clipped = self._node("Clip", [self._node("Round", [shifted]), zero_f, self._const("u8_max", np.array(255.0, np.float32))])
        result = (self._node("Cast", [clipped], to=UINT8), self._node("Cast", [zero_point_d], to=UINT8), scale_f)
        self.quantized_inputs[(x, qmax)] = result
        return result

    def _choose_scale(self, lo: str, hi: str, qmax: int) -> tuple[str, str, str]:
        """ChooseQuantizationParams' scale: (max - min) / qmax in double, 0.1 if degenerate, small-scale cut-off."""
        span = self._node("Sub", [self._node("Cast", [hi], to=DOUBLE), self._node("Cast", [lo], to=DOUBLE)])
        scale = self._node("Div", [span, self._const(f"qrange_{qmax}_d", np.array(qmax, np.float64))])
        scale_f = self._node("Cast", [scale], to=FLOAT)
        degenerate = self._node("Or", [self._node("Equal", [scale_f, self._const("zero_f", np.array(0.0, np.float32))]),
                                       self._node("IsInf", [self._node("Reciprocal", [scale_f])])])
        scale = self._node("Where", [degenerate, self._const("tenth_d", np.array(0.1, np.float64)), scale])
        threshold_d = self._const("small_scale_d", np.array(SMALL_SCALE_THRESHOLD, np.float64))
        small = self._node("Less", [scale, threshold_d])
        threshold_f = self._const("small_scale_f", np.array(SMALL_SCALE_THRESHOLD, np.float32))
        stretched = self._const(f"small_span_{qmax}_f", np.array(SMALL_SCALE_THRESHOLD * np.float32(qmax), np.float32))
        zero_f = self._const("zero_f", np.array(0.0, np.float32))
        amplifier = self._node("Div", [threshold_f, self._node("Cast", [scale], to=FLOAT)])
        lo_is_zero = self._node("Equal", [lo, zero_f])
        hi_is_zero = self._node("Equal", [hi, zero_f])
        neg_stretched = self._node("Neg", [stretched])
        small_lo = self._node("Where", [lo_is_zero, zero_f, self._node("Where", [hi_is_zero, neg_stretched, self._node("Mul", [lo, amplifier])])])
        small_hi = self._node("Where", [lo_is_zero, stretched, self._node("Where", [hi_is_zero, zero_f, self._node("Mul", [hi, amplifier])])])
        lo = self._node("Where", [small, small_lo, lo])
        hi = self._node("Where", [small, small_hi, hi])
        scale = self._node("Where", [small, threshold_d, scale])
        return lo, hi, scale

    def _choose_zero_point(self, lo: str, hi: str, scale_d: str, qmax: int) -> str:
        """ChooseQuantizationParams' zero point (qmin = 0): the better-conditioned end, rounded and clamped."""
        lo_steps = self._node("Div", [self._node("Cast", [lo], to=DOUBLE), scale_d])
        hi_steps = self._node("Div", [self._node("Cast", [hi], to=DOUBLE), scale_d])
        qmax_d = self._const(f"qrange_{qmax}_d", np.array(qmax, np.float64))
        from_min = self._node("Neg", [lo_steps])
        from_max = self._node("Sub", [qmax_d, hi_steps])
        min_error = self._node("Neg", [self._node("Abs", [lo_steps])])
        max_error = self._node("Sub", [qmax_d, self._node("Abs", [hi_steps])])
        initial = self._node("Where", [self._node("Less", [min_error, max_error]), from_min, from_max])
        return self._node("Clip", [self._node("Round", [initial]), self._const("zero_d", np.array(0.0, np.float64)), qmax_d])

    # --- graph building helpers ---------------------------------------------------------------------

    def _name(self, stem: str) -> str:
        self.counter += 1
        return f"int8/{stem}_{self.counter}"

    def _const(self, name: str, value: np.ndarray) -> str:
        full = f"int8/{name}"
        self.new_initializers.setdefault(full, value)
        return full

    def _node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: object) -> str:
        from onnx import helper

        outputs = outputs or [self._name(op.lower())]
        self.new_nodes.append(helper.make_node(op, inputs, outputs, name=self._name(op), **attrs))
        return outputs[0]
