"""Whether a job's model can resume from checkpoints written for the model recorded next to them.

Rank 0 records the model it trains in `<job root>/model.json` (`restore.describe_model`): its
type, source (preset, pretrained directory or factory), the transformers config with the
tokenizer's vocabulary size, and for a classifier its labels. Resubmitting a job under the same
name and checkpoint URI with another model (say `preset: llama-tiny` -> `gpt2-tiny`) would load
tensors of the wrong shapes, or a head whose class ids mean other classes, and fail deep inside
DeepSpeed on every restart. These functions name the differences instead, so that the job
stops as a configuration error.

Only what fixes the parameters' shapes and meaning counts: architecture, the sizes in
`SHAPE_KEYS`, vocabulary and labels. Hyperparameters (learning rate, dropout, batch, steps,
precision) and resources are not recorded here and never block a resume.

Pure functions over plain dicts; the launcher uses `spec_differences` before any worker starts.
"""

from __future__ import annotations

from typing import Any

from training.config import ModelConfig

# transformers config keys that decide parameter shapes (the names differ between families).
SHAPE_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "max_position_embeddings", "type_vocab_size", "embedding_size", "n_embd", "n_layer", "n_head",
    "n_inner", "n_positions", "tie_word_embeddings", "attention_bias", "mlp_bias", "num_local_experts",
    "num_experts",
)


def _config(info: dict[str, Any]) -> dict[str, Any]:
    return info.get("config") or info.get("backbone_config") or {}


def source(info: dict[str, Any]) -> str:
    """How a recorded model was specified: `preset llama-tiny`, `pretrained <dir>` or `factory <ref>`."""
    for key in ("preset", "pretrained", "factory"):
        if info.get(key):
            return f"{key} {info[key]}"
    return "unknown source"


def vocabulary_size(info: dict[str, Any]) -> int | None:
    """The number of token ids the model embeds (its config's, else the tokenizer's)."""
    return _config(info).get("vocab_size") or info.get("vocab_size")


def _architecture(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Type and architecture family; when these differ, no size comparison is meaningful."""
    if recorded.get("type") != current.get("type"):
        return [f"model type: {recorded.get('type')} -> {current.get('type')}"]
    old, new = _config(recorded).get("model_type"), _config(current).get("model_type")
    if old != new:
        return [f"architecture: {old} ({source(recorded)}) -> {new} ({source(current)})"]
    return []


def _first_change(old: list[str], new: list[str]) -> tuple[int, str, str]:
    """The first class id whose name differs between two label lists (a missing one is "(none)")."""
    for index in range(max(len(old), len(new))):
        before = old[index] if index < len(old) else "(none)"
        after = new[index] if index < len(new) else "(none)"
        if before != after:
            return index, before, after
    raise ValueError("the label lists are equal")


def _labels(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Number of classes, then their names in id order: a head trained on other ids cannot resume."""
    old, new = recorded.get("num_labels"), current.get("num_labels")
    if old != new:
        return [f"labels: {old} -> {new} classes"]
    old_classes, new_classes = recorded.get("classes"), current.get("classes")
    if old_classes is not None and new_classes is not None and old_classes != new_classes:
        index, before, after = _first_change(old_classes, new_classes)
        return [f"labels: class {index} was '{before}', is now '{after}' (the data's classes changed)"]
    return []


def model_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Why a checkpoint of the `recorded` model (model.json) cannot resume into `current`; [] if it can."""
    found = _architecture(recorded, current)
    if found:
        return found
    old_config, new_config = _config(recorded), _config(current)
    for key in SHAPE_KEYS:  # a key only one side has came from another transformers version: skipped
        if key in old_config and key in new_config and old_config[key] != new_config[key]:
            found.append(f"{key}: {old_config[key]} -> {new_config[key]}")
    old_vocab, new_vocab = vocabulary_size(recorded), vocabulary_size(current)
    if old_vocab != new_vocab:
        found.append(f"vocabulary: {old_vocab} -> {new_vocab} tokens")
    return found + _labels(recorded, current)


def _source_change(recorded: dict[str, Any], model: ModelConfig) -> list[str]:
    """Another preset, or another kind of source (preset -> pretrained); a moved pretrained directory is not."""
    kinds = ("preset", "pretrained", "factory")
    now = {"preset": model.preset, "pretrained": model.pretrained, "factory": model.factory}
    old_kind = next((k for k in kinds if recorded.get(k)), None)
    new_kind = next((k for k in kinds if now[k]), None)
    if old_kind is None:  # recorded without its source: leave it to the worker's comparison
        return []
    if old_kind != new_kind or (old_kind == "preset" and recorded["preset"] != model.preset):
        return [f"model: {source(recorded)} -> {source(now)}"]
    return []


def spec_differences(recorded: dict[str, Any], model: ModelConfig) -> list[str]:
    """What the launcher can tell from the spec alone, without building the model: type, source,
    shape overrides and an explicit `num_labels`. The worker compares the built architecture too."""
    if recorded.get("type") != model.type:
        return [f"model type: {recorded.get('type')} -> {model.type}"]
    found = _source_change(recorded, model)
    if not found:
        old, new = recorded.get("overrides") or {}, model.overrides
        found = [f"overrides.{key}: {old.get(key)} -> {new.get(key)}" for key in (*SHAPE_KEYS, "vocab_size")
                 if old.get(key) != new.get(key)]
    if model.num_labels is not None and recorded.get("num_labels") not in (None, model.num_labels):
        found.append(f"labels: {recorded['num_labels']} -> {model.num_labels} classes")
    return found


def incompatible_message(checkpoints: str, differences: list[str]) -> str:
    """The refusal: where the checkpoints are, what differs, and how to go on."""
    listed = "; ".join(differences)
    return (f"the checkpoints under {checkpoints} were written for another model ({listed}), so this job cannot "
            "resume from them. To start fresh and keep them, give the job a new `name` or a new "
            "`training.checkpoint.uri`; to resume them, set `training.model` back to the model they were "
            "trained with")
