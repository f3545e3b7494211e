"""Built-in model configurations, as plain data so the CLI can list and check them cheaply.

Each preset is a `transformers` config class name plus its keyword arguments. `vocab_size`
is replaced by the tokenizer's size when the data pipeline trains its own tokenizer.
"""

from __future__ import annotations

from typing import Any


def _llama(hidden: int, layers: int, heads: int, intermediate: int, kv_heads: int | None = None,
           vocab: int = 32000, positions: int = 4096) -> dict[str, Any]:
    return {
        "config_class": "LlamaConfig",
        "kwargs": {
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads or heads,
            "max_position_embeddings": positions,
            "tie_word_embeddings": False,
        },
    }


def _gpt2(hidden: int, layers: int, heads: int, vocab: int = 50257, positions: int = 1024) -> dict[str, Any]:
    return {
        "config_class": "GPT2Config",
        "kwargs": {
            "vocab_size": vocab,
            "n_embd": hidden,
            "n_layer": layers,
            "n_head": heads,
            "n_positions": positions,
        },
    }


PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": _llama(hidden=256, layers=4, heads=4, intermediate=688, vocab=4096, positions=1024),
    "llama-25m": _llama(hidden=512, layers=6, heads=8, intermediate=1376, vocab=8192, positions=2048),
    "llama-125m": _llama(hidden=768, layers=12, heads=12, intermediate=2048),
    "llama-350m": _llama(hidden=1024, layers=24, heads=16, intermediate=2816),
    "llama-1b": _llama(hidden=2048, layers=16, heads=32, intermediate=8192, kv_heads=8),
    "llama-7b": _llama(hidden=4096, layers=32, heads=32, intermediate=11008),
    "gpt2-tiny": _gpt2(hidden=128, layers=2, heads=2, vocab=4096),
    "gpt2-small": _gpt2(hidden=768, layers=12, heads=12),
    "gpt2-medium": _gpt2(hidden=1024, layers=24, heads=16),
    "gpt2-large": _gpt2(hidden=1280, layers=36, heads=20),
}


def preset_names() -> list[str]:
    """Names users may write as `training.model.preset`."""
    return sorted(PRESETS)
