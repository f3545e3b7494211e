"""Model introspection: count what analytic arithmetic cannot, by building the model on the meta device.

The only torch-bearing part of the planner, and only inside functions: torch, transformers and
the worker's model builders are imported when a model actually has to be built (a preset with
shape-changing overrides, a pretrained directory, a user factory). A pretrained directory is
read for its `config.json` alone, locally or from `s3://`, never for its weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.errors import PlanError
from launcher.plan.shape import ModelShape, analytic_preset_shape, classifier_labels, shape_from_config
from training.contract import ModelConfig

def _preset_shape(model: ModelConfig, vocab_size: int | None) -> ModelShape:
    """Presets of known config classes are counted from their keys; anything unusual on the meta device."""
    shape = analytic_preset_shape(model, vocab_size)
    if shape is not None:
        return shape
    return _meta_shape(lambda: _build_preset(model, vocab_size), model, f"preset {model.preset}")


def _build_preset(model: ModelConfig, vocab_size: int | None) -> Any:
    """The preset as the worker builds it (a causal LM), or with a classification head."""
    from training.models.build import build_causal_lm, preset_config

    if not classifier_labels(model):
        return build_causal_lm(model, vocab_size=vocab_size)
    from transformers import AutoModelForSequenceClassification

    assert model.preset is not None
    config = preset_config(model.preset, vocab_size, model.overrides)
    config.num_labels = model.num_labels
    return AutoModelForSequenceClassification.from_config(config)


def _meta_shape(build: Callable[[], Any], model: ModelConfig, source: str) -> ModelShape:
    """Count the module `build()` returns on the meta device; a transformers config yields its dimensions."""
    module = meta_module(build)
    parameters, largest = parameter_counts(module)
    config = getattr(module, "config", None)
    if config is None:
        config = getattr(getattr(module, "backbone", None), "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return ModelShape(parameters=parameters, largest_layer=largest, source=source)
    return shape_from_config(config.to_dict(), parameters, largest, source, classifier=bool(classifier_labels(model)))


def meta_module(build: Callable[[], Any]) -> Any:
    """The module `build()` returns (or the module inside a returned tuple), built on the meta device."""
    import torch

    with torch.device("meta"):
        built = build()
    if isinstance(built, torch.nn.Module):
        return built
    for item in built if isinstance(built, (tuple, list)) else ():
        if isinstance(item, torch.nn.Module):
            return item
    raise TypeError(f"expected a torch.nn.Module (or a tuple holding one), got {type(built).__name__}")


def parameter_counts(module: Any) -> tuple[int, int]:
    """(parameters, largest layer) of a module; shared (tied) parameters count once, as in `parameters()`."""
    parameters = sum(p.numel() for p in module.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()), default=0)
    return parameters, largest


def read_pretrained_config(uri: str) -> dict[str, Any]:
    """`config.json` of a pretrained model directory, local or `s3://` (only that file is read)."""
    from training.checkpoint.errors import CheckpointError
    from training.checkpoint.storage import join_uri, storage_for

    where = join_uri(uri, "config.json")
    try:
        return json.loads(storage_for(uri).read_bytes(where))
    except (CheckpointError, OSError, *_s3_client_errors(uri)) as e:
        missing = _missing_credentials(e)
        if missing is not None:
            raise PlanError(f"training.model.pretrained: counting the model's parameters means reading {where}, "
                            f"which needs S3 credentials: {missing}. {CREDENTIALS_HINT}") from e
        raise PlanError(f"training.model.pretrained: cannot read {where} to count the model's parameters "
                        f"({e}); point it at a directory holding a transformers config.json") from e
    except json.JSONDecodeError as e:
        raise PlanError(f"training.model.pretrained: {where} is not valid JSON ({e})") from e


CREDENTIALS_HINT = (
    "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible store), or "
    "AWS_PROFILE. Without credentials, fix the layout (set training.batch.micro and a training.zero.stage "
    "other than auto): `render` and `submit --dry-run` then lay the batch out without reading the model"
)


def _s3_client_errors(uri: str) -> tuple[type[Exception], ...]:
    """botocore's own errors, for an s3:// URI: building the client can raise them unwrapped
    (partial credentials in the environment)."""
    if not uri.startswith("s3://"):
        return ()
    from botocore.exceptions import BotoCoreError

    return (BotoCoreError,)


def _missing_credentials(error: BaseException) -> str | None:
    """botocore's message when `error` was caused by absent or partial S3 credentials, else None."""
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, NoCredentialsError):
            return "none were found"
        if isinstance(cause, PartialCredentialsError):
            return f"only some were found ({cause})"
        cause = cause.__cause__
    return None


def _build_pretrained(directory: Path, model: ModelConfig) -> Any:
    """The network the worker builds from a pretrained directory, from its config alone (no weights).

    Causal LMs are `AutoModelForCausalLM`; classifiers are dlaunch's own backbone + head.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if model.type == "sequence-classification":
        from training.models.classifier import build_classifier

        assert model.num_labels is not None
        return build_classifier(directory, model.num_labels, model.overrides, pretrained=False)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory, **model.overrides))


def _pretrained_shape(model: ModelConfig) -> ModelShape:
    """Read only `config.json` (local or s3://) and count the model it describes on the meta device."""
    import tempfile

    assert model.pretrained is not None
    config = read_pretrained_config(model.pretrained)
    with tempfile.TemporaryDirectory(prefix="dlaunch-plan-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            return _meta_shape(lambda: _build_pretrained(Path(tmp), model), model, f"pretrained {model.pretrained}")
        except (ValueError, KeyError, OSError) as e:
            raise PlanError(f"training.model.pretrained: cannot build the model described by {model.pretrained}"
                            f"/config.json ({type(e).__name__}: {e}); is it a transformers model directory?") from e


def _factory_shape(model: ModelConfig, vocab_size: int | None) -> ModelShape:
    """Call the user's factory as the worker does, `factory(model, vocab_size=...)`, on the meta device."""
    from training.imports import load_object

    assert model.factory is not None
    try:
        function = load_object(model.factory, "training.model.factory")
        return _meta_shape(lambda: function(model, vocab_size=vocab_size), model, f"factory {model.factory}")
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as e:
        raise PlanError(f"training.model.factory: could not build '{model.factory}' on the meta device to count its "
                        f"parameters ({type(e).__name__}: {e}); it must be importable here and take "
                        "(model_config, vocab_size=...)") from e


def model_shape(model: ModelConfig, vocab_size: int | None = None) -> ModelShape:
    """Parameter count and dimensions of the network `model` describes, without allocating it.

    `vocab_size` is what the worker passes: its tokenizer's size for presets and factories
    (see `planned_vocab_size`); None keeps a preset's own vocabulary.
    """
    if model.preset is not None:
        return _preset_shape(model, vocab_size)
    if model.pretrained is not None:
        return _pretrained_shape(model)
    return _factory_shape(model, vocab_size)


def count_parameters(model: ModelConfig, vocab_size: int | None = None) -> int:
    """Exactly `sum(p.numel() for p in built_model.parameters())`, computed without building it."""
    return model_shape(model, vocab_size).parameters
