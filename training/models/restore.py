"""Rebuild a trained model from a committed checkpoint, without the original spec at hand.

At the start of training rank 0 writes `<job root>/model.json` (how to build the network:
preset or backbone config, vocab size, classes) and the tokenizer next to it. A checkpoint
URI (`<job root>/checkpoints` for the newest, or `.../checkpoints/step-<N>`) is then enough to
rebuild the model with its trained weights (ZeRO shards consolidated to fp32) for export,
quantization, comparison or distillation.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.checkpoint.errors import IncompatibleCheckpointError
from training.checkpoint.storage import join_uri, storage_for
from training.errors import ConfigError
from training.models.compat import incompatible_message, model_differences

if TYPE_CHECKING:
    from torch import nn

MODEL_INFO = "model.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    model: "nn.Module"
    info: dict[str, Any]
    tokenizer: Any
    step: int


def describe_model(model: "nn.Module", task: Any) -> dict[str, Any]:
    """What `load_trained_model` needs to rebuild `model` (a preset LM or a classifier)."""
    job = task.job
    spec = job.training.model
    info: dict[str, Any] = {"type": spec.type, "preset": spec.preset, "pretrained": spec.pretrained,
                            "factory": spec.factory, "overrides": spec.overrides, "seq_len": job.training.data.seq_len}
    if hasattr(model, "backbone"):
        info.update(backbone_config=model.backbone.config.to_dict(), num_labels=task.num_labels,
                    classes=task.classes)
    elif hasattr(model, "config"):
        info.update(config=model.config.to_dict(), vocab_size=getattr(task, "vocab_size", None))
    return info


def has_committed_checkpoint(job_root: str, endpoint_url: str | None = None) -> bool:
    """Whether `<job_root>/checkpoints` holds a committed checkpoint that a resume would load."""
    from training.checkpoint.manager import latest_step

    return latest_step(join_uri(job_root, CHECKPOINTS_DIR), endpoint_url=endpoint_url) is not None


def recorded_model(job_root: str, endpoint_url: str | None = None) -> dict[str, Any] | None:
    """The model.json of `job_root` when a committed checkpoint depends on it, else None.

    Without a committed checkpoint nothing would be resumed, so a new model may replace the record.
    An unreadable record is skipped with a warning: loading then still refuses a mismatch
    (`CheckpointManager.load`).
    """
    storage = storage_for(job_root, endpoint_url=endpoint_url)
    uri = join_uri(job_root, MODEL_INFO)
    if not has_committed_checkpoint(job_root, endpoint_url) or not storage.exists(uri):
        return None
    try:
        recorded = json.loads(storage.read_bytes(uri))
    except ValueError as exc:
        log.warning("cannot compare the model with %s (%s); resuming without that check", uri, exc)
        return None
    return recorded if isinstance(recorded, dict) else None


def refuse_incompatible_resume(job_root: str, current: dict[str, Any], endpoint_url: str | None = None) -> None:
    """Raise `IncompatibleCheckpointError` when `current` (a `describe_model` dict) cannot resume
    the committed checkpoints of `job_root`; they and their model.json stay as they are."""
    recorded = recorded_model(job_root, endpoint_url)
    differences = model_differences(recorded, current) if recorded is not None else []
    if differences:
        raise IncompatibleCheckpointError(incompatible_message(join_uri(job_root, CHECKPOINTS_DIR), differences))


def save_model_info(job_root: str, model: "nn.Module", task: Any, endpoint_url: str | None = None) -> None:
    """Rank 0, once per run, before anything is resumed: model.json plus the tokenizer, next to the
    checkpoints. Refuses (before overwriting them) a model that the committed checkpoints do not fit."""
    info = describe_model(model, task)
    refuse_incompatible_resume(job_root, info, endpoint_url)
    storage = storage_for(job_root, endpoint_url=endpoint_url)
    storage.write_bytes(join_uri(job_root, MODEL_INFO), json.dumps(info, indent=1).encode())
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            storage.upload_dir(tmp, join_uri(job_root, TOKENIZER_DIR))


def _build_skeleton(info: dict[str, Any]) -> "nn.Module":
    import transformers

    from training.models.classifier import SequenceClassifier

    if info.get("backbone_config"):
        config = transformers.AutoConfig.for_model(**info["backbone_config"])
        extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        backbone = transformers.AutoModel.from_config(config, **extra)
        return SequenceClassifier(backbone, info["num_labels"], float(getattr(config, "hidden_dropout_prob", 0.1)))
    if info.get("config"):
        config = transformers.AutoConfig.for_model(**info["config"])
        return transformers.AutoModelForCausalLM.from_config(config)
    raise ConfigError("this checkpoint's model was built by a model.factory; rebuild it with your factory "
                     "and load the weights yourself (export supports presets and pretrained backbones)")


def _split_checkpoint_uri(uri: str) -> tuple[str, str, int | None]:
    """(job root, checkpoints root, step or None for the newest) from a checkpoint URI."""
    from training.checkpoint.commit import step_of

    trimmed = uri.rstrip("/")
    step = step_of(trimmed.rsplit("/", 1)[-1])
    checkpoints = trimmed.rsplit("/", 1)[0] if step is not None else trimmed
    if not checkpoints.endswith("checkpoints"):
        raise ConfigError(f"'{uri}' is not a dlaunch checkpoint URI: expected <uri>/<job>/checkpoints[/step-<N>]")
    return checkpoints.rsplit("/", 1)[0], checkpoints, step


def _weights(local_root: Path, tag: str) -> dict[str, Any]:
    import torch

    ddp_state = local_root / tag / "ddp_state.pt"
    if ddp_state.is_file():
        return torch.load(ddp_state, map_location="cpu", weights_only=False)["model"]
    states = local_root / tag / "mp_rank_00_model_states.pt"
    # ZeRO-3 writes one model-states file per rank instead (deepspeed/runtime/engine.py
    # DeepSpeedEngine._get_ckpt_name: zero_pp_rank_<r>_mp_rank_00_model_states.pt); its weights are
    # only in the partitioned optimizer states, which zero_to_fp32 consolidates below.
    zero3 = sorted((local_root / tag).glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))
    if not states.is_file() and not zero3:
        raise FileNotFoundError(f"{local_root / tag} holds neither DeepSpeed nor DDP model states")
    if states.is_file():
        saved = torch.load(states, map_location="cpu", weights_only=False)
        stage = saved.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0)
        if stage == 0:  # whole weights in the model states file (bf16 / fp16 copies in mixed precision)
            return {name: tensor.float() for name, tensor in saved["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(local_root), tag=tag)


def _tokenizer(storage: Any, job_root: str, workdir: Path) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if storage.exists(join_uri(job_root, TOKENIZER_DIR, "tokenizer_config.json")):
        storage.download_dir(join_uri(job_root, TOKENIZER_DIR), workdir / TOKENIZER_DIR)
        return AutoTokenizer.from_pretrained(workdir / TOKENIZER_DIR)
    if storage.exists(join_uri(job_root, "tokenizer.json")):
        storage.download_file(join_uri(job_root, "tokenizer.json"), workdir / "tokenizer.json")
        return PreTrainedTokenizerFast(tokenizer_file=str(workdir / "tokenizer.json"), eos_token="<|endoftext|>",
                                       pad_token="<|pad|>")
    return None


def load_trained_model(checkpoint_uri: str, workdir: Path, endpoint_url: str | None = None) -> TrainedModel:
    """The model of a committed checkpoint with fp32 weights, in eval mode, plus its tokenizer."""
    from training.checkpoint.manager import latest_step

    job_root, checkpoints, step = _split_checkpoint_uri(checkpoint_uri)
    step = step if step is not None else latest_step(checkpoints, endpoint_url=endpoint_url)
    if step is None:
        raise ConfigError(f"no committed checkpoint under {checkpoints}")
    storage = storage_for(job_root, endpoint_url=endpoint_url)
    info = json.loads(storage.read_bytes(join_uri(job_root, MODEL_INFO)))
    tag = f"step-{step}"
    storage.download_dir(join_uri(checkpoints, tag), workdir / "checkpoints" / tag)
    model = _build_skeleton(info)
    model.load_state_dict(_weights(workdir / "checkpoints", tag))
    model.eval()
    return TrainedModel(model=model, info=info, tokenizer=_tokenizer(storage, job_root, workdir), step=step)
