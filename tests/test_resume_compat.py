"""Resubmitting a changed model under the same name and checkpoint URI (issue 17, item 17).

The model recorded next to the checkpoints (model.json) is compared with the job's before
anything is loaded: architecture, vocabulary and labels must match; hyperparameters and resources
may change. A mismatch is an `IncompatibleCheckpointError` (a ValueError, so the worker exits
CONFIG_ERROR = 78 and nothing retries it), and a local `submit` refuses it before workers start.
The real end-to-end run is in tests/test_resume_changed_model.py (slow).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from training.checkpoint.errors import IncompatibleCheckpointError
from training.config import ModelConfig
from training.models.compat import model_differences, spec_differences

CLASSES = ["noun.act", "noun.animal", "verb.motion"]


def lm_info(preset: str, vocab: int = 4096, **overrides: Any) -> dict[str, Any]:
    """model.json of a preset causal LM, as `describe_model` writes it."""
    from training.models.build import preset_config

    config = preset_config(preset, vocab, overrides).to_dict()
    return {"type": "causal-lm", "preset": preset, "pretrained": None, "factory": None, "overrides": overrides,
            "seq_len": 64, "config": config, "vocab_size": vocab}


def classifier_info(num_labels: int, classes: list[str]) -> dict[str, Any]:
    backbone = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6}
    return {"type": "sequence-classification", "preset": None, "pretrained": "data/models/all-MiniLM-L6-v2",
            "factory": None, "overrides": {}, "backbone_config": backbone, "num_labels": num_labels,
            "classes": classes}


# --- the comparison ---------------------------------------------------------------------------

def test_another_preset_is_another_architecture() -> None:
    assert model_differences(lm_info("llama-tiny"), lm_info("gpt2-tiny")) == [
        "architecture: llama (preset llama-tiny) -> gpt2 (preset gpt2-tiny)"]


@pytest.mark.parametrize("changed,expected", [
    (lambda: lm_info("llama-tiny", num_hidden_layers=2), ["num_hidden_layers: 4 -> 2"]),
    (lambda: lm_info("llama-tiny", vocab=8192), ["vocabulary: 4096 -> 8192 tokens"]),
    (lambda: {**lm_info("llama-tiny"), "type": "sequence-classification"},
     ["model type: causal-lm -> sequence-classification"]),
], ids=["shape", "vocabulary", "type"])
def test_shape_vocabulary_and_type_changes_are_named(changed, expected: list[str]) -> None:
    assert model_differences(lm_info("llama-tiny"), changed()) == expected


def test_hyperparameters_still_resume() -> None:
    """Dropout, sequence length and the like are recorded but change no parameter."""
    recorded = lm_info("llama-tiny")
    current = {**lm_info("llama-tiny", attention_dropout=0.1), "seq_len": 128}
    assert model_differences(recorded, current) == []


def test_labels_must_keep_their_number_and_meaning() -> None:
    recorded = classifier_info(3, CLASSES)
    assert model_differences(recorded, classifier_info(4, CLASSES + ["verb.social"])) == ["labels: 3 -> 4 classes"]
    renamed = ["noun.act", "noun.plant", "verb.motion"]
    assert model_differences(recorded, classifier_info(3, renamed)) == [
        "labels: class 1 was 'noun.animal', is now 'noun.plant' (the data's classes changed)"]
    assert model_differences(recorded, classifier_info(3, list(CLASSES))) == []


@pytest.mark.parametrize("model,expected", [
    ({"preset": "gpt2-tiny"}, ["model: preset llama-tiny -> preset gpt2-tiny"]),
    ({"pretrained": "/models/gpt2"}, ["model: preset llama-tiny -> pretrained /models/gpt2"]),
    ({"preset": "llama-tiny", "overrides": {"hidden_size": 128}}, ["overrides.hidden_size: None -> 128"]),
    ({"preset": "llama-tiny", "overrides": {"attention_dropout": 0.1}}, []),
    ({"preset": "llama-tiny"}, []),
], ids=["preset", "source", "shape-override", "dropout-override", "same"])
def test_what_the_launcher_sees_in_the_spec(model: dict[str, Any], expected: list[str]) -> None:
    assert spec_differences(lm_info("llama-tiny"), ModelConfig(**model)) == expected


def test_a_moved_pretrained_directory_is_left_to_the_worker() -> None:
    spec = ModelConfig(type="sequence-classification", pretrained="/elsewhere/minilm", num_labels=3)
    assert spec_differences(classifier_info(3, CLASSES), spec) == []
    spec = ModelConfig(type="sequence-classification", pretrained="/elsewhere/minilm", num_labels=5)
    assert spec_differences(classifier_info(3, CLASSES), spec) == ["labels: 3 -> 5 classes"]


# --- the worker's check, against a job root on disk ----------------------------------------------

def record(job_root: Path, info: dict[str, Any], committed: bool = True) -> None:
    """A job root with model.json and, when `committed`, one committed checkpoint (step 2)."""
    (job_root / "checkpoints" / "step-2").mkdir(parents=True)
    (job_root / "model.json").write_text(json.dumps(info))
    if committed:
        (job_root / "checkpoints" / "step-2" / "manifest.json").write_text(json.dumps({"step": 2, "files": []}))
        (job_root / "checkpoints" / "latest").write_text("step-2\n")


def fake_task(preset: str, vocab: int = 4096) -> SimpleNamespace:
    model = ModelConfig(preset=preset)
    training = SimpleNamespace(model=model, data=SimpleNamespace(seq_len=64))
    return SimpleNamespace(job=SimpleNamespace(training=training), vocab_size=vocab)


def test_save_model_info_refuses_before_overwriting_the_record(tmp_path: Path) -> None:
    from training.models.build import build_causal_lm
    from training.models.restore import save_model_info

    record(tmp_path, lm_info("llama-tiny"))
    before = (tmp_path / "model.json").read_text()
    model = build_causal_lm(ModelConfig(preset="gpt2-tiny"), vocab_size=4096)
    with pytest.raises(IncompatibleCheckpointError) as caught:
        save_model_info(str(tmp_path), model, fake_task("gpt2-tiny"))
    message = str(caught.value)
    assert f"the checkpoints under {tmp_path}/checkpoints were written for another model" in message
    assert "architecture: llama (preset llama-tiny) -> gpt2 (preset gpt2-tiny)" in message
    assert "new `name` or a new `training.checkpoint.uri`" in message
    assert isinstance(caught.value, ValueError)  # training.run maps it to exitcodes.CONFIG_ERROR
    assert (tmp_path / "model.json").read_text() == before


def test_without_a_committed_checkpoint_a_new_model_starts_fresh(tmp_path: Path) -> None:
    from training.models.build import build_causal_lm
    from training.models.restore import save_model_info

    record(tmp_path, lm_info("llama-tiny"), committed=False)
    model = build_causal_lm(ModelConfig(preset="gpt2-tiny"), vocab_size=4096)
    save_model_info(str(tmp_path), model, fake_task("gpt2-tiny"))
    assert json.loads((tmp_path / "model.json").read_text())["preset"] == "gpt2-tiny"


def test_loading_a_mismatched_state_dict_is_a_configuration_error(tmp_path: Path) -> None:
    """The backstop for what model.json cannot describe (a user's model.factory)."""
    from training.checkpoint.manager import _load_engine

    class Engine:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def load_checkpoint(self, directory: str, tag: str) -> Any:
            raise self.error

    mismatch = RuntimeError("Error(s) in loading state_dict for GPT2LMHeadModel:\n\tsize mismatch for "
                            "transformer.wte.weight: copying a param with shape torch.Size([4096, 256])")
    with pytest.raises(IncompatibleCheckpointError, match="size mismatch for transformer.wte.weight"):
        _load_engine(Engine(mismatch), tmp_path / "step-2", "/ckpt/job/checkpoints/step-2")
    with pytest.raises(RuntimeError, match="gloo"):
        _load_engine(Engine(RuntimeError("gloo connection closed")), tmp_path / "step-2", "/c/step-2")


def test_a_pretrained_tokenizer_with_another_vocabulary_is_named() -> None:
    from training.data.tokenizer import train_bpe
    from training.tasks import vocabulary_difference

    texts = [f"word{i} other{i * 7} thing{i % 13}" for i in range(400)]
    small, large = train_bpe(texts, 300).to_str(), train_bpe(texts, 400).to_str()
    assert vocabulary_difference(small, small) is None
    assert vocabulary_difference(small, large) == "vocabulary: 300 -> 400 tokens"


# --- the launcher refuses before workers start ------------------------------------------------------

def local_spec(tmp_path: Path, preset: str, lr: float = 3e-3) -> dict[str, Any]:
    from tests.conftest import base_spec

    data = copy.deepcopy(base_spec())
    data["training"].update({"model": {"preset": preset}, "optimizer": {"lr": lr},
                             "checkpoint": {"uri": str(tmp_path / "ckpt")}})
    return data


def test_submit_refuses_another_model_before_workers_start(run_cli, write_spec, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.targets import local

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("workers were started")

    monkeypatch.setattr(local, "prepare", must_not_run)
    job_root = tmp_path / "ckpt" / "unit-job"
    record(job_root, lm_info("llama-tiny"))
    result = run_cli("submit", str(write_spec(local_spec(tmp_path, "gpt2-tiny"))), "--runs-dir", str(tmp_path))
    assert result.code == 2
    assert "training.model: the checkpoints under" in result.err
    assert "model: preset llama-tiny -> preset gpt2-tiny" in result.err
    assert "new `name`" in result.err


def test_a_hyperparameter_change_passes_the_launcher(tmp_path: Path) -> None:
    from launcher.spec import JobSpec
    from launcher.support import checkpoint_problems

    record(tmp_path / "ckpt" / "unit-job", lm_info("llama-tiny"))
    assert checkpoint_problems(JobSpec.model_validate(local_spec(tmp_path, "llama-tiny", lr=1e-4))) == []
    assert checkpoint_problems(JobSpec.model_validate(local_spec(tmp_path, "gpt2-tiny"))) != []


def test_a_key_only_one_transformers_version_writes_is_no_difference() -> None:
    recorded = lm_info("llama-tiny")
    del recorded["config"]["head_dim"]  # an older transformers did not write it
    assert model_differences(recorded, lm_info("llama-tiny")) == []
