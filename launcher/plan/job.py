"""Planning a job spec: the layout `render` and `submit` use, and the plan `dlaunch plan` shows.

The layout is micro-batch x gradient accumulation x data-parallel size = global batch, plus the
ZeRO stage and offload flags. Workers receive it in the resolved job, so every rank agrees.
"""

from __future__ import annotations

from launcher.errors import PlanError
from launcher.gpus import device_memory_bytes
from launcher.plan.introspect import model_shape
from launcher.plan.memory import PREFERENCE, DeepSpeedBuffers, Limits, Option
from launcher.plan.report import Plan, common_notes, option_rows, problem_text
from launcher.plan.search import Choice, Inputs, Scenario, choose, smallest_changes, target_micro
from launcher.plan.vocab import planned_vocab_size
from launcher.quantity import format_bytes
from launcher.spec import JobSpec, batch_problems
from training.contract import BatchLayout


def _per_rank_batch(spec: JobSpec) -> int:
    """Sequences per rank per step; errors name the field and the values that would work.

    `validate` refuses these specs already (`launcher.spec.batch_problems`); this guards specs
    built in code.
    """
    for problem in batch_problems(spec):
        raise PlanError(f"{problem.path} ({problem.value}) {problem.message}; {problem.hint}")
    return spec.training.batch.global_ // spec.world_size


def allowed_options(spec: JobSpec) -> tuple[Option, ...]:
    """The spec's own option, or with `stage: auto` every option that keeps the offloads it asks for."""
    zero = spec.training.zero
    if zero.stage != "auto":
        return (Option(int(zero.stage), zero.offload_optimizer, zero.offload_params),)
    return tuple(o for o in PREFERENCE if (o.offload_optimizer or not zero.offload_optimizer)
                 and (o.offload_params or not zero.offload_params))


def _host_is_device(spec: JobSpec) -> bool:
    """Whether the workers keep their model states in host memory: CPU workers, or no device memory known."""
    r = spec.resources
    return r.gpus_per_node == 0 or device_memory_bytes(r.gpu_type, r.gpu_memory_gb) is None


def job_inputs(spec: JobSpec) -> tuple[Inputs, Scenario]:
    """What the planner knows about `spec`: fixed inputs and the scenario the spec asks for."""
    training = spec.training
    inputs = Inputs(
        shape=model_shape(training.model, planned_vocab_size(training)), precision=training.precision,
        global_batch=training.batch.global_, procs_per_node=spec.resources.procs_per_node,
        limits=Limits.from_spec(spec), buffers=DeepSpeedBuffers.from_training(training),
        host_is_device=_host_is_device(spec),
    )
    base = Scenario(nodes=spec.resources.nodes, seq_len=training.data.seq_len, micro=training.batch.micro,
                    options=allowed_options(spec), checkpointing=training.activation_checkpointing)
    return inputs, base


def _layout(option: Option, micro: int, per_rank: int, dp: int) -> BatchLayout:
    layout = BatchLayout(micro=micro, grad_accum=per_rank // micro, data_parallel=dp, zero_stage=option.stage,
                         offload_optimizer=option.offload_optimizer, offload_params=option.offload_params)
    assert layout.global_batch == per_rank * dp
    return layout


def _unchecked_plan(spec: JobSpec, inputs: Inputs, base: Scenario, per_rank: int) -> Plan:
    """No device memory known: lay out the batch only, with the spec's stage (auto becomes the first allowed)."""
    option = base.options[0]
    micro = base.micro or target_micro(per_rank)
    what = "CPU workers" if spec.resources.gpus_per_node == 0 else "no resources.gpu_type or gpu_memory_gb"
    reason = f"{option.label} as set in training.zero.stage"
    if spec.training.zero.stage == "auto":
        reason = (f"stage auto chose {option.label}: device memory is unknown ({what}), so nothing needs "
                  "partitioning; set resources.gpu_type or gpu_memory_gb to have the stage chosen by memory")
    notes = [f"device memory not checked ({what}): batch layout only"] + common_notes(inputs, spec)
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=micro, limits=inputs.limits, rows=option_rows(inputs, base, micro),
                layout=_layout(option, micro, per_rank, inputs.data_parallel(base)), reason=reason,
                chosen_memory=inputs.memory(base, option, micro), notes=notes)


