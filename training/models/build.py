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
    return AutoModelForCausalLM.from_config(config)
