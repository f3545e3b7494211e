"""Plan a job before anything runs: model size, memory per device for each ZeRO stage, and the layout.

One module per concern, every public name importable from `launcher.plan`:
- `shape`: the model's parameter count and dimensions, counted from its configuration;
- `introspect`: models counted on the meta device (pretrained directories, factories, unusual
  presets) — the only part that imports torch, and only inside its functions;
- `memory`: DeepSpeed's accounting of model states, activations and overhead per device;
- `search`: the cheapest option and micro-batch that fit, or the smallest change that would;
- `report`: the `Plan` (options table, choice, reason, notes, problem) that `dlaunch plan` prints;
- `job`: a job spec in, the plan and the layout `render` and `submit` use out.

Nothing here allocates the model: presets are counted from their configuration (exactly; the
tests compare against instantiated models), other models on the meta device.
"""

from launcher.plan.introspect import (
    CREDENTIALS_HINT,
    count_parameters,
    meta_module,
    model_shape,
    parameter_counts,
    read_pretrained_config,
)
from launcher.plan.job import (
    allowed_options,
    estimate_job,
    fixed_layout,
    job_inputs,
    plan_batch,
    plan_job,
    skipped_memory_check,
)
from launcher.plan.memory import (
    DS_PREFETCH_BUCKET,
    DS_REDUCE_BUCKET,
    ELEMENT_BYTES,
    HEADROOM,
    HOST_RUNTIME,
    OPTIONS,
    PREFERENCE,
    RUNTIME_OVERHEAD,
    DeepSpeedBuffers,
    Limits,
    Memory,
    ModelStates,
    Option,
    activation_bytes,
    construction_bytes,
    host_bytes_per_rank,
    model_state_bytes,
    overhead_bytes,
    saved_activation_bytes,
    step_transient_bytes,
)
from launcher.plan.report import OptionRow, Plan
from launcher.plan.search import (
    DEFAULT_MAX_MICRO,
    SEQ_STEP,
    Change,
    Choice,
    Inputs,
    Lever,
    Scenario,
    choose,
    largest_fitting_micro,
    smallest_changes,
)
from launcher.plan.shape import GATED_MODEL_TYPES, ModelShape, preset_kwargs, shape_from_config
from launcher.plan.vocab import Vocabulary, planned_vocab_size, planned_vocabulary

__all__ = [
    "CREDENTIALS_HINT", "DEFAULT_MAX_MICRO", "DS_PREFETCH_BUCKET", "DS_REDUCE_BUCKET", "ELEMENT_BYTES",
    "GATED_MODEL_TYPES", "HEADROOM", "HOST_RUNTIME", "OPTIONS", "PREFERENCE", "RUNTIME_OVERHEAD", "SEQ_STEP",
    "Change", "Choice", "DeepSpeedBuffers", "Inputs", "Lever", "Limits", "Memory", "ModelShape", "ModelStates",
    "Option", "OptionRow", "Plan", "Scenario", "Vocabulary", "activation_bytes", "allowed_options", "choose",
    "construction_bytes", "count_parameters", "estimate_job", "fixed_layout", "host_bytes_per_rank", "job_inputs",
    "largest_fitting_micro", "meta_module", "model_shape", "model_state_bytes", "overhead_bytes",
    "parameter_counts", "plan_batch", "plan_job", "planned_vocab_size", "planned_vocabulary", "preset_kwargs",
    "read_pretrained_config",
    "saved_activation_bytes", "shape_from_config", "skipped_memory_check", "smallest_changes",
    "step_transient_bytes",
]
