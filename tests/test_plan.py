"""The planner: ZeRO memory accounting, activations against autograd, the choice and its fixes.

Memory per device = model states + activations + stated overhead; the choice is the cheapest
option that fits with headroom, and micro x grad_accum x data-parallel = global always holds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.errors import PlanError
from launcher.gpus import GPU_MEMORY_GB, GPU_MEMORY_MIB, device_memory_bytes
from launcher.plan import (
    HEADROOM,
    OPTIONS,
    PREFERENCE,
    Change,
    Option,
    activation_bytes,
    estimate_job,
    model_shape,
    model_state_bytes,
    plan_batch,
    plan_job,
    saved_activation_bytes,
)
from launcher.resolve import job_json, resolve_job
from launcher.spec import JobSpec
from tests.conftest import CORPUS_GLOB, base_spec
from training.config import ModelConfig
from training.models.build import build_causal_lm

PSI = 1_000_000_000
GiB = 2**30


def k8s_spec(preset: str = "llama-7b", nodes: int = 1, gpus: int = 8, gpu_type: str | None = "H100-80GB",
             gpu_memory_gb: float | None = None, global_batch: int = 512, seq_len: int = 4096,
             stage: int | str = "auto", micro: int | None = None, memory: str | None = None,
             precision: str = "bf16", **zero: bool) -> JobSpec:
    """A Kubernetes spec (nothing is read from its data path) with the resources the planner sees."""
    resources: dict[str, Any] = {"nodes": nodes, "gpus_per_node": gpus}
    resources.update({k: v for k, v in (("gpu_type", gpu_type), ("gpu_memory_gb", gpu_memory_gb),
                                         ("memory", memory)) if v is not None})
    batch: dict[str, Any] = {"global": global_batch, **({"micro": micro} if micro else {})}
    return JobSpec.model_validate({
        "name": "plan-test", "target": "kubernetes", "image": "registry.example.com/dlaunch:1",
        "resources": resources,
        "training": {"model": {"preset": preset}, "data": {"train": "s3://bucket/corpus/", "seq_len": seq_len},
                     "batch": batch, "max_steps": 10, "precision": precision,
                     "zero": {"stage": stage, **zero}},
    })


def assert_identity(spec: JobSpec, layout: Any) -> None:
    assert layout.micro * layout.grad_accum * layout.data_parallel == spec.training.batch.global_
    assert layout.data_parallel == spec.world_size


# --- model states: the ZeRO paper's accounting ----------------------------------------------

@pytest.mark.parametrize("stage,precision,expected", [
    (0, "bf16", 16 * PSI), (1, "bf16", 4 * PSI + 12 * PSI // 8), (2, "bf16", 2 * PSI + 14 * PSI // 8),
    (3, "bf16", 16 * PSI // 8), (3, "fp16", 16 * PSI // 8),
    (0, "fp32", 16 * PSI), (1, "fp32", 8 * PSI + 12 * PSI // 8), (3, "fp32", 20 * PSI // 8),
], ids=["bf16-0", "bf16-1", "bf16-2", "bf16-3", "fp16-3", "fp32-0", "fp32-1", "fp32-3"])
def test_model_states_follow_the_zero_paper(stage: int, precision: str, expected: int) -> None:
    assert model_state_bytes(PSI, Option(stage), 8, precision).device == expected


@pytest.mark.parametrize("option,device,host", [
    (Option(1, offload_optimizer=True), 4 * PSI, 16 * PSI // 8),
    (Option(2, offload_optimizer=True), 2 * PSI, 16 * PSI // 8),
    (Option(3, offload_optimizer=True), 2 * PSI // 8, 16 * PSI // 8),
    (Option(3, offload_params=True), 14 * PSI // 8, 2 * PSI // 8),
    (Option(3, offload_optimizer=True, offload_params=True), 0, 18 * PSI // 8),
], ids=["1-optimizer", "2-optimizer", "3-optimizer", "3-params", "3-both"])
def test_offload_moves_states_to_the_host(option: Option, device: int, host: int) -> None:
    states = model_state_bytes(PSI, option, 8, "bf16")
    assert (states.device, states.host) == (device, host)


def test_every_option_is_tried_by_auto_and_shown_in_the_table() -> None:
    assert set(PREFERENCE) == set(OPTIONS)
    assert PREFERENCE[0] == Option(0) and PREFERENCE[-1] == Option(3, True, True)


# --- activations: the estimate against what autograd really saves ----------------------------

def saved_tensor_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward pass (weights excluded)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, labels=ids)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in weights)


# GPT-2 without dropout: on CPU, attention dropout forces the unfused kernel, which keeps the
# (seq x seq) matrix that fused GPU kernels do not; the planner models the GPU kernels.
NO_DROPOUT = {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}


@pytest.mark.parametrize("preset,overrides,precision,checkpointing", [
    ("llama-tiny", {}, "bf16", False), ("llama-tiny", {}, "fp32", False), ("llama-25m", {}, "bf16", False),
    ("llama-tiny", {"num_key_value_heads": 2}, "bf16", False), ("gpt2-tiny", NO_DROPOUT, "bf16", False),
    ("gpt2-tiny", NO_DROPOUT, "fp32", False), ("llama-25m", {}, "bf16", True),
], ids=["llama-bf16", "llama-fp32", "llama25m-bf16", "llama-gqa", "gpt2-bf16", "gpt2-fp32", "llama-ckpt"])
def test_activation_estimate_matches_autograd(preset: str, overrides: dict[str, Any], precision: str,
                                              checkpointing: bool) -> None:
    config = ModelConfig(preset=preset, overrides=overrides)
    model = build_causal_lm(config).to(torch.bfloat16 if precision == "bf16" else torch.float32).train()
    if checkpointing:  # transformers 5 renamed gradient_checkpointing_enable
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    shape = model_shape(config)
    ids = torch.randint(0, shape.vocab, (4, 128), generator=torch.Generator().manual_seed(0))
    measured = saved_tensor_bytes(model, ids)
    estimated = saved_activation_bytes(shape, 4, 128, precision, checkpointing)
    assert estimated == pytest.approx(measured, rel=0.03)


def test_activations_scale_with_tokens_and_checkpointing_saves_most() -> None:
    shape = model_shape(ModelConfig(preset="llama-7b"), 32000)
    one = activation_bytes(shape, 1, 4096, "bf16", checkpointing=False)
    assert activation_bytes(shape, 2, 4096, "bf16", checkpointing=False) == 2 * one
    assert activation_bytes(shape, 1, 4096, "bf16", checkpointing=True) < one / 5


# --- device memory --------------------------------------------------------------------------

def test_gpu_table_reports_driver_memory_close_to_the_marketed_size() -> None:
    assert set(GPU_MEMORY_MIB) == set(GPU_MEMORY_GB)
    for name, gb in GPU_MEMORY_GB.items():
        assert 0.9 * gb * 1024 <= GPU_MEMORY_MIB[name] <= 1.03 * gb * 1024, name


@pytest.mark.parametrize("gpu_type,gpu_memory_gb,expected", [
    ("H100-80GB", None, 81_559 * 2**20), (None, 24, 24 * GiB), ("A10G", 20, 20 * GiB), (None, None, None),
], ids=["table", "explicit", "explicit-wins", "unknown"])
def test_device_memory_from_spec(gpu_type: str | None, gpu_memory_gb: float | None, expected: int | None) -> None:
    assert device_memory_bytes(gpu_type, gpu_memory_gb) == expected


# --- the choice -----------------------------------------------------------------------------

def test_llama_7b_on_one_node_of_eight_h100_fits() -> None:
    spec = k8s_spec()
    plan = plan_job(spec)
    assert_identity(spec, plan.layout)
    assert plan.layout.zero_stage >= 1  # 16 bytes x 6.5B parameters cannot sit on one 80 GB device
    assert plan.chosen_memory.device_total() <= plan.limits.usable_device
    assert plan.to_json()["stages"]["0"]["fits"] is False


def test_llama_7b_on_one_24gb_gpu_refuses_with_the_smallest_change() -> None:
    spec = k8s_spec(gpus=1, gpu_type=None, gpu_memory_gb=24)
    with pytest.raises(PlanError) as error:
        plan_job(spec)
    message = str(error.value)
    assert "does not fit on 1 node(s) x 1 GPU(s)" in message
    assert "ZeRO-3 + offload optimizer+params" in message  # the leanest option is offload
    assert "smallest change: shorten training.data.seq_len" in message
    changes = estimate_job(spec).changes
    assert [c.text.split()[0] for c in changes] == ["shorten", "set"]  # then activation checkpointing
    assert changes[1].text.startswith("set training.activation_checkpointing: true")
    for change in changes:
        assert_change_fits(spec, change)


def test_llama_7b_on_one_24gb_gpu_with_short_sequences_proposes_offload() -> None:
    spec = k8s_spec(gpus=1, gpu_type=None, gpu_memory_gb=24, seq_len=512)
    layout = plan_job(spec).layout
    assert layout.offload_optimizer
    assert_identity(spec, layout)


def apply_change(spec: JobSpec, change: Change) -> JobSpec:
    """The spec the user gets by following `change`."""
    data = spec.model_dump(mode="json", by_alias=True)
    scenario, option = change.scenario, change.choice.option
    data["training"]["activation_checkpointing"] = scenario.checkpointing
    data["resources"]["nodes"] = scenario.nodes
    data["training"]["data"]["seq_len"] = scenario.seq_len
    if scenario.micro is None:
        data["training"]["batch"].pop("micro", None)
    if len(scenario.options) > 1:
        data["training"]["zero"] = {"stage": option.stage, "offload_optimizer": option.offload_optimizer,
                                    "offload_params": option.offload_params}
    if not scenario.check_host:
        data["resources"]["memory"] = f"{change.choice.memory.host_per_node / (1 - HEADROOM) / GiB + 1:.0f}Gi"
    return JobSpec.model_validate(data)


def assert_change_fits(spec: JobSpec, change: Change) -> None:
    """The change's layout fits, and a spec edited as it says plans successfully."""
    usable = estimate_job(spec).limits.usable_device
    assert change.choice.memory.device_total(change.scenario.checkpointing) <= usable
    changed = apply_change(spec, change)
    assert_identity(changed, plan_job(changed).layout)


