"""Build models so that no rank holds more of them than it must: ZeRO-3 shards them as they are made.

Under ZeRO-3 (`job.layout.zero_stage == 3`, always the DeepSpeed engine) the model is built inside
the DeepSpeed configuration the engine will use (`training.engine.deepspeed.deepspeed_config`):
- transformers models through the library's DeepSpeed integration: while an `HfDeepSpeedConfig`
  is alive, `is_deepspeed_zero3_enabled()` is true (transformers/integrations/deepspeed.py keeps
  only a weak reference, so this module holds the object for the duration), and
  `PreTrainedModel._from_config` / `get_init_context` (modeling_utils.py) construct the model inside
  `deepspeed.zero.Init`, which partitions every module's parameters as soon as its `__init__`
  returns. Fresh weights are then drawn by `initialize_weights_zero3` (one module gathered at a
  time, rank 0 draws, `GatheredParameters(modifier_rank=0)` broadcasts); pretrained weights by
  `_load_state_dict_into_zero3_model`, which gathers one module's parameters at a time and copies
  rank 0's checkpoint values into them (the other ranks map the checkpoint on the meta device);
- other modules (`model.factory`) inside `deepspeed.zero.Init` directly (DeepSpeed's
  `InsertPostInitMethodToModuleSubClasses` counts nested contexts, so a transformers model built
  by the factory nests correctly).
At other stages nothing changes here: the model is built once, in fp32 (see `build.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from training.config import ResolvedJob

if TYPE_CHECKING:
    from torch import nn


def zero3_config(job: ResolvedJob) -> dict[str, Any] | None:
    """The DeepSpeed config the engine will be built with, when the job partitions parameters; else None."""
    if job.layout.zero_stage != 3:
        return None
    from training.engine.deepspeed import deepspeed_config

    return deepspeed_config(job.training, job.layout)


@contextmanager
def sharded_construction(job: ResolvedJob, wrap_modules: bool = False) -> Iterator[bool]:
    """Build models inside this block to have them partitioned as they are made under ZeRO-3.

    Yields whether construction is sharded. `wrap_modules` also enters `deepspeed.zero.Init` for
    modules that are not transformers models (user factories). The transformers hook is removed
    on exit, so that later model builds in this process (export, teachers) are ordinary.
    """
    config = zero3_config(job)
    if config is None:
        yield False
        return
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # DeepSpeed's config checks the batch against its own view of the world size: join the
    # torch process group the worker already has (a no-op when the engine has done so).
    deepspeed.init_distributed()
    hf_config = HfDeepSpeedConfig(config)  # noqa: F841  (transformers holds only a weak reference)
    try:
        if wrap_modules:
            with deepspeed.zero.Init(config_dict_or_path=config):
                yield True
        else:
            yield True
    finally:
        unset_hf_deepspeed_config()
        del hf_config


def parameter_count(model: "nn.Module") -> int:
    """The model's true number of parameters, also when ZeRO-3 has partitioned them.

    A partitioned parameter is an empty tensor whose full size DeepSpeed records as `ds_numel`.
    """
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())
