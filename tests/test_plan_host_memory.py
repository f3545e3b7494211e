"""Host memory per node in the planner: model construction, offloaded states, the workers' runtime.

Stages 0-2 build the model once in fp32 on every rank; ZeRO-3 builds it partitioned
(`training.models.sharded`), so a rank holds its partition and one module. A job whose
`resources.memory` is too small is refused with the smallest change, and `dlaunch plan` shows
the host figure.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from launcher.errors import PlanError
from launcher.plan import HOST_RUNTIME, Option, construction_bytes, estimate_job, model_shape, plan_job
from training.config import ModelConfig
from tests.test_plan import k8s_spec

GiB = 2**30
PSI = 1_000_000_000


@pytest.mark.parametrize("stage,expected", [
    (0, 4 * PSI), (1, 4 * PSI), (2, 4 * PSI), (3, 2 * PSI // 8 + 4 * 10_000_000),
])
def test_construction_holds_one_fp32_copy_or_a_partition(stage: int, expected: int) -> None:
    assert construction_bytes(PSI, 10_000_000, Option(stage), 8, "bf16") == expected


def test_zero3_host_memory_per_node_is_a_fraction_of_full_copies() -> None:
    """8 ranks of llama-7b: ZeRO-2 needs 8 fp32 copies on the host while building; ZeRO-3 a partition each."""
    plan = estimate_job(k8s_spec(stage=3))
    zero2 = estimate_job(k8s_spec(stage=2, offload_optimizer=True)).chosen_memory
    zero3, psi = plan.chosen_memory, plan.parameters
    largest = model_shape(ModelConfig(preset="llama-7b"), 4096).largest_layer
    assert zero2.construction == 4 * psi
    assert zero2.host_per_node >= 8 * (4 * psi + HOST_RUNTIME)
    assert zero3.construction == 2 * psi // 8 + 4 * largest
    assert zero3.host_per_node == 8 * (HOST_RUNTIME + zero3.construction)
    assert zero3.host_per_node < zero2.host_per_node / 4


def test_host_memory_too_small_is_refused_with_the_smallest_change() -> None:
    """ZeRO-2 on 8 GPUs builds 8 fp32 copies of llama-7b (215 GB): 128Gi refuses, ZeRO-3 would fit."""
    spec = k8s_spec(stage=2, memory="128Gi")
    with pytest.raises(PlanError) as error:
        plan_job(spec)
    text = str(error.value)
    assert "of host memory per node" in text
    assert "smallest change: set training.zero to {stage: 3} (or stage: auto)" in text


def test_auto_prefers_an_option_whose_host_memory_fits() -> None:
    assert plan_job(k8s_spec(memory="128Gi")).layout.zero_stage == 3
    assert plan_job(k8s_spec(memory="2000Gi")).layout.zero_stage < 3


def test_cpu_workers_are_checked_against_host_memory(write_spec: Any, run_cli: Any) -> None:
    """No device memory known: the whole per-rank total lives on the host, and `resources.memory` bounds it."""
    spec = k8s_spec(preset="llama-1b", gpus=2, gpu_type=None, seq_len=512, global_batch=8, stage=3, memory="8Gi")
    plan = estimate_job(spec)
    assert plan.layout is None
    assert "does not fit in resources.memory 8Gi per node" in (plan.problem or "")
    assert "raise resources.memory to at least" in plan.problem
    roomy = estimate_job(k8s_spec(preset="llama-1b", gpus=2, gpu_type=None, seq_len=512, global_batch=8, stage=3,
                                  memory="200Gi"))
    assert roomy.layout is not None


def test_plan_shows_the_host_figure(write_spec: Any, run_cli: Any) -> None:
    spec = k8s_spec(memory="2000Gi").model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["resources"]["cpu"] = 96
    path = write_spec(spec)
    shown = run_cli("plan", str(path))
    assert shown.code == 0, shown.err
    assert "host: " in shown.out and "GiB per node" in shown.out and "model construction" in shown.out
    data = json.loads(run_cli("plan", str(path), "-o", "json").out)
    assert data["chosen"]["host_bytes_per_rank"] * 8 == data["chosen"]["host_bytes_per_node"]
    assert data["stages"]["3"]["construction_bytes"] < data["stages"]["0"]["construction_bytes"]