HOST_BOUND = {"gpus": 1, "gpu_type": "A10G", "seq_len": 512, "memory": "64Gi"}


@pytest.mark.parametrize("kwargs,smallest,expected", [
    ({"gpus": 8, "gpu_type": "A100-40GB", "stage": 0}, True,
     "set training.zero to {stage: 3, offload_optimizer: true} (or stage: auto)"),
    ({"gpus": 8, "gpu_type": "A100-80GB", "stage": 2, "micro": 64}, True, "set training.batch.micro to 2"),
    (HOST_BOUND, True, "raise resources.memory to at least"),
    (HOST_BOUND, False, "use resources.nodes: 2"),
], ids=["stage", "micro", "host-memory", "nodes"])
def test_changes_name_the_field(kwargs: dict[str, Any], smallest: bool, expected: str) -> None:
    spec = k8s_spec(**kwargs)
    with pytest.raises(PlanError) as error:
        plan_job(spec)
    assert ("smallest change: " if smallest else "or: ") + expected in str(error.value)
    for change in estimate_job(spec).changes:
        assert_change_fits(spec, change)


def test_cheapest_option_that_fits_with_its_largest_micro() -> None:
    spec = k8s_spec(preset="llama-125m", global_batch=256, seq_len=2048)
    plan = plan_job(spec)
    assert plan.layout.zero_stage == 0 and not plan.layout.offload_optimizer
    row = next(r for r in plan.rows if r.option == Option(0))
    assert row.max_micro == plan.layout.micro > 1