def _fitted_plan(spec: JobSpec, inputs: Inputs, base: Scenario, choice: Choice) -> Plan:
    usable = inputs.limits.usable_device or 0
    need = format_bytes(choice.memory.device_total())
    if spec.training.zero.stage == "auto":
        reason = (f"stage auto: {choice.option.label} is the cheapest option that fits "
                  f"(micro-batch {choice.micro}: {need} of {format_bytes(usable)} usable per device)")
    else:
        reason = f"{choice.option.label} as set in training.zero (micro-batch {choice.micro}: {need} of " \
                 f"{format_bytes(usable)} usable per device)"
    notes = common_notes(inputs, spec)
    if choice.memory.states.host and inputs.limits.host_bytes is None:
        notes.append(f"host memory not checked: offload needs {format_bytes(choice.memory.host_per_node)} per node "
                     "(with model construction and the workers' runtime); set resources.memory to check it")
    per_rank = inputs.global_batch // choice.data_parallel
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=choice.micro, limits=inputs.limits,
                rows=option_rows(inputs, base, choice.micro), layout=_layout(choice.option, choice.micro, per_rank,
                                                                        choice.data_parallel),
                reason=reason, chosen_memory=choice.memory, notes=notes)


def _failed_plan(spec: JobSpec, inputs: Inputs, base: Scenario) -> Plan:
    micro = base.micro or 1
    rows = option_rows(inputs, base, micro)
    changes = smallest_changes(inputs, base)
    return Plan(parameters=inputs.shape.parameters, model=inputs.shape.source, precision=inputs.precision,
                seq_len=base.seq_len, micro=micro, limits=inputs.limits, rows=rows, layout=None,
                reason="nothing fits", notes=common_notes(inputs, spec),
                problem=problem_text(spec, inputs, base, rows, micro, changes), changes=changes)


def estimate_job(spec: JobSpec) -> Plan:
    """Plan `spec` without raising when nothing fits: `.layout` is then None and `.problem` says why.

    Raises `PlanError` only for batches that cannot be split at all, or a model that cannot be read.
    """
    per_rank = _per_rank_batch(spec)
    inputs, base = job_inputs(spec)
    if inputs.limits.device_bytes is None:
        plan = _unchecked_plan(spec, inputs, base, per_rank)
        if plan.chosen_memory is None or inputs.fits(base, plan.chosen_memory) is not False:
            return plan
        return _failed_plan(spec, inputs, base)
    choice = choose(inputs, base)
    if choice is None:
        return _failed_plan(spec, inputs, base)
    return _fitted_plan(spec, inputs, base, choice)


def plan_job(spec: JobSpec) -> Plan:
    """The plan `render` and `submit` use; raises `PlanError` (what does not fit + the smallest change)."""
    plan = estimate_job(spec)
    if plan.layout is None:
        raise PlanError(plan.problem or "the job does not fit")
    return plan


def _fixed_because(spec: JobSpec) -> str | None:
    """Why the layout does not depend on the model's size, or None when the planner chooses by memory."""
    r, training = spec.resources, spec.training
    if training.batch.micro is not None and training.zero.stage != "auto":
        return "training.batch.micro and training.zero.stage fix the layout"
    if device_memory_bytes(r.gpu_type, r.gpu_memory_gb) is None:
        return "no device memory is known (resources.gpu_type / gpu_memory_gb), so nothing is chosen by memory"
    return None


def fixed_layout(spec: JobSpec) -> BatchLayout | None:
    """The layout `plan_job` would choose, when it does not depend on the model's size; else None.

    The same choice as `_unchecked_plan` and `choose` make, minus the memory check.
    """
    if _fixed_because(spec) is None:
        return None
    per_rank = _per_rank_batch(spec)
    micro = spec.training.batch.micro or target_micro(per_rank)
    return _layout(allowed_options(spec)[0], micro, per_rank, spec.world_size)


def skipped_memory_check(spec: JobSpec) -> str | None:
    """The note `render` (and `submit --dry-run`) print when they lay the batch out without the model.

    Counting a pretrained model on S3 needs credentials and the network; a GitOps pipeline that
    renders manifests has neither. When the layout does not depend on the count, render stays
    offline and says so; None when the model is read as usual.
    """
    pretrained = spec.training.model.pretrained
    because = _fixed_because(spec)
    if pretrained is None or not pretrained.startswith("s3://") or because is None:
        return None
    return (f"memory check skipped: {because}, so {pretrained}/config.json was not read; "
            "`dlaunch plan` checks memory (with S3 credentials)")


def plan_batch(spec: JobSpec) -> BatchLayout:
    """The layout `render` uses (micro, grad_accum, data-parallel size, ZeRO stage, offload).

    Offline when `skipped_memory_check` says so; otherwise the plan's chosen layout.
    """
    if skipped_memory_check(spec) is not None:
        layout = fixed_layout(spec)
    else:
        layout = plan_job(spec).layout
    assert layout is not None
    return layout
