"""The int8 ONNX export reproduces PyTorch's int8 kernels; selective quantization and its sensitivity ranking.

Single int8 layers are compared with PyTorch exactly (to float rounding of the final multiply), for
the inputs that take each branch of PyTorch's `ChooseQuantizationParams`: mixed signs, all
positive, all negative, all zero (scale 0 -> 0.1) and a tiny range (the small-scale cut-off).
Whole models are compared on logits and predictions. What is not covered here: engines other than
x86/fbgemm (oneDNN, qnnpack), whose rounding may differ; the WordNet-scale figures are in
bench/compression.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.test_compress import VOCAB, batch, tiny_bert
from training.compress import benchmark as bm
from training.compress.export import ExportError, export_onnx, onnx_session, run_onnx
from training.compress.onnx_int8 import dequantized_twin
from training.compress.quantize import (
    LayerSensitivity,
    layer_sensitivity,
    most_sensitive_layers,
    quantize_dynamic_int8,
    quantized_layer_bytes,
)


class EmbedMLP(nn.Module):
    """Embedding -> Linear on 3-D activations (ONNX MatMul) -> mean -> Linear on 2-D ones (ONNX Gemm)."""

    def __init__(self, width: int = 24, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.hidden = nn.Linear(width, width * 2)
        self.out = nn.Linear(width * 2, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.embed(input_ids))).mean(1))


class LinearOnly(nn.Module):
    """One Linear applied to a float input: the activation range is the test's to choose."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.linear = nn.Linear(16, 8, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def onnx_logits(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    return run_onnx(onnx_session(path), inputs)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", ["mixed", "positive", "negative", "zeros", "tiny"])
def test_one_int8_linear_matches_pytorch_on_every_quantization_branch(tmp_path: Path, per_channel: bool, bias: bool,
                                                                      case: str) -> None:
    int8 = quantize_dynamic_int8(LinearOnly(bias).eval(), per_channel=per_channel)
    path = export_onnx(int8, {"x": torch.randn(2, 5, 16)}, tmp_path / "linear.onnx")
    base = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(11))
    x = {"mixed": base * 3, "positive": base.abs() + 0.5, "negative": -base.abs() - 0.25,
         "zeros": torch.zeros_like(base), "tiny": base * 1e-4}[case]
    with torch.inference_mode():
        expected = int8(x).numpy()
    exported = onnx_logits(path, {"x": x})
    assert exported.shape == expected.shape
    assert np.abs(exported - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())


def test_embedding_matmul_and_gemm_layers_match_pytorch_exactly(tmp_path: Path) -> None:
    import onnx

    torch.manual_seed(0)
    model = EmbedMLP().eval()
    int8 = quantize_dynamic_int8(model)
    path = export_onnx(int8, {"input_ids": torch.randint(0, VOCAB, (2, 6))}, tmp_path / "mlp.onnx")
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops and "Gemm" not in ops
    # no float copy of a quantized weight is left in the file: the only float matrices are per-row scales
    float_matrices = [tuple(init.dims) for init in graph.initializer
                      if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2]
    assert float_matrices and all(dims[1] == 1 for dims in float_matrices)
    for seed in range(3):
        ids = torch.randint(0, VOCAB, (4 + seed, 3 + 2 * seed), generator=torch.Generator().manual_seed(seed))
        with torch.inference_mode():
            expected = int8(ids).numpy()
        assert np.abs(onnx_logits(path, {"input_ids": ids}) - expected).max() <= 1e-6


def test_int8_bert_onnx_agrees_with_pytorch_int8_and_is_smaller(tmp_path: Path) -> None:
    model = tiny_bert(layers=2, hidden=64)
    int8 = quantize_dynamic_int8(model)
    int8_path = export_onnx(int8, batch(), tmp_path / "q.onnx")
    from_float = export_onnx(model, batch(), tmp_path / "q2.onnx", int8=True)  # quantizes first, same result
    float_path = export_onnx(model, batch(), tmp_path / "f.onnx")
    # a tiny model: biases, LayerNorms and per-row scales keep it from the 3.9x of MiniLM (bench)
    assert bm.file_bytes(int8_path) < 0.55 * bm.file_bytes(float_path)
    inputs = batch(size=8, length=14, seed=9)
    with torch.inference_mode():
        expected = int8(**inputs).logits.numpy()
    for path in (int8_path, from_float):
        exported = onnx_logits(path, inputs)
        # float ops (softmax, LayerNorm, GELU) differ from PyTorch by ~1e-7, which can move an activation
        # across a 7-bit rounding step now and then: logits stay close, predictions equal
        assert np.abs(exported - expected).max() < 1e-2 * np.abs(expected).max()
        assert (exported.argmax(-1) == expected.argmax(-1)).all()


