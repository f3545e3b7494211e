"""Hugging Face output: a checkpoint as a `save_pretrained` directory, reloaded and checked.

The directory is what serving stacks and the Hub load: `config.json`, the weights as
safetensors (fp32, consolidated from any ZeRO stage by `load_trained_model`) and the tokenizer.

- Causal LMs are transformers' own classes: `AutoModelForCausalLM.from_pretrained(DIR)`.
- dlaunch's classifier has no transformers class; the directory carries its code
  (`modeling_dlaunch.py`, from `hf_modeling.py`) named in `auto_map`, so
  `AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)` builds it.

Every export is reloaded from the directory with those calls and its logits compared with the
checkpoint's model (fp32); more than `HF_TOLERANCE` apart is an `ExportVerificationError`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.compress.export import ExportError, ExportVerificationError, logits_of

HF_TOLERANCE = 1e-5
MODELING_FILE = "modeling_dlaunch.py"


def classifier_as_hf(model: nn.Module, info: dict[str, Any]) -> nn.Module:
    """A `SequenceClassifier` as `DlaunchMeanPoolingClassifier`, with the same weights and labels."""
    from training.compress.hf_modeling import DlaunchClassifierConfig, DlaunchMeanPoolingClassifier

    classes = info.get("classes") or [str(i) for i in range(info["num_labels"])]
    config = DlaunchClassifierConfig(
        backbone=info["backbone_config"], classifier_dropout=float(model.dropout.p),
        num_labels=info["num_labels"], id2label=dict(enumerate(classes)),
        label2id={label: i for i, label in enumerate(classes)},
        architectures=["DlaunchMeanPoolingClassifier"],
        auto_map={"AutoConfig": "modeling_dlaunch.DlaunchClassifierConfig",
                  "AutoModelForSequenceClassification": "modeling_dlaunch.DlaunchMeanPoolingClassifier"},
    )
    hf_model = DlaunchMeanPoolingClassifier(config)
    hf_model.load_state_dict(model.state_dict())
    return hf_model.eval()


def save_hf(model: nn.Module, info: dict[str, Any], tokenizer: Any, out: Path) -> None:
    """Write `out/` (config, model.safetensors, tokenizer; the classifier's code) in fp32."""
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty; choose another directory (exports never overwrite)")
    if info.get("backbone_config"):
        hf_model = classifier_as_hf(model, info)
        shutil.copyfile(Path(__file__).with_name("hf_modeling.py"), _mkdir(out) / MODELING_FILE)
    elif hasattr(model, "save_pretrained"):
        hf_model = model
    else:
        raise ExportError("only presets, pretrained models and dlaunch classifiers have a Hugging Face form; "
                          "a model.factory model is yours to save")
    hf_model.float().save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def load_hf(out: Path, info: dict[str, Any]) -> nn.Module:
    """The directory loaded back exactly as a user would."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if info.get("backbone_config"):
        return AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    return AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def export_hf(model: nn.Module, info: dict[str, Any], tokenizer: Any, inputs: dict[str, torch.Tensor],
              out: Path) -> float:
    """Save, reload, compare logits on `inputs`; the largest absolute difference."""
    save_hf(model, info, tokenizer, out)
    reloaded = load_hf(out, info)
    with torch.no_grad():
        expected = logits_of(model(**inputs)).float()
        got = logits_of(reloaded(**inputs)).float()
    diff = float((expected - got).abs().max())
    if diff > HF_TOLERANCE:
        raise ExportVerificationError(f"the reloaded Hugging Face model's logits differ by {diff:.2e} "
                                      f"(> {HF_TOLERANCE:g}) from the checkpoint's")
    return diff


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
