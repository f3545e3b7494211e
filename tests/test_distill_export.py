"""Distillation inside a real 2-rank DeepSpeed job, then quantization and export after training,
and `dlaunch export` of a committed checkpoint.

Verified: a MiniLM teacher fine-tuned by dlaunch, a 3-layer student distilled from its checkpoint
URI (initialised from every 2nd teacher layer), int8 (its most sensitive Linear kept float) +
ONNX + TorchScript artifacts written next to the checkpoints and checked against PyTorch. Quality targets are in bench/compression.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs import job_spec, losses, run_job

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
MINILM = str(REPO / "data/models/all-MiniLM-L6-v2")


def classifier_spec(tmp_path: Path, name: str, train: Path, val: Path, **training) -> dict:
    return job_spec(
        tmp_path, name, max_steps=4, precision="fp32", zero={"stage": 2},
        model={"type": "sequence-classification", "pretrained": MINILM, "num_labels": 45},
        data={"train": str(train), "validation": str(val), "seq_len": 32},
        batch={"global": 32, "micro": 16}, optimizer={"lr": 3e-4},
        eval={"every_steps": 4, "max_batches": 2}, **training)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> dict:
    from training.data.wordnet import write_splits

    tmp = tmp_path_factory.mktemp("teacher")
    write_splits(tmp / "wordnet", {"train": 256, "validation": 64}, seed=5)
    train, val = tmp / "wordnet" / "train.jsonl", tmp / "wordnet" / "validation.jsonl"
    run_job(tmp, classifier_spec(tmp, "teacher", train, val))
    return {"tmp": tmp, "train": train, "val": val, "checkpoints": tmp / "ckpt" / "teacher" / "checkpoints"}


def test_student_is_distilled_then_quantized_and_exported(teacher, tmp_path: Path) -> None:
    compression = {"distill": {"teacher": str(teacher["checkpoints"]), "temperature": 2.0, "alpha": 0.7,
                               "student_layers": 3},
                   "quantize": {"method": "dynamic-int8", "keep_float_layers": 1, "calibration_samples": 32},
                   "export": ["onnx", "torchscript"]}
    events = run_job(tmp_path, classifier_spec(tmp_path, "student", teacher["train"], teacher["val"],
                                               compression=compression))
    root = tmp_path / "ckpt" / "student"
    info = json.loads((root / "model.json").read_text())
    assert info["backbone_config"]["num_hidden_layers"] == 3
    artifacts = [e for e in events if e["event"] == "artifact"]
    assert sorted((a["format"], a["quantized"]) for a in artifacts) == [
        ("onnx", False), ("onnx", True), ("torchscript", False), ("torchscript", True)]
    for artifact in artifacts:
        assert Path(artifact["uri"]).is_file() and Path(artifact["uri"]).parent.parent == root / "artifacts"
        if not (artifact["format"] == "onnx" and artifact["quantized"]):
            assert artifact["max_abs_diff"] < 1e-4
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    # the most quantization-sensitive Linear (ranked on 32 validation texts) stays float in both int8 files
    [quantize] = [e for e in events if e["event"] == "quantize"]
    assert quantize["calibration_samples"] == 32 and len(quantize["keep_float"]) == 1
    int8_onnx = next(Path(a["uri"]) for a in artifacts if a["format"] == "onnx" and a["quantized"])
    import onnx

    ops = [node.op_type for node in onnx.load(str(int8_onnx)).graph.node]
    assert ops.count("MatMulInteger") == 3 * 6 + 1 - 1  # 6 Linear per layer + the head, one kept float
    assert next(a for a in artifacts if a["format"] == "onnx" and a["quantized"])["agreement"] == 1.0


def test_distillation_gives_the_same_losses_under_every_zero_stage_and_on_ray(teacher, tmp_path: Path) -> None:
    """One distillation job (fp32 student and teacher) under ZeRO-2 and 3 and on Ray Train.

    Ray runs the same loop with the same DeepSpeed engine inside its workers, so its losses equal
    the DeepSpeed backend's bit for bit; ZeRO-3 partitions parameters too and sums in another order,
    so it agrees to float rounding. Not verified here: ZeRO-0/1 (they share ZeRO-2's path for the
    teacher, which is never partitioned; tests/test_training_workflow.py compares ZeRO 0-3 without
    distillation), ZeRO with CPU offload, KubeRay.
    """
    distill = {"teacher": str(teacher["checkpoints"]), "temperature": 2.0, "alpha": 0.7, "student_layers": 3}
    curves = {}
    for backend, stage in (("deepspeed", 2), ("ray", 2), ("deepspeed", 3)):
        spec = classifier_spec(tmp_path, f"distill-{backend}-z{stage}", teacher["train"], teacher["val"],
                               compression={"distill": distill})
        spec["backend"] = backend
        spec["training"].update(zero={"stage": stage})
        events = run_job(tmp_path, spec)
        info = json.loads((tmp_path / "ckpt" / spec["name"] / "model.json").read_text())
        assert info["backbone_config"]["num_hidden_layers"] == 3
        curves[(backend, stage)] = losses(events)
    reference = curves[("deepspeed", 2)]
    assert len(reference) == 4 and all(0.0 < loss < 20.0 for loss in reference)
    assert curves[("ray", 2)] == reference
    assert curves[("deepspeed", 3)] == pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize("fmt,quantize", [("onnx", False), ("torchscript", True)])
def test_dlaunch_export_of_a_committed_checkpoint(teacher, tmp_path: Path, run_cli, fmt: str, quantize: bool) -> None:
    args = ["export", str(teacher["checkpoints"]), "--format", fmt, "-o", str(tmp_path / "out")]
    result = run_cli(*(args + (["--quantize", "int8"] if quantize else [])))
    assert result.code == 0, result.err
    assert "wrote" in result.out and "max |logits - PyTorch|" in result.out
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_export_keeps_the_most_sensitive_layers_float(teacher, tmp_path: Path, run_cli) -> None:
    import onnx

    out = tmp_path / "model.onnx"
    result = run_cli("export", str(teacher["checkpoints"]), "--format", "onnx", "--quantize", "int8",
                     "--keep-float-layers", "2", "--calibration", str(teacher["val"]), "--calibration-samples", "32",
                     "-o", str(out))
    assert result.code == 0, result.err
    kept = result.out.split("kept float (most sensitive on 32 calibration texts): ")[1].splitlines()[0].split(", ")
    assert len(kept) == 2 and all(name.startswith("backbone.") or name == "head" for name in kept)
    assert "predictions agree with PyTorch int8 on 100.0%" in result.out
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert ops.count("MatMulInteger") == 6 * 6 + 1 - 2  # the teacher: 6 layers of 6 Linear + the head


def test_keep_float_layers_needs_quantization_and_calibration_data(tmp_path: Path, run_cli) -> None:
    result = run_cli("export", str(tmp_path / "job" / "checkpoints"), "--format", "onnx", "--keep-float-layers", "1",
                     "-o", str(tmp_path / "out"))
    assert result.code != 0 and "--quantize int8 and --calibration" in result.err and "Traceback" not in result.err


def test_export_of_a_missing_checkpoint_is_a_clean_error(tmp_path: Path, run_cli) -> None:
    result = run_cli("export", str(tmp_path / "nothing" / "checkpoints"), "--format", "onnx", "-o", str(tmp_path))
    assert result.code == 1
    assert "cannot export" in result.err and "Traceback" not in result.err


def test_dlaunch_compare_prints_size_latency_and_quality(teacher, run_cli) -> None:
    result = run_cli("compare", str(teacher["checkpoints"]), "--data", str(teacher["val"]))
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    header, _, float_row, int8_row = lines[-4:]
    assert header.split() == ["model", "params", "non-emb", "file", "MB", "b1", "ms", "b32", "ms", "macro-F1"]
    assert float_row.split()[0] == "teacher" and int8_row.split()[0] == "teacher-int8"
    assert float_row.split()[1] == int8_row.split()[1] == "22.58M"
    assert float(int8_row.split()[3]) * 2 < float(float_row.split()[3])  # int8 file at least 2x smaller