def test_dequantized_twin_holds_the_int8_weights_in_float() -> None:
    torch.manual_seed(0)
    int8 = quantize_dynamic_int8(EmbedMLP().eval(), keep_float=["out"])
    twin, layers = dequantized_twin(int8)
    assert [layer.name for layer in layers] == ["embed", "hidden"]
    assert type(twin.hidden) is nn.Linear and type(twin.out) is nn.Linear and type(twin.embed) is nn.Embedding
    assert torch.equal(twin.hidden.weight, int8.hidden.weight().dequantize())
    ids = torch.randint(0, VOCAB, (3, 5))
    with torch.inference_mode():
        assert torch.allclose(twin.embed(ids), int8.embed(ids), atol=1e-6)
    with pytest.raises(ValueError, match="no torch.ao int8"):
        dequantized_twin(EmbedMLP())


def test_export_refuses_int8_layers_it_cannot_reproduce(tmp_path: Path) -> None:
    import torch.ao.quantization as tq

    fp16 = tq.quantize_dynamic(LinearOnly().eval(), {nn.Linear}, dtype=torch.float16)
    with pytest.raises(ExportError, match="only qint8 dynamic Linear"):
        export_onnx(fp16, {"x": torch.randn(2, 3, 16)}, tmp_path / "fp16.onnx")


def test_keep_float_leaves_named_layers_float_in_pytorch_and_onnx(tmp_path: Path) -> None:
    import onnx

    torch.manual_seed(0)
    model = EmbedMLP().eval()
    int8 = quantize_dynamic_int8(model, keep_float=["hidden"])
    assert type(int8.hidden) is nn.Linear and int8.out.__class__.__module__.startswith("torch.ao")
    assert quantized_layer_bytes(int8, model).layers == 2  # embed and out
    path = export_onnx(int8, {"input_ids": torch.randint(0, VOCAB, (2, 6))}, tmp_path / "mixed.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("MatMulInteger") == 1 and ops.count("MatMul") == 1
    ids = torch.randint(0, VOCAB, (5, 4))
    with torch.inference_mode():
        assert np.abs(onnx_logits(path, {"input_ids": ids}) - int8(ids).numpy()).max() <= 1e-5
    with pytest.raises(ValueError, match="does not have"):
        quantize_dynamic_int8(model, keep_float=["hiden"])


def outlier_mlp() -> nn.Module:
    """Three Linear layers; the middle one's input has one channel 300x larger (the function is unchanged).

    A per-tensor activation range set by that channel leaves the other channels a few levels of
    7-bit resolution, so quantizing `mid` alone hurts far more than quantizing either other layer.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 6)).eval()
    with torch.no_grad():
        model[0].weight[0] *= 300.0
        model[0].bias[0] *= 300.0
        model[2].weight[:, 0] /= 300.0
    return SequentialOnX(model)


class SequentialOnX(nn.Module):
    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_layer_sensitivity_ranks_the_layer_with_outlier_inputs_first() -> None:
    model = outlier_mlp()
    batches = [{"x": torch.randn(64, 16, generator=torch.Generator().manual_seed(s))} for s in range(4)]
    ranking = layer_sensitivity(model, batches)
    assert [r.name for r in ranking][0] == "layers.2"
    assert {r.name for r in ranking} == {"layers.0", "layers.2", "layers.4"}
    assert ranking[0].kl > 5 * ranking[1].kl and all(0.0 <= r.agreement <= 1.0 for r in ranking)
    assert most_sensitive_layers(ranking, 1) == ["layers.2"]
    assert most_sensitive_layers(ranking, 0) == []
    with pytest.raises(ValueError, match=">= 0"):
        most_sensitive_layers(ranking, -1)
    # keeping that layer float brings the int8 model much closer to the float one
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(99))
    with torch.inference_mode():
        reference = model(x)
        error_all = (quantize_dynamic_int8(model)(x) - reference).abs().mean()
        error_kept = (quantize_dynamic_int8(model, keep_float=["layers.2"])(x) - reference).abs().mean()
    assert error_kept < error_all / 3
    assert isinstance(ranking[0], LayerSensitivity)


def test_layer_sensitivity_needs_linear_layers() -> None:
    with pytest.raises(ValueError, match="no nn.Linear"):
        layer_sensitivity(nn.Sequential(nn.ReLU()), [{"input": torch.zeros(1, 2)}])
