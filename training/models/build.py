"""Build the network a spec asks for: a preset causal LM (more sources come with the training issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import ModelConfig
from training.errors import ConfigError
from training.models.presets import PRESETS

if TYPE_CHECKING:
    import torch.nn as nn
    from transformers import PretrainedConfig


def preset_config(name: str, vocab_size: int | None = None, overrides: dict[str, Any] | None = None) -> "PretrainedConfig":
    """The `transformers` config of a preset, with the tokenizer's vocab size and spec overrides applied."""
    import transformers

    preset = PRESETS[name]
    kwargs = dict(preset["kwargs"])
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides or {})
    config_class = getattr(transformers, preset["config_class"])
    return config_class(**kwargs)


def build_causal_lm(model: ModelConfig, vocab_size: int | None = None) -> "nn.Module":
    """A freshly initialised causal LM for `model.preset` (weights drawn from torch's current RNG)."""
    from transformers import AutoModelForCausalLM

    if model.preset is None:
        raise ConfigError("build_causal_lm needs training.model.preset")
    config = preset_config(model.preset, vocab_size, model.overrides)
    return initialized(AutoModelForCausalLM, config)


def initialized(model_class: Any, config: "PretrainedConfig") -> "nn.Module":
    """`model_class.from_config(config)` with weights drawn in one order whatever the ZeRO stage.

    Under ZeRO-3 (`sharding.sharded_construction`) transformers builds the model without drawing
    (`no_init_weights`) and then initialises it module by module (`initialize_weights_zero3`).
    Here the same happens without ZeRO-3: the module constructors draw nothing, then
    `initialize_weights` visits the modules in the same post-order, so that the same seed gives
    the same weights at every stage. The model is allocated once, in fp32.
    """
    import torch
    from transformers.initialization import guard_torch_init_functions, no_init_weights
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return model_class.from_config(config)
    with no_init_weights():
        model = model_class.from_config(config)
    with torch.no_grad(), guard_torch_init_functions():
        model.initialize_weights()
    model.tie_weights()
    return model
