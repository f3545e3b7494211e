"""Model shape: parameter counts and the dimensions the memory model needs, read from configurations.

Presets of known config classes (llama-like, GPT-2-like) are counted from their keyword
arguments, exactly (the tests compare against instantiated models); any other model is counted
on the meta device by `launcher.plan.introspect`. This module is arithmetic on dicts: it imports
neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from training.contract import ModelConfig

# transformers `model_type`s whose MLP is gated (llama-like): three projections, four saved tensors.
GATED_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3",
                               "olmo", "olmo2", "granite", "cohere"})


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a network, read without allocating its weights."""

    parameters: int
    largest_layer: int  # parameters of the biggest single module: ZeRO-3 gathers one at a time
    source: str
    family: str = "unknown"  # "gated" (llama-like MLP), "gpt" (GPT-2/BERT-like), "unknown"
    hidden: int = 0
    layers: int = 0
    intermediate: int = 0
    q_dim: int = 0
    kv_dim: int = 0
    vocab: int = 0  # 0 for classifiers, whose logits are negligible
    mlp_saved: int = 4  # (tokens x intermediate) tensors one MLP keeps for backward

    @property
    def knows_activations(self) -> bool:
        """Whether the activation model applies: a known block family with its dimensions."""
        return self.family != "unknown" and self.hidden > 0 and self.layers > 0


_LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None, "attention_bias": False,
    "mlp_bias": False, "tie_word_embeddings": False,
}
_GPT2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_inner": None,
    "tie_word_embeddings": True, "activation_function": "gelu_new",
}
# Keys that change no parameter shape; any other key sends a preset to the meta-device count.
_LLAMA_SHAPELESS = frozenset({
    "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "initializer_range",
    "attention_dropout", "hidden_act", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id", "pretraining_tp",
})
_GPT2_SHAPELESS = frozenset({
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range", "scale_attn_weights",
    "use_cache", "bos_token_id", "eos_token_id", "pad_token_id", "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
})


def preset_kwargs(name: str, vocab_size: int | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config keyword arguments a preset is built with, exactly as `training.models.build` applies them."""
    from training.models.presets import PRESETS

    kwargs = dict(PRESETS[name]["kwargs"])
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    kwargs.update(overrides or {})
    return kwargs


def _llama_shape(kw: dict[str, Any], num_labels: int | None, source: str) -> ModelShape:
    """Exact parameter count of a `LlamaFor{CausalLM,SequenceClassification}` from its config."""
    c = {**_LLAMA_DEFAULTS, **kw}
    h, f, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads = c["num_attention_heads"]
    head_dim = c["head_dim"] or h // heads
    q_dim, kv_dim = heads * head_dim, (c["num_key_value_heads"] or heads) * head_dim
    attn = 2 * h * q_dim + 2 * h * kv_dim + (q_dim + 2 * kv_dim + h) * bool(c["attention_bias"])
    mlp = 3 * h * f + (2 * f + h) * bool(c["mlp_bias"])
    head = h * num_labels if num_labels else vocab * h * (not c["tie_word_embeddings"])
    total = vocab * h + c["num_hidden_layers"] * (attn + mlp + 2 * h) + h + head
    largest = max(vocab * h, h * f + f * bool(c["mlp_bias"]), h * q_dim + q_dim * bool(c["attention_bias"]))
    return ModelShape(parameters=total, largest_layer=largest, source=source, family="gated", hidden=h,
                      layers=c["num_hidden_layers"], intermediate=f, q_dim=q_dim, kv_dim=kv_dim,
                      vocab=0 if num_labels else vocab, mlp_saved=4)


def _gpt2_shape(kw: dict[str, Any], num_labels: int | None, source: str) -> ModelShape:
    """Exact parameter count of a `GPT2{LMHeadModel,ForSequenceClassification}` from its config."""
    c = {**_GPT2_DEFAULTS, **kw}
    h, vocab, layers = c["n_embd"], c["vocab_size"], c["n_layer"]
    f = c["n_inner"] or 4 * h
    block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h)
    head = h * num_labels if num_labels else vocab * h * (not c["tie_word_embeddings"])
    total = vocab * h + c["n_positions"] * h + layers * block + 2 * h + head
    largest = max(vocab * h, h * f + f, 3 * h * h + 3 * h)
    return ModelShape(parameters=total, largest_layer=largest, source=source, family="gpt", hidden=h,
                      layers=layers, intermediate=f, q_dim=h, kv_dim=h, vocab=0 if num_labels else vocab,
                      mlp_saved=_gpt_mlp_saved(c["activation_function"]))


def _gpt_mlp_saved(activation: str | None) -> int:
    """HF's `gelu_new` is written out in Python and keeps 5 intermediates; fused activations keep 2."""
    return 5 if activation == "gelu_new" else 2


_ANALYTIC: dict[str, tuple[Callable[..., ModelShape], frozenset[str], dict[str, Any]]] = {
    "LlamaConfig": (_llama_shape, _LLAMA_SHAPELESS, _LLAMA_DEFAULTS),
    "GPT2Config": (_gpt2_shape, _GPT2_SHAPELESS, _GPT2_DEFAULTS),
}


def classifier_labels(model: ModelConfig) -> int | None:
    """The classification head's size for a sequence classifier; None for a causal LM (its head is the vocabulary)."""
    return model.num_labels if model.type == "sequence-classification" else None


def analytic_preset_shape(model: ModelConfig, vocab_size: int | None) -> ModelShape | None:
    """A preset of a known config class counted from its keys; None when a key may change a shape unknown here."""
    from training.models.presets import PRESETS

    assert model.preset is not None
    kwargs = preset_kwargs(model.preset, vocab_size, model.overrides)
    analytic = _ANALYTIC.get(PRESETS[model.preset]["config_class"])
    if analytic is None:
        return None
    count, shapeless, defaults = analytic
    if not set(kwargs) <= shapeless | set(defaults):
        return None
    return count(kwargs, classifier_labels(model), f"preset {model.preset}")


def _first(config: dict[str, Any], *keys: str) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def shape_from_config(config: dict[str, Any], parameters: int, largest: int, source: str,
                      classifier: bool) -> ModelShape:
    """Read the dimensions the activation model needs from a `transformers` config dict."""
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    if not (hidden and layers and heads):
        return ModelShape(parameters=parameters, largest_layer=largest, source=source)
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    gated = config.get("model_type") in GATED_MODEL_TYPES
    activation = _first(config, "hidden_act", "activation_function")
    return ModelShape(
        parameters=parameters, largest_layer=largest, source=source, family="gated" if gated else "gpt",
        hidden=hidden, layers=layers, intermediate=_first(config, "intermediate_size", "n_inner", "ffn_dim")
        or 4 * hidden, q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
        vocab=0 if classifier else config.get("vocab_size", 0), mlp_saved=4 if gated else _gpt_mlp_saved(activation),
    )
