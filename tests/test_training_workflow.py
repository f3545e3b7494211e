"""The training workflow with real DeepSpeed workers (2 ranks on CPU, gloo).

Verified here: ZeRO stages 0-3 follow the same fp32 loss curve; gradient accumulation is
exact; fp16 (dynamic loss scaling) and CPU offload run; sequence classification with the real
MiniLM backbone learns; a user's model factory and a user's entrypoint run with dlaunch's set-up.
Not verified here: GPU kernels and NCCL (no GPU on this machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.hardware import fp16_supported
from tests.conftest import BF16_TEST_MODEL
from tests.jobs import job_spec, losses, run_job

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
FP32_STEPS = 12  # enough for the curves to separate if a stage summed wrongly; each run costs ~20 s


@pytest.fixture(scope="module")
def fp32_curves(tmp_path_factory) -> dict[str, list[float]]:
    """FP32_STEPS-step fp32 loss curves: ZeRO 0-3 with micro 8 x accum 1, and ZeRO-2 with micro 2 x accum 4."""
    tmp = tmp_path_factory.mktemp("zero")
    curves = {}
    for stage in range(4):
        spec = job_spec(tmp, f"zero-{stage}", precision="fp32", max_steps=FP32_STEPS, zero={"stage": stage},
                        batch={"global": 16, "micro": 8})
        curves[f"stage{stage}"] = losses(run_job(tmp, spec))
    spec = job_spec(tmp, "accum-4", precision="fp32", max_steps=FP32_STEPS, zero={"stage": 2},
                    batch={"global": 16, "micro": 2})
    curves["accum4"] = losses(run_job(tmp, spec))
    return curves


def max_relative_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) == FP32_STEPS
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_follow_the_same_fp32_loss_curve(fp32_curves, stage: int) -> None:
    assert max_relative_difference(fp32_curves[f"stage{stage}"], fp32_curves["stage0"]) < 1e-3
    assert fp32_curves["stage0"][-1] < fp32_curves["stage0"][0]


def test_gradient_accumulation_matches_one_big_micro_batch(fp32_curves) -> None:
    assert max_relative_difference(fp32_curves["accum4"], fp32_curves["stage2"]) < 1e-4


FP16_HERE = pytest.mark.skipif(not fp16_supported(), reason="this CPU has no fp16 for DeepSpeed's CPU accelerator "
                               "(needs AVX512-FP16 or AVX-NE-CONVERT; see launcher/hardware.py)")


@pytest.mark.parametrize("name,training", [
    pytest.param("fp16-zero2", {"precision": "fp16", "zero": {"stage": 2}}, marks=FP16_HERE),
    ("offload-zero3", {"precision": "bf16", "model": BF16_TEST_MODEL, "zero": {"stage": 3, "offload_optimizer": True, "offload_params": True}}),
    ("offload-zero1-fp32", {"precision": "fp32", "zero": {"stage": 1, "offload_optimizer": True}}),
])
def test_precision_and_offload_variants_train(tmp_path: Path, name: str, training: dict) -> None:
    spec = job_spec(tmp_path, name, max_steps=6, **training)
    curve = losses(run_job(tmp_path, spec))
    assert len(curve) == 6 and curve[-1] < curve[0]


def wordnet_subset(tmp_path: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    from training.data.wordnet import write_splits

    out = tmp_path / "wordnet"
    write_splits(out, {"train": n_train, "validation": n_val}, seed=3)
    return out / "train.jsonl", out / "validation.jsonl"


def test_minilm_classifier_learns_wordnet_classes(tmp_path: Path) -> None:
    train, val = wordnet_subset(tmp_path, 640, 128)
    spec = job_spec(
        tmp_path, "minilm-cls", max_steps=12, precision="fp32", zero={"stage": 2},
        model={"type": "sequence-classification", "pretrained": str(REPO / "data/models/all-MiniLM-L6-v2"),
               "num_labels": 45, "freeze_backbone_steps": 2},
        data={"train": str(train), "validation": str(val), "seq_len": 48, "augment": {"mask_prob": 0.1}},
        batch={"global": 32, "micro": 16}, optimizer={"lr": 3e-4},
        eval={"every_steps": 6, "early_stopping": {"metric": "eval_macro_f1", "mode": "max", "patience": 3}},
    )
    events = run_job(tmp_path, spec)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 6, 12]
    assert evals[-1]["eval_accuracy"] > evals[0]["eval_accuracy"] + 0.1
    assert 0.0 <= evals[-1]["eval_macro_f1"] <= 1.0
    start = next(e for e in events if e["event"] == "start")
    assert start["classes"] >= 30
    end = next(e for e in events if e["event"] == "end")
    assert end["best"]["best_step"] in (6, 12)


def test_user_model_factory_gets_dlaunch_training(tmp_path: Path) -> None:
    spec = job_spec(tmp_path, "factory", max_steps=6, precision="fp32",
                    model={"factory": "examples.custom_model:build", "overrides": {"hidden": 64}},
                    tracking={"wandb": {"mode": "disabled"}, "tensorboard": True})
    events = run_job(tmp_path, spec)
    assert list((tmp_path / "runs" / "factory" / "tensorboard").glob("events.out.tfevents.*"))
    curve = losses(events)
    assert curve[-1] < curve[0]
    start = next(e for e in events if e["event"] == "start")
    hidden, vocab = 64, 4096  # the BPE trained on the tutorial corpus fills its 4096 entries
    assert start["parameters"] == vocab * hidden + 2 * 3 * hidden * hidden + 2 * 3 * hidden + 2 * hidden
    ckpt = tmp_path / "ckpt" / "factory" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-6"


def test_user_entrypoint_runs_with_the_distributed_setup(tmp_path: Path) -> None:
    spec = job_spec(tmp_path, "entry", max_steps=3, entrypoint="examples.custom_train:main")
    events = run_job(tmp_path, spec)
    assert next(e for e in events if e["event"] == "start")["note"] == "custom entrypoint"
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3]
    manifest = json.loads((tmp_path / "ckpt" / "entry" / "checkpoints" / "step-3" / "manifest.json").read_text())
    assert manifest["note"] == "custom entrypoint" and manifest["world_size"] == 2