def test_fixed_stage_is_kept_and_checked() -> None:
    plan = plan_job(k8s_spec(stage=3, offload_optimizer=True))
    assert (plan.layout.zero_stage, plan.layout.offload_optimizer) == (3, True)
    assert "as set in training.zero" in plan.reason


def test_auto_keeps_the_offload_the_spec_asks_for() -> None:
    layout = plan_job(k8s_spec(preset="llama-125m", offload_optimizer=True)).layout
    assert layout.offload_optimizer and layout.zero_stage == 2


def test_host_memory_is_noted_when_offload_is_chosen_without_it() -> None:
    plan = plan_job(k8s_spec(gpus=1, gpu_type=None, gpu_memory_gb=24, seq_len=512))
    assert any("host memory not checked" in note for note in plan.notes)


SPEC_SPACE = st.fixed_dictionaries({
    "preset": st.sampled_from(["llama-125m", "llama-1b", "llama-7b", "gpt2-large"]),
    "nodes": st.integers(1, 4), "gpus": st.sampled_from([1, 2, 4, 8]),
    "gpu_type": st.sampled_from(["T4", "A10G", "A100-40GB", "H100-80GB"]),
    "per_rank": st.integers(1, 64), "seq_len": st.sampled_from([256, 1024, 2048, 4096]),
    "stage": st.sampled_from(["auto", 0, 1, 2, 3]), "micro": st.sampled_from([None, 1, 2, 4]),
    "precision": st.sampled_from(["bf16", "fp32"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=SPEC_SPACE)
def test_every_plan_splits_the_batch_exactly_or_explains_why_not(case: dict[str, Any]) -> None:
    per_rank, micro = case.pop("per_rank"), case.pop("micro")
    micro = micro if micro and per_rank % micro == 0 else None
    spec = k8s_spec(global_batch=per_rank * case["nodes"] * case["gpus"], micro=micro, **case)
    plan = estimate_job(spec)
    if plan.layout is None:
        assert plan.problem and ("smallest change" in plan.problem or "no change" in plan.problem)
        for change in plan.changes:
            assert_change_fits(spec, change)
        return
    assert_identity(spec, plan.layout)
    assert plan.chosen_memory.device_total() <= plan.limits.usable_device
    if case["stage"] == "auto":  # nothing cheaper fits: at any micro-batch, or at the one the spec fixes
        chosen = Option(plan.layout.zero_stage, plan.layout.offload_optimizer, plan.layout.offload_params)
        rows = {r.option: r for r in plan.rows}
        smallest = micro or 1
        assert all(rows[o].max_micro is None or rows[o].max_micro < smallest
                   for o in PREFERENCE[:PREFERENCE.index(chosen)])


# --- without a device-memory limit ------------------------------------------------------------

def local_spec(**training: Any) -> JobSpec:
    data = base_spec()
    data["resources"] = {"nodes": 1, "gpus_per_node": 0}
    data["training"]["batch"] = {"global": 48}
    data["training"].update(training)
    return JobSpec.model_validate(data)


def test_cpu_workers_plan_the_batch_only_and_auto_means_stage_0() -> None:
    plan = plan_job(local_spec(zero={"stage": "auto"}))
    assert (plan.layout.zero_stage, plan.layout.micro, plan.layout.grad_accum) == (0, 8, 6)
    assert "device memory is unknown" in plan.reason
    assert any("not checked" in note for note in plan.notes)
    assert {stage["fits"] for stage in plan.to_json()["stages"].values()} == {None}


def test_plan_batch_is_the_plans_layout() -> None:
    spec = local_spec()
    assert plan_batch(spec) == plan_job(spec).layout


@pytest.mark.parametrize("batch,message", [
    ({"global": 47}, "must be divisible by the data-parallel size"),
    ({"global": 48, "micro": 5}, r"training\.batch\.micro \(5\) must divide"),
], ids=["global", "micro"])
def test_batches_that_cannot_be_split(batch: dict[str, int], message: str) -> None:
    data = base_spec()
    data["resources"] = {"nodes": 1, "gpus_per_node": 2}
    data["training"]["batch"] = batch
    with pytest.raises(PlanError, match=message):
        plan_job(JobSpec.model_validate(data))


# --- what workers receive, and the CLI --------------------------------------------------------

def test_the_choice_is_written_into_the_resolved_job() -> None:
    spec = k8s_spec(gpus=1, gpu_type=None, gpu_memory_gb=24, seq_len=512)
    layout = plan_job(spec).layout
    written = json.loads(job_json(resolve_job(spec, layout, "runs/plan-test")))
    assert written["layout"] == layout.model_dump()
    assert written["layout"]["offload_optimizer"] is True
    assert written["training"]["zero"]["stage"] == "auto"  # the spec as written; the layout is what runs


def spec_file_data(spec: JobSpec) -> dict[str, Any]:
    """`spec` as a file `dlaunch plan` accepts: Kubernetes pods need CPU and memory (ample here)."""
    data = spec.model_dump(mode="json", by_alias=True)
    data["resources"].update(cpu=96, memory=data["resources"]["memory"] or "2000Gi")
    return data


def test_json_output_shape(run_cli, write_spec) -> None:
    data = spec_file_data(k8s_spec())
    result = run_cli("plan", str(write_spec(data)), "-o", "json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["parameters"] == 6_509_826_048
    assert set(plan["stages"]) == {"0", "1", "2", "3"}
    for stage in plan["stages"].values():
        assert {"model_states_bytes", "activation_bytes", "fits"} <= set(stage)
    assert "optimizer+params" in plan["stages"]["3"]["offload"]
    chosen = plan["chosen"]
    assert chosen["micro"] * chosen["grad_accum"] * chosen["data_parallel"] == 512


def test_table_output_marks_the_choice(run_cli, write_spec) -> None:
    result = run_cli("plan", str(write_spec(spec_file_data(k8s_spec()))))
    assert result.code == 0, result.err
    assert "chosen: micro 1 x grad_accum 64 x data-parallel 8 = 512, ZeRO-1" in result.out
    assert "1*" in result.out


def test_plan_prints_the_table_then_fails_when_nothing_fits(run_cli, write_spec) -> None:
    result = run_cli("plan", str(write_spec(spec_file_data(k8s_spec(gpus=1, gpu_type="A10G")))))
    assert result.code == 2
    assert "ZeRO" in result.out and "why: nothing fits" in result.out
    assert "smallest change:" in result.err


def test_submit_refuses_a_spec_that_cannot_fit(run_cli, write_spec) -> None:
    data = copy.deepcopy(base_spec())
    data["resources"] = {"nodes": 1, "gpus_per_node": 1, "gpu_type": "T4"}
    data["training"].update({"model": {"preset": "llama-7b"}, "batch": {"global": 8},
                             "data": {"train": CORPUS_GLOB, "seq_len": 4096}, "zero": {"stage": "auto"}})
    result = run_cli("submit", str(write_spec(data)))
    assert result.code == 2
    assert "does not fit" in result.err and "smallest change:" in result.err


def test_a_prepared_dataset_gives_the_planned_vocabulary(tmp_path: Any) -> None:
    """The worker builds a preset with the prepared dataset's tokenizer, so the planner counts that
    vocabulary (its manifest's `tokenizer.vocab_size`), and says where the figure comes from."""
    from launcher.plan import estimate_job, job_inputs, planned_vocabulary

    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"vocab_size": 50_000}}))
    spec = base_spec()
    spec["training"]["data"] = {"prepared": str(tmp_path), "seq_len": 64}
    job = JobSpec.model_validate(spec)
    vocabulary = planned_vocabulary(job.training)
    assert vocabulary.size == 50_000 and str(tmp_path) in vocabulary.source
    assert job_inputs(job)[0].shape.vocab == 50_000  # what the memory model counts
    assert f"vocabulary 50000 from the tokenizer of the prepared dataset {tmp_path}" in estimate_job(job).notes


def test_an_unreadable_manifest_leaves_the_bpe_vocabulary_and_says_why(tmp_path: Any) -> None:
    from launcher.plan import planned_vocabulary

    spec = base_spec()
    spec["training"]["data"] = {"prepared": str(tmp_path / "missing"), "seq_len": 64}
    vocabulary = planned_vocabulary(JobSpec.model_validate(spec).training)
    assert vocabulary.size == 4096  # training.data.tokenizer_vocab_size's default
    assert "was not read here" in vocabulary.source and "missing" in vocabulary.source


def test_a_manifest_in_train_is_found_as_the_worker_finds_it(tmp_path: Any) -> None:
    from launcher.plan import planned_vocabulary

    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"vocab_size": 32_000}}))
    spec = base_spec()
    spec["training"]["data"] = {"train": str(tmp_path), "seq_len": 64}
    assert planned_vocabulary(JobSpec.model_validate(spec).training).size == 32_000
